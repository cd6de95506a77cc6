//! RPC commands: the C module's `mqueue.get_size`, `mqueue.get_sizes`,
//! `mqueue.fetch` (same replies and faults), and for operators
//! `mqueue.stats`, `mqueue.peek`, `mqueue.clear`, `mqueue.add`, and for
//! Redis queues `mqueue.dead_list`, `mqueue.dead_requeue`.

use std::os::raw::c_void;

use super::{api, registry};
use crate::host_entry;
use crate::kamailio::guard::guard;
use crate::kamailio::rpc::Rpc;
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
    let size = api::size(idx).unwrap_or(0);
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
        st.int(c"size", api::size(idx).unwrap_or(0) as i64);
    }
});

rpc_handler!(mqueue_rpc_fetch, "mqueue.fetch", |rpc| {
    let Some((_, idx)) = queue_param(&rpc, (500, 500, 500)) else {
        return;
    };
    // Unlike the C module, an empty key or value is returned as an
    // empty string, and an item whose reply cannot be built (larger
    // than the transport's reply buffer) stays queued.
    let rc = api::fetch_for_reply(idx, |k, v| {
        rpc.add_struct()
            .is_some_and(|st| st.str(c"key", k) && st.str(c"val", v))
    });
    match rc {
        1 => {}
        -2 => rpc.fault(404, c"Empty queue"),
        0 => rpc.fault(500, c"Item too large for the RPC reply; it stays queued"),
        _ => rpc.fault(500, c"Cannot fetch (see the log)"),
    }
});

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
        if def.stream.is_some() {
            if !stream_stats(&rpc, def) {
                return;
            }
            continue;
        }
        let q = def.queue().lock();
        let (s, limits, mode) = (q.stats(), q.limits(), q.mode());
        drop(q);
        let Some(st) = rpc.add_struct() else {
            rpc.fault(500, c"Server error");
            return;
        };
        st.str(c"name", &def.name);
        st.int(c"size", s.size as i64);
        st.int(c"limit", limits.max_items as i64);
        st.int(c"maxbytes", limits.max_bytes as i64);
        st.int(c"addmode", mode.as_int() as i64);
        st.int(c"dbmode", def.dbmode as i64);
        st.int(c"added", s.added as i64);
        st.int(c"fetched", s.fetched as i64);
        st.int(c"evicted", s.evicted as i64);
        st.int(c"replaced", s.replaced as i64);
        st.int(c"rejected", s.rejected as i64);
        st.int(c"failed", s.failed as i64);
        st.int(c"cleared", s.cleared as i64);
        st.int(c"max_size", s.max_size as i64);
        st.int(c"item_bytes", s.item_bytes as i64);
        st.int(c"shm_bytes", s.shm_bytes as i64);
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
    let items = match api::peek(def, n) {
        Ok(items) => items,
        Err(e) => {
            remote_fault(&rpc, &e);
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
    let n = match api::clear(def) {
        Ok(n) => n,
        Err(e) => {
            remote_fault(&rpc, &e);
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
    let (Some(key), Some(val)) = (rpc.scan_str(false), rpc.scan_str(false)) else {
        rpc.fault(400, c"Key and value required");
        return;
    };
    if api::add(idx, &key, &val) == 1 {
        rpc.add_int(1);
    } else {
        rpc.fault(500, c"Cannot add item");
    }
});

/// Fault 500 for a Redis call that failed, with its reason.
fn remote_fault(rpc: &Rpc, e: &str) {
    let text = std::ffi::CString::new(format!("Redis: {e}"))
        .unwrap_or_else(|_| c"Redis call failed".to_owned());
    rpc.fault(500, &text);
}

/// `mqueue.stats` of a Redis queue: the Redis-side figures (length,
/// pending entries, consumers of the group, the counters every instance
/// shares) and this instance's failed calls. False when the reply failed.
fn stream_stats(rpc: &Rpc, def: &registry::QueueDef) -> bool {
    let Some(spec) = &def.stream else {
        return true;
    };
    let failed = def.queue().lock().stats().failed;
    let figures = super::remote::figures(&def.name_lossy(), spec);
    let Some(st) = rpc.add_struct() else {
        rpc.fault(500, c"Server error");
        return false;
    };
    st.str(c"name", &def.name);
    st.str(c"backend", b"redis");
    st.str(c"url", spec.shown_url.as_bytes());
    st.str(c"group", spec.group.as_bytes());
    st.int(c"limit", spec.max_items as i64);
    st.int(c"addmode", spec.mode.as_int() as i64);
    st.int(c"failed", failed as i64);
    match figures {
        Ok(f) => {
            st.int(c"size", f.length);
            st.int(c"length", f.length);
            st.int(c"pending", f.pending);
            st.int(c"consumers", f.consumers);
            for (name, v) in &f.counters {
                if let Ok(name) = std::ffi::CString::new(name.as_str()) {
                    st.int(&name, i64::try_from(*v).unwrap_or(i64::MAX));
                }
            }
        }
        Err(e) => {
            st.str(c"error", e.as_bytes());
        }
    }
    true
}

/// The Redis queue named by the first parameter and the count in the
/// second (default 1); a fault for a local queue.
fn dead_params(rpc: &Rpc) -> Option<(&'static crate::stream::StreamSpec, usize)> {
    let (_, idx) = queue_param(rpc, (400, 400, 404))?;
    let n = rpc.scan_int(true).unwrap_or(1).max(0) as usize;
    let def = registry::frozen().and_then(|r| r.queues.get(idx))?;
    match &def.stream {
        Some(st) => Some((st, n)),
        None => {
            rpc.fault(400, c"Not a queue on Redis");
            None
        }
    }
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
        Err(e) => remote_fault(&rpc, &e),
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
        Err(e) => remote_fault(&rpc, &e),
    }
});
