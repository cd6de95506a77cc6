//! Each queue's counters in Kamailio's statistics framework (group
//! `mqueue`, names `<queue>_<counter>`, the counters of
//! [`crate::queue::counters::ALL`] marked `statistic`), read on demand
//! from the queue, so `stats.get_statistics` and Prometheus scrapes
//! (`xhttp_prom`) show them.

use std::ffi::{c_void, CString};

use super::registry::QueueDef;
use crate::kamailio::counters;
use crate::queue::counters::ALL;
use crate::sys;
use crate::{host_entry, kwarn};

host_entry! {
    fn read_counter(
        _h: sys::counter_handle_t,
        param: *mut c_void,
    ) -> sys::counter_val_t, "statistics", 0 => {
        let p = param as usize;
        let (idx, kind) = (p / ALL.len(), p % ALL.len());
        super::ops::counters(idx).map_or(0, |v| v.get(ALL[kind].id) as sys::counter_val_t)
    }
}

/// `stats_queues`: how many queues (the first defined) get counters in the
/// statistics framework. Kamailio's counter table holds at most 32,767
/// counters in all and each costs shared memory in every process, so
/// thousands of queues cannot all have them; every queue is in
/// `mqueue.stats` whatever this is.
pub static EXPORTED_QUEUES: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(100);

/// Registers the counters of the first `stats_queues` queues (mod_init,
/// before the fork). Never refuses the start: when the host's table is
/// full, the queues from there on are left out; either way a warning
/// names the queues that are not exported.
pub fn register(queues: &[QueueDef]) {
    let group: &'static CString = Box::leak(Box::new(c"mqueue".to_owned()));
    let limit = EXPORTED_QUEUES.load(std::sync::atomic::Ordering::Relaxed);
    let mut exported = 0;
    let mut refused = None;
    'queues: for (idx, d) in queues.iter().enumerate().take(limit) {
        for (kind, c) in ALL.iter().enumerate().filter(|(_, c)| c.statistic) {
            let name = [&d.name[..], b"_", c.name.as_bytes()].concat();
            if let Err(e) =
                counters::register(group, &name, c.doc, read_counter, idx * ALL.len() + kind)
            {
                refused = Some(e);
                break 'queues;
            }
        }
        exported = idx + 1;
    }
    if exported == queues.len() {
        return;
    }
    let why = match refused {
        Some(e) => format!("Kamailio refused more counters ({e})"),
        None => format!("stats_queues is {limit}"),
    };
    kwarn!(
        "statistics: {why}: counters of the first {exported} of {} queues are in the statistics \
         framework; the {} queues from {} to {} are in mqueue.stats only",
        queues.len(),
        queues.len() - exported,
        queues[exported].name_lossy(),
        queues[queues.len() - 1].name_lossy()
    );
}
