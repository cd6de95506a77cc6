//! Each queue's counters in Kamailio's statistics framework (group
//! `mqueue`, names `<queue>_<counter>`, the counters of
//! [`crate::queue::counters::ALL`] marked `statistic`), read on demand
//! from the queue, so `stats.get_statistics` and Prometheus scrapes
//! (`xhttp_prom`) show them.

use std::ffi::{c_void, CString};

use super::registry::QueueDef;
use crate::kamailio::counters::{self, MAX_COUNTERS};
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

/// `stats_queues` by default: 14 counters of 10 queues keep `kamcmd
/// stats.get_statistics all` within ctl's binrpc reply (32 KB by default;
/// about 85 queues' counters fill it, and the groups after `mqueue` were
/// then cut off the reply).
const DEFAULT_EXPORTED: usize = 10;

/// `stats_queues`: how many queues (the first defined) get counters in the
/// statistics framework. Kamailio's counter table holds at most 32,767
/// counters in all and each costs shared memory in every process, so
/// thousands of queues cannot all have them; every queue is in
/// `mqueue.stats` whatever this is.
pub static EXPORTED_QUEUES: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(DEFAULT_EXPORTED);

/// The statistics of a queue, by name, with their callback parameter.
fn statistics(idx: usize, d: &QueueDef) -> impl Iterator<Item = (Vec<u8>, usize)> + '_ {
    ALL.iter()
        .enumerate()
        .filter(|(_, c)| c.statistic)
        .map(move |(kind, c)| {
            (
                [&d.name[..], b"_", c.name.as_bytes()].concat(),
                idx * ALL.len() + kind,
            )
        })
}

/// Registers the counters of the first `stats_queues` queues (mod_init,
/// before the fork). Never refuses the start: no more queues than the
/// host's table has room for are exported (and if it refuses one anyway,
/// the queues from there on are left out); either way a warning names the
/// queues that are not exported.
///
/// Kamailio keeps a group's counters in a list sorted by name and walks it
/// at each registration: registered in descending order, each counter goes
/// in at the front, so the cost is linear in the number of counters (in
/// increasing order it is quadratic: 10,000 queues took 4.7 s to start
/// with `stats_queues=1000`, 11.6 s with 2000).
pub fn register(queues: &[QueueDef]) {
    let group: &'static CString = Box::leak(Box::new(c"mqueue".to_owned()));
    let limit = EXPORTED_QUEUES
        .load(std::sync::atomic::Ordering::Relaxed)
        .min(queues.len());
    let per_queue = ALL.iter().filter(|c| c.statistic).count();
    let mut exported = 0;
    let mut refused = None;
    // The first queue alone, to learn from its ids how full the table is.
    let mut room = limit;
    if limit > 0 {
        let mut last_id = 0;
        for (name, param) in sorted_desc(statistics(0, &queues[0]).collect()) {
            match counters::register(group, &name, doc_of(param), read_counter, param) {
                Ok(id) => last_id = last_id.max(id),
                Err(e) => {
                    refused = Some(e);
                    break;
                }
            }
        }
        if refused.is_none() {
            exported = 1;
            room = 1 + MAX_COUNTERS.saturating_sub(last_id + 1) / per_queue;
        }
    }
    let target = limit.min(room);
    if refused.is_none() && target > 1 {
        let rest: Vec<_> = queues[1..target]
            .iter()
            .enumerate()
            .flat_map(|(i, d)| statistics(i + 1, d))
            .collect();
        let mut done = vec![0usize; target];
        for (name, param) in sorted_desc(rest) {
            if let Err(e) = counters::register(group, &name, doc_of(param), read_counter, param) {
                refused = Some(e);
                break;
            }
            done[param / ALL.len()] += 1;
        }
        // The queues whose every counter went in, from the first on.
        exported = done[1..].iter().take_while(|&&n| n == per_queue).count() + 1;
    }
    if exported == queues.len() {
        return;
    }
    let why = match refused {
        Some(e) => format!("Kamailio refused more counters ({e})"),
        None if target < limit => format!(
            "Kamailio's counter table ({MAX_COUNTERS} counters in all) has room for the \
             {per_queue} counters of {target} queues, stats_queues asks {limit}"
        ),
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

/// The doc string of a statistic, from its callback parameter.
fn doc_of(param: usize) -> &'static str {
    ALL[param % ALL.len()].doc
}

/// By name, largest first (the order of C's strcmp: bytes, unsigned).
fn sorted_desc(mut v: Vec<(Vec<u8>, usize)>) -> Vec<(Vec<u8>, usize)> {
    v.sort_unstable_by(|a, b| b.0.cmp(&a.0));
    v
}
