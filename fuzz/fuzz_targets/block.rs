//! libFuzzer entry point for [`stratakv_fuzz::block`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    stratakv_fuzz::block(data);
});
