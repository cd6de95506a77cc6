//! The queue operations behind every interface (script, variables, KEMI,
//! RPC, `bind_mq`), with the C module's return codes.

use std::sync::atomic::{AtomicBool, Ordering};

use super::registry::{self, QueueDef};
use super::remote;
use crate::kamailio::process_local::ProcessLocal;
use crate::queue::AddOutcome;
use crate::{kerr, kinfo};

/// The item a process fetched last from each queue (`$mqk`/`$mqv`):
/// process-local, as each Kamailio process runs scripts in one thread.
#[derive(Default)]
pub struct Fetched {
    pub present: bool,
    pub key: Vec<u8>,
    pub val: Vec<u8>,
    /// Redis queues: the entry this process was delivered last and has
    /// not acknowledged yet (acknowledged by the next fetch or mq_pv_free).
    pub held: Option<String>,
}

impl Fetched {
    fn set(&mut self, k: &[u8], v: &[u8]) {
        self.key.clear();
        self.key.extend_from_slice(k);
        self.val.clear();
        self.val.extend_from_slice(v);
        self.present = true;
    }
}

/// The item each queue last gave this process (`$mqk`/`$mqv`).
static FETCHED: ProcessLocal<Vec<Fetched>> = ProcessLocal::new(Vec::new());
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
fn note_add_result(idx: usize, ok: bool, why: &str) {
    if ok && !ANY_STREAK.load(Ordering::Relaxed) {
        return;
    }
    note_streak(idx, ok, why);
}

/// Failure-streak bookkeeping: the first failure of a burst logs, the
/// first success after it logs how many failed.
#[cold]
#[inline(never)]
fn note_streak(idx: usize, ok: bool, why: &str) {
    FAIL_STREAK.with(|s| {
        if s.len() <= idx {
            s.resize(idx + 1, 0);
        }
        let streak = s[idx];
        if ok {
            if streak > 0 {
                kinfo!("mqueue {}: adds succeed again after {streak} failed", name_of(idx));
                s[idx] = 0;
            }
            ANY_STREAK.store(s.iter().any(|&c| c > 0), Ordering::Relaxed);
        } else {
            ANY_STREAK.store(true, Ordering::Relaxed);
            if streak == 0 {
                kerr!("mqueue {}: cannot add item: {why} (further failures in this burst are counted, not logged)", name_of(idx));
            }
            s[idx] = streak + 1;
        }
    });
}

/// Adds an item: 1 when queued (or, addmode 1, already queued), -1 on error.
pub fn add(idx: usize, key: &[u8], val: &[u8]) -> i32 {
    // Test builds only: proves every entry point survives a panic.
    #[cfg(feature = "panic-inject")]
    if key == b"__panic__" {
        panic!("injected panic (panic-inject test feature)");
    }
    let Some(d) = def(idx) else { return -1 };
    if let Some(st) = &d.stream {
        return match remote::with(|s| s.add(st, key, val)) {
            Ok(_) => {
                note_add_result(idx, true, "");
                1
            }
            Err(e) => {
                d.queue().lock().count_failure();
                note_add_result(idx, false, &format!("Redis did not acknowledge it: {e}"));
                -1
            }
        };
    }
    match d.queue().lock().add(key, val) {
        AddOutcome::Added | AddOutcome::Duplicate => {
            note_add_result(idx, true, "");
            1
        }
        AddOutcome::NoMemory => {
            note_add_result(idx, false, "no more shared memory");
            -1
        }
        AddOutcome::TooLarge => {
            note_add_result(idx, false, "item larger than the queue's maxbytes");
            -1
        }
    }
}

/// `mq_add` by queue name (KEMI, `bind_mq`, RPC).
pub fn add_by_name(name: &[u8], key: &[u8], val: &[u8]) -> i32 {
    match registry::lookup(name) {
        Some(idx) => add(idx, key, val),
        None => {
            kerr!("mqueue not found: {}", String::from_utf8_lossy(name));
            -1
        }
    }
}

fn with_fetched_slot<R>(idx: usize, f: impl FnOnce(&mut Fetched) -> R) -> R {
    FETCHED.with(|all| {
        if all.len() <= idx {
            all.resize_with(idx + 1, Fetched::default);
        }
        f(&mut all[idx])
    })
}

/// `mqueue.fetch`: shows the oldest item to `reply`, which answers whether
/// it could use it (an RPC reply that fits). Only then is the item removed,
/// and, as in the C module, it becomes this process's fetched item
/// (`$mqk`/`$mqv` after `jsonrpc_exec`); the previous one is dropped
/// first in any case. 1 taken, 0 kept, -2 empty.
pub fn fetch_for_reply(idx: usize, reply: impl FnOnce(&[u8], &[u8]) -> bool) -> i32 {
    let Some(d) = def(idx) else { return -1 };
    if d.stream.is_some() {
        return fetch_remote(idx, d, Some(reply));
    }
    with_fetched_slot(idx, |slot| {
        slot.present = false;
        let taken = d.queue().lock().fetch_if(|k, v| {
            let fits = reply(k, v);
            if fits {
                slot.set(k, v);
            }
            fits
        });
        slot.present = taken == Some(true);
        match taken {
            Some(true) => 1,
            Some(false) => 0,
            None => -2,
        }
    })
}

/// Takes the oldest item into this process's slot: 1, or -2 when empty.
/// The previous fetched item is dropped first, as in the C module.
pub fn fetch(idx: usize) -> i32 {
    let Some(d) = def(idx) else { return -1 };
    if d.stream.is_some() {
        return fetch_remote(idx, d, None::<fn(&[u8], &[u8]) -> bool>);
    }
    with_fetched_slot(idx, |slot| {
        slot.present = false;
        let found = d.queue().lock().fetch_with(|k, v| slot.set(k, v));
        slot.present = found;
        if found {
            1
        } else {
            -2
        }
    })
}

/// Redis queue: acknowledges the held entry and takes the next one. With
/// `reply` (RPC), an entry whose reply cannot be built is not held, so it
/// is delivered again after `claim_ms`: it stays queued. On an error the
/// held entry stays to be acknowledged by the next call.
fn fetch_remote(idx: usize, d: &QueueDef, reply: Option<impl FnOnce(&[u8], &[u8]) -> bool>) -> i32 {
    let Some(st) = &d.stream else { return -1 };
    with_fetched_slot(idx, |slot| {
        slot.present = false;
        match remote::with(|s| s.fetch(st, slot.held.as_deref())) {
            Ok(Some(e)) => {
                if reply.is_some_and(|r| !r(&e.key, &e.val)) {
                    slot.held = None;
                    return 0;
                }
                slot.set(&e.key, &e.val);
                slot.held = Some(e.id);
                1
            }
            Ok(None) => {
                slot.held = None;
                -2
            }
            Err(e) => {
                d.queue().lock().count_failure();
                remote::log_error(&d.name_lossy(), "fetch", &e);
                -1
            }
        }
    })
}

/// Drops this process's fetched item (a Redis entry is acknowledged).
pub fn pv_free(idx: usize) {
    with_fetched_slot(idx, |slot| {
        slot.present = false;
        let (Some(d), Some(held)) = (def(idx), slot.held.take()) else {
            return;
        };
        let Some(st) = &d.stream else { return };
        if let Err(e) = remote::with(|s| s.ack(st, &held)) {
            d.queue().lock().count_failure();
            remote::log_error(&d.name_lossy(), "acknowledge", &e);
            slot.held = Some(held);
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

/// Items in the queue (Redis: entries not yet acknowledged); None for an
/// unknown index or a Redis call that failed (logged).
pub fn size(idx: usize) -> Option<usize> {
    let d = def(idx)?;
    let Some(st) = &d.stream else {
        return Some(d.queue().lock().len());
    };
    remote::with(|s| s.len(st))
        .map_err(|e| {
            d.queue().lock().count_failure();
            remote::log_error(&d.name_lossy(), "size", &e);
        })
        .ok()
}

/// The counters of queue `idx` (statistics framework). For a Redis queue:
/// the counters every instance shares, and this instance's failed calls.
pub fn stats(idx: usize) -> Option<crate::queue::Stats> {
    let d = def(idx)?;
    let local = d.queue().lock().stats();
    let Some(st) = &d.stream else {
        return Some(local);
    };
    let f = remote::figures(&d.name_lossy(), st).ok()?;
    let get = |n: &str| {
        f.counters
            .iter()
            .find(|(k, _)| k == n)
            .map_or(0, |(_, v)| *v)
    };
    Some(crate::queue::Stats {
        size: f.length.max(0) as usize,
        added: get("added"),
        fetched: get("fetched"),
        evicted: get("evicted"),
        replaced: get("replaced"),
        rejected: get("rejected"),
        cleared: get("cleared"),
        failed: local.failed,
        ..Default::default()
    })
}

/// Up to `n` items from the oldest on, not removed (Redis: delivered or
/// not); Err with the reason when a Redis call failed.
pub fn peek(d: &QueueDef, n: usize) -> Result<Vec<crate::stream::Item>, String> {
    if let Some(st) = &d.stream {
        return remote::with(|s| s.peek(st, n));
    }
    // Copied out under the lock, replied after releasing it.
    let mut items = Vec::new();
    d.queue()
        .lock()
        .peek(n, |k, v| items.push((k.to_vec(), v.to_vec())));
    Ok(items)
}

/// Drops every item; how many there were.
pub fn clear(d: &QueueDef) -> Result<usize, String> {
    match &d.stream {
        Some(st) => remote::with(|s| s.clear(st)),
        None => Ok(d.queue().lock().clear()),
    }
}
