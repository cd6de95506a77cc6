//! Pseudo-variable results and the evaluation of a variable given by name
//! (for `$mqk($var(q))`).

use std::os::raw::c_int;

use super::str::{as_bytes, from_bytes};
use crate::sys;

/// Sets the result to `$null`.
///
/// # Safety
/// The pointers are those the core passed to a PV getter.
pub unsafe fn null(
    msg: *mut sys::sip_msg,
    param: *mut sys::pv_param_t,
    res: *mut sys::pv_value_t,
) -> c_int {
    // SAFETY: forwarded from the getter's arguments.
    unsafe { sys::pv_get_null(msg, param, res) }
}

/// Sets the result to a string that stays valid until the next fetch on the
/// same queue in this process.
///
/// # Safety
/// As for [`null`]; `bytes` outlives the script's use of the value.
pub unsafe fn string(
    msg: *mut sys::sip_msg,
    param: *mut sys::pv_param_t,
    res: *mut sys::pv_value_t,
    bytes: &[u8],
) -> c_int {
    let mut s = from_bytes(bytes);
    // SAFETY: forwarded from the getter's arguments; the core copies the str
    // header, not the bytes, which the caller keeps alive.
    unsafe { sys::pv_get_strval(msg, param, res, &mut s) }
}

/// Sets the result to an integer.
///
/// # Safety
/// As for [`null`].
pub unsafe fn int(
    msg: *mut sys::sip_msg,
    param: *mut sys::pv_param_t,
    res: *mut sys::pv_value_t,
    n: i32,
) -> c_int {
    // The value parameter is an `int` before 5.7 and a `long` since.
    #[cfg(kamailio_ge_5_7)]
    let n = std::ffi::c_long::from(n);
    // SAFETY: forwarded from the getter's arguments.
    unsafe { sys::pv_get_sintval(msg, param, res, n) }
}

/// A variable named in another variable's name, parsed once.
pub struct VarRef(*mut sys::pv_spec_t);

impl VarRef {
    /// Parses `name` (which starts with `$`) with the core's PV cache.
    pub fn parse(name: &[u8]) -> Option<VarRef> {
        let mut s = from_bytes(name);
        // SAFETY: s points to name for the duration of the call; the core
        // copies what it keeps. pv_locate_name only reads.
        unsafe {
            if sys::pv_locate_name(&mut s) != s.len {
                return None;
            }
            let spec = sys::pv_cache_get(&mut s);
            (!spec.is_null()).then_some(VarRef(spec))
        }
    }

    /// The variable's value as a string for this message (a faked message
    /// when there is none, e.g. from a timer route).
    ///
    /// # Safety
    /// `msg` is the current message or null. The bytes are valid until the
    /// variable changes.
    pub unsafe fn value<'a>(&self, msg: *mut sys::sip_msg) -> Option<&'a [u8]> {
        // SAFETY: the spec comes from the PV cache and lives as long as the
        // process; faked_msg_next returns a valid message after init.
        unsafe {
            let msg = if msg.is_null() {
                if sys::faked_msg_init() < 0 {
                    return None;
                }
                sys::faked_msg_next()
            } else {
                msg
            };
            let mut val: sys::pv_value_t = std::mem::zeroed();
            if sys::pv_get_spec_value(msg, self.0, &mut val) != 0 {
                return None;
            }
            if val.flags as u32 & sys::PV_VAL_NULL != 0 {
                return None;
            }
            Some(as_bytes(&val.rs))
        }
    }
}

/// Stores a name the module parsed itself in a variable's spec
/// (`PV_NAME_OTHER`); it lives as long as the spec, i.e. the process.
///
/// # Safety
/// `sp` is the spec the core is parsing, passed to the name parser.
pub unsafe fn set_own_name<T>(sp: *mut sys::pv_spec_t, name: Box<T>) {
    // SAFETY: dname with PV_NAME_OTHER is the module's to use.
    unsafe {
        (*sp).pvp.pvn.type_ = sys::PV_NAME_OTHER as c_int;
        (*sp).pvp.pvn.u.dname = Box::into_raw(name) as *mut libc::c_void;
    }
}

/// The name [`set_own_name`] stored for this variable.
///
/// # Safety
/// `param` belongs to a spec whose name was stored by [`set_own_name`]
/// with the same `T`.
pub unsafe fn own_name<'a, T>(param: *mut sys::pv_param_t) -> &'a T {
    // SAFETY: as the caller guarantees; the box is never freed.
    unsafe { &*((*param).pvn.u.dname as *const T) }
}
