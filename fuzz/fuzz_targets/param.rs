//! The `mqueue` module parameter parser on arbitrary bytes: never panics,
//! and what it accepts is a usable queue definition: a name, numbers in
//! the C `int` range (as the C module reads them), maxbytes not negative.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mqueue::queue::param::parse_queue_spec;

fuzz_target!(|data: &[u8]| {
    if let Ok(spec) = parse_queue_spec(data) {
        let int = i64::from(i32::MIN)..=i64::from(i32::MAX);
        assert!(!spec.name.is_empty(), "accepted an empty name");
        for n in [spec.size, spec.addmode, spec.dbmode] {
            assert!(int.contains(&n), "{n} outside the int range");
        }
        assert!(spec.maxbytes >= 0);
    }
});
