//! The module's life: `mod_register` (KEMI), `mod_init` (queues frozen,
//! statistics, Redis check, DB binding), `child_init` (DB load before the
//! fork) and `mod_destroy` (DB save, Redis consumers released).

use std::os::raw::{c_char, c_int, c_uint, c_void};

use super::{durable, ops, params, persist, registry, remote, stats, tables};
use crate::host_entry;
use crate::kamailio::core;
use crate::kamailio::guard::install_panic_hook;
use crate::sys;
use crate::{kerr, kwarn};

host_entry! {
    /// Called by the core right after loading the module.
    #[no_mangle]
    pub fn mod_register(
        _path: *mut c_char,
        _dlflags: *mut c_int,
        _p1: *mut c_void,
        _p2: *mut c_void,
    ) -> c_int, "mod_register", -1 => {
        install_panic_hook();
        // SAFETY: the KEMI table is static and NUL-terminated; the core keeps
        // the pointer.
        if !unsafe { crate::kamailio::kemi::register(tables::KEMI.get() as *mut sys::sr_kemi_t) } {
            kerr!("cannot register the KEMI exports");
            return -1;
        }
        0
    }
}

host_entry! {
    pub fn mod_init() -> c_int, "mod_init", -1 => {
        let reg = registry::freeze();
        if reg.queues.is_empty() {
            kwarn!("no mqueue defined");
        }
        stats::register(&reg.queues);
        if let Err(e) = remote::init(reg) {
            kerr!("{e}");
            return -1;
        }
        // SAFETY: mod_init runs in the main process before the fork, when
        // the core takes timers; the function is ours and takes no param.
        if unsafe { sys::register_timer(Some(age_queues), std::ptr::null_mut(), 1) } < 0 {
            kerr!("cannot register the timer that ages spare queue memory");
            return -1;
        }
        if let Err(e) = durable::init(reg) {
            kerr!("{e}");
            return -1;
        }
        let db_url = params::DB_URL.lock().ok().and_then(|u| u.clone());
        match persist::init(&reg.queues, db_url.as_deref()) {
            Ok(true) => {
                // Saving needs the DB driver module alive: our destroy
                // function must run before any other module's.
                // SAFETY: called from our own mod_init, once, as required.
                if !unsafe { core::run_first_at_destroy(c"mqueue", persist::save_all) } {
                    kwarn!("cannot order the module list: a DB module destroyed first may lose the save");
                }
            }
            Ok(false) => {}
            Err(e) => {
                kerr!("{e}");
                return -1;
            }
        }
        0
    }
}

host_entry! {
    /// The core timer (every second, timer process): spare queue memory no
    /// add used since the last tick goes back to shm.
    fn age_queues(_ticks: c_uint, _param: *mut c_void), "age_queues", () => {
        ops::age_all();
    }
}

host_entry! {
    pub fn child_init(rank: c_int) -> c_int, "child_init", -1 => {
        if rank == sys::PROC_INIT {
            if let Some(reg) = registry::frozen() {
                if let Err(e) = persist::check_spill_writable(&reg.queues) {
                    kerr!("{e}");
                    return -1;
                }
            }
            persist::load_all();
        }
        if rank == sys::PROC_MAIN as c_int {
            if let Err(e) = durable::start_timer() {
                kerr!("{e}");
                return -1;
            }
        }
        0
    }
}

host_entry! {
    pub fn mod_destroy(), "mod_destroy", () => {
        persist::save_all();
        if let Some(reg) = registry::frozen() {
            durable::stop(reg);
            remote::release_all(reg);
        }
    }
}
