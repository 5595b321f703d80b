#![no_main]
//! Thin target: the generator and oracle are `qga_harness::fuzz::dispatch::check`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| qga_harness::fuzz::dispatch::check(data));
