//! Recovery at start: reads every segment of a queue, checks every record,
//! and replays them into the items the queue held, with the same addmode
//! and limits as the queue, so evictions need no records of their own.

use std::collections::HashMap;
use std::io;

use super::format::{self, Kind, HEADER_LEN, SNAPSHOT};
use super::storage::Storage;
use crate::queue::{AddMode, HeapAlloc, Limits, QueueState};

/// One item to load, oldest first (owned: for tests and tools).
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Waiting,
    Leased,
    Gone,
}

/// An item found in the files: where its key and value are (the value
/// follows the key in its record).
#[derive(Clone, Copy, Debug)]
struct Entry {
    seq: u64,
    at: usize,
    file: u32,
    key_len: u32,
    val_len: u32,
    state: State,
}

/// What recovery found.
#[derive(Clone, Debug, Default)]
pub struct Recovered {
    /// The segments' bytes: the items point into them.
    data: Vec<Vec<u8>>,
    /// Items leased and not acknowledged at the stop (delivered again) and
    /// the waiting items, oldest first: leased items are the oldest.
    entries: Vec<Entry>,
    /// How many of the items were leased.
    pub redelivered: usize,
    /// Items leased at the stop that are not delivered again: on a queue
    /// with unique keys, their key was added again after their lease, and
    /// the newer item (its add acknowledged) keeps the key.
    pub superseded_leases: usize,
    /// The next sequence number to give out.
    pub next_seq: u64,
    /// The highest segment number seen (the next segment gets one more).
    pub last_segment: u64,
    /// Segments read whose records are now in the items (removed once a
    /// new snapshot is on disk, or unless they are replayed).
    pub superseded: Vec<u64>,
    /// The segments replayed, in order, for starting on them as they are.
    pub replayed: Vec<Replayed>,
    /// Damaged segments (set aside once a new snapshot is on disk).
    pub damaged: Vec<u64>,
    /// Errors for the log, naming the file and what was loaded and lost.
    pub errors: Vec<String>,
}

impl Recovered {
    /// How many items to load.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The items, oldest first: sequence number, key, value.
    pub fn items(&self) -> impl Iterator<Item = (u64, &[u8], &[u8])> + '_ {
        self.entries.iter().map(|e| {
            let (k, v) = kv(&self.data, e);
            (e.seq, k, v)
        })
    }

    /// The items, copied.
    pub fn items_owned(&self) -> Vec<Item> {
        self.items()
            .map(|(seq, k, v)| Item {
                seq,
                key: k.to_vec(),
                val: v.to_vec(),
            })
            .collect()
    }
}

fn kv<'a>(data: &'a [Vec<u8>], e: &Entry) -> (&'a [u8], &'a [u8]) {
    let b = &data[e.file as usize][e.at..e.at + e.key_len as usize + e.val_len as usize];
    b.split_at(e.key_len as usize)
}

/// The replay: every item found so far, in sequence order, by state.
struct Replay<'a> {
    data: &'a [Vec<u8>],
    mode: AddMode,
    limits: Limits,
    entries: Vec<Entry>,
    /// No waiting entry before this index.
    first_waiting: usize,
    waiting: usize,
    keys: HashMap<&'a [u8], u64>,
    bytes: usize,
    max_seq: u64,
}

impl<'a> Replay<'a> {
    fn find(&self, seq: u64) -> Option<usize> {
        // Records mostly name the newest or the oldest items.
        match self.entries.last() {
            Some(e) if e.seq == seq => Some(self.entries.len() - 1),
            _ => self.entries.binary_search_by_key(&seq, |e| e.seq).ok(),
        }
    }

    fn kv(&self, i: usize) -> (&'a [u8], &'a [u8]) {
        kv(self.data, &self.entries[i])
    }

    /// A waiting item leaves the queue (leased or gone).
    fn unqueue(&mut self, i: usize, to: State) {
        let (k, v) = self.kv(i);
        let seq = self.entries[i].seq;
        self.entries[i].state = to;
        self.waiting -= 1;
        self.bytes -= QueueState::<HeapAlloc>::item_size(k, v);
        if self.mode != AddMode::Append && self.keys.get(k) == Some(&seq) {
            self.keys.remove(k);
        }
    }

    fn waiting_at(&self, seq: u64) -> Option<usize> {
        self.find(seq)
            .filter(|&i| self.entries[i].state == State::Waiting)
    }

    fn add(&mut self, file: u32, r: format::Record<'a>) {
        if self.find(r.seq).is_some() {
            return;
        }
        if self.mode != AddMode::Append {
            if let Some(&old) = self.keys.get(r.key) {
                if self.mode == AddMode::KeepOldest {
                    return;
                }
                if let Some(i) = self.waiting_at(old) {
                    self.unqueue(i, State::Gone);
                }
            }
            self.keys.insert(r.key, r.seq);
        }
        let base = self.data[file as usize].as_ptr() as usize;
        let e = Entry {
            seq: r.seq,
            at: r.key.as_ptr() as usize - base,
            file,
            key_len: r.key.len() as u32,
            val_len: r.val.len() as u32,
            state: State::Waiting,
        };
        // Adds come in sequence order but for odd logs.
        let at = match self.entries.last() {
            Some(l) if l.seq > r.seq => self.entries.partition_point(|x| x.seq < r.seq),
            _ => self.entries.len(),
        };
        self.entries.insert(at, e);
        self.first_waiting = self.first_waiting.min(at);
        self.waiting += 1;
        self.bytes += QueueState::<HeapAlloc>::item_size(r.key, r.val);
        let Limits {
            max_items,
            max_bytes,
        } = self.limits;
        while (max_items > 0 && self.waiting > max_items)
            || (max_bytes > 0 && self.bytes > max_bytes)
        {
            while self.entries[self.first_waiting].state != State::Waiting {
                self.first_waiting += 1;
            }
            self.unqueue(self.first_waiting, State::Gone);
        }
    }

    fn apply(&mut self, file: u32, r: format::Record<'a>) {
        self.max_seq = self.max_seq.max(r.seq);
        match r.kind {
            Kind::Add => self.add(file, r),
            Kind::Lease => {
                if let Some(i) = self.waiting_at(r.seq) {
                    self.unqueue(i, State::Leased);
                }
            }
            Kind::Ack => match self.find(r.seq) {
                Some(i) if self.entries[i].state == State::Leased => {
                    self.entries[i].state = State::Gone
                }
                Some(i) if self.entries[i].state == State::Waiting => self.unqueue(i, State::Gone),
                _ => {}
            },
            Kind::Clear => {
                let kept: Vec<u64> = r
                    .val
                    .chunks_exact(8)
                    .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                    .collect();
                let upto = self.entries.partition_point(|e| e.seq <= r.seq);
                for i in 0..upto {
                    let keep = kept.contains(&self.entries[i].seq);
                    match self.entries[i].state {
                        State::Waiting => {
                            let to = if keep { State::Leased } else { State::Gone };
                            self.unqueue(i, to);
                        }
                        State::Leased if !keep => self.entries[i].state = State::Gone,
                        _ => {}
                    }
                }
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
    // Each file read: its number, header, and whether it is cut short;
    // its bytes at the same index in `data`.
    let mut files: Vec<(u64, format::Header, bool)> = Vec::new();
    let mut data_of: Vec<Vec<u8>> = Vec::new();
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
                files.push((f.id, h, truncated || cut));
                data_of.push(data);
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
    for (i, (_, h, _)) in files.iter().enumerate() {
        if h.flags & SNAPSHOT != 0 {
            let mut complete = false;
            format::scan(&data_of[i][HEADER_LEN..], h.salt, |r| {
                complete |= r.kind == Kind::SnapshotEnd
            });
            if complete {
                base = i;
            }
        }
    }
    let mut previous: Option<u64> = None;
    for (i, (id, h, _)) in files.iter().enumerate() {
        if i < base || (i > base && h.flags & SNAPSHOT != 0) {
            // Not read: free its bytes now.
            data_of[i] = Vec::new();
            continue;
        }
        // Segments follow each other by number from the one replayed
        // first (old ones go from the front only): a gap is a file
        // removed from outside.
        if let Some(p) = previous.filter(|&p| p + 1 < *id) {
            out.errors.push(format!(
                "{} to {} missing (removed from outside?): the items added in them are lost",
                st.name(p + 1),
                st.name(id - 1)
            ));
        }
        previous = Some(*id);
    }
    let mut replay = Replay {
        data: &data_of,
        mode,
        limits,
        entries: Vec::new(),
        first_waiting: 0,
        waiting: 0,
        keys: HashMap::new(),
        bytes: 0,
        max_seq: 0,
    };
    for (i, (id, h, truncated)) in files.iter().enumerate() {
        out.superseded.push(*id);
        let incomplete_snapshot = i > base && h.flags & SNAPSHOT != 0;
        if i < base || incomplete_snapshot {
            continue;
        }
        let data = &data_of[i];
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
            replay.apply(i as u32, r);
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
            let cut = if *truncated {
                format!(
                    "; truncated to {} bytes (segments are created at full size): the items after them may have been lost",
                    data.len()
                )
            } else {
                String::new()
            };
            out.errors.push(format!(
                "{}: damaged at offset {}: {records} records loaded, {} bytes unreadable (the items in them are lost{}){cut}",
                st.name(*id),
                at.join(", "),
                scan.damaged_bytes,
                if missing > 0 { format!("; {missing} adds missing between the records read") } else { String::new() }
            ));
        }
    }
    out.next_seq = replay.max_seq + 1;
    let mut entries = std::mem::take(&mut replay.entries);
    drop(replay);
    // Leased items are older than every waiting one (fetches take the
    // oldest), so sequence order delivers them first.
    entries.retain(|e| e.state != State::Gone);
    if mode != AddMode::Append {
        // A key holds one item: an add after the lease was acknowledged
        // and wins over the leased item (which was delivered once).
        let waiting: std::collections::HashSet<&[u8]> = entries
            .iter()
            .filter(|e| e.state == State::Waiting)
            .map(|e| kv(&data_of, e).0)
            .collect();
        let before = entries.len();
        entries.retain(|e| e.state != State::Leased || !waiting.contains(kv(&data_of, e).0));
        out.superseded_leases = before - entries.len();
    }
    out.redelivered = entries.iter().filter(|e| e.state == State::Leased).count();
    out.entries = entries;
    out.data = data_of;
    Ok(out)
}
