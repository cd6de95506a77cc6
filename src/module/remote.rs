//! Module glue for queues on Redis Streams (`redis=URL`): the start-up
//! check, this process's session (opened on first use, so after the fork),
//! consumer names unique per instance and process, and error logs that do
//! not flood while Redis is down.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::params::{REDIS_BACKOFF_MS, REDIS_TIMEOUT_MS, REDIS_TLS};
use super::registry::{QueueDef, Registry};
use crate::kamailio::process_local::ProcessLocal;
use crate::stream::{CheckError, Session, StreamSpec};
use crate::{kerr, kinfo, kwarn};

/// `<host>-<random>-`: this instance's consumer name prefix, made in
/// `mod_init` (before the fork, so every process shares it).
static INSTANCE: OnceLock<String> = OnceLock::new();
/// The TLS setup of `rediss://` queues, made in `mod_init`.
static TLS: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
/// This process's session; None until the first Redis call here.
static SESSION: ProcessLocal<Option<Session>> = ProcessLocal::new(None);
/// When this process last logged a Redis error (not for adds, which log
/// once per burst), so that a down Redis logs every few seconds at most.
static LAST_ERROR_LOG: ProcessLocal<Option<Instant>> = ProcessLocal::new(None);

fn timeout() -> Duration {
    let ms = REDIS_TIMEOUT_MS.load(std::sync::atomic::Ordering::Relaxed);
    Duration::from_millis(ms.max(1) as u64)
}

fn backoff() -> Duration {
    let ms = REDIS_BACKOFF_MS.load(std::sync::atomic::Ordering::Relaxed);
    Duration::from_millis(ms.max(0) as u64)
}

/// A session whose calls wait `redis_timeout` and back off `redis_backoff`
/// (the main process's own: the start-up check and the hand-back at the
/// stop always try the server).
fn session(consumer: String) -> Session {
    Session::new(consumer, timeout(), backoff()).with_tls(TLS.get().cloned())
}

/// A worker's session: outages are shared with the instance's other
/// processes.
fn worker_session(consumer: String) -> Session {
    session(consumer).with_gate(GATE.get().map(|g| g as &'static dyn crate::stream::Gate))
}

/// Outages shared by this instance's processes (see [`crate::stream::Gate`]):
/// per Redis server, the monotonic millisecond until which calls fail
/// fast (0: up), in shared memory.
struct SharedGate {
    /// The servers of the queues, in the order of `until` (made before
    /// the fork: the same in every process).
    servers: Vec<String>,
    until: *const Until,
}

/// One server's entry of the shared outage table.
struct Until(std::sync::atomic::AtomicU64);

// SAFETY: an atomic, used only atomically.
unsafe impl crate::queue::ShmSafe for Until {}

// SAFETY: `until` points to shm atomics that live as long as the server;
// `servers` is only read after the fork.
unsafe impl Send for SharedGate {}
// SAFETY: as above; the atomics are the only shared state.
unsafe impl Sync for SharedGate {}

static GATE: OnceLock<SharedGate> = OnceLock::new();

impl SharedGate {
    fn slot(&self, server: &str) -> Option<&std::sync::atomic::AtomicU64> {
        let i = self.servers.iter().position(|s| s == server)?;
        // SAFETY: one entry per server, allocated with `servers`, never
        // freed.
        Some(unsafe { &(*self.until.add(i)).0 })
    }
}

impl crate::stream::Gate for SharedGate {
    fn may_call(&self, server: &str, probe_ms: u64) -> bool {
        use std::sync::atomic::Ordering::{AcqRel, Acquire};
        let Some(slot) = self.slot(server) else {
            return true;
        };
        let until = slot.load(Acquire);
        if until == 0 {
            return true;
        }
        let now = crate::queue::monotonic_ms();
        // Past the back-off: the process that moves it on tries the server.
        now >= until
            && slot
                .compare_exchange(until, now + probe_ms, AcqRel, Acquire)
                .is_ok()
    }

    fn down(&self, server: &str, for_ms: u64) {
        if let Some(slot) = self.slot(server) {
            slot.store(
                crate::queue::monotonic_ms() + for_ms,
                std::sync::atomic::Ordering::Release,
            );
        }
    }

    fn up(&self, server: &str) {
        use std::sync::atomic::Ordering::{Acquire, Release};
        if let Some(slot) = self.slot(server).filter(|s| s.load(Acquire) != 0) {
            slot.store(0, Release);
        }
    }

    fn wait_ms(&self, server: &str) -> u64 {
        self.slot(server).map_or(0, |s| {
            s.load(std::sync::atomic::Ordering::Acquire)
                .saturating_sub(crate::queue::monotonic_ms())
        })
    }
}

/// Makes the shared outage table for the servers of `streams` (mod_init,
/// before the fork); without shared memory, each process keeps its own.
fn set_up_gate(streams: &[&StreamSpec]) {
    let mut servers: Vec<String> = streams.iter().map(|s| s.server.clone()).collect();
    servers.sort();
    servers.dedup();
    let Some(until) = crate::kamailio::shm::shm_slots::<Until>(servers.len()) else {
        kwarn!("mqueue: no shared memory for the Redis outage table; each process backs off alone");
        return;
    };
    for i in 0..servers.len() {
        // SAFETY: slot i of a fresh block of servers.len() atomics.
        unsafe {
            until
                .add(i)
                .write(Until(std::sync::atomic::AtomicU64::new(0)))
        };
    }
    let _ = GATE.set(SharedGate { servers, until });
}

/// Reads the files of `redis_tls_ca`, `redis_tls_cert` and `redis_tls_key`
/// (the CAs default to the system's).
fn set_up_tls() -> Result<(), String> {
    let [ca, cert, key] = REDIS_TLS
        .lock()
        .map(|f| f.clone())
        .map_err(|_| "TLS parameters unreadable".to_string())?;
    let config = crate::stream::client_config(
        ca.as_deref().unwrap_or(crate::stream::SYSTEM_CA),
        cert.as_deref(),
        key.as_deref(),
    )?;
    let _ = TLS.set(config);
    Ok(())
}

fn instance() -> &'static str {
    INSTANCE.get_or_init(|| {
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        let host = if host.is_empty() {
            "kamailio".into()
        } else {
            host
        };
        // Without random bytes, the process id still tells instances on
        // one host apart.
        let rnd = getrandom::u32().unwrap_or(0);
        format!("{host}-{:08x}-", rnd ^ std::process::id())
    })
}

/// `mod_init`: checks every Redis queue's server with a connection of its
/// own, closed again before the fork. A malformed URL stopped the start
/// already; a refused password or a key of another type stops it here;
/// an unreachable server is logged and Kamailio starts (the calls fail
/// until it is back).
pub fn init(reg: &Registry) -> Result<(), String> {
    let streams: Vec<_> = reg
        .queues
        .iter()
        .filter_map(|d| d.remote().map(|s| (d, s)))
        .collect();
    if streams.is_empty() {
        return Ok(());
    }
    if streams.iter().any(|(_, s)| s.tls()) {
        set_up_tls()?;
    }
    set_up_gate(&streams.iter().map(|(_, s)| *s).collect::<Vec<_>>());
    let prefix = instance();
    let mut check = session(format!("{prefix}main"));
    for (d, st) in streams {
        match check.check(st) {
            Ok(moved) => {
                prune(&mut check, d, st);
                kinfo!(
                "mqueue {}: on {} (stream {}, group {}){}",
                d.name_lossy(),
                st.shown_url,
                st.stream,
                st.group,
                if moved {
                    "; the keys of the previous release (mqueue:<name>) were moved to it"
                } else {
                    ""
                }
                )
            }
            Err(CheckError::Unreachable(e)) => kerr!(
                "mqueue {}: {} is unreachable at start ({e}); calls on the queue fail until it answers",
                d.name_lossy(),
                st.shown_url
            ),
            Err(CheckError::Refused(e)) => {
                return Err(format!("mqueue {}: {}: {e}", d.name_lossy(), st.shown_url))
            }
        }
    }
    Ok(())
}

/// Consumer hygiene, at every start and stop of an instance: consumers
/// that hold nothing and were idle for `consumer_idle_ms` leave the group.
fn prune(session: &mut Session, d: &QueueDef, st: &StreamSpec) {
    match session.prune_consumers(st) {
        Ok(0) => {}
        Ok(n) => kinfo!(
            "mqueue {}: removed {n} consumers idle for consumer_idle_ms and holding nothing",
            d.name_lossy()
        ),
        Err(e) => kerr!(
            "mqueue {}: cannot remove idle consumers: {e}",
            d.name_lossy()
        ),
    }
}

/// Runs `f` with this process's session.
pub fn with<R>(f: impl FnOnce(&mut Session) -> R) -> R {
    SESSION.with(|s| {
        let session = s
            .get_or_insert_with(|| worker_session(format!("{}{}", instance(), std::process::id())));
        f(session)
    })
}

/// The figures of a Redis queue (`mqueue.stats`, statistics); damaged
/// counters are logged.
pub fn figures(
    name: &str,
    st: &crate::stream::StreamSpec,
) -> Result<crate::stream::Figures, String> {
    let f = with(|s| s.figures(st))?;
    for w in &f.warnings {
        kwarn!("mqueue {name}: {w}");
    }
    Ok(f)
}

/// Logs a failed Redis call, at most every 10 seconds per process.
pub fn log_error(queue: &str, what: &str, e: &str) {
    let now = Instant::now();
    let due = LAST_ERROR_LOG.with(|last| {
        let due = last.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10));
        if due {
            *last = Some(now);
        }
        due
    });
    if due {
        kerr!("mqueue {queue}: {what} failed: {e} (such errors are logged every 10 s at most)");
    }
}

/// `mod_destroy` (main process, every child exited): entries this
/// instance's processes still hold (the last one each script saw, and any
/// delivered by a call that timed out) go back to the group for immediate
/// redelivery to any instance, never acknowledged unseen; their consumers
/// leave the group.
pub fn release_all(reg: &Registry) {
    let Some(prefix) = INSTANCE.get() else { return };
    let mut session = session(format!("{prefix}main"));
    for d in &reg.queues {
        let Some(st) = d.remote() else { continue };
        match session.release_consumers(st, prefix) {
            Ok(0) => {}
            Ok(n) => kinfo!(
                "mqueue {}: handed back {n} entries this instance's processes held, for redelivery",
                d.name_lossy()
            ),
            Err(e) => kerr!(
                "mqueue {}: cannot hand back this instance's entries ({e}); they are delivered again after claim_ms",
                d.name_lossy()
            ),
        }
        prune(&mut session, d, st);
    }
}
