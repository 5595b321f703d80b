#![no_main]
//! Thin target: the generator and oracle are `qga_harness::fuzz::loaders::check_profile`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| qga_harness::fuzz::loaders::check_profile(data));
