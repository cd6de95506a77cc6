//! Core globals the module reads or adjusts: the runtime directory and the
//! order of destroy functions at shutdown.

use std::ffi::CStr;
use std::path::PathBuf;
use std::sync::OnceLock;

use crate::host_entry;
use crate::kamailio::guard::guard;
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

/// The destroy function of the module at the head of the core's list,
/// which [`run_first_at_destroy`] replaced, and what runs before it.
static HEAD_DESTROY: OnceLock<(sys::destroy_function, fn())> = OnceLock::new();

host_entry! {
    /// Stands in for the head module's destroy function: runs the hook,
    /// then the module's own destroy function.
    fn head_destroy(), "mod_destroy (first)", () => {
        if let Some((original, hook)) = HEAD_DESTROY.get() {
            // A panic in the hook must not keep the module's own destroy
            // function from running.
            guard("mqueue save at shutdown", (), hook);
            if let Some(f) = original {
                // SAFETY: the head module's own destroy function, called once
                // by the core's destroy walk, as it would have been.
                unsafe { f() };
            }
        }
    }
}

/// Makes `hook` run before any module's destroy function at shutdown. The
/// core destroys modules from the head of its list (the module loaded
/// last) on; the list itself is private since 6.1, but the head node,
/// from `get_loaded_modules()`, can be given a destroy function that runs
/// `hook` first and then its own. `own` names the calling module: when it
/// is the head already, its destroy function runs first anyway.
///
/// # Safety
/// Call from `mod_init` in the main process, once: the core reads the
/// destroy functions only in `destroy_modules`, after every child exited.
pub unsafe fn run_first_at_destroy(own: &CStr, hook: fn()) -> bool {
    // SAFETY: the list lives in the main process's pkg memory and is only
    // touched by the core in this single-threaded phase.
    unsafe {
        let head = sys::get_loaded_modules();
        if head.is_null() {
            return false;
        }
        let name = (*head).exports.name;
        if !name.is_null() && CStr::from_ptr(name) == own {
            return true;
        }
        let original = (*head).exports.destroy_mod_f;
        if HEAD_DESTROY.set((original, hook)).is_err() {
            return false;
        }
        (*head).exports.destroy_mod_f = Some(head_destroy);
    }
    true
}
