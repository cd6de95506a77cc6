//! Config-script functions `mq_add`, `mq_fetch`, `mq_fetch_wait`, `mq_size`,
//! `mq_pv_free`
//! and their fixups. A constant queue name is resolved once, at fixup.

use std::os::raw::{c_char, c_int, c_void};
use std::time::{Duration, Instant};

use super::ops::{self, Add, Fetch};
use super::registry;
use crate::host_entry;
use crate::kamailio::fixup;
use crate::kamailio::process_local::ProcessLocal;
use crate::kerr;
use crate::sys;

/// `mq_add`'s return code (KEMI's too): 1 queued (or, addmode 1, already
/// queued), -1 on error.
pub(super) fn add_code(outcome: &Add) -> c_int {
    match outcome {
        Add::Queued | Add::Duplicate => 1,
        Add::Failed(_) => -1,
    }
}

/// `mq_fetch`'s return code (KEMI's too): 1 fetched, -2 empty, -1 error.
pub(super) fn fetch_code(outcome: &Fetch) -> c_int {
    match outcome {
        Fetch::Fetched => 1,
        Fetch::Empty | Fetch::Kept => -2,
        Fetch::Failed(_) => -1,
    }
}

/// The fixed-up queue parameter: the core's `gparam_t`, plus the queue
/// index when the name is a constant naming a defined queue.
struct QueueParam {
    gp: *mut sys::gparam_t,
    fixed: Option<usize>,
}

/// The queue a call names: Ok(index), or Err(-1). An unknown name is
/// logged when `log_unknown` (the C module's `mq_fetch` and `mq_pv_free`
/// fail silently there).
///
/// # Safety
/// `param` is the queue parameter [`fixup_mq`] fixed for this call site;
/// `msg` is the message being processed.
#[inline(always)]
unsafe fn resolve(
    msg: *mut sys::sip_msg,
    param: *mut c_char,
    log_unknown: bool,
) -> Result<usize, c_int> {
    // SAFETY: param is the QueueParam our fixup stored for this call site.
    let qp = unsafe { &*(param as *const QueueParam) };
    match qp.fixed {
        Some(idx) => Ok(idx),
        // SAFETY: as for this function.
        None => unsafe { resolve_dynamic(msg, qp, log_unknown) },
    }
}

/// `resolve` for a queue name given by a variable.
///
/// # Safety
/// `qp.gp` was made by `fix_spve`; `msg` is the message being processed.
#[cold]
#[inline(never)]
unsafe fn resolve_dynamic(
    msg: *mut sys::sip_msg,
    qp: &QueueParam,
    log_unknown: bool,
) -> Result<usize, c_int> {
    // SAFETY: gp was made by fix_spve; msg is the current message.
    let Some(name) = (unsafe { fixup::value(msg, qp.gp) }) else {
        kerr!("cannot get the queue");
        return Err(-1);
    };
    registry::lookup(name).ok_or_else(|| {
        if log_unknown {
            kerr!("mqueue not found: {}", crate::kamailio::log::shown(name));
        }
        -1
    })
}

host_entry! {
    /// Fixup of the queue name (parameter 1); other parameters are plain
    /// string-with-variables parameters.
    pub fn fixup_mq(param: *mut *mut c_void, param_no: c_int) -> c_int, "fixup", -1 => {
        // SAFETY: the core passes the slot of this parameter.
        if unsafe { fixup::fix_spve(param) } < 0 {
            kerr!("cannot fix parameter {param_no}");
            return -1;
        }
        if param_no != 1 {
            return 0;
        }
        // SAFETY: fix_spve stored a gparam_t in the slot.
        let gp = unsafe { *param } as *mut sys::gparam_t;
        // SAFETY: gp is the live gparam_t just made.
        let fixed = unsafe { fixup::const_str(gp) }.and_then(registry::lookup);
        let boxed = Box::new(QueueParam { gp, fixed });
        // SAFETY: the slot now holds our QueueParam; free_fixup_mq undoes it.
        unsafe { *param = Box::into_raw(boxed) as *mut c_void };
        0
    }
}

host_entry! {
    pub fn free_fixup_mq(param: *mut *mut c_void, param_no: c_int) -> c_int, "free_fixup", -1 => {
        if param_no == 1 {
            // SAFETY: the slot holds the QueueParam fixup_mq made.
            let qp = unsafe { Box::from_raw(*param as *mut QueueParam) };
            // SAFETY: put the gparam_t back for the core's free function.
            unsafe { *param = qp.gp as *mut c_void };
        }
        // SAFETY: the slot holds a gparam_t made by fix_spve.
        unsafe { fixup::free_spve(param) }
    }
}

host_entry! {
    /// `mq_add(queue, key, value)`: 1 added (or kept, addmode 1), -1 error.
    pub fn w_mq_add(
        msg: *mut sys::sip_msg,
        q: *mut c_char,
        key: *mut c_char,
        val: *mut c_char,
    ) -> c_int, "mq_add", -1 => {
        // SAFETY: q, key and val are the parameters fixed by fixup_mq.
        unsafe {
            let idx = match resolve(msg, q, true) {
                Ok(i) => i,
                Err(rc) => return rc,
            };
            let Some(k) = fixup::value(msg, key as *mut sys::gparam_t) else {
                kerr!("cannot get the key");
                return -1;
            };
            let Some(v) = fixup::value(msg, val as *mut sys::gparam_t) else {
                kerr!("cannot get the val");
                return -1;
            };
            add_code(&ops::add(idx, k, v))
        }
    }
}

host_entry! {
    /// `mq_fetch(queue)`: 1 fetched, -1 unknown queue, -2 empty.
    pub fn w_mq_fetch(
        msg: *mut sys::sip_msg,
        q: *mut c_char,
        _p2: *mut c_char,
    ) -> c_int, "mq_fetch", -1 => {
        // SAFETY: q is the parameter fixed by fixup_mq.
        match unsafe { resolve(msg, q, false) } {
            Ok(idx) => fetch_code(&ops::fetch(idx)),
            Err(rc) => rc,
        }
    }
}

host_entry! {
    /// `mq_size(queue)`: the size, -1 when empty, -2 for an unknown queue.
    pub fn w_mq_size(
        msg: *mut sys::sip_msg,
        q: *mut c_char,
        _p2: *mut c_char,
    ) -> c_int, "mq_size", -1 => {
        // SAFETY: q is the parameter fixed by fixup_mq.
        let idx = match unsafe { resolve(msg, q, true) } {
            Ok(i) => i,
            Err(_) => return -2,
        };
        match ops::size(idx) {
            Ok(0) => -1,
            Ok(n) => n.min(i32::MAX as usize) as c_int,
            Err(_) => -2,
        }
    }
}

host_entry! {
    /// `mq_pv_free(queue)`: drops the fetched item; always 1.
    pub fn w_mq_pv_free(
        msg: *mut sys::sip_msg,
        q: *mut c_char,
        _p2: *mut c_char,
    ) -> c_int, "mq_pv_free", -1 => {
        // SAFETY: q is the parameter fixed by fixup_mq.
        match unsafe { resolve(msg, q, false) } {
            Ok(idx) => {
                ops::pv_free(idx);
                1
            }
            Err(-1) => 1,
            Err(rc) => rc,
        }
    }
}

/// A timeout in milliseconds as the script gives it: a number, possibly
/// from a variable; negative waits nothing.
pub(super) fn timeout_ms(text: &[u8]) -> Option<Duration> {
    let ms: i64 = std::str::from_utf8(text).ok()?.trim().parse().ok()?;
    Some(Duration::from_millis(ms.max(0) as u64))
}

/// When this process last logged a bad timeout: a script that passes one
/// on every call logs it every 10 s at most.
static LAST_BAD_TIMEOUT: ProcessLocal<Option<Instant>> = ProcessLocal::new(None);

/// Logs a timeout that is not a number, at most every 10 s per process.
fn bad_timeout(t: &[u8]) {
    let now = Instant::now();
    let due = LAST_BAD_TIMEOUT.with(|last| {
        let due = last.is_none_or(|l| now.duration_since(l) >= Duration::from_secs(10));
        if due {
            *last = Some(now);
        }
        due
    });
    if due {
        kerr!(
            "mq_fetch_wait: the timeout is not a number of milliseconds: {} (logged every 10 s at most)",
            crate::kamailio::log::shown(t)
        );
    }
}

host_entry! {
    /// `mq_fetch_wait(queue, timeout_ms)`: as `mq_fetch`, waiting up to
    /// `timeout_ms` for an item when the queue is empty.
    pub fn w_mq_fetch_wait(
        msg: *mut sys::sip_msg,
        q: *mut c_char,
        timeout: *mut c_char,
    ) -> c_int, "mq_fetch_wait", -1 => {
        // SAFETY: q and timeout are the parameters fixed by fixup_mq.
        unsafe {
            let idx = match resolve(msg, q, false) {
                Ok(i) => i,
                Err(rc) => return rc,
            };
            let Some(t) = fixup::value(msg, timeout as *mut sys::gparam_t) else {
                bad_timeout(b"(cannot get it)");
                return -1;
            };
            let Some(t) = timeout_ms(t) else {
                bad_timeout(t);
                return -1;
            };
            fetch_code(&ops::fetch_wait(idx, t))
        }
    }
}
