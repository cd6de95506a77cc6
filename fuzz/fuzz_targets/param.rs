//! The `mqueue` module parameter parser on arbitrary bytes: never panics,
//! and what it accepts is a usable queue definition.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mqueue::queue::param::parse_queue_spec;

fuzz_target!(|data: &[u8]| {
    if let Ok(spec) = parse_queue_spec(data) {
        assert!(!spec.name.is_empty(), "accepted an empty name");
        assert!((0..=2).contains(&spec.addmode), "addmode {}", spec.addmode);
        assert!((0..=3).contains(&spec.dbmode), "dbmode {}", spec.dbmode);
        assert!(spec.size >= 0 && spec.maxbytes >= 0);
    }
});
