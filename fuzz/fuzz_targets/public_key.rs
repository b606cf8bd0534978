#![no_main]
// Arbitrary bytes into sealstream::fuzzing::public_key (see src/fuzzing.rs for what it checks).
libfuzzer_sys::fuzz_target!(|data: &[u8]| sealstream::fuzzing::public_key(data));
