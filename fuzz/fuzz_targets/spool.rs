#![no_main]
// Arbitrary bytes into sealstream::fuzzing::spool (see src/fuzzing.rs for what it checks).
libfuzzer_sys::fuzz_target!(|data: &[u8]| sealstream::fuzzing::spool(data));
