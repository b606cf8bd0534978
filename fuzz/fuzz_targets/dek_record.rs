#![no_main]
// Arbitrary bytes into sealstream::fuzzing::dek_record (see src/fuzzing.rs for what it checks).
libfuzzer_sys::fuzz_target!(|data: &[u8]| sealstream::fuzzing::dek_record(data));
