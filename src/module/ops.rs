//! The queue operations behind every interface (script, variables, KEMI,
//! RPC, `bind_mq`), written once per backend. They return typed outcomes;
//! the interfaces turn them into the C module's return codes.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

use super::durable::{self, DurableRef};
use super::registry::{self, Backend, QueueDef};
use super::remote;
use crate::kamailio::process_local::ProcessLocal;
use crate::log::{Durability, LogStats};
use crate::queue::counters::{self, Id, Keeper, Values};
use crate::queue::{self, AddMode, Limits};
use crate::stream::{self, StreamSpec};
use crate::{kerr, kinfo};

/// Why an operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No queue has this name or index.
    UnknownQueue,
    /// Shared memory is exhausted.
    NoMemory,
    /// The item alone is larger than the queue's `maxbytes`.
    TooLarge,
    /// A Redis call failed (the reason).
    Remote(String),
    /// A durable queue's log could not be written (full disk, I/O error).
    Disk(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::UnknownQueue => f.write_str("no such queue"),
            Failure::NoMemory => f.write_str("no more shared memory"),
            Failure::TooLarge => f.write_str("item larger than the queue's maxbytes"),
            Failure::Remote(e) => write!(f, "Redis: {e}"),
            Failure::Disk(e) => write!(f, "cannot write the durable log: {e}"),
        }
    }
}

/// What an add did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Add {
    Queued,
    /// addmode 1: the key is queued already; nothing changed.
    Duplicate,
    Failed(Failure),
}

/// What a fetch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetch {
    /// The item is this process's fetched item now (`$mqk`/`$mqv`).
    Fetched,
    Empty,
    /// The caller could not use the item (an RPC reply it does not fit):
    /// it stays queued.
    Kept,
    Failed(Failure),
}

/// The item a process fetched last from each queue (`$mqk`/`$mqv`):
/// process-local, as each Kamailio process runs scripts in one thread.
#[derive(Default)]
struct FetchedItem {
    present: bool,
    key: Vec<u8>,
    val: Vec<u8>,
    /// Redis queues: the entry this process was delivered last and has
    /// not acknowledged yet (acknowledged by the next fetch or mq_pv_free).
    held: Option<String>,
    /// Durable queues: the item this process holds leased (acknowledged
    /// by the next fetch or mq_pv_free).
    lease: Option<u64>,
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
fn note_add_result(idx: usize, outcome: &Add) {
    let failure = match outcome {
        Add::Failed(f) => Some(f),
        _ => None,
    };
    if failure.is_none() && !ANY_STREAK.load(Ordering::Relaxed) {
        return;
    }
    note_streak(idx, failure);
}

/// Failure-streak bookkeeping: the first failure of a burst logs, the
/// first success after it logs how many failed.
#[cold]
#[inline(never)]
fn note_streak(idx: usize, failure: Option<&Failure>) {
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
/// most every few seconds), and handed back as a [`Failure`].
fn remote_failed(d: &QueueDef, what: &str, e: String) -> Failure {
    d.queue().lock().count_failure();
    remote::log_error(&d.name_lossy(), what, &e);
    Failure::Remote(e)
}

/// Adds an item.
pub fn add(idx: usize, key: &[u8], val: &[u8]) -> Add {
    // Test builds only: proves every entry point survives a panic.
    #[cfg(feature = "panic-inject")]
    if key == b"__panic__" {
        panic!("injected panic (panic-inject test feature)");
    }
    let Some(d) = def(idx) else {
        return Add::Failed(Failure::UnknownQueue);
    };
    let outcome = match &d.backend {
        Backend::Memory => core_add(d.queue().lock().add(key, val)),
        Backend::Durable(q) => {
            match durable::with_storage(idx, &d.name, |st| q.get().add(st, key, val)) {
                Ok(o) => core_add(o),
                Err(e) => Add::Failed(Failure::Disk(e.to_string())),
            }
        }
        // Logged by the streak bookkeeping below, not by remote_failed.
        Backend::Remote(st) => match remote::with(|s| s.add(st, key, val)) {
            Ok(stream::Added::Added) => Add::Queued,
            Ok(stream::Added::Kept) => Add::Duplicate,
            Err(e) => {
                d.queue().lock().count_failure();
                Add::Failed(Failure::Remote(e))
            }
        },
    };
    note_add_result(idx, &outcome);
    outcome
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
            kerr!("mqueue not found: {}", String::from_utf8_lossy(name));
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
pub fn fetch(idx: usize) -> Fetch {
    let Some(d) = def(idx) else {
        return Fetch::Failed(Failure::UnknownQueue);
    };
    match &d.backend {
        Backend::Memory => with_fetched_slot(idx, |slot| {
            slot.present = false;
            if d.queue().lock().fetch_with(|k, v| slot.set(k, v)) {
                Fetch::Fetched
            } else {
                Fetch::Empty
            }
        }),
        Backend::Remote(st) => fetch_remote(idx, d, st, |_, _| true),
        Backend::Durable(q) => fetch_durable(idx, d, q, |_, _| true),
    }
}

/// `mqueue.fetch`: shows the oldest item to `reply`, which answers whether
/// it could use it (an RPC reply that fits). Only then is the item taken,
/// and, as in the C module, it becomes this process's fetched item
/// (`$mqk`/`$mqv` after `jsonrpc_exec`); the previous one is dropped
/// first in any case.
pub fn fetch_for_reply(idx: usize, reply: impl FnOnce(&[u8], &[u8]) -> bool) -> Fetch {
    let Some(d) = def(idx) else {
        return Fetch::Failed(Failure::UnknownQueue);
    };
    match &d.backend {
        Backend::Memory => with_fetched_slot(idx, |slot| {
            slot.present = false;
            let taken = d.queue().lock().fetch_if(|k, v| {
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
        Backend::Remote(st) => fetch_remote(idx, d, st, reply),
        Backend::Durable(q) => fetch_durable(idx, d, q, reply),
    }
}

/// Durable queue: acknowledges the leased item and leases the next one,
/// if `reply` can use it (else it stays queued).
fn fetch_durable(
    idx: usize,
    d: &QueueDef,
    q: &DurableRef,
    reply: impl FnOnce(&[u8], &[u8]) -> bool,
) -> Fetch {
    with_fetched_slot(idx, |slot| {
        slot.present = false;
        let FetchedItem {
            key, val, lease, ..
        } = slot;
        let r = durable::with_storage(idx, &d.name, |st| {
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
            Err(e) => Fetch::Failed(Failure::Disk(e.to_string())),
        }
    })
}

/// Redis queue: acknowledges the held entry and takes the next one. An
/// entry `reply` cannot use is not held, so it is delivered again after
/// `claim_ms`: it stays queued. On an error the held entry stays to be
/// acknowledged by the next call.
fn fetch_remote(
    idx: usize,
    d: &QueueDef,
    st: &StreamSpec,
    reply: impl FnOnce(&[u8], &[u8]) -> bool,
) -> Fetch {
    with_fetched_slot(idx, |slot| {
        slot.present = false;
        match remote::with(|s| s.fetch(st, slot.held.as_deref())) {
            Ok(Some(e)) => {
                if !reply(&e.key, &e.val) {
                    slot.held = None;
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
            Err(e) => Fetch::Failed(remote_failed(d, "fetch", e)),
        }
    })
}

/// Drops this process's fetched item (a Redis entry is acknowledged).
pub fn pv_free(idx: usize) {
    with_fetched_slot(idx, |slot| {
        slot.present = false;
        if let (Some(d), Some(seq)) = (def(idx), slot.lease.take()) {
            if let Backend::Durable(q) = &d.backend {
                durable::with_storage(idx, &d.name, |st| q.get().ack(st, seq));
            }
        }
        let (Some(d), Some(held)) = (def(idx), slot.held.take()) else {
            return;
        };
        match &d.backend {
            Backend::Memory | Backend::Durable(_) => {}
            Backend::Remote(st) => {
                if let Err(e) = remote::with(|s| s.ack(st, &held)) {
                    remote_failed(d, "acknowledge", e);
                    slot.held = Some(held);
                }
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
            .map(|s| (s.key.as_slice(), s.val.as_slice()));
        f(item)
    })
}

/// Items in the queue (Redis: entries not yet acknowledged).
pub fn size(idx: usize) -> Result<usize, Failure> {
    let d = def(idx).ok_or(Failure::UnknownQueue)?;
    match &d.backend {
        Backend::Memory => Ok(d.queue().lock().len()),
        Backend::Durable(q) => Ok(q.get().lock().queue.len()),
        Backend::Remote(st) => remote::with(|s| s.len(st)).map_err(|e| remote_failed(d, "size", e)),
    }
}

/// Up to `n` items from the oldest on, not removed (Redis: delivered or
/// not).
pub fn peek(d: &QueueDef, n: usize) -> Result<Vec<stream::Item>, Failure> {
    match &d.backend {
        Backend::Memory => {
            // Copied out under the lock, replied after releasing it.
            let mut items = Vec::new();
            d.queue()
                .lock()
                .peek(n, |k, v| items.push((k.to_vec(), v.to_vec())));
            Ok(items)
        }
        Backend::Remote(st) => remote::with(|s| s.peek(st, n)).map_err(Failure::Remote),
        Backend::Durable(q) => {
            let mut items = Vec::new();
            q.get()
                .lock()
                .queue
                .peek(n, |k, v| items.push((k.to_vec(), v.to_vec())));
            Ok(items)
        }
    }
}

/// Drops every item; how many there were.
pub fn clear(d: &QueueDef) -> Result<usize, Failure> {
    match &d.backend {
        Backend::Memory => Ok(d.queue().lock().clear()),
        Backend::Remote(st) => remote::with(|s| s.clear(st)).map_err(Failure::Remote),
        Backend::Durable(q) => {
            let idx = registry::lookup(&d.name).ok_or(Failure::UnknownQueue)?;
            durable::with_storage(idx, &d.name, |st| q.get().clear(st))
                .map_err(|e| Failure::Disk(e.to_string()))
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

/// The counters of a queue, for the statistics framework. For a Redis
/// queue: the counters every instance shares, and this instance's failed
/// calls; None when Redis does not answer.
pub fn counters(idx: usize) -> Option<Values> {
    let d = def(idx)?;
    match report(d) {
        Report::Memory { values, .. } | Report::Durable { values, .. } => Some(values),
        Report::Remote { shared, .. } => shared.ok().map(|(values, _)| values),
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
            let shared = remote::with(|s| s.figures(spec)).map(|f| {
                let mut shared = Values::default();
                for c in &counters::ALL {
                    let v = match c.keeper {
                        Keeper::Storage => f
                            .counters
                            .iter()
                            .find(|(k, _)| k == c.name)
                            .map_or(0, |(_, v)| *v as u64),
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
