//! The spill-file decoder on arbitrary bytes (a damaged or foreign file
//! left on disk): never panics, never reads past the input, and what it
//! accepts accounts for every item the header announces. Inputs that start
//! as a valid file of queue "q" are made often by encoding the data first.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mqueue::queue::spill::{decode, encode};

fuzz_target!(|data: &[u8]| {
    // As found on disk.
    if let Ok(d) = decode(data, b"q") {
        for (k, v) in &d.items {
            assert!(k.len() + v.len() <= data.len());
        }
    }
    // A valid file of the data's items, then damaged by the data itself:
    // decoding gives the items in order, less the damaged one, which is
    // counted as unreadable.
    let items: Vec<(&[u8], &[u8])> = data.chunks(7).map(|c| c.split_at(c.len() / 2)).collect();
    let mut file = encode(b"q", &items);
    if let Some((&pos, flip)) = data.split_first() {
        if !file.is_empty() {
            let at = pos as usize * 131 % file.len();
            file[at] ^= flip.first().copied().unwrap_or(1) | 1;
        }
        if let Ok(d) = decode(&file, b"q") {
            // The header checked out, so its count is the items written.
            assert_eq!(d.items.len() + d.unreadable, items.len());
            let mut rest = items.iter();
            for it in &d.items {
                assert!(rest.any(|x| x == it), "an item that was not written");
            }
        }
    }
});
