//! Kamailio's statistics framework: counters read on demand through a
//! callback (`counter_register`).

use std::ffi::{c_void, CString};

use crate::sys;

/// The value callback: called with the `param` given at registration.
pub type ReadFn = unsafe extern "C" fn(sys::counter_handle_t, *mut c_void) -> sys::counter_val_t;

/// Most counters Kamailio's table holds (`MAX_COUNTER_ID` in the core's
/// counters.c, the same in every supported version).
pub const MAX_COUNTERS: usize = 32_767;

/// Registers counter `group:name`, read by `read(param)`, never reset by
/// `stats.reset_statistics` (its value is the caller's own). Call before
/// the fork. Returns the counter's id: ids are given in order, so one
/// more than it is how many counters the table holds.
pub fn register(
    group: &'static CString,
    name: &[u8],
    doc: &str,
    read: ReadFn,
    param: usize,
) -> Result<usize, String> {
    let shown = String::from_utf8_lossy(name);
    let bad = |what: &str| {
        format!(
            "counter {}:{shown}: {what} holds a NUL byte",
            group.to_string_lossy()
        )
    };
    // The core keeps the name and doc pointers: they live forever.
    let cname: &'static CString = Box::leak(Box::new(CString::new(name).map_err(|_| bad("name"))?));
    let cdoc: &'static CString = Box::leak(Box::new(CString::new(doc).map_err(|_| bad("doc"))?));
    let mut h = sys::counter_handle_t::default();
    // SAFETY: the strings are NUL-terminated and never freed; the callback
    // and its integer parameter stay valid for the life of the process
    // (and its children, forked later).
    let rc = unsafe {
        sys::counter_register(
            &mut h,
            group.as_ptr(),
            cname.as_ptr(),
            sys::CNT_F_NO_RESET as _,
            Some(read),
            param as *mut c_void,
            cdoc.as_ptr(),
            0,
        )
    };
    if rc < 0 {
        return Err(format!(
            "cannot register statistic {}:{shown}",
            group.to_string_lossy()
        ));
    }
    Ok(h.id as usize)
}
