//! One queue's state: its items, key index, limits and counters. Callers hold
//! the queue lock (see [`super::Queue`]) around every method.

use super::index::{hash_key, Index};
use super::log::{Entry, Log, CHUNK_PAYLOAD};
use super::{AddMode, RawAlloc};

/// Configured bounds; 0 means unbounded.
#[derive(Clone, Copy, Debug, Default)]
pub struct Limits {
    /// Most items kept (`size`); the oldest goes first.
    pub max_items: usize,
    /// Most bytes the items may hold (`maxbytes`); the oldest goes first.
    pub max_bytes: usize,
}

/// Counters since start, for `mqueue.stats` and the statistics framework.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub size: usize,
    pub added: u64,
    pub fetched: u64,
    pub evicted: u64,
    pub replaced: u64,
    pub rejected: u64,
    pub failed: u64,
    /// Items dropped by `mqueue.clear` (or a load rolled back).
    pub cleared: u64,
    pub max_size: usize,
    /// Bytes the items take (entry headers, keys, values).
    pub item_bytes: usize,
    /// Shared memory the queue holds for them (chunks and index).
    pub shm_bytes: usize,
}

/// What an add did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddOutcome {
    Added,
    /// addmode 1: the key was queued already; nothing changed.
    Duplicate,
    /// No memory for the item; nothing changed.
    NoMemory,
    /// The item alone is larger than the queue's byte limit.
    TooLarge,
}

pub struct QueueState<A: RawAlloc> {
    mode: AddMode,
    limits: Limits,
    seed: u64,
    log: Log<A>,
    index: Index<A>,
    live: usize,
    live_bytes: usize,
    dead_bytes: usize,
    stats: Stats,
}

// SAFETY: the state owns its chunks; every access goes through the queue
// lock, and the memory is valid in every process that maps it.
unsafe impl<A: RawAlloc> Send for QueueState<A> {}

impl<A: RawAlloc> QueueState<A> {
    pub fn new(mode: AddMode, limits: Limits, seed: u64) -> Self {
        QueueState {
            mode,
            limits,
            seed,
            log: Log::new(A::default()),
            index: Index::new(A::default()),
            live: 0,
            live_bytes: 0,
            dead_bytes: 0,
            stats: Stats::default(),
        }
    }

    pub fn mode(&self) -> AddMode {
        self.mode
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    pub fn stats(&self) -> Stats {
        Stats {
            size: self.live,
            item_bytes: self.live_bytes,
            shm_bytes: self.log.chunk_bytes() + self.index.bytes(),
            ..self.stats
        }
    }

    /// Counts a call that failed outside the queue (a Redis call).
    pub fn count_failure(&mut self) {
        self.stats.failed += 1;
    }

    /// Adds an item under the queue's addmode and limits.
    pub fn add(&mut self, key: &[u8], val: &[u8]) -> AddOutcome {
        self.add_seq(key, val, 0, |_| ())
    }

    /// Bytes an item takes against `maxbytes`.
    pub fn item_size(key: &[u8], val: &[u8]) -> usize {
        Entry::size_for(key.len(), val.len())
    }

    /// What an add of this item would do before any change: `Some` outcome
    /// when it would be refused (too large, duplicate under addmode 1).
    pub fn refuses(&self, key: &[u8], val: &[u8]) -> Option<AddOutcome> {
        let size = Entry::size_for(key.len(), val.len());
        if key.len() > u32::MAX as usize / 2
            || val.len() > u32::MAX as usize / 2
            || (self.limits.max_bytes > 0 && size > self.limits.max_bytes)
        {
            return Some(AddOutcome::TooLarge);
        }
        if self.mode == AddMode::KeepOldest
            && self.index.find(hash_key(self.seed, key), key).is_some()
        {
            return Some(AddOutcome::Duplicate);
        }
        None
    }

    /// Adds an item tagged with a log sequence number; `gone` is told the
    /// sequence number of every item the add evicted or replaced.
    pub fn add_seq(
        &mut self,
        key: &[u8],
        val: &[u8],
        seq: u64,
        mut gone: impl FnMut(u64),
    ) -> AddOutcome {
        let size = Entry::size_for(key.len(), val.len());
        let footprint = size + if seq != 0 { 8 } else { 0 };
        if key.len() > u32::MAX as usize / 2 || val.len() > u32::MAX as usize / 2 {
            self.stats.failed += 1;
            return AddOutcome::TooLarge;
        }
        if self.limits.max_bytes > 0 && size > self.limits.max_bytes {
            self.stats.failed += 1;
            return AddOutcome::TooLarge;
        }
        let unique = self.mode.unique();
        let hash = if unique { hash_key(self.seed, key) } else { 0 };
        let existing = if unique {
            self.index.find(hash, key)
        } else {
            None
        };
        if existing.is_some() && self.mode == AddMode::KeepOldest {
            self.stats.rejected += 1;
            return AddOutcome::Duplicate;
        }
        if !self.log.reserve(footprint) || (unique && !self.index.reserve_one()) {
            self.stats.failed += 1;
            return AddOutcome::NoMemory;
        }
        if let Some(old) = existing {
            // SAFETY: the index holds live entries of this queue's log.
            gone(unsafe { (*old).seq() });
            self.kill(old);
            self.stats.replaced += 1;
        }
        let entry = self.log.push(key, val, hash, seq);
        if unique {
            self.index.insert(entry);
        }
        self.live += 1;
        self.live_bytes += size;
        self.stats.added += 1;
        self.enforce_limits(&mut gone);
        self.stats.max_size = self.stats.max_size.max(self.live);
        if self.dead_bytes > CHUNK_PAYLOAD && self.dead_bytes > self.live_bytes {
            self.compact();
        }
        AddOutcome::Added
    }

    fn enforce_limits(&mut self, gone: &mut impl FnMut(u64)) {
        let Limits {
            max_items,
            max_bytes,
        } = self.limits;
        while (max_items > 0 && self.live > max_items)
            || (max_bytes > 0 && self.live_bytes > max_bytes)
        {
            if !self.pop_with(|_, _, seq| gone(seq)) {
                break;
            }
            self.stats.evicted += 1;
        }
    }

    /// Marks a live entry dead (addmode 2 replacement).
    fn kill(&mut self, entry: *mut Entry) {
        self.index.remove(entry);
        // SAFETY: entry is a live entry of this queue's log.
        let size = unsafe {
            (*entry).kill();
            (*entry).size()
        };
        self.live -= 1;
        self.live_bytes -= size;
        self.dead_bytes += size;
    }

    /// Removes the oldest item and shows it to `f`; false when empty.
    fn pop_with(&mut self, f: impl FnOnce(&[u8], &[u8], u64)) -> bool {
        while self.live > 0 {
            let Some(entry) = self.log.front() else { break };
            // SAFETY: front returns an entry of this log, valid until advance
            // and the next front call.
            let e = unsafe { &mut *entry };
            let size = e.size();
            self.log.advance(e.footprint());
            if !e.is_live() {
                self.dead_bytes -= size;
                continue;
            }
            if self.mode.unique() {
                self.index.remove(entry);
            }
            // SAFETY: the entry is live and its chunk is not freed before the
            // next front call.
            unsafe { f(e.key(), e.val(), e.seq()) };
            self.live -= 1;
            self.live_bytes -= size;
            if self.live == 0 {
                self.reset_storage();
            }
            return true;
        }
        false
    }

    /// Takes the oldest item out, handing its key and value to `f` (which
    /// copies them); false when the queue is empty.
    pub fn fetch_with(&mut self, f: impl FnOnce(&[u8], &[u8])) -> bool {
        self.fetch_seq(|k, v, _| f(k, v))
    }

    /// As [`QueueState::fetch_with`], with the item's sequence number.
    pub fn fetch_seq(&mut self, f: impl FnOnce(&[u8], &[u8], u64)) -> bool {
        let found = self.pop_with(f);
        if found {
            self.stats.fetched += 1;
        }
        found
    }

    /// Shows the oldest item to `f` and removes it only if `f` returns
    /// true: None when empty, else what `f` returned.
    pub fn fetch_if(&mut self, f: impl FnOnce(&[u8], &[u8]) -> bool) -> Option<bool> {
        let mut taken = None;
        let mut f = Some(f);
        self.peek(1, |k, v| taken = f.take().map(|f| f(k, v)));
        if taken == Some(true) {
            self.fetch_with(|_, _| {});
        }
        taken
    }

    /// Shows up to `n` items, oldest first, without removing them.
    pub fn peek(&self, n: usize, mut f: impl FnMut(&[u8], &[u8])) {
        self.peek_seq(n, |k, v, _| f(k, v))
    }

    /// As [`QueueState::peek`], with each item's sequence number.
    pub fn peek_seq(&self, n: usize, mut f: impl FnMut(&[u8], &[u8], u64)) {
        let mut left = n;
        self.log.for_each(|entry| {
            if left == 0 {
                return false;
            }
            // SAFETY: for_each yields entries of this log.
            let e = unsafe { &*entry };
            if e.is_live() {
                // SAFETY: as above; the entry is live.
                unsafe { f(e.key(), e.val(), e.seq()) };
                left -= 1;
            }
            true
        });
    }

    /// Drops every item; returns how many there were.
    pub fn clear(&mut self) -> usize {
        let n = self.live;
        self.stats.cleared += n as u64;
        self.live = 0;
        self.live_bytes = 0;
        self.reset_storage();
        n
    }

    fn reset_storage(&mut self) {
        self.index.release();
        self.log.reset();
        self.dead_bytes = 0;
    }

    /// Rewrites the live entries into fresh chunks, dropping dead ones, when
    /// replacements (addmode 2) have left more dead bytes than live.
    fn compact(&mut self) {
        let old = self.log.take();
        self.index.clear();
        let mut ok = true;
        old.for_each(|entry| {
            // SAFETY: entries of the old log stay valid until it is dropped.
            let e = unsafe { &*entry };
            if !e.is_live() {
                return true;
            }
            // SAFETY: as above.
            let (key, val) = unsafe { (e.key(), e.val()) };
            if !self.log.reserve(e.footprint()) {
                ok = false;
                return false;
            }
            // SAFETY: as above.
            let copy = self.log.push(key, val, e.hash, unsafe { e.seq() });
            self.index.insert(copy);
            true
        });
        if ok {
            self.dead_bytes = 0;
            drop(old);
        } else {
            // Out of memory half-way: keep the old log, forget the copy.
            drop(std::mem::replace(&mut self.log, old));
            self.index.clear();
            let index = &mut self.index;
            self.log.for_each(|entry| {
                // SAFETY: entries of the restored log.
                if unsafe { (*entry).is_live() } {
                    index.insert(entry);
                }
                true
            });
        }
    }
}
