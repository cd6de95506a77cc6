//! A durable queue's shared state: the queue core (the items waiting, in
//! memory) plus where the log is written, which segments hold live items,
//! the leases, and the group commit. Every method takes the process's
//! [`Storage`] (its own mapping of the files).
//!
//! Group commit: an add in `sync` mode waits until the log is synced past
//! its record. The first waiter syncs; adds that arrive meanwhile wait on a
//! futex word and share the next sync, so one sync serves a group.

use crate::queue::monotonic_ms;
use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::format::{
    self, encode_header, encode_record, record_len, Header, Kind, HEADER_LEN, SNAPSHOT,
};
use super::recover::Recovered;
use super::storage::Storage;
use crate::queue::futex;
use crate::queue::{
    AddMode, AddOutcome, FutexMutex, Limits, QueueState, RawAlloc, SharedAlloc, ShmSafe,
};

/// Most segments a queue's log may span (with 16 MiB segments, 16 GiB).
pub const MAX_SEGMENTS: usize = 1024;
/// Most items leased at once (one per process and queue at most).
pub const MAX_LEASES: usize = 1024;
/// Default segment size.
pub const SEGMENT_SIZE: usize = 16 << 20;

/// When an add reaches the disk (`durable=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// `sync`: before `mq_add` returns.
    Sync,
    /// `N`: within N milliseconds (a timer syncs).
    Within(u32),
}

#[derive(Clone, Copy)]
struct Segment {
    id: u64,
    salt: u64,
    /// Sequence number of the first add written to it.
    first_seq: u64,
    /// Items added in it and not gone yet (waiting or leased).
    live: u64,
    len: usize,
}

const NO_SEGMENT: Segment = Segment {
    id: 0,
    salt: 0,
    first_seq: 0,
    live: 0,
    len: 0,
};

/// The log's counters, for `mqueue.stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Items leased and not acknowledged yet.
    pub leased: usize,
    /// Items found leased and not acknowledged at start (delivered again).
    pub redelivered: u64,
    /// Syncs made.
    pub syncs: u64,
    /// Segment files in use and their bytes on disk.
    pub segments: usize,
    pub disk_bytes: u64,
    /// Writes or syncs that failed (full disk, I/O error).
    pub write_errors: u64,
}

pub struct LogState<A: RawAlloc> {
    pub queue: QueueState<A>,
    seg_size: usize,
    /// Ring of segments, oldest first; the last one is written.
    segs: [Segment; MAX_SEGMENTS],
    head: usize,
    count: usize,
    /// Write offset in the last segment.
    off: usize,
    /// The number of the next segment created.
    next_id: u64,
    next_seq: u64,
    leases: [u64; MAX_LEASES],
    nleases: usize,
    /// Bytes appended since start and bytes known synced.
    written: u64,
    synced: u64,
    pub(super) syncing: bool,
    /// When creating a segment last failed (monotonic ms) and why: adds
    /// fail fast for a while instead of trying again each time.
    roll_failed_at: u64,
    roll_errno: i32,
    stats: LogStats,
}

/// How long a failed segment creation (a full disk) is not retried,
/// unless a segment is freed meanwhile.
const ROLL_RETRY_MS: u64 = 50;

fn other(msg: &str) -> io::Error {
    io::Error::other(msg.to_string())
}

impl<A: RawAlloc> LogState<A> {
    fn seg(&self, i: usize) -> &Segment {
        &self.segs[(self.head + i) % MAX_SEGMENTS]
    }

    fn seg_mut(&mut self, i: usize) -> &mut Segment {
        &mut self.segs[(self.head + i) % MAX_SEGMENTS]
    }

    fn cur(&self) -> Segment {
        *self.seg(self.count.saturating_sub(1))
    }

    /// The segment holding the add of `seq`.
    fn seg_of(&self, seq: u64) -> Option<usize> {
        (0..self.count)
            .rev()
            .find(|&i| self.seg(i).first_seq <= seq)
    }

    fn push_segment(&mut self, s: Segment) {
        let at = (self.head + self.count) % MAX_SEGMENTS;
        self.segs[at] = s;
        self.count += 1;
        self.stats.segments = self.count;
        self.stats.disk_bytes += s.len as u64;
    }

    fn roll<S: Storage>(&mut self, st: &mut S, need: usize) -> io::Result<()> {
        // A log that holds nothing (every item acknowledged, none leased)
        // goes before the next segment is made: on a full disk, the space
        // of a drained queue's full segment is what the next one needs.
        if self.count > 0 && self.nleases == 0 && (0..self.count).all(|i| self.seg(i).live == 0) {
            while self.count > 0 {
                self.drop_oldest(st);
            }
        }
        if self.count >= MAX_SEGMENTS {
            return Err(other("the log has reached its most segments"));
        }
        if self.roll_failed_at != 0
            && monotonic_ms().saturating_sub(self.roll_failed_at) < ROLL_RETRY_MS
        {
            return Err(io::Error::from_raw_os_error(self.roll_errno));
        }
        let r = self.roll_now(st, need);
        match &r {
            Err(e) => {
                self.roll_failed_at = monotonic_ms().max(1);
                self.roll_errno = e.raw_os_error().unwrap_or(libc::EIO);
            }
            Ok(()) => self.roll_failed_at = 0,
        }
        r
    }

    fn roll_now<S: Storage>(&mut self, st: &mut S, need: usize) -> io::Result<()> {
        // The first segment is created by the first record: a queue never
        // used takes no space.
        let old = (self.count > 0).then(|| self.cur().id);
        let id = self.next_id;
        let len = (HEADER_LEN + need)
            .max(self.seg_size)
            .next_multiple_of(4096);
        st.create(id, len)?;
        let salt = format::new_salt();
        let hdr = encode_header(Header {
            flags: 0,
            segment: id,
            salt,
            pages: (len / 4096) as u32,
        });
        let done = st
            .write(id, 0..HEADER_LEN, &mut |b| b.copy_from_slice(&hdr))
            .and_then(|_| st.sync(id))
            .and_then(|_| match old {
                Some(old) if self.written > self.synced => st.sync(old),
                _ => Ok(()),
            });
        if let Err(e) = done {
            let _ = st.remove(id);
            return Err(e);
        }
        self.stats.syncs += 1;
        self.synced = self.written;
        self.next_id = id + 1;
        self.push_segment(Segment {
            id,
            salt,
            first_seq: self.next_seq,
            live: 0,
            len,
        });
        self.off = HEADER_LEN;
        Ok(())
    }

    fn append<S: Storage>(
        &mut self,
        st: &mut S,
        kind: Kind,
        seq: u64,
        key: &[u8],
        val: &[u8],
    ) -> io::Result<()> {
        let len = record_len(kind, key.len(), val.len());
        if self.count == 0 || self.off + len > self.cur().len {
            self.roll(st, len)?;
        }
        let Segment { id, salt, .. } = self.cur();
        st.write(id, self.off..self.off + len, &mut |b| {
            encode_record(b, salt, kind, seq, key, val)
        })?;
        self.off += len;
        self.written += len as u64;
        Ok(())
    }

    fn gone<S: Storage>(&mut self, st: &mut S, seq: u64) {
        if self.append(st, Kind::Ack, seq, &[], &[]).is_err() {
            self.stats.write_errors += 1;
        }
        if let Some(i) = self.seg_of(seq) {
            let s = self.seg_mut(i);
            s.live = s.live.saturating_sub(1);
        }
    }

    /// Frees the oldest segments once nothing in them is live.
    fn reclaim<S: Storage>(&mut self, st: &mut S) {
        while self.count > 1 && self.seg(0).live == 0 {
            self.drop_oldest(st);
        }
    }

    /// Removes the oldest segment (nothing in it is live).
    fn drop_oldest<S: Storage>(&mut self, st: &mut S) {
        let s = *self.seg(0);
        if st.remove(s.id).is_err() {
            self.stats.write_errors += 1;
        }
        self.head = (self.head + 1) % MAX_SEGMENTS;
        self.count -= 1;
        self.roll_failed_at = 0;
        self.stats.segments = self.count;
        self.stats.disk_bytes -= s.len as u64;
    }

    /// Repairs the queue if the last lock holder died inside one of its
    /// mutations (docs/reliability.md, "Crash consistency"); the items the
    /// repair drops (a replaced twin, an eviction over the limits) are
    /// written as gone, so the log agrees with the queue.
    fn settle<S: Storage>(&mut self, st: &mut S) {
        if !self.queue.interrupted() {
            return;
        }
        let mut gone = Vec::new();
        self.queue.settle(|g| gone.push(g));
        for g in gone.into_iter().filter(|&g| g != 0) {
            self.gone(st, g);
        }
        self.reclaim(st);
    }

    fn ack_locked<S: Storage>(&mut self, st: &mut S, seq: u64) {
        if let Some(i) = self.leases[..self.nleases].iter().position(|&l| l == seq) {
            self.leases[i] = self.leases[self.nleases - 1];
            self.nleases -= 1;
            self.stats.leased = self.nleases;
            self.gone(st, seq);
            self.reclaim(st);
        }
    }

    pub fn stats(&self) -> LogStats {
        self.stats
    }

    /// Starts on the segments recovery read, as they are (synced: the last
    /// run may have died before its sync): the next record goes to a new
    /// segment. The segments it did not need are removed.
    fn start_on<S: Storage>(&mut self, st: &mut S, rec: &Recovered) {
        self.head = 0;
        self.count = 0;
        self.stats.disk_bytes = 0;
        let mut replayed = rec.replayed.clone();
        replayed.sort_by_key(|r| r.id);
        for r in &replayed {
            // What the last run wrote and did not sync yet (it died
            // before its timer ran) reaches the disk now.
            match st.sync(r.id) {
                Ok(()) => self.stats.syncs += 1,
                Err(_) => self.stats.write_errors += 1,
            }
            self.push_segment(Segment {
                id: r.id,
                salt: 0,
                first_seq: r.first_seq,
                live: 0,
                len: r.len,
            });
        }
        for old in rec.superseded.iter() {
            if !replayed.iter().any(|r| r.id == *old) && st.remove(*old).is_err() {
                self.stats.write_errors += 1;
            }
        }
        self.off = if self.count == 0 { 0 } else { self.cur().len };
    }

    /// Writes every recovered item into a new snapshot segment and syncs
    /// it; on success the state is that one segment.
    fn write_snapshot<S: Storage>(&mut self, st: &mut S, rec: &Recovered) -> io::Result<()> {
        let id = self.next_id;
        let end_len = record_len(Kind::SnapshotEnd, 0, 0);
        let body: usize = rec
            .items()
            .map(|(_, k, v)| record_len(Kind::Add, k.len(), v.len()))
            .sum::<usize>()
            + end_len;
        let len = (HEADER_LEN + body)
            .max(self.seg_size)
            .next_multiple_of(4096);
        st.create(id, len)?;
        let salt = format::new_salt();
        let hdr = encode_header(Header {
            flags: SNAPSHOT,
            segment: id,
            salt,
            pages: (len / 4096) as u32,
        });
        let mut fill = |b: &mut [u8]| {
            b[..HEADER_LEN].copy_from_slice(&hdr);
            let mut at = HEADER_LEN;
            for (seq, k, v) in rec.items() {
                let n = record_len(Kind::Add, k.len(), v.len());
                encode_record(&mut b[at..at + n], salt, Kind::Add, seq, k, v);
                at += n;
            }
            encode_record(
                &mut b[at..at + end_len],
                salt,
                Kind::SnapshotEnd,
                0,
                &[],
                &[],
            );
        };
        let written = st
            .write(id, 0..HEADER_LEN + body, &mut fill)
            .and_then(|_| st.sync(id));
        if let Err(e) = written {
            let _ = st.remove(id);
            return Err(e);
        }
        self.stats.syncs += 1;
        self.next_id = id + 1;
        self.head = 0;
        self.count = 0;
        self.stats.disk_bytes = 0;
        self.push_segment(Segment {
            id,
            salt,
            // Every item recovered is in this segment.
            first_seq: 0,
            live: 0,
            len,
        });
        self.off = HEADER_LEN + body;
        self.written = self.off as u64;
        self.synced = self.written;
        Ok(())
    }
}

/// A durable queue as it lives in shared memory.
pub struct Durable<A: RawAlloc> {
    state: lock_api::Mutex<FutexMutex, LogState<A>>,
    /// Bumped after every sync; adds waiting for a sync sleep on it.
    commit: AtomicU32,
    durability: Durability,
}

// SAFETY: the items and index come from a `SharedAlloc`, the rest are
// plain integers and arrays; the state sits behind the futex mutex and the
// commit word is an atomic, both working across processes.
unsafe impl<A: SharedAlloc> ShmSafe for Durable<A> {}

pub type Guard<'a, A> = lock_api::MutexGuard<'a, FutexMutex, LogState<A>>;

impl<A: RawAlloc> Durable<A> {
    pub fn new(
        mode: AddMode,
        limits: Limits,
        seed: u64,
        durability: Durability,
        seg_size: usize,
    ) -> Self {
        Durable {
            state: lock_api::Mutex::new(LogState {
                queue: QueueState::new(mode, limits, seed),
                seg_size: seg_size.max(4096),
                segs: [NO_SEGMENT; MAX_SEGMENTS],
                head: 0,
                count: 0,
                off: 0,
                next_id: 1,
                next_seq: 1,
                leases: [0; MAX_LEASES],
                nleases: 0,
                written: 0,
                synced: 0,
                syncing: false,
                roll_failed_at: 0,
                roll_errno: 0,
                stats: LogStats::default(),
            }),
            commit: AtomicU32::new(0),
            durability,
        }
    }

    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Releases a lock a dead process held (tests).
    ///
    /// # Safety
    /// The holder is dead.
    #[cfg(test)]
    pub(super) unsafe fn force_unlock(&self) {
        if self.state.is_locked() {
            // SAFETY: the caller guarantees the holder is dead.
            unsafe { self.state.force_unlock() };
        }
    }

    /// The state, locked (sizes, statistics, peeks).
    pub fn lock(&self) -> Guard<'_, A> {
        self.state.lock()
    }

    /// Starts the log from what recovery found and loads the items. A log
    /// found whole, with no item leased, is used as it is (new records go
    /// to a new segment); otherwise it is copied first: every item into a new snapshot
    /// segment, synced, then the segments it replaces are removed and the
    /// damaged ones set aside (or, without room for the copy, the log is
    /// used as it is). Returns the names of the files set aside.
    pub fn open<S: Storage>(&self, st: &mut S, rec: Recovered) -> io::Result<Vec<String>> {
        let mut g = self.state.lock();
        let s = &mut *g;
        let mut notes = Vec::new();
        s.next_id = rec.last_segment + 1;
        // Items leased at a crash are waiting again from now on: a copy
        // records that (their lease records stay in the old segments).
        let copied = if rec.damaged.is_empty() && rec.redelivered == 0 && rec.superseded_leases == 0
        {
            None
        } else {
            Some(s.write_snapshot(st, &rec))
        };
        match copied {
            Some(Ok(())) => {
                for old in &rec.superseded {
                    if rec.damaged.contains(old) {
                        notes.push(format!(
                            "{} set aside as {}",
                            st.name(*old),
                            st.set_aside(*old)?
                        ));
                    } else {
                        st.remove(*old)?;
                    }
                }
            }
            Some(Err(e)) if rec.replayed.is_empty() => return Err(e),
            Some(Err(e)) => {
                // No room for a copy (a full disk): start on the segments
                // as they are; new records go to a new segment once there
                // is space.
                notes.push(format!(
                    "cannot write a snapshot of the log ({e}): starting on its {} segments as they are",
                    rec.replayed.len()
                ));
                s.start_on(st, &rec);
            }
            None => s.start_on(st, &rec),
        }
        s.next_seq = rec.next_seq;
        s.stats.redelivered = rec.redelivered as u64;
        let mut gone = Vec::new();
        for (seq, key, val) in rec.items() {
            match s.queue.add_seq(key, val, seq, |g| gone.push(g)) {
                AddOutcome::Added => {
                    if let Some(n) = s.seg_of(seq) {
                        s.seg_mut(n).live += 1;
                    }
                }
                AddOutcome::Duplicate | AddOutcome::TooLarge => gone.push(seq),
                AddOutcome::NoMemory => {
                    return Err(other("no shared memory left for the queued items"))
                }
            }
        }
        drop(rec);
        for seq in gone {
            s.gone(st, seq);
        }
        s.reclaim(st);
        Ok(notes)
    }

    /// Adds an item: written to the log, then queued; with
    /// [`Durability::Sync`], returns once the log is synced past it.
    /// An error (full disk, I/O) leaves the queue as it was.
    pub fn add<S: Storage>(&self, st: &mut S, key: &[u8], val: &[u8]) -> io::Result<AddOutcome> {
        let pos = {
            let mut g = self.state.lock();
            let s = &mut *g;
            s.settle(st);
            if let Some(refused) = s.queue.refuse(key, val) {
                return Ok(refused);
            }
            let seq = s.next_seq;
            if let Err(e) = s.append(st, Kind::Add, seq, key, val) {
                s.queue.count_failure();
                s.stats.write_errors += 1;
                return Err(e);
            }
            s.next_seq += 1;
            let cur = s.count - 1;
            s.seg_mut(cur).live += 1;
            let mut gone = Vec::new();
            let out = s.queue.add_seq(key, val, seq, |g| gone.push(g));
            if out != AddOutcome::Added {
                gone.push(seq);
            }
            for g in gone {
                s.gone(st, g);
            }
            s.reclaim(st);
            if out != AddOutcome::Added {
                return Ok(out);
            }
            s.written
        };
        if self.durability == Durability::Sync {
            self.commit(st, pos)?;
        }
        Ok(AddOutcome::Added)
    }

    /// Acknowledges `held` (the item this process fetched last), then
    /// shows the oldest item to `take`; if `take` returns true the item is
    /// leased to this process and `held` names it. None when empty. A log
    /// that cannot be written does not stop deliveries.
    pub fn fetch<S: Storage>(
        &self,
        st: &mut S,
        held: &mut Option<u64>,
        take: impl FnOnce(&[u8], &[u8]) -> bool,
    ) -> io::Result<Option<bool>> {
        let mut g = self.state.lock();
        let s = &mut *g;
        if let Some(h) = held.take() {
            s.ack_locked(st, h);
        }
        s.settle(st);
        let mut take = Some(take);
        let mut seen = None;
        s.queue.peek_seq(1, |k, v, seq| {
            seen = Some((seq, take.take().is_some_and(|t| t(k, v))))
        });
        let Some((seq, took)) = seen else {
            return Ok(None);
        };
        if !took {
            return Ok(Some(false));
        }
        if s.nleases == MAX_LEASES {
            return Err(other("too many items leased at once"));
        }
        // Without its lease record (a full disk) the item is still
        // delivered: after a crash it comes back as waiting, uncounted.
        // Consumers must go on when the disk is full: their
        // acknowledgements are what frees it.
        if s.append(st, Kind::Lease, seq, &[], &[]).is_err() {
            s.stats.write_errors += 1;
        }
        s.queue.fetch_seq(|_, _, _| ());
        s.leases[s.nleases] = seq;
        s.nleases += 1;
        s.stats.leased = s.nleases;
        *held = Some(seq);
        Ok(Some(true))
    }

    /// Shows up to `n` items from the oldest on, after the repair a fetch
    /// makes when a process died inside a change of the queue.
    pub fn peek<S: Storage>(&self, st: &mut S, n: usize, f: impl FnMut(&[u8], &[u8])) {
        let mut g = self.state.lock();
        g.settle(st);
        g.queue.peek(n, f);
    }

    /// Ends a lease: the item is gone for good.
    pub fn ack<S: Storage>(&self, st: &mut S, seq: u64) {
        self.state.lock().ack_locked(st, seq);
    }

    /// Drops every waiting item (leased ones stay leased); how many.
    pub fn clear<S: Storage>(&self, st: &mut S) -> io::Result<usize> {
        let mut g = self.state.lock();
        let s = &mut *g;
        let last = s.next_seq - 1;
        let kept: Vec<u8> = s.leases[..s.nleases]
            .iter()
            .flat_map(|l| l.to_le_bytes())
            .collect();
        s.append(st, Kind::Clear, last, &[], &kept)?;
        let n = s.queue.clear();
        for i in 0..s.count {
            s.seg_mut(i).live = 0;
        }
        for l in 0..s.nleases {
            if let Some(i) = s.seg_of(s.leases[l]) {
                s.seg_mut(i).live += 1;
            }
        }
        s.reclaim(st);
        Ok(n)
    }

    /// A clean stop: every lease ends, and the log is synced.
    pub fn release_all<S: Storage>(&self, st: &mut S) -> io::Result<()> {
        {
            let mut g = self.state.lock();
            while g.nleases > 0 {
                let seq = g.leases[0];
                g.ack_locked(st, seq);
            }
        }
        self.flush(st)
    }

    /// The clean stop of the instance, once every other process has
    /// exited: as [`Durable::release_all`], unless a process died holding
    /// the lock (still held after `wait`) or inside a change of the queue.
    /// Then the lock is taken over and only what was written is synced:
    /// the leases come back at the next start, as after a crash, rather
    /// than acknowledgements written on a state a dead process left half
    /// changed. Returns true when the lock was taken over.
    ///
    /// # Safety
    /// No other process or thread uses the queue any more.
    pub unsafe fn stop<S: Storage>(&self, st: &mut S, wait: Duration) -> io::Result<bool> {
        let deadline = Instant::now() + wait;
        let mut taken_over = false;
        let mut g = loop {
            if let Some(g) = self.state.try_lock() {
                break g;
            }
            if Instant::now() >= deadline {
                // SAFETY: the caller guarantees no one else uses the queue:
                // the holder is dead.
                unsafe { self.state.force_unlock() };
                taken_over = true;
                break self.state.lock();
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        // A sync a dead process started never ends: no one is left to wait.
        g.syncing = false;
        // Leases are not ended here: Kamailio stops the whole instance when
        // one process dies, and by now no process is left to tell a lease
        // of one that finished its item from one that crashed half-way
        // through. Every lease still held goes back for redelivery at the
        // next start (the item a consumer saw last, unless it fetched
        // again or called mq_pv_free): nothing a script did not finish is
        // lost.
        if g.count == 0 {
            // Never written: no file.
            return Ok(taken_over);
        }
        let (target, id) = (g.written, g.cur().id);
        drop(g);
        let r = st.sync(id);
        let mut g = self.state.lock();
        match r {
            Ok(()) => {
                g.synced = g.synced.max(target);
                g.stats.syncs += 1;
            }
            Err(_) => g.stats.write_errors += 1,
        }
        r.map(|()| taken_over)
    }

    /// Syncs what was written so far (the timer of `durable=N`).
    pub fn flush<S: Storage>(&self, st: &mut S) -> io::Result<()> {
        let pos = self.state.lock().written;
        self.commit(st, pos)
    }

    /// Returns once the log is synced up to `pos`, syncing itself unless a
    /// sync is running, in which case it waits and shares the next one.
    fn commit<S: Storage>(&self, st: &mut S, pos: u64) -> io::Result<()> {
        loop {
            let mut g = self.state.lock();
            if g.synced >= pos {
                return Ok(());
            }
            if g.syncing {
                let seen = self.commit.load(Ordering::Acquire);
                drop(g);
                futex::wait(&self.commit, seen, None);
                continue;
            }
            g.syncing = true;
            drop(g);
            // Let adds about to be written join this sync (group commit
            // grows with what arrives meanwhile: a yield is the cheapest
            // wait).
            // SAFETY: sched_yield has no preconditions.
            unsafe { libc::sched_yield() };
            let g = self.state.lock();
            let target = g.written;
            let id = g.cur().id;
            drop(g);
            let r = st.sync(id);
            let mut g = self.state.lock();
            g.syncing = false;
            match r {
                Ok(()) => {
                    g.synced = g.synced.max(target);
                    g.stats.syncs += 1;
                }
                Err(_) => g.stats.write_errors += 1,
            }
            self.commit.fetch_add(1, Ordering::Release);
            drop(g);
            futex::wake(&self.commit, i32::MAX as u32);
            r?;
        }
    }
}
