//! KEMI exports (`KSR.mqueue.*`), with the C module's return values; the
//! `*_gete` and `*_getw` getters honour their names (empty string, `<null>`)
//! where the C module returns a plain null.

use std::cell::UnsafeCell;
use std::os::raw::c_int;

use super::{api, registry};
use crate::kamailio::guard::guard;
use crate::kamailio::str::as_bytes;
use crate::kerr;
use crate::sys;

unsafe fn arg<'a>(s: *mut sys::str_) -> &'a [u8] {
    if s.is_null() {
        &[]
    } else {
        // SAFETY: KEMI passes valid str arguments for the call.
        unsafe { as_bytes(&*s) }
    }
}

pub unsafe extern "C" fn ki_mq_add(
    _m: *mut sys::sip_msg,
    q: *mut sys::str_,
    k: *mut sys::str_,
    v: *mut sys::str_,
) -> c_int {
    // SAFETY: arguments forwarded from KEMI.
    guard("KSR.mqueue.mq_add", -1, || unsafe {
        api::add_by_name(arg(q), arg(k), arg(v))
    })
}

pub unsafe extern "C" fn ki_mq_fetch(_m: *mut sys::sip_msg, q: *mut sys::str_) -> c_int {
    guard("KSR.mqueue.mq_fetch", -1, || {
        // SAFETY: argument forwarded from KEMI.
        match registry::lookup(unsafe { arg(q) }) {
            Some(idx) => api::fetch(idx),
            None => -1,
        }
    })
}

/// The size (0 when empty), or -1 for an unknown queue.
pub unsafe extern "C" fn ki_mq_size(_m: *mut sys::sip_msg, q: *mut sys::str_) -> c_int {
    guard("KSR.mqueue.mq_size", -1, || {
        // SAFETY: argument forwarded from KEMI.
        let name = unsafe { arg(q) };
        match registry::lookup(name).and_then(api::size) {
            Some(n) => n.min(i32::MAX as usize) as c_int,
            None => {
                kerr!("mqueue {} not found", String::from_utf8_lossy(name));
                -1
            }
        }
    })
}

pub unsafe extern "C" fn ki_mq_pv_free(_m: *mut sys::sip_msg, q: *mut sys::str_) -> c_int {
    guard("KSR.mqueue.mq_pv_free", -1, || {
        // SAFETY: argument forwarded from KEMI.
        if let Some(idx) = registry::lookup(unsafe { arg(q) }) {
            api::pv_free(idx);
        }
        1
    })
}

/// The value KEMI getters return; the interpreter copies it before the next
/// call, and each process runs KEMI in one thread.
struct XvalSlot(UnsafeCell<sys::sr_kemi_xval_t>);
// SAFETY: only touched from the thread that runs KEMI in this process.
unsafe impl Sync for XvalSlot {}
static XVAL: XvalSlot = XvalSlot(UnsafeCell::new(sys::sr_kemi_xval_t {
    vtype: 0,
    v: sys::sr_kemi_xval__bindgen_ty_1 { n: 0 },
}));

fn getter(q: *mut sys::str_, want_key: bool, null_mode: u32) -> *mut sys::sr_kemi_xval_t {
    let out = XVAL.0.get();
    // SAFETY: see XvalSlot; q is a KEMI argument.
    unsafe {
        let idx = registry::lookup(arg(q));
        let done = idx.is_some_and(|idx| {
            api::fetched(idx, |item| match item {
                Some((k, v)) => {
                    let bytes = if want_key { k } else { v };
                    (*out).vtype = sys::SR_KEMIP_STR as c_int;
                    (*out).v.s = sys::str_ {
                        s: bytes.as_ptr() as *mut libc::c_char,
                        len: bytes.len() as c_int,
                    };
                    true
                }
                None => false,
            })
        });
        if !done {
            sys::sr_kemi_xval_null(out, null_mode as c_int);
        }
    }
    out
}

macro_rules! ki_getter {
    ($name:ident, $label:literal, $key:expr, $mode:expr) => {
        pub unsafe extern "C" fn $name(
            _m: *mut sys::sip_msg,
            q: *mut sys::str_,
        ) -> *mut sys::sr_kemi_xval_t {
            guard($label, XVAL.0.get(), || getter(q, $key, $mode))
        }
    };
}

ki_getter!(
    ki_mqk_get,
    "KSR.mqueue.mqk_get",
    true,
    sys::SR_KEMI_XVAL_NULL_NONE
);
ki_getter!(
    ki_mqk_gete,
    "KSR.mqueue.mqk_gete",
    true,
    sys::SR_KEMI_XVAL_NULL_EMPTY
);
ki_getter!(
    ki_mqk_getw,
    "KSR.mqueue.mqk_getw",
    true,
    sys::SR_KEMI_XVAL_NULL_PRINT
);
ki_getter!(
    ki_mqv_get,
    "KSR.mqueue.mqv_get",
    false,
    sys::SR_KEMI_XVAL_NULL_NONE
);
ki_getter!(
    ki_mqv_gete,
    "KSR.mqueue.mqv_gete",
    false,
    sys::SR_KEMI_XVAL_NULL_EMPTY
);
ki_getter!(
    ki_mqv_getw,
    "KSR.mqueue.mqv_getw",
    false,
    sys::SR_KEMI_XVAL_NULL_PRINT
);
