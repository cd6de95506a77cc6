//! RPC commands: the C module's `mqueue.get_size`, `mqueue.get_sizes`,
//! `mqueue.fetch` (same replies and faults), and for operators
//! `mqueue.stats`, `mqueue.peek`, `mqueue.clear`, `mqueue.add`, and for
//! Redis queues `mqueue.dead_list`, `mqueue.dead_requeue`.

use std::os::raw::c_void;

use super::ops::{self, Add, Fetch, Report};
use super::registry;
use crate::host_entry;
use crate::kamailio::guard::guard;
use crate::kamailio::rpc::{Rpc, RpcArray, RpcStruct};
use crate::log::Durability;
use crate::queue::counters::{Id, Keeper};
use crate::sys;

/// Runs a handler inside the panic guard; a panic answers fault 500.
fn serve(name: &str, rpc: &Rpc, f: impl FnOnce()) {
    let completed = guard(name, false, || {
        f();
        true
    });
    if !completed {
        rpc.fault(500, c"Internal error");
    }
}

/// Declares an RPC command: a [`host_entry!`] whose body gets the call's
/// context as `rpc`, inside [`serve`].
macro_rules! rpc_handler {
    ($name:ident, $label:literal, |$rpc:ident| $body:block) => {
        host_entry! {
            pub fn $name(a: *mut sys::rpc_t, c: *mut c_void), $label, () => {
                // SAFETY: forwarded from the core's handler call.
                let $rpc = unsafe { Rpc::new(a, c) };
                serve($label, &$rpc, || $body)
            }
        }
    };
}

/// The queue named by the first parameter, or a fault with the C module's
/// codes for the missing, empty and unknown cases.
fn queue_param(rpc: &Rpc, codes: (i32, i32, i32)) -> Option<(Vec<u8>, usize)> {
    let Some(name) = rpc.scan_str(false) else {
        rpc.fault(codes.0, c"No queue name");
        return None;
    };
    if name.is_empty() {
        rpc.fault(codes.1, c"Invalid queue name");
        return None;
    }
    match registry::lookup(&name) {
        Some(idx) => Some((name, idx)),
        None => {
            rpc.fault(codes.2, c"No such queue");
            None
        }
    }
}

rpc_handler!(mqueue_rpc_get_size, "mqueue.get_size", |rpc| {
    let Some((name, idx)) = queue_param(&rpc, (400, 400, 404)) else {
        return;
    };
    let Ok(size) = ops::size(idx) else {
        // A Redis call that failed (logged): not an empty queue.
        rpc.fault(500, c"Cannot read the size (see the log)");
        return;
    };
    match rpc.add_struct() {
        Some(st) => {
            st.str(c"name", &name);
            st.int(c"size", size as i64);
        }
        None => rpc.fault(500, c"Server error"),
    }
});

rpc_handler!(mqueue_rpc_get_sizes, "mqueue.get_sizes", |rpc| {
    let Some(reg) = registry::frozen() else {
        return;
    };
    // The C module lists the queues newest-defined first.
    for (idx, def) in reg.queues.iter().enumerate().rev() {
        let Some(st) = rpc.add_struct() else {
            rpc.fault(500, c"Server error");
            return;
        };
        st.str(c"name", &def.name);
        // -1: a Redis call that failed (logged), not an empty queue.
        st.int(c"size", ops::size(idx).map_or(-1, |n| n as i64));
    }
});

rpc_handler!(mqueue_rpc_fetch, "mqueue.fetch", |rpc| {
    let Some((_, idx)) = queue_param(&rpc, (500, 500, 500)) else {
        return;
    };
    // A count that is not a number answers as one below 1 (binrpc would
    // otherwise take it as absent).
    match rpc.scan_opt_int() {
        Ok(None) => fetch_one(&rpc, idx),
        Ok(Some(n)) if n >= 1 => fetch_many(&rpc, idx, n as usize),
        _ => rpc.fault(400, c"Invalid count"),
    }
});

/// `mqueue.fetch` without a count: one struct, the C module's reply.
fn fetch_one(rpc: &Rpc, idx: usize) {
    // Unlike the C module, an empty key or value is returned as an
    // empty string, and an item whose reply cannot be built (larger
    // than the transport's reply buffer) stays queued.
    let outcome = ops::fetch_for_reply(idx, |k, v| {
        rpc.add_struct()
            .is_some_and(|st| st.str(c"key", k) && st.str(c"val", v))
    });
    fetch_fault(rpc, &outcome);
}

/// Past the first item, a list stops before an item whose key and value
/// take more than this: a member that does not fit leaves half an entry in
/// a binrpc reply (ctl's structs hold 8 KB by default), which cannot be
/// taken back. Such an item comes first in the next call.
const LIST_ITEM_MAX: usize = 4096;

/// Past the first item, a list stops before its keys and values would
/// take more than this in all: a reply the transport cannot send (kamcmd
/// reads 128 KB, a datagram holds 64 KB) would lose every item in it, as
/// they are taken from the queue while the reply is built. Escaping
/// (JSON) can make the reply several times larger than the bytes.
const LIST_TOTAL_MAX: usize = 16 * 1024;

/// `mqueue.fetch` with a count: up to `n` items, a list of the structs a
/// fetch without count returns. It stops at the first item the reply
/// cannot take (that item stays queued); an empty queue answers as
/// without count.
fn fetch_many(rpc: &Rpc, idx: usize, n: usize) {
    let mut list = None;
    let mut total = 0usize;
    for taken in 0..n {
        let outcome = ops::fetch_in_batch(idx, taken > 0, |k, v| {
            let bytes = k.len() + v.len();
            if taken > 0 && (bytes > LIST_ITEM_MAX || total + bytes > LIST_TOTAL_MAX) {
                return false;
            }
            total += bytes;
            if list.is_none() {
                list = rpc.add_array();
            }
            list.as_ref().is_some_and(|l: &RpcArray| {
                l.add_struct()
                    .is_some_and(|st| st.str(c"key", k) && st.str(c"val", v))
            })
        });
        if outcome != Fetch::Fetched {
            if taken == 0 {
                fetch_fault(rpc, &outcome);
            }
            return;
        }
    }
}

/// The fault of a fetch that gave nothing.
fn fetch_fault(rpc: &Rpc, outcome: &Fetch) {
    match outcome {
        Fetch::Fetched => {}
        Fetch::Empty => rpc.fault(404, c"Empty queue"),
        Fetch::Kept => rpc.fault(500, c"Item too large for the RPC reply; it stays queued"),
        Fetch::Failed(_) => rpc.fault(500, c"Cannot fetch (see the log)"),
    }
}

rpc_handler!(mqueue_rpc_stats, "mqueue.stats", |rpc| {
    let Some(reg) = registry::frozen() else {
        return;
    };
    let only = rpc.scan_str(true);
    if let Some(name) = &only {
        if registry::lookup(name).is_none() {
            rpc.fault(404, c"No such queue");
            return;
        }
    }
    for def in &reg.queues {
        if only.as_ref().is_some_and(|n| *n != def.name) {
            continue;
        }
        if !stats_entry(&rpc, def) {
            return;
        }
    }
});

rpc_handler!(mqueue_rpc_peek, "mqueue.peek", |rpc| {
    let Some((_, idx)) = queue_param(&rpc, (400, 400, 404)) else {
        return;
    };
    let n = rpc.scan_int(true).unwrap_or(1).max(0) as usize;
    let Some(def) = registry::frozen().and_then(|r| r.queues.get(idx)) else {
        return;
    };
    let items = match ops::peek(def, n) {
        Ok(items) => items,
        Err(e) => {
            failure_fault(&rpc, &e);
            return;
        }
    };
    for (k, v) in items {
        let Some(st) = rpc.add_struct() else { return };
        st.str(c"key", &k);
        st.str(c"val", &v);
    }
});

rpc_handler!(mqueue_rpc_clear, "mqueue.clear", |rpc| {
    let Some((name, idx)) = queue_param(&rpc, (400, 400, 404)) else {
        return;
    };
    let Some(def) = registry::frozen().and_then(|r| r.queues.get(idx)) else {
        return;
    };
    let n = match ops::clear(def) {
        Ok(n) => n,
        Err(e) => {
            failure_fault(&rpc, &e);
            return;
        }
    };
    if let Some(st) = rpc.add_struct() {
        st.str(c"name", &name);
        st.int(c"cleared", n as i64);
    }
});

rpc_handler!(mqueue_rpc_add, "mqueue.add", |rpc| {
    let Some((_, idx)) = queue_param(&rpc, (400, 400, 404)) else {
        return;
    };
    let (Some(key), Some(val)) = (rpc.scan_text(), rpc.scan_text()) else {
        rpc.fault(400, c"Key and value required");
        return;
    };
    match ops::add(idx, &key, &val) {
        Add::Queued | Add::Duplicate => {
            rpc.add_int(1);
        }
        Add::Failed(_) => rpc.fault(500, c"Cannot add item"),
    }
});

/// Fault 500 with the reason of a failed call.
fn failure_fault(rpc: &Rpc, e: &str) {
    let text = std::ffi::CString::new(e).unwrap_or_else(|_| c"Call failed".to_owned());
    rpc.fault(500, &text);
}

/// One queue's entry in `mqueue.stats`. A memory queue: its limits and
/// counters. A Redis queue: the Redis-side figures (length, pending
/// entries, consumers of the group, the counters every instance shares)
/// and this instance's failed calls. False when the reply failed.
fn stats_entry(rpc: &Rpc, def: &registry::QueueDef) -> bool {
    let report = ops::report(def);
    let Some(st) = rpc.add_struct() else {
        rpc.fault(500, c"Server error");
        return false;
    };
    st.str(c"name", &def.name);
    match report {
        Report::Memory {
            values,
            limits,
            mode,
        } => {
            st.int(c"size", values.get(Id::Size) as i64);
            st.int(c"limit", limits.max_items as i64);
            st.int(c"maxbytes", limits.max_bytes as i64);
            st.int(c"addmode", mode.as_int() as i64);
            st.int(c"dbmode", def.dbmode.as_int() as i64);
            for (c, v) in values.iter() {
                if !matches!(c.id, Id::Size | Id::Redelivered | Id::Dead) && c.keeper != Keeper::Log
                {
                    counter(&st, c.name, v);
                }
            }
        }
        Report::Durable {
            values,
            limits,
            mode,
            durability,
            log,
        } => {
            st.str(c"backend", b"durable");
            let d = match durability {
                Durability::Sync => "sync".to_string(),
                Durability::Within(n) => n.to_string(),
            };
            st.str(c"durable", d.as_bytes());
            st.int(c"size", values.get(Id::Size) as i64);
            st.int(c"limit", limits.max_items as i64);
            st.int(c"maxbytes", limits.max_bytes as i64);
            st.int(c"addmode", mode.as_int() as i64);
            for (c, v) in values.iter() {
                if !matches!(c.id, Id::Size | Id::Dead) {
                    counter(&st, c.name, v);
                }
            }
            st.int(c"segments", log.segments as i64);
            st.int(c"disk_bytes", log.disk_bytes as i64);
            st.int(c"write_errors", log.write_errors as i64);
        }
        Report::Remote {
            spec,
            failed,
            shared,
        } => {
            st.str(c"backend", b"redis");
            st.str(c"url", spec.shown_url.as_bytes());
            st.str(c"group", spec.group.as_bytes());
            st.int(c"limit", spec.max_items as i64);
            st.int(c"addmode", spec.mode.as_int() as i64);
            st.int(c"failed", failed as i64);
            match shared {
                Ok((values, f)) => {
                    st.int(c"size", f.length);
                    st.int(c"length", f.length);
                    st.int(c"pending", f.pending);
                    st.int(c"consumers", f.consumers);
                    for (c, v) in values.iter() {
                        if c.keeper == Keeper::Storage {
                            counter(&st, c.name, v);
                        }
                    }
                }
                Err(e) => {
                    st.str(c"error", e.as_bytes());
                }
            }
        }
    }
    true
}

fn counter(st: &RpcStruct<'_>, name: &str, v: u64) {
    if let Ok(name) = std::ffi::CString::new(name) {
        st.int(&name, v as i64);
    }
}

/// Most dead letters one `mqueue.dead_list` or `mqueue.dead_requeue` handles.
const DEAD_MAX: usize = 1000;

/// The Redis queue named by the first parameter and the count in the
/// second (default 1, at most `DEAD_MAX`); a fault for a memory queue or a
/// count below 1.
fn dead_params(rpc: &Rpc) -> Option<(&'static crate::stream::StreamSpec, usize)> {
    let (_, idx) = queue_param(rpc, (400, 400, 404))?;
    // As mqueue.fetch's count: text that is not a number is refused.
    let n = match rpc.scan_opt_int() {
        Ok(None) => 1,
        // Capped: one script call moves them all.
        Ok(Some(n)) if n >= 1 => (n as usize).min(DEAD_MAX),
        _ => {
            rpc.fault(400, c"Invalid count");
            return None;
        }
    };
    let def = registry::frozen().and_then(|r| r.queues.get(idx))?;
    let st = def.remote();
    if st.is_none() {
        rpc.fault(400, c"Not a queue on Redis");
    }
    st.map(|st| (st, n))
}

rpc_handler!(mqueue_rpc_dead_list, "mqueue.dead_list", |rpc| {
    let Some((st, n)) = dead_params(&rpc) else {
        return;
    };
    match super::remote::with(|s| s.dead_list(st, n)) {
        Ok(items) => {
            for (k, v) in items {
                let Some(item) = rpc.add_struct() else { return };
                item.str(c"key", &k);
                item.str(c"val", &v);
            }
        }
        Err(e) => failure_fault(&rpc, &e),
    }
});

rpc_handler!(mqueue_rpc_dead_requeue, "mqueue.dead_requeue", |rpc| {
    let Some((st, n)) = dead_params(&rpc) else {
        return;
    };
    match super::remote::with(|s| s.dead_requeue(st, n)) {
        Ok(n) => {
            if let Some(item) = rpc.add_struct() {
                item.int(c"requeued", n as i64);
            }
        }
        Err(e) => failure_fault(&rpc, &e),
    }
});
