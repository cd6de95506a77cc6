//! The queue operations behind every interface (script, variables, KEMI,
//! RPC, `bind_mq`), written once per backend. They return typed outcomes;
//! the interfaces turn them into the C module's return codes.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::durable::{self, DurableRef};
use super::registry::{self, Backend, QueueDef};
use super::remote;
use crate::kamailio::process_local::ProcessLocal;
use crate::kamailio::shm::ShmAlloc;
use crate::log::{Durability, LogStats};
use crate::queue::counters::{self, Id, Keeper, Values};
use crate::queue::{self, AddMode, Limits};
use crate::stream::{self, StreamSpec};
use crate::{kerr, kinfo};

/// Why an operation failed. Plain values (the hot path returns them): a
/// Redis error's text is logged where it happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No queue has this name or index.
    UnknownQueue,
    /// Shared memory is exhausted.
    NoMemory,
    /// The item alone is larger than the queue's `maxbytes`.
    TooLarge,
    /// A Redis call failed (logged with Redis's error).
    Remote,
    /// A durable queue's log could not be written (full disk, I/O error;
    /// logged with the error).
    Disk,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Failure::UnknownQueue => "no such queue",
            Failure::NoMemory => "no more shared memory",
            Failure::TooLarge => "item larger than the queue's maxbytes",
            Failure::Remote => "a Redis call failed",
            Failure::Disk => "cannot write the durable log",
        })
    }
}

/// What an add did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Add {
    Queued,
    /// addmode 1: the key is queued already; nothing changed.
    Duplicate,
    Failed(Failure),
}

/// What a fetch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetch {
    /// The item is this process's fetched item now (`$mqk`/`$mqv`).
    Fetched,
    Empty,
    /// The caller could not use the item (an RPC reply it does not fit):
    /// it stays queued.
    Kept,
    Failed(Failure),
}

/// Fetched items whose key and value take more than this many bytes are
/// read in place, in shared memory, instead of copied into the process.
/// Below it a copy costs less than what reading in place costs: the pin
/// and its release, and a chunk that cannot be reused meanwhile; the copy
/// of 1 KB takes about as long as that bookkeeping.
pub const COPY_MAX: usize = 1024;

/// The item a process fetched last from each queue (`$mqk`/`$mqv`):
/// process-local, as each Kamailio process runs scripts in one thread.
#[derive(Default)]
struct FetchedItem {
    present: bool,
    key: Vec<u8>,
    val: Vec<u8>,
    /// Memory queues: a large item read in place (then `key` and `val`
    /// are unused), released by the next fetch or mq_pv_free.
    in_place: Option<queue::Held>,
    /// Redis queues: the entry this process was delivered last and has
    /// not acknowledged yet (acknowledged by the next fetch or mq_pv_free).
    held: Option<String>,
    /// Redis queues: the entries an `mqueue.fetch NAME COUNT` was delivered
    /// before `held`, acknowledged with it (so none before the reply is
    /// out: a crash meanwhile delivers them all again).
    held_batch: Vec<String>,
    /// Durable queues: the item this process holds leased (acknowledged
    /// by the next fetch or mq_pv_free).
    lease: Option<u64>,
    /// Durable queues: the items an `mqueue.fetch NAME COUNT` leased
    /// before `lease`, kept leased until the reply is out (ended by the
    /// next fetch that is not part of the same batch, or mq_pv_free).
    batch: Vec<u64>,
}

impl FetchedItem {
    fn set(&mut self, k: &[u8], v: &[u8]) {
        self.key.clear();
        self.key.extend_from_slice(k);
        self.val.clear();
        self.val.extend_from_slice(v);
        self.present = true;
    }
}

/// The item each queue last gave this process (`$mqk`/`$mqv`).
static FETCHED: ProcessLocal<Vec<FetchedItem>> = ProcessLocal::new(Vec::new());
/// Adds that failed in a row, per queue, in this process, so a burst logs
/// once.
static FAIL_STREAK: ProcessLocal<Vec<u64>> = ProcessLocal::new(Vec::new());
/// True while this process has a failure streak on some queue: successful
/// adds skip the bookkeeping otherwise. (A copy per process after fork.)
static ANY_STREAK: AtomicBool = AtomicBool::new(false);

fn def(idx: usize) -> Option<&'static QueueDef> {
    registry::frozen().and_then(|r| r.queues.get(idx))
}

fn name_of(idx: usize) -> String {
    registry::with(|r| {
        r.queues
            .get(idx)
            .map(QueueDef::name_lossy)
            .unwrap_or_default()
    })
}

#[inline(always)]
fn note_add_result(idx: usize, outcome: Add, why: impl FnOnce() -> String) {
    let failed = matches!(outcome, Add::Failed(_));
    if !failed && !ANY_STREAK.load(Ordering::Relaxed) {
        return;
    }
    note_streak(idx, failed.then(why).as_deref());
}

/// Failure-streak bookkeeping: the first failure of a burst logs, the
/// first success after it logs how many failed.
#[cold]
#[inline(never)]
fn note_streak(idx: usize, failure: Option<&str>) {
    FAIL_STREAK.with(|s| {
        if s.len() <= idx {
            s.resize(idx + 1, 0);
        }
        let streak = s[idx];
        match failure {
            None => {
                if streak > 0 {
                    kinfo!("mqueue {}: adds succeed again after {streak} failed", name_of(idx));
                    s[idx] = 0;
                }
                ANY_STREAK.store(s.iter().any(|&c| c > 0), Ordering::Relaxed);
            }
            Some(why) => {
                ANY_STREAK.store(true, Ordering::Relaxed);
                if streak == 0 {
                    kerr!("mqueue {}: cannot add item: {why} (further failures in this burst are counted, not logged)", name_of(idx));
                }
                s[idx] = streak + 1;
            }
        }
    });
}

/// A Redis call failed: counted in this instance's `failed`, logged (at
/// most every few seconds).
fn remote_failed(d: &QueueDef, what: &str, e: &str) -> Failure {
    d.queue().lock().count_failure();
    remote::log_error(&d.name_lossy(), what, e);
    Failure::Remote
}

/// Adds an item.
#[inline]
pub fn add(idx: usize, key: &[u8], val: &[u8]) -> Add {
    // Test builds only: proves every entry point survives a panic.
    #[cfg(feature = "panic-inject")]
    if key == b"__panic__" {
        panic!("injected panic (panic-inject test feature)");
    }
    let Some(d) = def(idx) else {
        return Add::Failed(Failure::UnknownQueue);
    };
    match &d.backend {
        Backend::Memory => {
            // The guard drops at the end of this statement, so a waiter
            // woken below finds the queue unlocked.
            let added = d.queue().lock().add(key, val);
            let outcome = match added {
                queue::AddOutcome::Added => {
                    d.bell().ring();
                    Add::Queued
                }
                queue::AddOutcome::Duplicate => Add::Duplicate,
                queue::AddOutcome::NoMemory => Add::Failed(Failure::NoMemory),
                queue::AddOutcome::TooLarge => Add::Failed(Failure::TooLarge),
            };
            note_add_result(idx, outcome, || match outcome {
                Add::Failed(f) => f.to_string(),
                _ => String::new(),
            });
            outcome
        }
        Backend::Durable(q) => {
            let result = durable::with_storage(idx, &d.name, |st| q.get().add(st, key, val));
            let outcome = match &result {
                Ok(o) => core_add(*o),
                Err(_) => Add::Failed(Failure::Disk),
            };
            if outcome == Add::Queued {
                // Rung after the lock is released (and, durable=sync,
                // after the sync), like a memory queue's add.
                d.bell().ring();
            }
            note_add_result(idx, outcome, || match &result {
                Err(e) => format!("cannot write the durable log: {e}"),
                Ok(_) => match outcome {
                    Add::Failed(f) => f.to_string(),
                    _ => String::new(),
                },
            });
            outcome
        }
        // Logged by the streak bookkeeping, not by remote_failed.
        Backend::Remote(st) => {
            let result = remote::with(|s| s.add(st, key, val));
            let outcome = match &result {
                Ok(stream::Added::Added) => Add::Queued,
                Ok(stream::Added::Kept) => Add::Duplicate,
                Err(_) => {
                    d.queue().lock().count_failure();
                    Add::Failed(Failure::Remote)
                }
            };
            note_add_result(idx, outcome, || match &result {
                Err(e) => format!("Redis did not acknowledge it: {e}"),
                Ok(_) => String::new(),
            });
            outcome
        }
    }
}

fn core_add(o: queue::AddOutcome) -> Add {
    match o {
        queue::AddOutcome::Added => Add::Queued,
        queue::AddOutcome::Duplicate => Add::Duplicate,
        queue::AddOutcome::NoMemory => Add::Failed(Failure::NoMemory),
        queue::AddOutcome::TooLarge => Add::Failed(Failure::TooLarge),
    }
}

/// Adds an item to the queue named `name`; an unknown name is logged.
pub fn add_by_name(name: &[u8], key: &[u8], val: &[u8]) -> Add {
    match registry::lookup(name) {
        Some(idx) => add(idx, key, val),
        None => {
            kerr!("mqueue not found: {}", crate::kamailio::log::shown(name));
            Add::Failed(Failure::UnknownQueue)
        }
    }
}

fn with_fetched_slot<R>(idx: usize, f: impl FnOnce(&mut FetchedItem) -> R) -> R {
    FETCHED.with(|all| {
        if all.len() <= idx {
            all.resize_with(idx + 1, FetchedItem::default);
        }
        f(&mut all[idx])
    })
}

/// Takes the oldest item into this process's slot. The previous fetched
/// item is dropped first, as in the C module (a Redis entry is
/// acknowledged).
#[inline]
pub fn fetch(idx: usize) -> Fetch {
    let Some(d) = def(idx) else {
        return Fetch::Failed(Failure::UnknownQueue);
    };
    match &d.backend {
        Backend::Memory => fetch_memory(idx, d, |q, slot| {
            match q.fetch_or_hold(COPY_MAX, |k, v| slot.set(k, v)) {
                queue::Taken::Empty => Fetch::Empty,
                queue::Taken::Copied => Fetch::Fetched,
                queue::Taken::Held(h) => {
                    slot.in_place = Some(h);
                    slot.present = true;
                    Fetch::Fetched
                }
            }
        }),
        Backend::Remote(st) => fetch_remote(idx, d, st, false, |_, _| true),
        Backend::Durable(q) => fetch_durable(idx, d, q, false, |_, _| true),
    }
}

/// Memory queue: drops this process's fetched item, then runs `take`
/// under the queue lock.
fn fetch_memory(
    idx: usize,
    d: &QueueDef,
    take: impl FnOnce(&mut queue::QueueState<ShmAlloc>, &mut FetchedItem) -> Fetch,
) -> Fetch {
    with_fetched_slot(idx, |slot| {
        slot.present = false;
        let mut q = d.queue().lock();
        if let Some(h) = slot.in_place.take() {
            q.release(h);
        }
        take(&mut q, slot)
    })
}

/// [`fetch`], waiting up to `timeout` for an item when the queue is empty.
/// A memory queue sleeps until an add wakes it (see [`queue::doorbell`]);
/// a Redis queue, see [`fetch_wait_remote`].
pub fn fetch_wait(idx: usize, timeout: Duration) -> Fetch {
    let Some(d) = def(idx) else {
        return fetch(idx);
    };
    if let Backend::Remote(st) = &d.backend {
        return fetch_wait_remote(idx, st, timeout);
    }
    let first = fetch(idx);
    if first != Fetch::Empty || timeout.is_zero() {
        return first;
    }
    let mut outcome = Fetch::Empty;
    // A durable queue's add rings the bell too.
    d.bell().wait_for(timeout, || match fetch(idx) {
        Fetch::Empty => None,
        other => {
            outcome = other;
            Some(())
        }
    });
    outcome
}

/// How long a wait on a Redis queue sleeps when it cannot block on Redis.
const REMOTE_PAUSE: Duration = Duration::from_millis(10);

/// Redis queue: between fetches, a blocking read that returns when an
/// entry is added (`XREAD BLOCK`, each one call within `redis_timeout`);
/// while the server is backing off (after a timeout or a refused
/// connection), a sleep until it ends. So a waiting consumer neither polls
/// nor spins, and fails at most once per back-off.
fn fetch_wait_remote(idx: usize, st: &StreamSpec, timeout: Duration) -> Fetch {
    let deadline = Instant::now() + timeout;
    loop {
        let r = fetch(idx);
        let again = match r {
            Fetch::Empty => true,
            Fetch::Failed(Failure::Remote) => remote::with(|s| s.backing_off(st)),
            _ => false,
        };
        let now = Instant::now();
        if !again || now >= deadline {
            return r;
        }
        if remote::with(|s| s.wait(st, deadline)).is_err() && !remote::with(|s| s.backing_off(st)) {
            std::thread::sleep(REMOTE_PAUSE.min(deadline - now));
        }
    }
}

/// `mqueue.fetch`: shows the oldest item to `reply`, which answers whether
/// it could use it (an RPC reply that fits). Only then is the item taken,
/// and, as in the C module, it becomes this process's fetched item
/// (`$mqk`/`$mqv` after `jsonrpc_exec`); the previous one is dropped
/// first in any case.
pub fn fetch_for_reply(idx: usize, reply: impl FnOnce(&[u8], &[u8]) -> bool) -> Fetch {
    fetch_in_batch(idx, false, reply)
}

/// [`fetch_for_reply`] for the items of one `mqueue.fetch NAME COUNT`:
/// with `more` (every item after the first), a durable queue keeps the
/// items leased before in the same reply leased, so that none is
/// acknowledged before the reply is out: a crash meanwhile delivers them
/// all again.
pub fn fetch_in_batch(idx: usize, more: bool, reply: impl FnOnce(&[u8], &[u8]) -> bool) -> Fetch {
    let Some(d) = def(idx) else {
        return Fetch::Failed(Failure::UnknownQueue);
    };
    match &d.backend {
        Backend::Memory => fetch_memory(idx, d, |q, slot| {
            let taken = q.fetch_if(|k, v| {
                let fits = reply(k, v);
                if fits {
                    slot.set(k, v);
                }
                fits
            });
            match taken {
                Some(true) => Fetch::Fetched,
                Some(false) => Fetch::Kept,
                None => Fetch::Empty,
            }
        }),
        Backend::Remote(st) => fetch_remote(idx, d, st, more, reply),
        Backend::Durable(q) => fetch_durable(idx, d, q, more, reply),
    }
}

/// Most items one `mqueue.fetch NAME COUNT` on a durable queue holds
/// leased (the lease table, shared by every process, holds 1,024).
const BATCH_LEASES_MAX: usize = 100;

/// Durable queue: acknowledges the leased items (unless `more`: then
/// they stay leased with the batch) and leases the next one, if `reply`
/// can use it (else it stays queued).
fn fetch_durable(
    idx: usize,
    d: &QueueDef,
    q: &DurableRef,
    more: bool,
    reply: impl FnOnce(&[u8], &[u8]) -> bool,
) -> Fetch {
    with_fetched_slot(idx, |slot| {
        if more && slot.batch.len() + 1 >= BATCH_LEASES_MAX {
            // The batch ends here: leases are shared by every process.
            return Fetch::Kept;
        }
        slot.present = false;
        let FetchedItem {
            key,
            val,
            lease,
            batch,
            ..
        } = slot;
        let r = durable::with_storage(idx, &d.name, |st| {
            if more {
                batch.extend(lease.take());
            } else {
                release_batch(q, st, batch);
            }
            q.get().fetch(st, lease, |k, v| {
                let fits = reply(k, v);
                if fits {
                    key.clear();
                    key.extend_from_slice(k);
                    val.clear();
                    val.extend_from_slice(v);
                }
                fits
            })
        });
        match r {
            Ok(Some(true)) => {
                slot.present = true;
                Fetch::Fetched
            }
            Ok(Some(false)) => Fetch::Kept,
            Ok(None) => Fetch::Empty,
            Err(e) => {
                kerr!("mqueue {}: cannot fetch: {e}", d.name_lossy());
                Fetch::Failed(Failure::Disk)
            }
        }
    })
}

/// Acknowledges the entries of a Redis batch (`mqueue.fetch NAME COUNT`),
/// oldest first; on an error the rest stay to be acknowledged later.
fn ack_batch(st: &StreamSpec, batch: &mut Vec<String>) -> Result<(), String> {
    while let Some(id) = batch.first() {
        remote::with(|s| s.ack(st, id))?;
        batch.remove(0);
    }
    Ok(())
}

/// Ends the leases of a batch (`mqueue.fetch NAME COUNT`).
fn release_batch(q: &DurableRef, st: &mut crate::log::FileStorage, batch: &mut Vec<u64>) {
    for seq in batch.drain(..) {
        q.get().ack(st, seq);
    }
}

/// Redis queue: acknowledges the held entry and takes the next one (with
/// `more`, an item of a batch: the held entry joins `held_batch`, still
/// unacknowledged). An entry `reply` cannot use is handed back at once (the
/// next fetch of any instance takes it first): it stays queued, in its
/// place. On an error the held entries stay to be acknowledged by the next
/// call.
fn fetch_remote(
    idx: usize,
    d: &QueueDef,
    st: &StreamSpec,
    more: bool,
    reply: impl FnOnce(&[u8], &[u8]) -> bool,
) -> Fetch {
    with_fetched_slot(idx, |slot| {
        slot.present = false;
        if more {
            if let Some(id) = slot.held.take() {
                slot.held_batch.push(id);
            }
        } else if let Err(e) = ack_batch(st, &mut slot.held_batch) {
            return Fetch::Failed(remote_failed(d, "acknowledge", &e));
        }
        match remote::with(|s| s.fetch(st, slot.held.as_deref())) {
            Ok(Some(e)) => {
                if !reply(&e.key, &e.val) {
                    slot.held = None;
                    if let Err(err) = remote::with(|s| s.hand_back(st, &e.id)) {
                        remote::log_error(
                            &d.name_lossy(),
                            "hand back (it is delivered again after claim_ms)",
                            &err,
                        );
                    }
                    return Fetch::Kept;
                }
                slot.set(&e.key, &e.val);
                slot.held = Some(e.id);
                Fetch::Fetched
            }
            Ok(None) => {
                slot.held = None;
                Fetch::Empty
            }
            Err(e) => Fetch::Failed(remote_failed(d, "fetch", &e)),
        }
    })
}

/// Drops this process's fetched item (a Redis entry is acknowledged).
pub fn pv_free(idx: usize) {
    with_fetched_slot(idx, |slot| {
        slot.present = false;
        let Some(d) = def(idx) else {
            return;
        };
        if let Some(h) = slot.in_place.take() {
            d.queue().lock().release(h);
        }
        if let Backend::Durable(q) = &d.backend {
            let FetchedItem { lease, batch, .. } = slot;
            batch.extend(lease.take());
            durable::with_storage(idx, &d.name, |st| release_batch(q, st, batch));
        }
        if let Backend::Remote(st) = &d.backend {
            slot.held_batch.extend(slot.held.take());
            if let Err(e) = ack_batch(st, &mut slot.held_batch) {
                remote_failed(d, "acknowledge", &e);
            }
        }
    });
}

/// Calls `f` with the fetched key and value, if any. The bytes stay in
/// place until the next fetch or `mq_pv_free` on this queue in this process,
/// so the host may keep pointers to them (`$mqk`, KEMI getters) until then.
pub fn fetched<R>(idx: usize, f: impl FnOnce(Option<(&[u8], &[u8])>) -> R) -> R {
    FETCHED.with(|all| {
        let item = all
            .get(idx)
            .filter(|s| s.present)
            .map(|s| match &s.in_place {
                // SAFETY: held items are released only by this process's next
                // fetch or mq_pv_free on the queue, which also clear `present`.
                Some(h) => unsafe { h.item() },
                None => (s.key.as_slice(), s.val.as_slice()),
            });
        f(item)
    })
}

/// Items in the queue (Redis: entries not yet acknowledged).
pub fn size(idx: usize) -> Result<usize, Failure> {
    let d = def(idx).ok_or(Failure::UnknownQueue)?;
    match &d.backend {
        Backend::Memory => Ok(d.queue().lock().len()),
        Backend::Durable(q) => Ok(q.get().lock().queue.len()),
        Backend::Remote(st) => {
            remote::with(|s| s.len(st)).map_err(|e| remote_failed(d, "size", &e))
        }
    }
}

/// Up to `n` items from the oldest on, not removed (Redis: delivered or
/// not); Err with the reason a Redis call failed.
pub fn peek(d: &QueueDef, n: usize) -> Result<Vec<stream::Item>, String> {
    match &d.backend {
        Backend::Memory => {
            // Copied out under the lock, replied after releasing it.
            let mut items = Vec::new();
            d.queue()
                .lock()
                .peek(n, |k, v| items.push((k.to_vec(), v.to_vec())));
            Ok(items)
        }
        Backend::Remote(st) => remote::with(|s| s.peek(st, n)).map_err(|e| format!("Redis: {e}")),
        Backend::Durable(q) => {
            let mut items = Vec::new();
            let idx = registry::lookup(&d.name).ok_or_else(|| "no such queue".to_string())?;
            durable::with_storage(idx, &d.name, |st| {
                q.get()
                    .peek(st, n, |k, v| items.push((k.to_vec(), v.to_vec())))
            });
            Ok(items)
        }
    }
}

/// Every second (a core timer): memory queues free the storage they keep
/// for reuse when no add used it since the last tick. A queue busy at the
/// moment is left for the next tick.
pub fn age_all() {
    let Some(reg) = registry::frozen() else {
        return;
    };
    for d in &reg.queues {
        if let (Backend::Memory, Some(mut q)) = (&d.backend, d.queue().try_lock()) {
            q.age();
        }
    }
}

/// Drops every item; how many there were. Err with the reason a Redis
/// call failed.
pub fn clear(d: &QueueDef) -> Result<usize, String> {
    match &d.backend {
        Backend::Memory => Ok(d.queue().lock().clear()),
        Backend::Remote(st) => remote::with(|s| s.clear(st)).map_err(|e| format!("Redis: {e}")),
        Backend::Durable(q) => {
            let idx = registry::lookup(&d.name).ok_or_else(|| "no such queue".to_string())?;
            durable::with_storage(idx, &d.name, |st| q.get().clear(st))
                .map_err(|e| format!("cannot write the durable log: {e}"))
        }
    }
}

/// What `mqueue.stats` shows of a queue besides its name.
pub enum Report<'a> {
    Memory {
        values: Values,
        limits: Limits,
        mode: AddMode,
    },
    /// A durable queue: as a memory queue, with its log's figures.
    Durable {
        values: Values,
        limits: Limits,
        mode: AddMode,
        durability: Durability,
        log: LogStats,
    },
    Remote {
        spec: &'a StreamSpec,
        /// This instance's failed calls.
        failed: u64,
        /// What Redis answered: the counters, and the stream's figures.
        shared: Result<(Values, stream::Figures), String>,
    },
}

/// How long a Redis queue's counters read for the statistics framework
/// are reused: a scrape reads every counter of every queue one by one, and
/// they all come from one Redis round trip.
const REMOTE_COUNTERS_TTL: Duration = Duration::from_secs(1);

/// When a Redis queue's counters were read for the statistics framework,
/// and what was read (None: Redis did not answer).
type CountersRead = (Instant, Option<Values>);

/// Per queue, in this process: the last [`CountersRead`].
static REMOTE_COUNTERS: ProcessLocal<Vec<Option<CountersRead>>> = ProcessLocal::new(Vec::new());

/// The counters of a queue, for the statistics framework. For a Redis
/// queue: the counters every instance shares, and this instance's failed
/// calls, read in one round trip and reused for a second by this process
/// (a scrape reads them one by one); None when Redis does not answer.
pub fn counters(idx: usize) -> Option<Values> {
    let d = def(idx)?;
    let shared = |d| match report(d) {
        Report::Memory { values, .. } | Report::Durable { values, .. } => Some(values),
        Report::Remote { shared, .. } => shared.ok().map(|(values, _)| values),
    };
    match &d.backend {
        Backend::Memory | Backend::Durable(_) => shared(d),
        Backend::Remote(_) => REMOTE_COUNTERS.with(|cache| {
            if cache.len() <= idx {
                cache.resize(idx + 1, None);
            }
            let now = Instant::now();
            match cache[idx] {
                Some((at, values)) if now.duration_since(at) < REMOTE_COUNTERS_TTL => values,
                _ => {
                    let values = shared(d);
                    cache[idx] = Some((now, values));
                    values
                }
            }
        }),
    }
}

/// The counters and figures of queue `d`.
pub fn report(d: &QueueDef) -> Report<'_> {
    if let Backend::Durable(q) = &d.backend {
        let q = q.get();
        let g = q.lock();
        let (stats, limits, mode, log) =
            (g.queue.stats(), g.queue.limits(), g.queue.mode(), g.stats());
        drop(g);
        let mut values = Values::from(&stats);
        values.set(Id::Redelivered, log.redelivered);
        values.set(Id::Leased, log.leased as u64);
        values.set(Id::Syncs, log.syncs);
        return Report::Durable {
            values,
            limits,
            mode,
            durability: q.durability(),
            log,
        };
    }
    let q = d.queue().lock();
    let (stats, limits, mode) = (q.stats(), q.limits(), q.mode());
    drop(q);
    let values = Values::from(&stats);
    match &d.backend {
        // (A durable queue was reported above.)
        Backend::Memory | Backend::Durable(_) => Report::Memory {
            values,
            limits,
            mode,
        },
        Backend::Remote(spec) => {
            let shared = remote::figures(&d.name_lossy(), spec).map(|f| {
                let mut shared = Values::default();
                for c in &counters::ALL {
                    let v = match c.keeper {
                        Keeper::Storage => f
                            .counters
                            .iter()
                            .find(|(k, _)| k == c.name)
                            .map_or(0, |(_, v)| *v),
                        Keeper::Length => f.length.max(0) as u64,
                        Keeper::Instance => values.get(c.id),
                        Keeper::SharedMemory | Keeper::Log => 0,
                    };
                    shared.set(c.id, v);
                }
                (shared, f)
            });
            Report::Remote {
                spec,
                failed: values.get(Id::Failed),
                shared,
            }
        }
    }
}
