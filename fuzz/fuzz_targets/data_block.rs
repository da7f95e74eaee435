//! libFuzzer entry point for [`stratakv_fuzz::data_block`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    stratakv_fuzz::data_block(data);
});
