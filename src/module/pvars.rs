//! Variables `$mqk(q)`, `$mqv(q)` and `$mq_size(q)`; `q` is a queue name or
//! a variable holding one (`$mqk($var(q))`).

use std::cell::Cell;
use std::os::raw::c_int;

use super::{ops, registry};
use crate::host_entry;
use crate::kamailio::pv::{self, VarRef};
use crate::kamailio::str::as_bytes;
use crate::kerr;
use crate::sys;

/// The parsed inner name, stored in the PV spec (`pvn.u.dname`).
struct PvQueueName {
    name: Vec<u8>,
    var: Option<VarRef>,
    /// Index of a constant name, found on first use in this process.
    cached: Cell<Option<usize>>,
}

host_entry! {
    /// Parses the inner name once, at configuration time.
    pub fn pv_parse_mq_name(
        sp: *mut sys::pv_spec_t,
        input: *mut sys::str_,
    ) -> c_int, "pv_parse_mq_name", -1 => {
        if sp.is_null() || input.is_null() {
            return -1;
        }
        // SAFETY: the core passes the inner name as a valid str.
        let name = unsafe { as_bytes(&*input) }.to_vec();
        if name.is_empty() {
            kerr!("mqueue variable without a queue name");
            return -1;
        }
        let var = if name[0] == b'$' {
            match VarRef::parse(&name) {
                Some(v) => Some(v),
                None => {
                    kerr!("invalid pv [{}]", String::from_utf8_lossy(&name));
                    return -1;
                }
            }
        } else {
            None
        };
        let parsed = Box::new(PvQueueName {
            name,
            var,
            cached: Cell::new(None),
        });
        // SAFETY: sp is the spec being parsed.
        unsafe { pv::set_own_name(sp, parsed) };
        0
    }
}

/// The queue the variable names; None after logging when there is none.
#[inline(always)]
unsafe fn queue_of(msg: *mut sys::sip_msg, param: *mut sys::pv_param_t) -> Option<usize> {
    // SAFETY: pv_parse_mq_name stored a PvQueueName for this spec.
    let parsed: &PvQueueName = unsafe { pv::own_name(param) };
    match parsed.cached.get() {
        Some(idx) => Some(idx),
        // SAFETY: as for this function.
        None => unsafe { lookup_queue(msg, parsed) },
    }
}

/// `queue_of` for a name given by a variable, or met the first time.
#[cold]
#[inline(never)]
unsafe fn lookup_queue(msg: *mut sys::sip_msg, parsed: &PvQueueName) -> Option<usize> {
    match &parsed.var {
        Some(var) => {
            // SAFETY: msg is the current message (or null in some routes).
            let Some(name) = (unsafe { var.value(msg) }) else {
                kerr!(
                    "failed to get pv value for [{}]",
                    String::from_utf8_lossy(&parsed.name)
                );
                return None;
            };
            let found = registry::lookup(name);
            if found.is_none() {
                kerr!("mqueue not found: {}", String::from_utf8_lossy(name));
            }
            found
        }
        None => {
            let found = registry::lookup(&parsed.name);
            if found.is_none() {
                kerr!(
                    "mqueue not found: {}",
                    String::from_utf8_lossy(&parsed.name)
                );
            } else if registry::frozen().is_some() {
                parsed.cached.set(found);
            }
            found
        }
    }
}

unsafe fn get_item(
    msg: *mut sys::sip_msg,
    param: *mut sys::pv_param_t,
    res: *mut sys::pv_value_t,
    want_key: bool,
) -> c_int {
    // SAFETY: arguments forwarded from the core's getter call.
    unsafe {
        let Some(idx) = queue_of(msg, param) else {
            return -1;
        };
        ops::fetched(idx, |item| match item {
            Some((k, v)) => {
                let bytes = if want_key { k } else { v };
                if bytes.is_empty() {
                    pv::null(msg, param, res)
                } else {
                    pv::string(msg, param, res, bytes)
                }
            }
            None => pv::null(msg, param, res),
        })
    }
}

host_entry! {
    /// `$mqk(q)`: the key of the item last fetched here, or `$null`.
    pub fn pv_get_mqk(
        msg: *mut sys::sip_msg,
        param: *mut sys::pv_param_t,
        res: *mut sys::pv_value_t,
    ) -> c_int, "$mqk", -1 => {
        // SAFETY: forwarded from the core.
        unsafe { get_item(msg, param, res, true) }
    }
}

host_entry! {
    /// `$mqv(q)`: the value of the item last fetched here, or `$null`.
    pub fn pv_get_mqv(
        msg: *mut sys::sip_msg,
        param: *mut sys::pv_param_t,
        res: *mut sys::pv_value_t,
    ) -> c_int, "$mqv", -1 => {
        // SAFETY: forwarded from the core.
        unsafe { get_item(msg, param, res, false) }
    }
}

host_entry! {
    /// `$mq_size(q)`: the number of queued items.
    pub fn pv_get_mq_size(
        msg: *mut sys::sip_msg,
        param: *mut sys::pv_param_t,
        res: *mut sys::pv_value_t,
    ) -> c_int, "$mq_size", -1 => {
        // SAFETY: forwarded from the core.
        unsafe {
            let Some(idx) = queue_of(msg, param) else {
                return -1;
            };
            match ops::size(idx) {
                Ok(n) => pv::int(msg, param, res, n.min(i32::MAX as usize) as i32),
                Err(_) => -1,
            }
        }
    }
}
