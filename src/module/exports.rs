//! What Kamailio reads from the module: version strings, the `exports`
//! table (functions, parameters, RPC, variables, init hooks), the KEMI
//! table and `mod_register`.

use std::os::raw::{c_char, c_int, c_void};
use std::ptr::null_mut;

use super::{kemi, params, persist, pvars, registry, remote, rpc, script, stats};
use crate::host_entry;
use crate::kamailio::core;
use crate::kamailio::guard::install_panic_hook;
use crate::kamailio::host_cell::HostCell;
use crate::sys::{self, core_version};
use crate::{kerr, kwarn};

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

type Cmd2 = unsafe extern "C" fn(*mut sys::sip_msg, *mut c_char, *mut c_char) -> c_int;
type Cmd3 = unsafe extern "C" fn(*mut sys::sip_msg, *mut c_char, *mut c_char, *mut c_char) -> c_int;
type BindMq = unsafe extern "C" fn(*mut MqApi) -> c_int;

const fn cmd(name: &'static std::ffi::CStr, f: Cmd2, params: c_int) -> sys::cmd_export_t {
    sys::cmd_export_t {
        name: cstr(name),
        function: Some(f),
        param_no: params,
        fixup: Some(script::fixup_mq),
        free_fixup: Some(script::free_fixup_mq),
        flags: sys::ANY_ROUTE,
    }
}

const fn cmd3(name: &'static std::ffi::CStr, f: Cmd3) -> sys::cmd_export_t {
    // SAFETY: the core calls a 3-parameter function through the generic
    // pointer type after checking param_no; the ABI of both is the C one.
    let f = unsafe { std::mem::transmute::<Cmd3, Cmd2>(f) };
    cmd(name, f, 3)
}

const fn api_cmd(name: &'static std::ffi::CStr, f: BindMq) -> sys::cmd_export_t {
    // SAFETY: `bind_mq` is never called by the script engine: other modules
    // find it with find_export and call it as `int (*)(mq_api_t*)`.
    let f = unsafe { std::mem::transmute::<BindMq, Cmd2>(f) };
    sys::cmd_export_t {
        name: cstr(name),
        function: Some(f),
        param_no: 1,
        fixup: None,
        free_fixup: None,
        flags: sys::ANY_ROUTE,
    }
}

const NO_CMD: sys::cmd_export_t = sys::cmd_export_t {
    name: null_mut(),
    function: None,
    param_no: 0,
    fixup: None,
    free_fixup: None,
    flags: 0,
};

static CMDS: HostCell<[sys::cmd_export_t; 6]> = HostCell::new([
    cmd(c"mq_fetch", script::w_mq_fetch, 1),
    cmd3(c"mq_add", script::w_mq_add),
    cmd(c"mq_pv_free", script::w_mq_pv_free, 1),
    cmd(c"mq_size", script::w_mq_size, 1),
    api_cmd(c"bind_mq", bind_mq),
    NO_CMD,
]);

type ParamFn = unsafe extern "C" fn(u32, *mut c_void) -> c_int;

const fn param(name: &'static std::ffi::CStr, kind: u32, f: ParamFn) -> sys::param_export_t {
    sys::param_export_t {
        name: cstr(name),
        type_: kind | sys::PARAM_USE_FUNC,
        param_pointer: f as *mut c_void,
    }
}

static PARAMS: HostCell<[sys::param_export_t; 8]> = HostCell::new([
    param(c"db_url", sys::PARAM_STRING, params::mq_param_db_url),
    param(c"mqueue", sys::PARAM_STRING, params::mq_param),
    param(c"mqueue_name", sys::PARAM_STRING, params::mq_param_name),
    param(c"mqueue_size", sys::PARAM_INT, params::mq_param_size),
    param(c"mqueue_addmode", sys::PARAM_INT, params::mq_param_addmode),
    param(
        c"redis_timeout",
        sys::PARAM_INT,
        params::mq_param_redis_timeout,
    ),
    param(
        c"redis_backoff",
        sys::PARAM_INT,
        params::mq_param_redis_backoff,
    ),
    sys::param_export_t {
        name: null_mut(),
        type_: 0,
        param_pointer: null_mut(),
    },
]);

type RpcFn = unsafe extern "C" fn(*mut sys::rpc_t, *mut c_void);

/// Each RPC's doc: the core reads two entries.
struct Doc([*const c_char; 2]);
// SAFETY: points to immutable static strings.
unsafe impl Sync for Doc {}

macro_rules! rpc_doc {
    ($name:ident, $text:literal) => {
        static $name: Doc = Doc([$text.as_ptr(), std::ptr::null()]);
    };
}
rpc_doc!(DOC_GET_SIZE, c"Get size of mqueue.");
rpc_doc!(DOC_GET_SIZES, c"Get sizes of all mqueues.");
rpc_doc!(DOC_FETCH, c"Fetch an element from the queue.");
rpc_doc!(DOC_STATS, c"Counters of one mqueue or all: size, limits, added, fetched, evicted, replaced, rejected, memory.");
rpc_doc!(
    DOC_PEEK,
    c"Show the first n items of a queue (default 1) without removing them."
);
rpc_doc!(DOC_CLEAR, c"Drop all items of a queue; returns how many.");
rpc_doc!(DOC_ADD, c"Add an item: name key value.");
rpc_doc!(
    DOC_DEAD_LIST,
    c"Show the first n dead letters of a Redis queue (default 1)."
);
rpc_doc!(
    DOC_DEAD_REQUEUE,
    c"Put the first n dead letters of a Redis queue back on it (default 1)."
);

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

static RPCS: HostCell<[sys::rpc_export_t; 10]> = HostCell::new([
    rpc_entry(
        c"mqueue.get_size",
        rpc::mqueue_rpc_get_size,
        &DOC_GET_SIZE,
        0,
    ),
    rpc_entry(
        c"mqueue.get_sizes",
        rpc::mqueue_rpc_get_sizes,
        &DOC_GET_SIZES,
        sys::RET_ARRAY,
    ),
    rpc_entry(c"mqueue.fetch", rpc::mqueue_rpc_fetch, &DOC_FETCH, 0),
    rpc_entry(
        c"mqueue.stats",
        rpc::mqueue_rpc_stats,
        &DOC_STATS,
        sys::RET_ARRAY,
    ),
    rpc_entry(
        c"mqueue.peek",
        rpc::mqueue_rpc_peek,
        &DOC_PEEK,
        sys::RET_ARRAY,
    ),
    rpc_entry(c"mqueue.clear", rpc::mqueue_rpc_clear, &DOC_CLEAR, 0),
    rpc_entry(c"mqueue.add", rpc::mqueue_rpc_add, &DOC_ADD, 0),
    rpc_entry(
        c"mqueue.dead_list",
        rpc::mqueue_rpc_dead_list,
        &DOC_DEAD_LIST,
        sys::RET_ARRAY,
    ),
    rpc_entry(
        c"mqueue.dead_requeue",
        rpc::mqueue_rpc_dead_requeue,
        &DOC_DEAD_REQUEUE,
        0,
    ),
    sys::rpc_export_t {
        name: std::ptr::null(),
        function: None,
        doc_str: null_mut(),
        flags: 0,
    },
]);

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

static PVS: HostCell<[sys::pv_export_t; 4]> = HostCell::new([
    pvar(c"mqk", pvars::pv_get_mqk),
    pvar(c"mqv", pvars::pv_get_mqv),
    pvar(c"mq_size", pvars::pv_get_mq_size),
    sys::pv_export_t {
        name: sys::str_ {
            s: null_mut(),
            len: 0,
        },
        type_: 0,
        getf: None,
        setf: None,
        parse_name: None,
        parse_index: None,
        init_param: None,
        iparam: 0,
    },
]);

#[no_mangle]
pub static exports: HostCell<sys::module_exports> = HostCell::new(sys::module_exports {
    name: cstr(c"mqueue"),
    dlflags: 0,
    cmds: CMDS.get() as *mut sys::cmd_export_t,
    params: PARAMS.get() as *mut sys::param_export_t,
    rpc_methods: RPCS.get() as *mut sys::rpc_export_t,
    pv_items: PVS.get() as *mut sys::pv_export_t,
    response_f: None,
    init_mod_f: Some(mod_init),
    init_child_f: Some(child_init),
    destroy_mod_f: Some(mod_destroy),
});

const KS: u32 = sys::SR_KEMIP_STR;
const KN: u32 = sys::SR_KEMIP_NONE;

const fn kemi_fn(
    fname: &'static std::ffi::CStr,
    rtype: u32,
    func: *mut c_void,
    nparams: usize,
) -> sys::sr_kemi_t {
    let mut ptypes = [KN as c_int; 6];
    let mut i = 0;
    while i < nparams {
        ptypes[i] = KS as c_int;
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

static KEMI: HostCell<[sys::sr_kemi_t; 11]> = HostCell::new([
    kemi_fn(
        c"mq_add",
        sys::SR_KEMIP_INT,
        kemi::ki_mq_add as *mut c_void,
        3,
    ),
    kemi_fn(
        c"mq_fetch",
        sys::SR_KEMIP_INT,
        kemi::ki_mq_fetch as *mut c_void,
        1,
    ),
    kemi_fn(
        c"mq_size",
        sys::SR_KEMIP_INT,
        kemi::ki_mq_size as *mut c_void,
        1,
    ),
    kemi_fn(
        c"mq_pv_free",
        sys::SR_KEMIP_INT,
        kemi::ki_mq_pv_free as *mut c_void,
        1,
    ),
    kemi_fn(
        c"mqk_get",
        sys::SR_KEMIP_XVAL,
        kemi::ki_mqk_get as *mut c_void,
        1,
    ),
    kemi_fn(
        c"mqk_gete",
        sys::SR_KEMIP_XVAL,
        kemi::ki_mqk_gete as *mut c_void,
        1,
    ),
    kemi_fn(
        c"mqk_getw",
        sys::SR_KEMIP_XVAL,
        kemi::ki_mqk_getw as *mut c_void,
        1,
    ),
    kemi_fn(
        c"mqv_get",
        sys::SR_KEMIP_XVAL,
        kemi::ki_mqv_get as *mut c_void,
        1,
    ),
    kemi_fn(
        c"mqv_gete",
        sys::SR_KEMIP_XVAL,
        kemi::ki_mqv_gete as *mut c_void,
        1,
    ),
    kemi_fn(
        c"mqv_getw",
        sys::SR_KEMIP_XVAL,
        kemi::ki_mqv_getw as *mut c_void,
        1,
    ),
    sys::sr_kemi_t {
        mname: sys::str_ {
            s: null_mut(),
            len: 0,
        },
        fname: sys::str_ {
            s: null_mut(),
            len: 0,
        },
        rtype: 0,
        func: null_mut(),
        ptypes: [0; 6],
    },
]);

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
        if !unsafe { crate::kamailio::kemi::register(KEMI.get() as *mut sys::sr_kemi_t) } {
            kerr!("cannot register the KEMI exports");
            return -1;
        }
        0
    }
}

host_entry! {
    fn mod_init() -> c_int, "mod_init", -1 => {
        let reg = registry::freeze();
        if reg.queues.is_empty() {
            kwarn!("no mqueue defined");
        }
        if let Err(e) = stats::register(&reg.queues) {
            kerr!("{e}");
            return -1;
        }
        if let Err(e) = remote::init(reg) {
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
    fn child_init(rank: c_int) -> c_int, "child_init", -1 => {
        if rank == sys::PROC_INIT {
            persist::load_all();
        }
        0
    }
}

host_entry! {
    fn mod_destroy(), "mod_destroy", () => {
        persist::save_all();
        if let Some(reg) = registry::frozen() {
            remote::release_all(reg);
        }
    }
}

/// The inter-module API of the C module's `api.h`.
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
        if super::api::add_by_name(q, k, v) == 1 {
            0
        } else {
            -1
        }
    }
}

host_entry! {
    /// `bind_mq(mq_api_t*)`, found by other modules with `find_export`.
    fn bind_mq(api: *mut MqApi) -> c_int, "bind_mq", -1 => {
        if api.is_null() {
            return -1;
        }
        // SAFETY: the caller passes its mq_api_t to fill.
        unsafe { (*api).add = Some(api_add) };
        0
    }
}
