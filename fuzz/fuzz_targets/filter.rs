//! libFuzzer entry point for [`stratakv_fuzz::filter`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    stratakv_fuzz::filter(data);
});
