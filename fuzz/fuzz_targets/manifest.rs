//! libFuzzer entry point for [`stratakv_fuzz::manifest`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    stratakv_fuzz::manifest(data);
});
