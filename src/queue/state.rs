//! One queue's state: its items, key index, limits and counters. Callers hold
//! the queue lock (see [`super::Queue`]) around every method.
//!
//! A process may die at any instruction while it holds the lock (SIGKILL,
//! a crash elsewhere, its own SIGTERM handler). The chunk list ([`Log`]) is
//! then still the exact record of the items, as before or after the
//! operation (docs/reliability.md, "Crash consistency"); every mutation
//! runs between [`Core::begin`] and [`Core::end`], so the next
//! holder finds `busy` set and rebuilds the rest from the list
//! ([`Core::repair`]).

use super::index::{hash_key, Index};
use super::log::{Chunk, Entry, Log, CHUNK_PAYLOAD, MAX_ENTRY};
use super::{step, AddMode, RawAlloc};

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

/// A fetched item read in place: its entry, in a chunk pinned for it until
/// [`QueueState::release`]. It is out of the queue: adds, fetches and
/// clears in other processes leave its bytes alone.
pub struct Held {
    entry: *const Entry,
    chunk: *mut Chunk,
}

impl Held {
    /// The key and value.
    ///
    /// # Safety
    /// The `Held` has not been passed to [`QueueState::release`], and the
    /// queue it came from still exists.
    pub unsafe fn item(&self) -> (&[u8], &[u8]) {
        // SAFETY: the pinned chunk keeps the entry whole until release.
        unsafe { ((*self.entry).key(), (*self.entry).val()) }
    }
}

// SAFETY: the entry and chunk are in the queue's shared memory, valid in
// every thread and process until released; the pin is released once.
unsafe impl Send for Held {}

/// What [`QueueState::fetch_or_hold`] did.
pub enum Taken {
    Empty,
    /// A small item, shown to the caller to copy.
    Copied,
    /// A large item, left in place.
    Held(Held),
}

/// The counters a queue keeps since start (the rest of [`Stats`] is
/// derived); in the head, so that a never used queue shows its zeros and
/// its failures without a body.
#[derive(Clone, Copy, Default)]
struct Counters {
    added: u64,
    fetched: u64,
    evicted: u64,
    replaced: u64,
    rejected: u64,
    failed: u64,
    cleared: u64,
    max_size: usize,
}

/// What a queue holds once used: its items, index and counts. Allocated
/// at the first add ([`QueueState`]), so a defined queue that is never
/// used costs only its head.
struct Body<A: RawAlloc> {
    log: Log<A>,
    index: Index<A>,
    live: usize,
    live_bytes: usize,
    dead_bytes: usize,
    /// Set while a mutation runs: found set by a lock holder, it means the
    /// previous holder died half-way.
    busy: bool,
}

impl<A: RawAlloc> Body<A> {
    fn new() -> Self {
        Body {
            log: Log::new(A::default()),
            index: Index::new(A::default()),
            live: 0,
            live_bytes: 0,
            dead_bytes: 0,
            busy: false,
        }
    }

    /// True when the last holder of the lock died inside a mutation.
    fn interrupted(&self) -> bool {
        // SAFETY: a plain read of our own field; volatile because another
        // process may have written it.
        unsafe { std::ptr::read_volatile(&self.busy) }
    }

    /// See [`Core::reset_storage`].
    fn reset_storage(&mut self, spare: bool) {
        if spare {
            self.index.clear();
        } else {
            self.index.release();
        }
        self.log.reset(spare);
        self.dead_bytes = 0;
    }

    /// Shows up to `n` items, oldest first, without removing them.
    fn peek_seq(&self, n: usize, mut f: impl FnMut(&[u8], &[u8], u64)) {
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
}

// SAFETY: the body owns its chunks; every access goes through the queue
// lock, and the memory is valid in every process that maps it.
unsafe impl<A: RawAlloc> Send for Body<A> {}

/// A queue's head and body together, for a mutation under the lock.
struct Core<'a, A: RawAlloc> {
    mode: AddMode,
    limits: Limits,
    seed: u64,
    stats: &'a mut Counters,
    b: &'a mut Body<A>,
}

impl<A: RawAlloc> Core<'_, A> {
    /// A copy of the references, for calls that are not inlined: the
    /// caller's `Core` then stays in registers (its address does not
    /// escape, so the `step()` fences do not make it reload it).
    #[inline(always)]
    fn again(&mut self) -> Core<'_, A> {
        Core {
            mode: self.mode,
            limits: self.limits,
            seed: self.seed,
            stats: &mut *self.stats,
            b: &mut *self.b,
        }
    }

    /// Frees storage kept for reuse that no add used since the last call
    /// (a timer calls it every second), so an idle queue gives it back.
    /// Left to the next mutation when a process died inside one.
    pub fn age(&mut self) {
        if !self.b.interrupted() {
            self.b.log.age_spare();
            self.b.index.age();
        }
    }

    /// Repairs what a holder that died inside a mutation left, if one did;
    /// `gone` is told the sequence number of every item the repair drops
    /// (durable queues: the log must drop them too).
    pub fn settle(&mut self, gone: impl FnMut(u64)) {
        if self.b.interrupted() {
            self.repair_seq(gone);
        }
    }

    /// Starts a mutation: repairs what a holder that died left, then marks
    /// the state busy until [`Core::end`].
    #[inline(always)]
    fn begin(&mut self) {
        self.begin_seq(&mut |_| ());
    }

    /// As [`Core::begin`]; `gone` is told what the repair drops.
    #[inline(always)]
    fn begin_seq(&mut self, gone: &mut impl FnMut(u64)) {
        if self.b.interrupted() {
            self.again().repair_seq(gone);
        }
        // SAFETY: a plain write of our own field; volatile so that it is
        // in memory before the mutation's first store.
        unsafe { std::ptr::write_volatile(&mut self.b.busy, true) };
        step();
    }

    #[inline(always)]
    fn end(&mut self) {
        step();
        // SAFETY: as in begin.
        unsafe { std::ptr::write_volatile(&mut self.b.busy, false) };
    }

    /// Rebuilds everything but the chunk list from the list, after a
    /// process died in the middle of a mutation: the tail, the counts, the
    /// key index (an addmode 2 add that died between appending the new
    /// item and dropping the old one keeps the new one), and the limits.
    /// Returns the items queued.
    pub fn repair(&mut self) -> usize {
        self.repair_seq(|_| ())
    }

    /// As [`Core::repair`]; `gone` is told the sequence number of
    /// every item it drops.
    #[cold]
    #[inline(never)]
    pub fn repair_seq(&mut self, mut gone: impl FnMut(u64)) -> usize {
        self.b.log.rebuild_tail();
        self.b.index.clear();
        let (mut live, mut live_bytes, mut dead_bytes) = (0, 0, 0);
        let unique = self.mode.unique();
        let mode = self.mode;
        let index = &mut self.b.index;
        self.b.log.for_each(|entry| {
            // SAFETY: entries of the list from head are whole.
            let e = unsafe { &mut *entry };
            let size = e.size();
            if !e.is_live() {
                dead_bytes += size;
                return true;
            }
            if unique {
                // SAFETY: as above.
                let twin = index.find(e.hash, unsafe { e.key() });
                let drop_this = match twin {
                    Some(_) if mode == AddMode::KeepOldest => true,
                    Some(old) => {
                        index.remove(old);
                        // SAFETY: `old` is a live entry of the list.
                        gone(unsafe { (*old).seq() });
                        // SAFETY: as above.
                        unsafe { (*old).kill() };
                        // SAFETY: as above.
                        let old_size = unsafe { (*old).size() };
                        live -= 1;
                        live_bytes -= old_size;
                        dead_bytes += old_size;
                        false
                    }
                    None => false,
                };
                if drop_this {
                    // SAFETY: as above.
                    gone(unsafe { e.seq() });
                    e.kill();
                    dead_bytes += size;
                    return true;
                }
                if index.reserve_one() {
                    index.insert(entry);
                }
            }
            live += 1;
            live_bytes += size;
            true
        });
        self.b.live = live;
        self.b.live_bytes = live_bytes;
        self.b.dead_bytes = dead_bytes;
        if live == 0 {
            self.reset_storage(false);
        }
        self.enforce_limits(&mut gone);
        self.stats.max_size = self.stats.max_size.max(self.b.live);
        // SAFETY: as in end.
        unsafe { std::ptr::write_volatile(&mut self.b.busy, false) };
        self.b.live
    }

    /// True when an item this large is refused whatever the queue holds
    /// (`tag`: 8 for a durable queue's sequence number, else 0).
    fn too_large(&self, key: &[u8], val: &[u8], tag: usize) -> bool {
        Self::too_large_for(self.limits, key, val, tag)
    }

    /// As [`Core::too_large`], for a queue with these limits.
    fn too_large_for(limits: Limits, key: &[u8], val: &[u8], tag: usize) -> bool {
        let size = Entry::size_for(key.len(), val.len());
        key.len() > u32::MAX as usize / 2
            || val.len() > u32::MAX as usize / 2
            || size + tag > MAX_ENTRY
            || (limits.max_bytes > 0 && size > limits.max_bytes)
    }

    /// Refuses what an add of this tagged item would refuse before any
    /// change (too large, duplicate under addmode 1), counting it as the
    /// add would: `Some` outcome then, None when the add would go ahead.
    /// Call [`QueueState::settle`] first under the same lock hold.
    pub fn refuse(&mut self, key: &[u8], val: &[u8]) -> Option<AddOutcome> {
        if self.too_large(key, val, 8) {
            self.stats.failed += 1;
            return Some(AddOutcome::TooLarge);
        }
        if self.mode == AddMode::KeepOldest
            && self.b.index.find(hash_key(self.seed, key), key).is_some()
        {
            self.stats.rejected += 1;
            return Some(AddOutcome::Duplicate);
        }
        None
    }

    /// Adds an item tagged with a log sequence number (0: untagged); `gone`
    /// is told the sequence number of every item the add evicted or
    /// replaced.
    pub fn add_seq(
        &mut self,
        key: &[u8],
        val: &[u8],
        seq: u64,
        mut gone: impl FnMut(u64),
    ) -> AddOutcome {
        self.begin_seq(&mut gone);
        let outcome = self.add_inner(key, val, seq, &mut gone);
        self.end();
        outcome
    }

    #[inline(always)]
    fn add_inner(
        &mut self,
        key: &[u8],
        val: &[u8],
        seq: u64,
        gone: &mut impl FnMut(u64),
    ) -> AddOutcome {
        let size = Entry::size_for(key.len(), val.len());
        let tag = if seq != 0 { 8 } else { 0 };
        let footprint = size + tag;
        if self.too_large(key, val, tag) {
            self.stats.failed += 1;
            return AddOutcome::TooLarge;
        }
        let unique = self.mode.unique();
        let hash = if unique { hash_key(self.seed, key) } else { 0 };
        let existing = if unique {
            self.b.index.find(hash, key)
        } else {
            None
        };
        if existing.is_some() && self.mode == AddMode::KeepOldest {
            self.stats.rejected += 1;
            return AddOutcome::Duplicate;
        }
        if !self.b.log.reserve(footprint) || (unique && !self.b.index.reserve_one()) {
            self.stats.failed += 1;
            return AddOutcome::NoMemory;
        }
        // The new item goes in before the old one goes out: a process that
        // dies between the two leaves both, and the repair keeps the new.
        let entry = self.b.log.push(key, val, hash, seq);
        if let Some(old) = existing {
            // SAFETY: the index holds live entries of this queue's log.
            gone(unsafe { (*old).seq() });
            self.again().kill(old);
            self.stats.replaced += 1;
        }
        if unique {
            self.b.index.insert(entry);
        }
        self.b.live += 1;
        self.b.live_bytes += size;
        self.stats.added += 1;
        self.enforce_limits(gone);
        self.stats.max_size = self.stats.max_size.max(self.b.live);
        if self.b.dead_bytes > CHUNK_PAYLOAD && self.b.dead_bytes > self.b.live_bytes {
            self.again().compact();
        }
        AddOutcome::Added
    }

    /// True while the items exceed a configured bound.
    #[inline(always)]
    fn over_limits(&self) -> bool {
        let Limits {
            max_items,
            max_bytes,
        } = self.limits;
        (max_items > 0 && self.b.live > max_items)
            || (max_bytes > 0 && self.b.live_bytes > max_bytes)
    }

    /// Drops the oldest items while a bound is exceeded (one inline test
    /// when none is); `gone` is told the sequence number of each.
    #[inline(always)]
    fn enforce_limits(&mut self, gone: &mut impl FnMut(u64)) {
        if self.over_limits() {
            self.again().evict_cold(gone);
        }
    }

    #[cold]
    #[inline(never)]
    fn evict_cold(&mut self, gone: &mut impl FnMut(u64)) {
        while self.over_limits() {
            if !self.pop_with(|_, _, seq| gone(seq)) {
                break;
            }
            self.stats.evicted += 1;
        }
    }

    /// Marks a live entry dead (addmode 2 replacement): the store of
    /// `flags` takes it out of the queue.
    fn kill(&mut self, entry: *mut Entry) {
        self.b.index.remove(entry);
        // SAFETY: entry is a live entry of this queue's log.
        let size = unsafe {
            (*entry).kill();
            (*entry).size()
        };
        step();
        self.b.live -= 1;
        self.b.live_bytes -= size;
        self.b.dead_bytes += size;
    }

    /// Removes the oldest item and shows it to `f`; false when empty.
    fn pop_with(&mut self, f: impl FnOnce(&[u8], &[u8], u64)) -> bool {
        self.pop_entry(|_, e| {
            // SAFETY: the entry's chunk is not freed before the next front
            // call.
            unsafe { f(e.key(), e.val(), e.seq()) }
        })
    }

    /// Removes the oldest item and shows its entry to `f`, with the log
    /// (whose head chunk holds the entry); false when empty.
    #[inline(always)]
    fn pop_entry(&mut self, f: impl FnOnce(&mut Log<A>, &Entry)) -> bool {
        while self.b.live > 0 {
            let Some(entry) = self.b.log.front() else {
                break;
            };
            // SAFETY: front returns an entry of this log, valid until advance
            // and the next front call.
            let e = unsafe { &mut *entry };
            let size = e.size();
            if !e.is_live() {
                self.b.log.advance(e.footprint());
                self.b.dead_bytes -= size;
                continue;
            }
            if self.mode.unique() {
                self.b.index.remove(entry);
            }
            // The item leaves the queue with the advance: a process that
            // dies before `f` has copied it loses this one item only.
            self.b.log.advance(e.footprint());
            f(&mut self.b.log, e);
            self.b.live -= 1;
            self.b.live_bytes -= size;
            if self.b.live == 0 {
                self.b.reset_storage(true);
            }
            return true;
        }
        false
    }

    /// Takes the oldest item out: one whose key and value take up to
    /// `copy_max` bytes is shown to `copy`; a larger one stays where it is,
    /// pinned, until [`QueueState::release`].
    #[inline(always)]
    pub fn fetch_or_hold(&mut self, copy_max: usize, copy: impl FnOnce(&[u8], &[u8])) -> Taken {
        self.begin();
        let mut held = None;
        let found = self.pop_entry(|log, e| {
            if e.key_len as usize + e.val_len as usize <= copy_max {
                // SAFETY: the entry's chunk is not freed before the next
                // front call.
                unsafe { copy(e.key(), e.val()) };
            } else {
                // pop_entry calls us right after the advance: the entry is
                // in the head chunk, which `pin` pins.
                let chunk = log.pin();
                held = Some(Held {
                    entry: e as *const Entry,
                    chunk,
                });
            }
        });
        if found {
            self.stats.fetched += 1;
        }
        self.end();
        match (found, held) {
            (false, _) => Taken::Empty,
            (true, None) => Taken::Copied,
            (true, Some(h)) => Taken::Held(h),
        }
    }

    /// Ends a [`Held`] item: its chunk is reused or freed once no other
    /// process holds an item in it.
    pub fn release(&mut self, held: Held) {
        self.b.log.unpin(held.chunk);
    }

    /// Takes the oldest item out, handing its key and value to `f` (which
    /// copies them); false when the queue is empty.
    fn fetch_with(&mut self, f: impl FnOnce(&[u8], &[u8])) -> bool {
        self.fetch_seq(|k, v, _| f(k, v))
    }

    /// As [`QueueState::fetch_with`], with the item's sequence number.
    pub fn fetch_seq(&mut self, f: impl FnOnce(&[u8], &[u8], u64)) -> bool {
        self.begin();
        let found = self.pop_with(f);
        if found {
            self.stats.fetched += 1;
        }
        self.end();
        found
    }

    /// Shows the oldest item to `f` and removes it only if `f` returns
    /// true: None when empty, else what `f` returned.
    pub fn fetch_if(&mut self, f: impl FnOnce(&[u8], &[u8]) -> bool) -> Option<bool> {
        if self.b.interrupted() {
            self.repair();
        }
        let mut taken = None;
        let mut f = Some(f);
        self.b
            .peek_seq(1, |k, v, _| taken = f.take().map(|f| f(k, v)));
        if taken == Some(true) {
            self.fetch_with(|_, _| {});
        }
        taken
    }

    /// Drops every item; returns how many there were.
    pub fn clear(&mut self) -> usize {
        self.begin();
        let n = self.b.live;
        self.reset_storage(false);
        self.stats.cleared += n as u64;
        self.b.live = 0;
        self.b.live_bytes = 0;
        self.end();
        n
    }

    /// Empties the storage; a drain (`spare`) keeps the chunks as spares
    /// for the next refill, a clear or repair gives them back.
    fn reset_storage(&mut self, spare: bool) {
        self.b.reset_storage(spare);
    }

    /// Rewrites the live entries into fresh chunks, dropping dead ones, when
    /// replacements (addmode 2) have left more dead bytes than live. The
    /// copy is built aside while the queue keeps its list; one store
    /// publishes it (a process dying before leaves the queue as it was,
    /// after, the queue compacted with its index to rebuild).
    #[cold]
    #[inline(never)]
    fn compact(&mut self) {
        let mut fresh = Log::new(A::default());
        let mut ok = true;
        self.b.log.for_each(|entry| {
            // SAFETY: entries of the list stay valid while it is not changed.
            let e = unsafe { &*entry };
            if !e.is_live() {
                return true;
            }
            if !fresh.reserve(e.footprint()) {
                ok = false;
                return false;
            }
            // SAFETY: as above.
            let (key, val, seq) = unsafe { (e.key(), e.val(), e.seq()) };
            fresh.push(key, val, e.hash, seq);
            true
        });
        if !ok {
            // Out of memory half-way: the copy goes, the queue is unchanged.
            return;
        }
        self.b.log.replace_with(fresh);
        self.b.dead_bytes = 0;
        self.b.index.clear();
        if self.mode.unique() {
            let index = &mut self.b.index;
            self.b.log.for_each(|entry| {
                index.insert(entry);
                true
            });
        }
    }
}

#[cfg(test)]
impl<A: RawAlloc> Core<'_, A> {
    /// Panics unless everything derived agrees with the chunk list.
    pub fn check_consistent(&self) {
        assert!(!self.b.interrupted());
        self.b.log.check_derived();
        let (mut live, mut live_bytes, mut dead_bytes) = (0, 0, 0);
        let mut keys = std::collections::HashSet::new();
        self.b.log.for_each(|entry| {
            // SAFETY: entries of the list are whole.
            let e = unsafe { &*entry };
            if !e.is_live() {
                dead_bytes += e.size();
                return true;
            }
            live += 1;
            live_bytes += e.size();
            if self.mode.unique() {
                // SAFETY: as above.
                let key = unsafe { e.key() };
                assert!(keys.insert(key.to_vec()), "a key queued twice");
                assert_eq!(self.b.index.find(e.hash, key), Some(entry));
            }
            true
        });
        assert_eq!(
            (self.b.live, self.b.live_bytes, self.b.dead_bytes),
            (live, live_bytes, dead_bytes)
        );
        if self.mode.unique() {
            assert_eq!(self.b.index.count(), live);
        }
    }
}

/// A queue's head: what every defined queue costs in shared memory (its
/// settings, its counters, and a pointer to its [`Body`], null until the
/// first add). Callers hold the queue lock (see [`super::Queue`]) around
/// every method.
///
/// The body is published by one store of `body` after it is written in
/// full: a process that dies before that store leaks the block and leaves
/// the queue unused, never half-made (docs/reliability.md).
pub struct QueueState<A: RawAlloc> {
    mode: AddMode,
    limits: Limits,
    seed: u64,
    stats: Counters,
    body: *mut Body<A>,
}

// SAFETY: the head owns its body, which is Send; every access goes through
// the queue lock.
unsafe impl<A: RawAlloc> Send for QueueState<A> {}

impl<A: RawAlloc> QueueState<A> {
    pub fn new(mode: AddMode, limits: Limits, seed: u64) -> Self {
        const { assert!(std::mem::align_of::<Body<A>>() <= 8) };
        QueueState {
            mode,
            limits,
            seed,
            stats: Counters::default(),
            body: std::ptr::null_mut(),
        }
    }

    #[inline(always)]
    fn body(&self) -> Option<&Body<A>> {
        // SAFETY: a read under the lock, whose acquire orders it after the
        // store that published the body in another process; a non-null
        // body was written in full before and lives as long as the head.
        unsafe { self.body.as_ref() }
    }

    /// Head and body for a mutation; None before the first add.
    #[inline(always)]
    fn core(&mut self) -> Option<Core<'_, A>> {
        // SAFETY: as in `body`; `&mut self` means the lock is held.
        let b = unsafe { self.body.as_mut() }?;
        Some(Core {
            mode: self.mode,
            limits: self.limits,
            seed: self.seed,
            stats: &mut self.stats,
            b,
        })
    }

    /// As [`QueueState::core`], allocating the body at the first call;
    /// None without memory for it.
    fn core_or_new(&mut self) -> Option<Core<'_, A>> {
        if self.body().is_none() {
            let p = A::default().alloc_lasting(std::mem::size_of::<Body<A>>()) as *mut Body<A>;
            if p.is_null() {
                return None;
            }
            // SAFETY: a fresh block of the body's size, aligned to 8
            // (RawAlloc), enough for the body (asserted in `new`).
            unsafe { p.write(Body::new()) };
            step();
            // SAFETY: a volatile write of our own field: the one store
            // that publishes the body written above.
            unsafe { std::ptr::write_volatile(&mut self.body, p) };
            step();
        }
        self.core()
    }

    pub fn mode(&self) -> AddMode {
        self.mode
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub fn len(&self) -> usize {
        self.body().map_or(0, |b| b.live)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn stats(&self) -> Stats {
        let c = &self.stats;
        let mut s = Stats {
            added: c.added,
            fetched: c.fetched,
            evicted: c.evicted,
            replaced: c.replaced,
            rejected: c.rejected,
            failed: c.failed,
            cleared: c.cleared,
            max_size: c.max_size,
            ..Stats::default()
        };
        if let Some(b) = self.body() {
            s.size = b.live;
            s.item_bytes = b.live_bytes;
            s.shm_bytes = b.log.chunk_bytes() + b.index.bytes();
        }
        s
    }

    /// Frees storage kept for reuse that no add used since the last call
    /// (a timer calls it every second), so an idle queue gives it back.
    pub fn age(&mut self) {
        if let Some(mut c) = self.core() {
            c.age();
        }
    }

    /// Counts a call that failed outside the queue (a Redis call).
    pub fn count_failure(&mut self) {
        self.stats.failed += 1;
    }

    /// True when the last holder of the lock died inside a mutation.
    pub fn interrupted(&self) -> bool {
        self.body().is_some_and(Body::interrupted)
    }

    /// Repairs what a holder that died inside a mutation left, if one did;
    /// `gone` is told the sequence number of every item the repair drops.
    pub fn settle(&mut self, gone: impl FnMut(u64)) {
        if let Some(mut c) = self.core() {
            c.settle(gone);
        }
    }

    /// Rebuilds the state from the chunk list after a process died inside
    /// a mutation; returns the items queued.
    pub fn repair(&mut self) -> usize {
        self.repair_seq(|_| ())
    }

    /// As [`QueueState::repair`]; `gone` is told the sequence number of
    /// every item it drops.
    pub fn repair_seq(&mut self, gone: impl FnMut(u64)) -> usize {
        self.core().map_or(0, |mut c| c.repair_seq(gone))
    }

    /// Adds an item under the queue's addmode and limits.
    #[inline]
    pub fn add(&mut self, key: &[u8], val: &[u8]) -> AddOutcome {
        self.add_seq(key, val, 0, |_| ())
    }

    /// Bytes an item takes against `maxbytes`.
    pub fn item_size(key: &[u8], val: &[u8]) -> usize {
        Entry::size_for(key.len(), val.len())
    }

    /// Refuses what an add of this tagged item would refuse before any
    /// change (too large, duplicate under addmode 1), counting it as the
    /// add would: `Some` outcome then, None when the add would go ahead.
    /// Call [`QueueState::settle`] first under the same lock hold.
    pub fn refuse(&mut self, key: &[u8], val: &[u8]) -> Option<AddOutcome> {
        let limits = self.limits;
        match self.core() {
            Some(mut c) => c.refuse(key, val),
            None if Core::<A>::too_large_for(limits, key, val, 8) => {
                self.stats.failed += 1;
                Some(AddOutcome::TooLarge)
            }
            None => None,
        }
    }

    /// Adds an item tagged with a log sequence number (0: untagged); `gone`
    /// is told the sequence number of every item the add evicted or
    /// replaced.
    pub fn add_seq(
        &mut self,
        key: &[u8],
        val: &[u8],
        seq: u64,
        gone: impl FnMut(u64),
    ) -> AddOutcome {
        match self.core_or_new() {
            Some(mut c) => c.add_seq(key, val, seq, gone),
            None => {
                self.stats.failed += 1;
                AddOutcome::NoMemory
            }
        }
    }

    /// Takes the oldest item out: one whose key and value take up to
    /// `copy_max` bytes is shown to `copy`; a larger one stays where it is,
    /// pinned, until [`QueueState::release`].
    #[inline]
    pub fn fetch_or_hold(&mut self, copy_max: usize, copy: impl FnOnce(&[u8], &[u8])) -> Taken {
        match self.core() {
            Some(mut c) => c.fetch_or_hold(copy_max, copy),
            None => Taken::Empty,
        }
    }

    /// Ends a [`Held`] item: its chunk is reused or freed once no other
    /// process holds an item in it.
    pub fn release(&mut self, held: Held) {
        if let Some(mut c) = self.core() {
            c.release(held);
        }
    }

    /// Takes the oldest item out, handing its key and value to `f` (which
    /// copies them); false when the queue is empty.
    pub fn fetch_with(&mut self, f: impl FnOnce(&[u8], &[u8])) -> bool {
        self.fetch_seq(|k, v, _| f(k, v))
    }

    /// As [`QueueState::fetch_with`], with the item's sequence number.
    pub fn fetch_seq(&mut self, f: impl FnOnce(&[u8], &[u8], u64)) -> bool {
        self.core().is_some_and(|mut c| c.fetch_seq(f))
    }

    /// Shows the oldest item to `f` and removes it only if `f` returns
    /// true: None when empty, else what `f` returned.
    pub fn fetch_if(&mut self, f: impl FnOnce(&[u8], &[u8]) -> bool) -> Option<bool> {
        self.core().and_then(|mut c| c.fetch_if(f))
    }

    /// Shows up to `n` items, oldest first, without removing them.
    pub fn peek(&self, n: usize, mut f: impl FnMut(&[u8], &[u8])) {
        self.peek_seq(n, |k, v, _| f(k, v))
    }

    /// As [`QueueState::peek`], with each item's sequence number.
    pub fn peek_seq(&self, n: usize, f: impl FnMut(&[u8], &[u8], u64)) {
        if let Some(b) = self.body() {
            b.peek_seq(n, f);
        }
    }

    /// Drops every item; returns how many there were.
    pub fn clear(&mut self) -> usize {
        self.core().map_or(0, |mut c| c.clear())
    }
}

impl<A: RawAlloc> Drop for QueueState<A> {
    fn drop(&mut self) {
        if !self.body.is_null() {
            // SAFETY: the body came from `alloc_lasting` of this allocator
            // type (stateless: `Default`), is dropped once and not used
            // after.
            unsafe {
                std::ptr::drop_in_place(self.body);
                A::default().free_lasting(self.body as *mut u8);
            }
        }
    }
}

#[cfg(test)]
impl<A: RawAlloc> QueueState<A> {
    pub fn dead_bytes(&self) -> usize {
        self.body().map_or(0, |b| b.dead_bytes)
    }

    /// Panics unless everything derived agrees with the chunk list.
    pub fn check_consistent(&mut self) {
        if let Some(c) = self.core() {
            c.check_consistent();
        }
    }
}
