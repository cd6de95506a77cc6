//! Random sequences of queue operations (add, fetch, peek, clear) in every
//! add mode and size limit, on the heap, checked after each step against
//! the plain model (VecDeque plus key lookup).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mqueue::queue::model::Model;
use mqueue::queue::{AddMode, HeapAlloc, Limits, QueueState};

fuzz_target!(|data: &[u8]| {
    let mut bytes = data.iter().copied();
    let mut next = move || bytes.next();
    let (Some(mode), Some(max)) = (next(), next()) else {
        return;
    };
    let mode = (mode % 3) as i32;
    let max = (max % 9) as usize;
    let limits = Limits {
        max_items: max,
        max_bytes: 0,
    };
    let mut q = QueueState::<HeapAlloc>::new(AddMode::from_int(mode), limits, 7);
    let mut m = Model {
        mode,
        max,
        ..Model::default()
    };
    while let Some(op) = next() {
        match op % 4 {
            0 => {
                // Keys from a small alphabet so unique modes see repeats;
                // values sometimes large enough to span storage chunks.
                let key = vec![b'a' + (next().unwrap_or(0) % 4); (op as usize / 4) % 3];
                let len = match next().unwrap_or(0) {
                    255 => 20_000,
                    n => n as usize,
                };
                let val: Vec<u8> = (0..len).map(|i| i as u8 ^ op).collect();
                q.add(&key, &val);
                m.add(&key, &val);
            }
            1 => {
                let mut got = None;
                q.fetch_with(|k, v| got = Some((k.to_vec(), v.to_vec())));
                assert_eq!(got, m.items.pop_front(), "fetch");
            }
            2 => {
                let mut seen = Vec::new();
                q.peek(usize::MAX, |k, v| seen.push((k.to_vec(), v.to_vec())));
                assert!(seen.iter().eq(m.items.iter()), "peek");
            }
            _ => {
                assert_eq!(q.clear(), m.items.len(), "clear");
                m.items.clear();
            }
        }
        assert_eq!(q.len(), m.items.len(), "len");
    }
});
