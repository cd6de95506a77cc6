//! Recovery at start: reads every segment of a queue, checks every record,
//! and replays them into the items the queue held, with the same addmode
//! and limits as the queue, so evictions need no records of their own.

use std::collections::{BTreeMap, HashMap};
use std::io;

use super::format::{self, Kind, HEADER_LEN, SNAPSHOT};
use super::storage::Storage;
use crate::queue::{AddMode, HeapAlloc, Limits, QueueState};

/// One item to load, oldest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub seq: u64,
    pub key: Vec<u8>,
    pub val: Vec<u8>,
}

/// A segment recovery read records from.
#[derive(Clone, Copy, Debug, Default)]
pub struct Replayed {
    pub id: u64,
    /// The smallest sequence number added in it (0 for a snapshot, which
    /// holds items of any age).
    pub first_seq: u64,
    pub len: usize,
}

/// What recovery found.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Items leased and not acknowledged at the stop (delivered again) and
    /// the waiting items, oldest first: leased items are the oldest.
    pub items: Vec<Item>,
    /// How many of `items` were leased.
    pub redelivered: usize,
    /// The next sequence number to give out.
    pub next_seq: u64,
    /// The highest segment number seen (the next segment gets one more).
    pub last_segment: u64,
    /// Segments read whose records are now in `items` (removed once a new
    /// snapshot is on disk).
    pub superseded: Vec<u64>,
    /// The segments replayed, in order, for starting on them as they are
    /// when no snapshot can be written (a full disk).
    pub replayed: Vec<Replayed>,
    /// Damaged segments (set aside once a new snapshot is on disk).
    pub damaged: Vec<u64>,
    /// Errors for the log, naming the file and what was loaded and lost.
    pub errors: Vec<String>,
}

struct Replay<'a> {
    mode: AddMode,
    limits: Limits,
    waiting: BTreeMap<u64, (&'a [u8], &'a [u8])>,
    leased: BTreeMap<u64, (&'a [u8], &'a [u8])>,
    keys: HashMap<&'a [u8], u64>,
    bytes: usize,
    max_seq: u64,
}

impl<'a> Replay<'a> {
    fn remove_waiting(&mut self, seq: u64) -> Option<(&'a [u8], &'a [u8])> {
        let it = self.waiting.remove(&seq)?;
        self.bytes -= QueueState::<HeapAlloc>::item_size(it.0, it.1);
        if self.mode != AddMode::Append && self.keys.get(it.0) == Some(&seq) {
            self.keys.remove(it.0);
        }
        Some(it)
    }

    fn apply(&mut self, r: format::Record<'a>) {
        self.max_seq = self.max_seq.max(r.seq);
        match r.kind {
            Kind::Add => {
                if self.waiting.contains_key(&r.seq) || self.leased.contains_key(&r.seq) {
                    return;
                }
                if self.mode != AddMode::Append {
                    if let Some(&old) = self.keys.get(r.key) {
                        if self.mode == AddMode::KeepOldest {
                            return;
                        }
                        self.remove_waiting(old);
                    }
                    self.keys.insert(r.key, r.seq);
                }
                self.waiting.insert(r.seq, (r.key, r.val));
                self.bytes += QueueState::<HeapAlloc>::item_size(r.key, r.val);
                let Limits {
                    max_items,
                    max_bytes,
                } = self.limits;
                while (max_items > 0 && self.waiting.len() > max_items)
                    || (max_bytes > 0 && self.bytes > max_bytes)
                {
                    let Some((&oldest, _)) = self.waiting.iter().next() else {
                        break;
                    };
                    self.remove_waiting(oldest);
                }
            }
            Kind::Lease => {
                if let Some(it) = self.remove_waiting(r.seq) {
                    self.leased.insert(r.seq, it);
                }
            }
            Kind::Ack => {
                if self.leased.remove(&r.seq).is_none() {
                    self.remove_waiting(r.seq);
                }
            }
            Kind::Clear => {
                let kept: Vec<u64> = r
                    .val
                    .chunks_exact(8)
                    .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                    .collect();
                let gone: Vec<u64> = self.waiting.range(..=r.seq).map(|(&s, _)| s).collect();
                for s in gone {
                    let it = self.remove_waiting(s);
                    if let (true, Some(it)) = (kept.contains(&s), it) {
                        self.leased.insert(s, it);
                    }
                }
                self.leased.retain(|s, _| *s > r.seq || kept.contains(s));
            }
            Kind::SnapshotEnd => {}
        }
    }
}

/// Reads a queue's segments. Odd entries (a directory or FIFO under a
/// segment's name) and files of another format are set aside at once;
/// damaged segments are read as far as their records check out and listed
/// in `damaged`.
pub fn recover<S: Storage>(st: &mut S, mode: AddMode, limits: Limits) -> io::Result<Recovered> {
    let mut out = Recovered::default();
    let mut found = st.segments()?;
    found.sort_by_key(|f| f.id);
    let mut files: Vec<(u64, format::Header, Vec<u8>, bool)> = Vec::new();
    for f in found {
        out.last_segment = out.last_segment.max(f.id);
        let name = st.name(f.id);
        if !f.regular {
            let to = st.set_aside(f.id)?;
            out.errors.push(format!(
                "{name} is not a regular file: set aside as {to}, nothing loaded from it"
            ));
            continue;
        }
        let data = match st.read(f.id) {
            Ok(d) => d,
            Err(e) => {
                let to = st.set_aside(f.id)?;
                out.errors.push(format!(
                    "{name} cannot be read ({e}): set aside as {to}, nothing loaded from it"
                ));
                continue;
            }
        };
        // Segments are created at their full size, a multiple of 4096
        // bytes recorded in the header (fallocate under a temporary name,
        // then linked): a shorter or empty one was truncated.
        let truncated = data.is_empty() || data.len() % 4096 != 0;
        if data.is_empty() {
            let to = st.set_aside(f.id)?;
            out.errors.push(format!(
                "{name} is empty (truncated: segments are created at full size): set aside as {to}, the items in it may have been lost"
            ));
            continue;
        }
        if !truncated && data.iter().all(|&b| b == 0) {
            // Created but never written (a crash right after creating it).
            out.superseded.push(f.id);
            continue;
        }
        match format::decode_header(&data, f.id) {
            Ok(h) => {
                let cut = (data.len() as u64) < u64::from(h.pages) * 4096;
                files.push((f.id, h, data, truncated || cut))
            }
            Err(e) => {
                let to = st.set_aside(f.id)?;
                out.errors.push(format!(
                    "{name}: {e}: set aside as {to}, nothing loaded from it"
                ));
            }
        }
    }
    // The newest complete snapshot replaces every older segment.
    let mut base = 0;
    for (i, (_, h, data, _)) in files.iter().enumerate() {
        if h.flags & SNAPSHOT != 0 {
            let mut complete = false;
            format::scan(&data[HEADER_LEN..], h.salt, |r| {
                complete |= r.kind == Kind::SnapshotEnd
            });
            if complete {
                base = i;
            }
        }
    }
    let mut replay = Replay {
        mode,
        limits,
        waiting: BTreeMap::new(),
        leased: BTreeMap::new(),
        keys: HashMap::new(),
        bytes: 0,
        max_seq: 0,
    };
    for (i, (id, h, data, truncated)) in files.iter().enumerate() {
        out.superseded.push(*id);
        let incomplete_snapshot = i > base && h.flags & SNAPSHOT != 0;
        if i < base || incomplete_snapshot {
            continue;
        }
        let mut records = 0usize;
        let mut adds = Vec::new();
        let mut in_snapshot = h.flags & SNAPSHOT != 0;
        let mut first_seq = if in_snapshot { Some(0) } else { None };
        let scan = format::scan(&data[HEADER_LEN..], h.salt, |r| {
            records += 1;
            if r.kind == Kind::SnapshotEnd {
                in_snapshot = false;
            } else if r.kind == Kind::Add && !in_snapshot {
                adds.push(r.seq);
            }
            if r.kind == Kind::Add {
                first_seq = Some(first_seq.map_or(r.seq, |f: u64| f.min(r.seq)));
            }
            replay.apply(r);
        });
        out.replayed.push(Replayed {
            id: *id,
            first_seq: first_seq.unwrap_or(u64::MAX),
            len: data.len(),
        });
        if scan.damaged_bytes == 0 && *truncated {
            out.damaged.push(*id);
            out.errors.push(format!(
                "{}: truncated to {} bytes (segments are created at full size): {records} records loaded, the items after them may have been lost",
                st.name(*id),
                data.len()
            ));
        } else if scan.damaged_bytes > 0 {
            adds.sort_unstable();
            let missing: u64 = adds.windows(2).map(|w| w[1].saturating_sub(w[0] + 1)).sum();
            out.damaged.push(*id);
            let at: Vec<String> = scan
                .damage_at
                .iter()
                .map(|o| (o + HEADER_LEN).to_string())
                .collect();
            out.errors.push(format!(
                "{}: damaged at offset {}: {records} records loaded, {} bytes unreadable (the items in them are lost{})",
                st.name(*id),
                at.join(", "),
                scan.damaged_bytes,
                if missing > 0 { format!("; {missing} adds missing between the records read") } else { String::new() }
            ));
        }
    }
    out.next_seq = replay.max_seq + 1;
    out.redelivered = replay.leased.len();
    let Replay {
        mut waiting,
        leased,
        ..
    } = replay;
    // Leased items are older than every waiting one (fetches take the
    // oldest), so sequence order delivers them first.
    waiting.extend(leased);
    out.items.reserve(waiting.len());
    for (seq, (k, v)) in waiting {
        out.items.push(Item {
            seq,
            key: k.to_vec(),
            val: v.to_vec(),
        });
    }
    Ok(out)
}
