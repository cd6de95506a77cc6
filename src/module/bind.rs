//! The inter-module API of the C module's `api.h`: `bind_mq` fills an
//! `mq_api_t` whose `add` other modules (`acc_json`, `app_lua_sr`) call.

use std::os::raw::c_int;

use super::ops::{self, Add};
use crate::host_entry;
use crate::sys;

/// `mq_api_t`.
#[repr(C)]
pub struct MqApi {
    pub add: Option<unsafe extern "C" fn(*mut sys::str_, *mut sys::str_, *mut sys::str_) -> c_int>,
}

host_entry! {
    /// `mq_api_t.add`: 0 on success, -1 on error, like the C `mq_item_add`.
    fn api_add(
        q: *mut sys::str_,
        k: *mut sys::str_,
        v: *mut sys::str_,
    ) -> c_int, "mq_api.add", -1 => {
        // SAFETY: the calling module passes valid str pointers (or null).
        let (q, k, v) = unsafe {
            let get = |s: *mut sys::str_| {
                if s.is_null() {
                    &[][..]
                } else {
                    crate::kamailio::str::as_bytes(&*s)
                }
            };
            (get(q), get(k), get(v))
        };
        match ops::add_by_name(q, k, v) {
            Add::Queued | Add::Duplicate => 0,
            Add::Failed(_) => -1,
        }
    }
}

host_entry! {
    /// `bind_mq(mq_api_t*)`, found by other modules with `find_export`.
    pub fn bind_mq(api: *mut MqApi) -> c_int, "bind_mq", -1 => {
        if api.is_null() {
            return -1;
        }
        // SAFETY: the caller passes its mq_api_t to fill.
        unsafe { (*api).add = Some(api_add) };
        0
    }
}
