//! KEMI exports (`KSR.mqueue.*`), with the C module's return values; the
//! `*_gete` and `*_getw` getters honour their names (empty string, `<null>`)
//! where the C module returns a plain null.

use std::os::raw::c_int;

use super::script::{add_code, fetch_code};
use super::{ops, registry};
use crate::host_entry;
use crate::kamailio::kemi::{self, arg, NullMode};
use crate::kerr;
use crate::sys;

host_entry! {
    pub fn ki_mq_add(
        _m: *mut sys::sip_msg,
        q: *mut sys::str_,
        k: *mut sys::str_,
        v: *mut sys::str_,
    ) -> c_int, "KSR.mqueue.mq_add", -1 => {
        // SAFETY: arguments forwarded from KEMI.
        let (q, k, v) = unsafe { (arg(q), arg(k), arg(v)) };
        add_code(&ops::add_by_name(q, k, v))
    }
}

host_entry! {
    pub fn ki_mq_fetch(
        _m: *mut sys::sip_msg,
        q: *mut sys::str_,
    ) -> c_int, "KSR.mqueue.mq_fetch", -1 => {
        // SAFETY: argument forwarded from KEMI.
        match registry::lookup(unsafe { arg(q) }) {
            Some(idx) => fetch_code(&ops::fetch(idx)),
            None => -1,
        }
    }
}

host_entry! {
    /// The size (0 when empty), or -1 for an unknown queue.
    pub fn ki_mq_size(
        _m: *mut sys::sip_msg,
        q: *mut sys::str_,
    ) -> c_int, "KSR.mqueue.mq_size", -1 => {
        // SAFETY: argument forwarded from KEMI.
        let name = unsafe { arg(q) };
        let Some(idx) = registry::lookup(name) else {
            kerr!("mqueue {} not found", String::from_utf8_lossy(name));
            return -1;
        };
        // Err: a Redis call that failed (logged there).
        ops::size(idx).map_or(-1, |n| n.min(i32::MAX as usize) as c_int)
    }
}

host_entry! {
    pub fn ki_mq_pv_free(
        _m: *mut sys::sip_msg,
        q: *mut sys::str_,
    ) -> c_int, "KSR.mqueue.mq_pv_free", -1 => {
        // SAFETY: argument forwarded from KEMI.
        if let Some(idx) = registry::lookup(unsafe { arg(q) }) {
            ops::pv_free(idx);
        }
        1
    }
}

fn getter(q: *mut sys::str_, want_key: bool, null_mode: NullMode) -> *mut sys::sr_kemi_xval_t {
    // SAFETY: q is a KEMI argument.
    let idx = registry::lookup(unsafe { arg(q) });
    let found = idx.and_then(|idx| {
        // The fetched bytes stay in place until the next fetch or
        // mq_pv_free in this process, after the interpreter copied them.
        ops::fetched(idx, |item| {
            item.map(|(k, v)| kemi::string(if want_key { k } else { v }))
        })
    });
    found.unwrap_or_else(|| kemi::null(null_mode))
}

macro_rules! ki_getter {
    ($name:ident, $label:literal, $key:expr, $mode:expr) => {
        host_entry! {
            pub fn $name(
                _m: *mut sys::sip_msg,
                q: *mut sys::str_,
            ) -> *mut sys::sr_kemi_xval_t, $label, kemi::slot() => {
                getter(q, $key, $mode)
            }
        }
    };
}

ki_getter!(ki_mqk_get, "KSR.mqueue.mqk_get", true, NullMode::None);
ki_getter!(ki_mqk_gete, "KSR.mqueue.mqk_gete", true, NullMode::Empty);
ki_getter!(ki_mqk_getw, "KSR.mqueue.mqk_getw", true, NullMode::Print);
ki_getter!(ki_mqv_get, "KSR.mqueue.mqv_get", false, NullMode::None);
ki_getter!(ki_mqv_gete, "KSR.mqueue.mqv_gete", false, NullMode::Empty);
ki_getter!(ki_mqv_getw, "KSR.mqueue.mqv_getw", false, NullMode::Print);
