//! Each queue's counters in Kamailio's statistics framework (group
//! `mqueue`, names `<queue>_<counter>`), read on demand from the queue, so
//! `stats.get_statistics` and Prometheus scrapes (`xhttp_prom`) show them.

use std::ffi::{c_void, CString};

use super::registry::QueueDef;
use crate::host_entry;
use crate::kamailio::counters;
use crate::queue::Stats;
use crate::sys;

type Read = fn(&Stats) -> u64;

/// Counter suffix, what it reads, and its description.
const COUNTERS: [(&str, Read, &str); 10] = [
    ("size", |s| s.size as u64, "items queued now"),
    ("added", |s| s.added, "items added since start"),
    ("fetched", |s| s.fetched, "items fetched since start"),
    (
        "evicted",
        |s| s.evicted,
        "oldest items dropped by the size or byte limit",
    ),
    (
        "replaced",
        |s| s.replaced,
        "items replaced by a newer one with the same key (addmode 2)",
    ),
    (
        "rejected",
        |s| s.rejected,
        "adds refused: key already queued (addmode 1)",
    ),
    (
        "failed",
        |s| s.failed,
        "adds that failed (no shared memory, too large)",
    ),
    ("cleared", |s| s.cleared, "items dropped by mqueue.clear"),
    (
        "max_size",
        |s| s.max_size as u64,
        "highest number of items queued",
    ),
    (
        "shm_bytes",
        |s| s.shm_bytes as u64,
        "shared memory held for the items",
    ),
];

const KINDS: usize = COUNTERS.len();

host_entry! {
    fn read_counter(
        _h: sys::counter_handle_t,
        param: *mut c_void,
    ) -> sys::counter_val_t, "statistics", 0 => {
        let p = param as usize;
        let (idx, kind) = (p / KINDS, p % KINDS);
        super::api::stats(idx).map_or(0, |s| COUNTERS[kind].1(&s) as sys::counter_val_t)
    }
}

/// Registers every queue's counters (mod_init, before the fork).
pub fn register(queues: &[QueueDef]) -> Result<(), String> {
    let group: &'static CString = Box::leak(Box::new(CString::new("mqueue").expect("no NUL")));
    for (idx, d) in queues.iter().enumerate() {
        for (kind, (suffix, _, doc)) in COUNTERS.iter().enumerate() {
            let name = [&d.name[..], b"_", suffix.as_bytes()].concat();
            counters::register(group, &name, doc, read_counter, idx * KINDS + kind)?;
        }
    }
    Ok(())
}
