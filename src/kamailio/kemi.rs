//! KEMI: the module's export table registration and the values getters
//! return to the interpreter (`sr_kemi_xval_t`).

use std::cell::UnsafeCell;
use std::os::raw::c_int;

use crate::kamailio::str::{as_bytes, from_bytes};
use crate::sys;

/// Registers the module's KEMI exports (`mod_register`).
///
/// # Safety
/// `table` is a static, NUL-entry-terminated export table: the core keeps
/// the pointer for the life of the process.
pub unsafe fn register(table: *mut sys::sr_kemi_t) -> bool {
    // SAFETY: as the caller guarantees.
    unsafe { sys::sr_kemi_modules_add(table) >= 0 }
}

/// The bytes of a KEMI string argument (empty for null).
///
/// # Safety
/// `s` is null or a `str` the interpreter passed for this call.
pub unsafe fn arg<'a>(s: *mut sys::str_) -> &'a [u8] {
    if s.is_null() {
        &[]
    } else {
        // SAFETY: as the caller guarantees.
        unsafe { as_bytes(&*s) }
    }
}

/// How a getter returns "no value" (`SR_KEMI_XVAL_NULL_*`).
#[derive(Clone, Copy)]
pub enum NullMode {
    /// A plain null.
    None = sys::SR_KEMI_XVAL_NULL_NONE as isize,
    /// An empty string.
    Empty = sys::SR_KEMI_XVAL_NULL_EMPTY as isize,
    /// The string `<null>`.
    Print = sys::SR_KEMI_XVAL_NULL_PRINT as isize,
}

/// The value a getter returns: the interpreter copies it before the next
/// call, and each process runs KEMI in one thread, so one slot serves.
struct XvalSlot(UnsafeCell<sys::sr_kemi_xval_t>);
// SAFETY: only touched from the thread that runs KEMI in this process.
unsafe impl Sync for XvalSlot {}
static XVAL: XvalSlot = XvalSlot(UnsafeCell::new(sys::sr_kemi_xval_t {
    vtype: 0,
    v: sys::sr_kemi_xval__bindgen_ty_1 { n: 0 },
}));

/// The getters' return slot, for the error value of their entry guard.
pub fn slot() -> *mut sys::sr_kemi_xval_t {
    XVAL.0.get()
}

/// Returns `bytes` as a string value. The bytes must stay in place until
/// the interpreter has copied them (the next KEMI call in this process).
pub fn string(bytes: &[u8]) -> *mut sys::sr_kemi_xval_t {
    let out = XVAL.0.get();
    // SAFETY: see XvalSlot; the str borrows bytes the caller keeps alive.
    unsafe {
        (*out).vtype = sys::SR_KEMIP_STR as c_int;
        (*out).v.s = from_bytes(bytes);
    }
    out
}

/// Returns "no value" in the given mode.
pub fn null(mode: NullMode) -> *mut sys::sr_kemi_xval_t {
    let out = XVAL.0.get();
    // SAFETY: see XvalSlot; the core fills the slot.
    unsafe { sys::sr_kemi_xval_null(out, mode as c_int) };
    out
}
