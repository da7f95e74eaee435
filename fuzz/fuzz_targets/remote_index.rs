//! libFuzzer entry point for [`stratakv_fuzz::remote_index`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    stratakv_fuzz::remote_index(data);
});
