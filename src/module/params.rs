//! Module parameters: the C module's `mqueue`, `mqueue_name`,
//! `mqueue_size`, `mqueue_addmode` and `db_url`, and our own
//! `redis_timeout`, `redis_backoff`, `redis_tls_ca`, `redis_tls_cert`,
//! `redis_tls_key`, `stats_queues`, `spill_dir` and `durable_dir`. Every
//! value the C module accepts is accepted with the C module's meaning (a
//! warning names the queue where that is not what the value says); what
//! the C module refuses, or crashes on, stops Kamailio at start with an
//! error naming the parameter.

use std::ffi::CStr;
use std::os::raw::{c_char, c_int, c_void};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

use super::durable;
use super::persist::DbMode;
use super::registry::{self, Backend};
use crate::host_entry;
use crate::kamailio::shm;
use crate::log::Durability;
use crate::queue::param::{meanings, parse_queue_spec, QueueSpec};
use crate::queue::{AddMode, Limits};
use crate::stream::{StreamSpec, DEFAULT_CLAIM_MS, DEFAULT_GROUP};
use crate::{kerr, kinfo, kwarn};

/// `mqueue_size` and `mqueue_addmode`, as set so far (they apply to the
/// `mqueue_name` definitions that follow them, as in the C module).
static DEFAULT_SIZE: AtomicI64 = AtomicI64::new(0);
static DEFAULT_ADDMODE: AtomicI64 = AtomicI64::new(0);
/// `db_url`.
pub static DB_URL: Mutex<Option<Vec<u8>>> = Mutex::new(None);

fn string_arg<'a>(val: *mut c_void) -> Option<&'a [u8]> {
    if val.is_null() {
        return None;
    }
    // SAFETY: for PARAM_STRING parameters the core passes a NUL-terminated
    // string that lives for the whole configuration phase.
    Some(unsafe { CStr::from_ptr(val as *const c_char) }.to_bytes())
}

/// `redis_timeout` (ms): the longest a call to Redis may wait.
pub static REDIS_TIMEOUT_MS: AtomicI64 = AtomicI64::new(500);
/// `redis_backoff` (ms): how long a process fails its calls on a server
/// fast after a call there timed out or could not connect.
pub static REDIS_BACKOFF_MS: AtomicI64 = AtomicI64::new(1000);

/// `redis_tls_ca`, `redis_tls_cert`, `redis_tls_key`: PEM files for
/// `rediss://` servers (the CAs to check them against, default the
/// system's; a client certificate and its key for servers that ask).
pub static REDIS_TLS: Mutex<[Option<String>; 3]> = Mutex::new([None, None, None]);

fn set_tls(which: usize, val: *mut c_void) {
    let v = String::from_utf8_lossy(string_arg(val).unwrap_or_default()).into_owned();
    if let Ok(mut files) = REDIS_TLS.lock() {
        files[which] = (!v.is_empty()).then_some(v);
    }
}

host_entry! {
    /// `redis_tls_ca` (string): the CA certificates (PEM) that sign the
    /// certificates of `rediss://` servers.
    pub fn mq_param_redis_tls_ca(_type: u32, val: *mut c_void) -> c_int, "modparam redis_tls_ca", -1 => {
        set_tls(0, val);
        0
    }
}

host_entry! {
    /// `redis_tls_cert` (string): a client certificate (PEM) for
    /// `rediss://` servers that ask for one.
    pub fn mq_param_redis_tls_cert(_type: u32, val: *mut c_void) -> c_int, "modparam redis_tls_cert", -1 => {
        set_tls(1, val);
        0
    }
}

host_entry! {
    /// `redis_tls_key` (string): the private key (PEM) of `redis_tls_cert`.
    pub fn mq_param_redis_tls_key(_type: u32, val: *mut c_void) -> c_int, "modparam redis_tls_key", -1 => {
        set_tls(2, val);
        0
    }
}

/// Where the queue keeps its items; for a queue on Redis Streams, what the
/// C attributes mean there, checked.
fn backend(s: &QueueSpec) -> Result<Backend, String> {
    if let Some(d) = s.durable {
        let limits = Limits {
            max_items: s.size.max(0) as usize,
            max_bytes: s.maxbytes.max(0) as usize,
        };
        let mode = AddMode::from_int(s.addmode as i32);
        return durable::create(mode, limits, registry::random_seed(), d).map(Backend::Durable);
    }
    let Some(url) = &s.redis else {
        return Ok(Backend::Memory);
    };
    if DbMode::from_int(s.dbmode) != DbMode::None {
        return Err("dbmode cannot be used with redis (Redis persists the queue itself)".into());
    }
    if s.maxbytes > 0 {
        return Err("maxbytes is not supported for a queue on redis".into());
    }
    let group = s.group.as_deref().unwrap_or(DEFAULT_GROUP);
    let claim_ms = s.claim_ms.map_or(DEFAULT_CLAIM_MS, |n| n as u64);
    let mut st = StreamSpec::new(
        &s.name,
        url,
        group,
        AddMode::from_int(s.addmode as i32),
        s.size.max(0) as usize,
        claim_ms,
    )?;
    if let Some(n) = s.max_deliveries {
        st.max_deliveries = n as u64;
    }
    if let Some(n) = s.consumer_idle_ms {
        st.consumer_idle_ms = n as u64;
    }
    if let Some(n) = s.replicas {
        st.replicas = n as u64;
    }
    Ok(Backend::Remote(Box::new(st)))
}

fn define(param: &str, s: &QueueSpec) -> c_int {
    if !shm::initialized() {
        kerr!("modparam {param}: shm not initialized - cannot define mqueue now");
        return -1;
    }
    let (name, size, addmode, maxbytes, dbmode) =
        (&s.name, s.size, s.addmode, s.maxbytes, s.dbmode);
    let backend = match backend(s) {
        Ok(b) => b,
        Err(e) => {
            kerr!(
                "modparam {param}: mqueue {}: {e}",
                crate::kamailio::log::shown(name)
            );
            return -1;
        }
    };
    let limits = Limits {
        max_items: size.max(0) as usize,
        max_bytes: maxbytes.max(0) as usize,
    };
    let on_redis = match &backend {
        Backend::Remote(st) => format!("|redis={}", st.shown_url),
        Backend::Durable(q) => match q.get().durability() {
            Durability::Sync => "|durable=sync".to_string(),
            Durability::Within(n) => format!("|durable={n}"),
        },
        Backend::Memory => String::new(),
    };
    match registry::define(
        name,
        AddMode::from_int(addmode as i32),
        limits,
        DbMode::from_int(dbmode),
        backend,
    ) {
        Ok(()) => {
            kinfo!(
                "mqueue param: [{}|size={size}|addmode={addmode}|dbmode={dbmode}|maxbytes={maxbytes}{on_redis}]",
                crate::kamailio::log::shown(name)
            );
            0
        }
        Err(e) => {
            kerr!("modparam {param}: {e}");
            -1
        }
    }
}

host_entry! {
    /// `modparam("mqueue", "mqueue", "name=q;size=N;addmode=M;dbmode=D;maxbytes=B")`
    pub fn mq_param(_type: u32, val: *mut c_void) -> c_int, "modparam mqueue", -1 => {
        let Some(text) = string_arg(val) else {
            kerr!("modparam mqueue: no value");
            return -1;
        };
        match parse_queue_spec(text) {
            Ok(s) => {
                let name = crate::kamailio::log::shown(&s.name);
                for w in &s.warnings {
                    kwarn!("mqueue {name}: {w}");
                }
                define("mqueue", &s)
            }
            Err(e) => {
                kerr!("modparam mqueue: {e}: {}", crate::kamailio::log::shown(text));
                -1
            }
        }
    }
}

host_entry! {
    /// `modparam("mqueue", "mqueue_name", "q")` with the current size/addmode.
    pub fn mq_param_name(_type: u32, val: *mut c_void) -> c_int, "modparam mqueue_name", -1 => {
        let name = string_arg(val).unwrap_or_default();
        if name.is_empty() {
            kerr!("modparam mqueue_name: mqueue name not defined");
            return -1;
        }
        let size = DEFAULT_SIZE.load(Ordering::Relaxed);
        let addmode = DEFAULT_ADDMODE.load(Ordering::Relaxed);
        for w in meanings(size, addmode, 0) {
            kwarn!("mqueue {}: {w}", crate::kamailio::log::shown(name));
        }
        let spec = QueueSpec {
            name: name.to_vec(),
            size,
            addmode,
            ..QueueSpec::default()
        };
        define("mqueue_name", &spec)
    }
}

fn int_arg(val: *mut c_void) -> i64 {
    // For PARAM_INT the core passes the number in the pointer itself.
    val as isize as i32 as i64
}

host_entry! {
    /// `mqueue_size`: any `int`, as in the C module (below 0: no limit).
    pub fn mq_param_size(_type: u32, val: *mut c_void) -> c_int, "modparam mqueue_size", -1 => {
        DEFAULT_SIZE.store(int_arg(val), Ordering::Relaxed);
        0
    }
}

host_entry! {
    /// `mqueue_addmode`: any `int`, as in the C module (other than 1 or 2: 0).
    pub fn mq_param_addmode(
        _type: u32,
        val: *mut c_void,
    ) -> c_int, "modparam mqueue_addmode", -1 => {
        DEFAULT_ADDMODE.store(int_arg(val), Ordering::Relaxed);
        0
    }
}

host_entry! {
    pub fn mq_param_db_url(_type: u32, val: *mut c_void) -> c_int, "modparam db_url", -1 => {
        let url = string_arg(val).unwrap_or_default().to_vec();
        if let Ok(mut slot) = DB_URL.lock() {
            *slot = (!url.is_empty()).then_some(url);
        }
        0
    }
}

host_entry! {
    /// `redis_timeout` (int, ms): the longest a Redis call waits; 1 or more.
    pub fn mq_param_redis_timeout(_type: u32, val: *mut c_void) -> c_int, "modparam redis_timeout", -1 => {
        let n = int_arg(val);
        if n < 1 {
            kerr!("modparam redis_timeout: must be at least 1 (ms), not {n}");
            return -1;
        }
        REDIS_TIMEOUT_MS.store(n, Ordering::Relaxed);
        0
    }
}

host_entry! {
    /// `spill_dir` (string): where spill files go (default: the runtime
    /// directory, `-Y`).
    pub fn mq_param_spill_dir(_type: u32, val: *mut c_void) -> c_int, "modparam spill_dir", -1 => {
        use std::os::unix::ffi::OsStrExt;
        let dir = string_arg(val).unwrap_or_default();
        if let Ok(mut slot) = super::persist::SPILL_DIR.lock() {
            *slot = (!dir.is_empty())
                .then(|| std::path::PathBuf::from(std::ffi::OsStr::from_bytes(dir)));
        }
        0
    }
}

host_entry! {
    /// `stats_queues` (int): how many queues, the first defined, get
    /// counters in the statistics framework (default 100; 0 none).
    pub fn mq_param_stats_queues(_type: u32, val: *mut c_void) -> c_int, "modparam stats_queues", -1 => {
        let n = int_arg(val);
        if n < 0 {
            kerr!("modparam stats_queues: must be 0 or more, not {n}");
            return -1;
        }
        super::stats::EXPORTED_QUEUES.store(n as usize, Ordering::Relaxed);
        0
    }
}

host_entry! {
    /// `redis_backoff` (int, ms): after a Redis call timed out or could not
    /// connect, the process fails its calls on that server at once for this
    /// long; 0 turns it off.
    pub fn mq_param_redis_backoff(_type: u32, val: *mut c_void) -> c_int, "modparam redis_backoff", -1 => {
        let n = int_arg(val);
        if n < 0 {
            kerr!("modparam redis_backoff: must be 0 or more (ms), not {n}");
            return -1;
        }
        REDIS_BACKOFF_MS.store(n, Ordering::Relaxed);
        0
    }
}

host_entry! {
    /// `durable_dir` (string): the directory of the durable queues' logs,
    /// created if missing.
    pub fn mq_param_durable_dir(_type: u32, val: *mut c_void) -> c_int, "modparam durable_dir", -1 => {
        let dir = string_arg(val).unwrap_or_default();
        if dir.is_empty() {
            kerr!("modparam durable_dir: empty directory name");
            return -1;
        }
        let path = std::path::PathBuf::from(std::ffi::OsStr::from_bytes(dir));
        if let Ok(mut slot) = durable::DURABLE_DIR.lock() {
            *slot = Some(path);
        }
        0
    }
}
