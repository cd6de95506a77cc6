//! The queue operations behind every interface (script, variables, KEMI,
//! RPC, `bind_mq`), with the C module's return codes.

use std::sync::atomic::{AtomicBool, Ordering};

use super::registry::{self, QueueDef};
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
    let outcome = def(idx).map(|d| d.queue().lock().add(key, val));
    match outcome {
        Some(AddOutcome::Added) | Some(AddOutcome::Duplicate) => {
            note_add_result(idx, true, "");
            1
        }
        Some(AddOutcome::NoMemory) => {
            note_add_result(idx, false, "no more shared memory");
            -1
        }
        Some(AddOutcome::TooLarge) => {
            note_add_result(idx, false, "item larger than the queue's maxbytes");
            -1
        }
        None => -1,
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
    with_fetched_slot(idx, |slot| {
        slot.present = false;
        let taken = d.queue().lock().fetch_if(|k, v| {
            let fits = reply(k, v);
            if fits {
                slot.key.clear();
                slot.key.extend_from_slice(k);
                slot.val.clear();
                slot.val.extend_from_slice(v);
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
    with_fetched_slot(idx, |slot| {
        slot.present = false;
        let found = d.queue().lock().fetch_with(|k, v| {
            slot.key.clear();
            slot.key.extend_from_slice(k);
            slot.val.clear();
            slot.val.extend_from_slice(v);
        });
        slot.present = found;
        if found {
            1
        } else {
            -2
        }
    })
}

/// Drops this process's fetched item.
pub fn pv_free(idx: usize) {
    with_fetched_slot(idx, |slot| slot.present = false);
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

/// Items in the queue; None for an unknown index.
pub fn size(idx: usize) -> Option<usize> {
    def(idx).map(|d| d.queue().lock().len())
}

/// The counters of queue `idx` (statistics framework).
pub fn stats(idx: usize) -> Option<crate::queue::Stats> {
    def(idx).map(|d| d.queue().lock().stats())
}
