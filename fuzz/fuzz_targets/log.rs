//! The durable log's decoder and recovery on arbitrary bytes (a damaged or
//! foreign segment): never panics, never reads past the input, never
//! returns an item that no record holds. A valid segment damaged by the
//! data itself loads every record outside the damage.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use mqueue::log::format::{self, Header, Kind, HEADER_LEN};
use mqueue::log::{recover, RecStorage};
use mqueue::queue::{AddMode, Limits};

const SALT: u64 = 0x6d71_7565_7565_2121;

fuzz_target!(|data: &[u8]| {
    // As found on disk, as a whole file and as the records after a header.
    let mut st = RecStorage::with_files(BTreeMap::from([(1, data.to_vec())]));
    if let Ok(r) = recover(&mut st, AddMode::Append, Limits::default()) {
        for (_, k, v) in r.items() {
            assert!(k.len() + v.len() <= data.len());
        }
    }
    let mut file = format::encode_header(Header { flags: 0, segment: 1, salt: SALT, pages: 0 }).to_vec();
    file.extend_from_slice(data);
    let mut n = 0;
    format::scan(&file[HEADER_LEN..], SALT, |r| n += r.key.len() + r.val.len());
    assert!(n <= data.len());

    // A valid segment of the data's items, then one byte flipped.
    let items: Vec<(&[u8], &[u8])> = data.chunks(9).map(|c| c.split_at(c.len() / 3)).collect();
    let mut file = format::encode_header(Header { flags: 0, segment: 1, salt: SALT, pages: 0 }).to_vec();
    let mut starts = Vec::new();
    for (i, (k, v)) in items.iter().enumerate() {
        starts.push(file.len());
        format::push_record(&mut file, SALT, Kind::Add, i as u64 + 1, k, v);
    }
    let Some((&pos, rest)) = data.split_first() else { return };
    let at = HEADER_LEN + pos as usize * 131 % (file.len() - HEADER_LEN).max(1);
    if at < file.len() {
        file[at] ^= rest.first().copied().unwrap_or(1) | 1;
    }
    let mut got = Vec::new();
    format::scan(&file[HEADER_LEN..], SALT, |r| got.push((r.seq, r.key.to_vec(), r.val.to_vec())));
    // Every record but the damaged one is found again, and nothing else.
    let hit = starts.iter().rposition(|&s| s <= at);
    for (i, (k, v)) in items.iter().enumerate() {
        let found = got.iter().any(|g| g.0 == i as u64 + 1 && g.1 == *k && g.2 == *v);
        if Some(i) != hit {
            assert!(found, "record {i} outside the damage lost");
        }
    }
    for g in &got {
        let item = g.0.checked_sub(1).and_then(|i| items.get(i as usize));
        assert!(item.is_some_and(|(k, v)| g.1 == *k && g.2 == *v), "a record that was not written");
    }
});
