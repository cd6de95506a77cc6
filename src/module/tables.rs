//! What Kamailio reads from the module: version strings, the `exports`
//! table (functions, parameters, RPC, variables, init hooks) and the KEMI
//! table. Each table is one list; [`crate::host_table!`] appends the
//! terminator the core reads up to.

use std::os::raw::{c_char, c_int, c_void};

use super::{bind, kemi, lifecycle, params, pvars, rpc, script};
use crate::host_table;
use crate::kamailio::host_cell::HostCell;
use crate::sys::{self, core_version};

/// A pointer the host reads through `dlsym`.
#[repr(transparent)]
pub struct HostPtr(*const c_char);
// SAFETY: points to immutable static bytes.
unsafe impl Sync for HostPtr {}

#[no_mangle]
pub static module_version: HostPtr =
    HostPtr(core_version::SER_FULL_VERSION.as_ptr() as *const c_char);
#[no_mangle]
pub static module_flags: HostPtr =
    HostPtr(core_version::SER_COMPILE_FLAGS.as_ptr() as *const c_char);
#[no_mangle]
pub static module_interface_ver: u32 = sys::MODULE_INTERFACE_VER;

const fn cstr(s: &'static std::ffi::CStr) -> *mut c_char {
    s.as_ptr() as *mut c_char
}

const fn kstr(s: &'static std::ffi::CStr) -> sys::str_ {
    sys::str_ {
        s: cstr(s),
        len: s.count_bytes() as c_int,
    }
}

/// The core's `cmd_function`: how it holds every script function.
type CmdFn = unsafe extern "C" fn(*mut sys::sip_msg, *mut c_char, *mut c_char) -> c_int;
/// A script function of three parameters, called through [`CmdFn`].
type CmdFn3 =
    unsafe extern "C" fn(*mut sys::sip_msg, *mut c_char, *mut c_char, *mut c_char) -> c_int;
/// `bind_mq`, exported through the function table for `find_export`.
type BindFn = unsafe extern "C" fn(*mut bind::MqApi) -> c_int;

/// A script function of one parameter, the queue.
const fn cmd1(name: &'static std::ffi::CStr, f: CmdFn) -> sys::cmd_export_t {
    cmd(name, f, 1)
}

const fn cmd(name: &'static std::ffi::CStr, f: CmdFn, params: c_int) -> sys::cmd_export_t {
    sys::cmd_export_t {
        name: cstr(name),
        function: Some(f),
        param_no: params,
        fixup: Some(script::fixup_mq),
        free_fixup: Some(script::free_fixup_mq),
        flags: sys::ANY_ROUTE,
    }
}

const fn cmd3(name: &'static std::ffi::CStr, f: CmdFn3) -> sys::cmd_export_t {
    // SAFETY: the core calls a 3-parameter function through the generic
    // pointer type after checking param_no; the ABI of both is the C one.
    let f = unsafe { std::mem::transmute::<CmdFn3, CmdFn>(f) };
    cmd(name, f, 3)
}

const fn api_cmd(name: &'static std::ffi::CStr, f: BindFn) -> sys::cmd_export_t {
    // SAFETY: `bind_mq` is never called by the script engine: other modules
    // find it with find_export and call it as `int (*)(mq_api_t*)`.
    let f = unsafe { std::mem::transmute::<BindFn, CmdFn>(f) };
    sys::cmd_export_t {
        name: cstr(name),
        function: Some(f),
        param_no: 1,
        fixup: None,
        free_fixup: None,
        flags: sys::ANY_ROUTE,
    }
}

host_table! {
    static CMDS: [sys::cmd_export_t] = [
        cmd1(c"mq_fetch", script::w_mq_fetch),
        cmd(c"mq_fetch_wait", script::w_mq_fetch_wait, 2),
        cmd3(c"mq_add", script::w_mq_add),
        cmd1(c"mq_pv_free", script::w_mq_pv_free),
        cmd1(c"mq_size", script::w_mq_size),
        api_cmd(c"bind_mq", bind::bind_mq),
    ];
}

type ParamFn = unsafe extern "C" fn(u32, *mut c_void) -> c_int;

const fn param(name: &'static std::ffi::CStr, kind: u32, f: ParamFn) -> sys::param_export_t {
    sys::param_export_t {
        name: cstr(name),
        type_: kind | sys::PARAM_USE_FUNC,
        param_pointer: f as *mut c_void,
    }
}

host_table! {
    static PARAMS: [sys::param_export_t] = [
        param(c"db_url", sys::PARAM_STRING, params::mq_param_db_url),
        param(c"mqueue", sys::PARAM_STRING, params::mq_param),
        param(c"mqueue_name", sys::PARAM_STRING, params::mq_param_name),
        param(c"mqueue_size", sys::PARAM_INT, params::mq_param_size),
        param(c"mqueue_addmode", sys::PARAM_INT, params::mq_param_addmode),
        param(c"redis_timeout", sys::PARAM_INT, params::mq_param_redis_timeout),
        param(c"spill_dir", sys::PARAM_STRING, params::mq_param_spill_dir),
        param(c"stats_queues", sys::PARAM_INT, params::mq_param_stats_queues),
        param(c"redis_backoff", sys::PARAM_INT, params::mq_param_redis_backoff),
        param(c"durable_dir", sys::PARAM_STRING, params::mq_param_durable_dir),
        param(c"redis_tls_ca", sys::PARAM_STRING, params::mq_param_redis_tls_ca),
        param(c"redis_tls_cert", sys::PARAM_STRING, params::mq_param_redis_tls_cert),
        param(c"redis_tls_key", sys::PARAM_STRING, params::mq_param_redis_tls_key),
    ];
}

type RpcFn = unsafe extern "C" fn(*mut sys::rpc_t, *mut c_void);

/// Each RPC's doc: the core reads two entries.
struct Doc([*const c_char; 2]);
// SAFETY: points to immutable static strings.
unsafe impl Sync for Doc {}

const fn rpc_entry(
    name: &'static std::ffi::CStr,
    f: RpcFn,
    doc: &'static Doc,
    flags: u32,
) -> sys::rpc_export_t {
    sys::rpc_export_t {
        name: name.as_ptr(),
        function: Some(f),
        doc_str: &doc.0 as *const [*const c_char; 2] as *mut *const c_char,
        flags,
    }
}

/// An RPC command: name, handler, doc, reply flags.
macro_rules! rpc {
    ($name:literal, $f:path, $doc:literal, $flags:expr) => {
        rpc_entry(
            $name,
            $f,
            {
                static DOC: Doc = Doc([$doc.as_ptr(), std::ptr::null()]);
                &DOC
            },
            $flags,
        )
    };
}

host_table! {
    static RPCS: [sys::rpc_export_t] = [
        rpc!(c"mqueue.get_size", rpc::mqueue_rpc_get_size, c"Get size of mqueue.", 0),
        rpc!(
            c"mqueue.get_sizes",
            rpc::mqueue_rpc_get_sizes,
            c"Get sizes of all mqueues.",
            sys::RET_ARRAY
        ),
        rpc!(c"mqueue.fetch", rpc::mqueue_rpc_fetch, c"Fetch an element from the queue; with a count, a list of up to that many.", 0),
        rpc!(
            c"mqueue.stats",
            rpc::mqueue_rpc_stats,
            c"Counters of one mqueue or all: size, limits, added, fetched, evicted, replaced, rejected, memory.",
            sys::RET_ARRAY
        ),
        rpc!(
            c"mqueue.peek",
            rpc::mqueue_rpc_peek,
            c"Show the first n items of a queue (default 1) without removing them.",
            sys::RET_ARRAY
        ),
        rpc!(
            c"mqueue.clear",
            rpc::mqueue_rpc_clear,
            c"Drop all items of a queue; returns how many.",
            0
        ),
        rpc!(c"mqueue.add", rpc::mqueue_rpc_add, c"Add an item: name key value.", 0),
        rpc!(
            c"mqueue.dead_list",
            rpc::mqueue_rpc_dead_list,
            c"Show the first n dead letters of a Redis queue (default 1).",
            sys::RET_ARRAY
        ),
        rpc!(
            c"mqueue.dead_requeue",
            rpc::mqueue_rpc_dead_requeue,
            c"Put the first n dead letters of a Redis queue back on it (default 1).",
            0
        ),
    ];
}

type PvGet =
    unsafe extern "C" fn(*mut sys::sip_msg, *mut sys::pv_param_t, *mut sys::pv_value_t) -> c_int;

const fn pvar(name: &'static std::ffi::CStr, get: PvGet) -> sys::pv_export_t {
    sys::pv_export_t {
        name: kstr(name),
        type_: sys::PVT_OTHER,
        getf: Some(get),
        setf: None,
        parse_name: Some(pvars::pv_parse_mq_name),
        parse_index: None,
        init_param: None,
        iparam: 0,
    }
}

host_table! {
    static PVS: [sys::pv_export_t] = [
        pvar(c"mqk", pvars::pv_get_mqk),
        pvar(c"mqv", pvars::pv_get_mqv),
        pvar(c"mq_size", pvars::pv_get_mq_size),
    ];
}

#[no_mangle]
pub static exports: HostCell<sys::module_exports> = HostCell::new(sys::module_exports {
    name: cstr(c"mqueue"),
    dlflags: 0,
    cmds: CMDS.get() as *mut sys::cmd_export_t,
    params: PARAMS.get() as *mut sys::param_export_t,
    rpc_methods: RPCS.get() as *mut sys::rpc_export_t,
    pv_items: PVS.get() as *mut sys::pv_export_t,
    response_f: None,
    init_mod_f: Some(lifecycle::mod_init),
    init_child_f: Some(lifecycle::child_init),
    destroy_mod_f: Some(lifecycle::mod_destroy),
});

/// A `KSR.mqueue.<fname>` function of `nparams` string parameters.
const fn kemi_fn(
    fname: &'static std::ffi::CStr,
    rtype: u32,
    func: *mut c_void,
    nparams: usize,
) -> sys::sr_kemi_t {
    let mut ptypes = [sys::SR_KEMIP_NONE; 6];
    let mut i = 0;
    while i < nparams {
        ptypes[i] = sys::SR_KEMIP_STR;
        i += 1;
    }
    kemi_typed(fname, rtype, func, ptypes)
}

/// A `KSR.mqueue.<fname>` function with these parameter types.
const fn kemi_typed(
    fname: &'static std::ffi::CStr,
    rtype: u32,
    func: *mut c_void,
    types: [u32; 6],
) -> sys::sr_kemi_t {
    let mut ptypes = [0 as c_int; 6];
    let mut i = 0;
    while i < 6 {
        ptypes[i] = types[i] as c_int;
        i += 1;
    }
    sys::sr_kemi_t {
        mname: kstr(c"mqueue"),
        fname: kstr(fname),
        rtype: rtype as c_int,
        func,
        ptypes,
    }
}

host_table! {
    /// Registered at `mod_register`.
    pub static KEMI: [sys::sr_kemi_t] = [
        kemi_fn(c"mq_add", sys::SR_KEMIP_INT, kemi::ki_mq_add as *mut c_void, 3),
        kemi_fn(c"mq_fetch", sys::SR_KEMIP_INT, kemi::ki_mq_fetch as *mut c_void, 1),
        kemi_typed(
            c"mq_fetch_wait",
            sys::SR_KEMIP_INT,
            kemi::ki_mq_fetch_wait as *mut c_void,
            [sys::SR_KEMIP_STR, sys::SR_KEMIP_INT, 0, 0, 0, 0],
        ),
        kemi_fn(c"mq_size", sys::SR_KEMIP_INT, kemi::ki_mq_size as *mut c_void, 1),
        kemi_fn(c"mq_pv_free", sys::SR_KEMIP_INT, kemi::ki_mq_pv_free as *mut c_void, 1),
        kemi_fn(c"mqk_get", sys::SR_KEMIP_XVAL, kemi::ki_mqk_get as *mut c_void, 1),
        kemi_fn(c"mqk_gete", sys::SR_KEMIP_XVAL, kemi::ki_mqk_gete as *mut c_void, 1),
        kemi_fn(c"mqk_getw", sys::SR_KEMIP_XVAL, kemi::ki_mqk_getw as *mut c_void, 1),
        kemi_fn(c"mqv_get", sys::SR_KEMIP_XVAL, kemi::ki_mqv_get as *mut c_void, 1),
        kemi_fn(c"mqv_gete", sys::SR_KEMIP_XVAL, kemi::ki_mqv_gete as *mut c_void, 1),
        kemi_fn(c"mqv_getw", sys::SR_KEMIP_XVAL, kemi::ki_mqv_getw as *mut c_void, 1),
    ];
}
