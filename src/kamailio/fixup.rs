//! Fixed-up script parameters (`gparam_t`): a constant string or a format
//! with variables, evaluated per message.

use std::os::raw::{c_int, c_void};

use super::str::as_bytes;
use crate::sys;

/// Turns the raw parameter at `param` into a `gparam_t` (string with
/// optional variables), as `fixup_spve_null` does.
///
/// # Safety
/// `param` is the parameter slot the core passed to a fixup function.
pub unsafe fn fix_spve(param: *mut *mut c_void) -> c_int {
    // SAFETY: forwarded from the core's fixup call.
    unsafe { sys::fixup_spve_null(param, 1) }
}

/// Frees what [`fix_spve`] made.
///
/// # Safety
/// `param` holds a `gparam_t` made by [`fix_spve`].
pub unsafe fn free_spve(param: *mut *mut c_void) -> c_int {
    // SAFETY: forwarded to the core's matching free function.
    unsafe { sys::fixup_free_spve_null(param, 1) }
}

/// The string when the parameter is a constant (no variables in it).
///
/// # Safety
/// `gp` is a live `gparam_t` made by [`fix_spve`].
pub unsafe fn const_str<'a>(gp: *const sys::gparam_t) -> Option<&'a [u8]> {
    // SAFETY: a fixed-up parameter with type FPARAM_STR holds a str in v.
    unsafe { ((*gp).type_ as u32 == sys::FPARAM_STR).then(|| as_bytes(&(*gp).v.str_)) }
}

/// The parameter's value for this message; None when it cannot be evaluated
/// (the core has logged why).
///
/// # Safety
/// `gp` is a live `gparam_t`; `msg` is the message the script runs for. The
/// bytes stay valid until the core reuses its print buffers (the rest of
/// the script function call).
pub unsafe fn value<'a>(msg: *mut sys::sip_msg, gp: *mut sys::gparam_t) -> Option<&'a [u8]> {
    let mut out = sys::str_ {
        s: std::ptr::null_mut(),
        len: 0,
    };
    // SAFETY: gp and msg come from the core; out is a valid str to fill.
    let rc = unsafe { sys::mqrs_get_svalue(msg, gp, &mut out) };
    // SAFETY: on success the core points out at len readable bytes.
    (rc >= 0).then(|| unsafe { as_bytes(&out) })
}
