//! libFuzzer entry point for [`stratakv_fuzz::ops`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    stratakv_fuzz::ops(data);
});
