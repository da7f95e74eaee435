//! libFuzzer entry point for [`stratakv_fuzz::wal_segment`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    stratakv_fuzz::wal_segment(data);
});
