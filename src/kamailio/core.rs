//! Core globals the module reads or adjusts: the runtime directory and the
//! order of the module list.

use std::ffi::CStr;
use std::path::PathBuf;

use crate::sys;

/// Kamailio's runtime directory (`-Y`, default `/run/kamailio`).
pub fn runtime_dir() -> PathBuf {
    // SAFETY: the core sets runtime_dir to a NUL-terminated string before
    // any module code runs and never frees it.
    let dir = unsafe {
        let p = sys::runtime_dir;
        if p.is_null() {
            return PathBuf::from(".");
        }
        CStr::from_ptr(p)
    };
    PathBuf::from(dir.to_string_lossy().into_owned())
}

/// Moves the module named `name` to the head of the core's
/// module list, so the core calls its destroy function before every other
/// module's (the list is walked from the head at shutdown).
///
/// # Safety
/// Call only from that module's `mod_init`: the core initialises modules
/// recursively, holding node pointers and not `next` links, so relinking
/// the list then is not observed by a walk in progress.
pub unsafe fn destroy_first(name: &CStr) -> bool {
    // SAFETY: the list lives in the main process's pkg memory and is only
    // touched by the core in this single-threaded phase.
    unsafe {
        let head = &raw mut sys::modules;
        let mut link: *mut *mut sys::sr_module_t = head;
        while !(*link).is_null() {
            let node = *link;
            let n = (*node).exports.name;
            if !n.is_null() && CStr::from_ptr(n) == name {
                *link = (*node).next;
                (*node).next = *head;
                *head = node;
                return true;
            }
            link = &raw mut (*node).next;
        }
    }
    false
}
