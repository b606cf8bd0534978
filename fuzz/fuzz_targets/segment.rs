#![no_main]
// Arbitrary bytes into sealstream::fuzzing::segment (see src/fuzzing.rs for what it checks).
libfuzzer_sys::fuzz_target!(|data: &[u8]| sealstream::fuzzing::segment(data));
