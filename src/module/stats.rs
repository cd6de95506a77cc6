//! Each queue's counters in Kamailio's statistics framework (group
//! `mqueue`, names `<queue>_<counter>`), read on demand from the queue, so
//! `stats.get_statistics` and Prometheus scrapes (`xhttp_prom`) show them.

use std::ffi::{c_void, CString};

use super::registry::QueueDef;
use crate::kamailio::guard::guard;
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

unsafe extern "C" fn read_counter(
    _h: sys::counter_handle_t,
    param: *mut c_void,
) -> sys::counter_val_t {
    guard("statistics", 0, || {
        let p = param as usize;
        let (idx, kind) = (p / KINDS, p % KINDS);
        super::api::stats(idx).map_or(0, |s| COUNTERS[kind].1(&s) as sys::counter_val_t)
    })
}

/// Registers every queue's counters (mod_init, before the fork).
pub fn register(queues: &[QueueDef]) -> Result<(), String> {
    let group = CString::new("mqueue").expect("no NUL");
    let group: &'static CString = Box::leak(Box::new(group));
    for (idx, d) in queues.iter().enumerate() {
        for (kind, (suffix, _, doc)) in COUNTERS.iter().enumerate() {
            let mut name = d.name.clone();
            name.extend_from_slice(b"_");
            name.extend_from_slice(suffix.as_bytes());
            let Ok(name) = CString::new(name) else {
                return Err(format!("queue name {} holds a NUL byte", d.name_lossy()));
            };
            // The core keeps the name and doc pointers: they live forever.
            let name: &'static CString = Box::leak(Box::new(name));
            let doc: &'static CString = Box::leak(Box::new(CString::new(*doc).expect("no NUL")));
            let mut h = sys::counter_handle_t::default();
            // SAFETY: strings are NUL-terminated and never freed; the
            // callback and its integer parameter stay valid for the life
            // of the process (and its children, forked later).
            let rc = unsafe {
                sys::counter_register(
                    &mut h,
                    group.as_ptr(),
                    name.as_ptr(),
                    sys::CNT_F_NO_RESET as _, // the values are the queue's own
                    Some(read_counter),
                    (idx * KINDS + kind) as *mut c_void,
                    doc.as_ptr(),
                    0,
                )
            };
            if rc < 0 {
                return Err(format!(
                    "cannot register statistic mqueue:{}",
                    name.to_string_lossy()
                ));
            }
        }
    }
    Ok(())
}
