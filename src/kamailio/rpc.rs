//! The RPC context (`rpc_t` + `ctx`) as a small safe type.

use std::ffi::CStr;
use std::os::raw::{c_char, c_int, c_void};

use super::str::{as_bytes, from_bytes};
use crate::sys;

pub struct Rpc {
    api: *mut sys::rpc_t,
    ctx: *mut c_void,
}

/// An array in the reply.
pub struct RpcArray<'a> {
    rpc: &'a Rpc,
    handle: *mut c_void,
}

impl RpcArray<'_> {
    /// Adds a struct to the array.
    pub fn add_struct(&self) -> Option<RpcStruct<'_>> {
        let mut handle: *mut c_void = std::ptr::null_mut();
        // SAFETY: "{" writes one handle through the pointer we pass; the
        // array handle is live for this RPC call.
        let rc = unsafe {
            let add = (*self.rpc.api).array_add?;
            add(
                self.handle,
                c"{".as_ptr() as *mut c_char,
                &mut handle as *mut *mut c_void,
            )
        };
        (rc >= 0 && !handle.is_null()).then_some(RpcStruct {
            rpc: self.rpc,
            handle,
        })
    }
}

/// A struct in the reply, to add named members to.
pub struct RpcStruct<'a> {
    rpc: &'a Rpc,
    handle: *mut c_void,
}

impl Rpc {
    /// # Safety
    /// `api` and `ctx` are the arguments of an RPC handler call, used only
    /// during that call.
    pub unsafe fn new(api: *mut sys::rpc_t, ctx: *mut c_void) -> Rpc {
        Rpc { api, ctx }
    }

    /// Replies with an error code and text.
    pub fn fault(&self, code: c_int, text: &CStr) {
        // SAFETY: the rpc_t functions are valid for this call; "%s" with a
        // NUL-terminated string matches the variadic arguments.
        unsafe {
            if let Some(f) = (*self.api).fault {
                f(self.ctx, code, c"%s".as_ptr() as *mut c_char, text.as_ptr());
            }
        }
    }

    /// The next parameter as a string; None when absent.
    pub fn scan_str(&self, optional: bool) -> Option<Vec<u8>> {
        self.scan_str_fmt(if optional { c"*S" } else { c"S" })
    }

    /// The next parameter, required, as text: a number (kamcmd sends `42`
    /// as one) is converted by the transport.
    pub fn scan_text(&self) -> Option<Vec<u8>> {
        self.scan_str_fmt(c".S")
    }

    fn scan_str_fmt(&self, fmt: &std::ffi::CStr) -> Option<Vec<u8>> {
        let mut s = sys::str_ {
            s: std::ptr::null_mut(),
            len: 0,
        };
        // SAFETY: "S" writes one str through the pointer we pass.
        let n = unsafe {
            let scan = (*self.api).scan?;
            scan(
                self.ctx,
                fmt.as_ptr() as *mut c_char,
                &mut s as *mut sys::str_,
            )
        };
        // SAFETY: on success the core points s at len readable bytes.
        (n >= 1).then(|| unsafe { as_bytes(&s) }.to_vec())
    }

    /// The next parameter as an integer; None when absent.
    pub fn scan_int(&self, optional: bool) -> Option<i32> {
        let mut v: c_int = 0;
        let fmt = if optional { c"*d" } else { c"d" };
        // SAFETY: "d" writes one int through the pointer we pass.
        let n = unsafe {
            let scan = (*self.api).scan?;
            scan(self.ctx, fmt.as_ptr() as *mut c_char, &mut v as *mut c_int)
        };
        (n >= 1).then_some(v)
    }

    /// An optional integer parameter: `Ok(None)` when absent, an error
    /// (`NotAnInt`) when present but not an integer. Read as text (autoconverted), as
    /// binrpc's "d" cannot tell a string from no parameter.
    pub fn scan_opt_int(&self) -> Result<Option<i64>, NotAnInt> {
        let mut s = sys::str_ {
            s: std::ptr::null_mut(),
            len: 0,
        };
        // SAFETY: "S" writes one str through the pointer we pass.
        let n = unsafe {
            let Some(scan) = (*self.api).scan else {
                return Ok(None);
            };
            scan(
                self.ctx,
                c"*.S".as_ptr() as *mut c_char,
                &mut s as *mut sys::str_,
            )
        };
        if n < 1 {
            return Ok(None);
        }
        // SAFETY: the transport filled s; it stays valid for this call.
        let text = unsafe { crate::kamailio::str::as_bytes(&s) };
        std::str::from_utf8(text)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .map(Some)
            .ok_or(NotAnInt)
    }

    /// Adds a struct to the reply (to the array, for array replies).
    pub fn add_struct(&self) -> Option<RpcStruct<'_>> {
        self.add_node(c"{")
            .map(|handle| RpcStruct { rpc: self, handle })
    }

    /// Adds an array to the reply, to add structs to.
    pub fn add_array(&self) -> Option<RpcArray<'_>> {
        self.add_node(c"[")
            .map(|handle| RpcArray { rpc: self, handle })
    }

    /// Adds a struct (`{`) or array (`[`) node to the reply: its handle.
    fn add_node(&self, kind: &CStr) -> Option<*mut c_void> {
        let mut handle: *mut c_void = std::ptr::null_mut();
        // SAFETY: "{" and "[" write one handle through the pointer we pass.
        let rc = unsafe {
            let add = (*self.api).add?;
            add(
                self.ctx,
                kind.as_ptr() as *mut c_char,
                &mut handle as *mut *mut c_void,
            )
        };
        (rc >= 0 && !handle.is_null()).then_some(handle)
    }

    /// Adds an integer to the reply (see [`wide_or_int`]).
    pub fn add_int(&self, v: i64) -> bool {
        // SAFETY: "d" takes one int, "L" one long long; the core copies them.
        unsafe {
            match (*self.api).add {
                Some(add) => wide_or_int(v, |wide| {
                    if wide {
                        add(
                            self.ctx,
                            c"L".as_ptr() as *mut c_char,
                            v as libc::c_longlong,
                        )
                    } else {
                        add(self.ctx, c"d".as_ptr() as *mut c_char, clamp_int(v))
                    }
                }),
                None => false,
            }
        }
    }
}

impl RpcStruct<'_> {
    /// Adds a string member (any bytes; the length bounds it).
    pub fn str(&self, name: &CStr, value: &[u8]) -> bool {
        let mut s = from_bytes(value);
        // SAFETY: "S" takes a member name and a str pointer, both valid for
        // the call; the core copies the bytes into the reply.
        unsafe {
            match (*self.rpc.api).struct_add {
                Some(add) => {
                    add(
                        self.handle,
                        c"S".as_ptr() as *mut c_char,
                        name.as_ptr(),
                        &mut s as *mut sys::str_,
                    ) >= 0
                }
                None => false,
            }
        }
    }

    /// Adds an integer member (see [`wide_or_int`]).
    pub fn int(&self, name: &CStr, value: i64) -> bool {
        // SAFETY: "d" takes a member name and an int, "L" a member name and
        // a long long; the core copies them.
        unsafe {
            match (*self.rpc.api).struct_add {
                Some(add) => wide_or_int(value, |wide| {
                    let n = name.as_ptr();
                    if wide {
                        add(
                            self.handle,
                            c"L".as_ptr() as *mut c_char,
                            n,
                            value as libc::c_longlong,
                        )
                    } else {
                        add(
                            self.handle,
                            c"d".as_ptr() as *mut c_char,
                            n,
                            clamp_int(value),
                        )
                    }
                }),
                None => false,
            }
        }
    }
}

fn clamp_int(v: i64) -> c_int {
    v.clamp(i32::MIN as i64, i32::MAX as i64) as c_int
}

/// Adds `v` through `add(wide)`: as an int (`d`) when it fits one, else as
/// a long long (`L`: a number in JSON-RPC and XML-RPC, a double, exact to
/// 2^53, in binrpc), so that counters past 2^31 (a long-lived Redis
/// queue's) show whole. A transport that knows no `L` (xhttp_rpc) gets the
/// int, clamped.
fn wide_or_int(v: i64, mut add: impl FnMut(bool) -> c_int) -> bool {
    if i32::try_from(v).is_err() && add(true) >= 0 {
        return true;
    }
    add(false) >= 0
}

/// An RPC parameter that is there but is not an integer.
#[derive(Debug)]
pub struct NotAnInt;
