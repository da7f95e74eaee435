//! libFuzzer entry point for [`stratakv_fuzz::diff`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    stratakv_fuzz::diff(data);
});
