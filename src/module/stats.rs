//! Each queue's counters in Kamailio's statistics framework (group
//! `mqueue`, names `<queue>_<counter>`, the counters of
//! [`crate::queue::counters::ALL`] marked `statistic`), read on demand
//! from the queue, so `stats.get_statistics` and Prometheus scrapes
//! (`xhttp_prom`) show them.

use std::ffi::{c_void, CString};

use super::registry::QueueDef;
use crate::host_entry;
use crate::kamailio::counters;
use crate::queue::counters::ALL;
use crate::sys;

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

/// Registers every queue's counters (mod_init, before the fork).
pub fn register(queues: &[QueueDef]) -> Result<(), String> {
    let group: &'static CString = Box::leak(Box::new(c"mqueue".to_owned()));
    for (idx, d) in queues.iter().enumerate() {
        for (kind, c) in ALL.iter().enumerate().filter(|(_, c)| c.statistic) {
            let name = [&d.name[..], b"_", c.name.as_bytes()].concat();
            counters::register(group, &name, c.doc, read_counter, idx * ALL.len() + kind)?;
        }
    }
    Ok(())
}
