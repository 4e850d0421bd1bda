//! Fuzz the change-set, log-segment and snapshot decoders (first byte picks
//! which). Run: `cargo fuzz run decoders --sanitizer none` from this folder.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    thread_local! {
        static SCHEMA: std::sync::Arc<ecsdb_storage::fuzzing::Schema> = ecsdb_storage::fuzzing::fuzz_schema();
    }
    SCHEMA.with(|s| ecsdb_storage::fuzzing::all(data, s));
});
