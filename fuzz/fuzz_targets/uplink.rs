#![no_main]
// Arbitrary bytes into sealstream::fuzzing::uplink (see src/fuzzing.rs for what it checks).
libfuzzer_sys::fuzz_target!(|data: &[u8]| sealstream::fuzzing::uplink(data));
