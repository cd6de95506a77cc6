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

/// A session whose calls wait `redis_timeout` and back off `redis_backoff`.
fn session(consumer: String) -> Session {
    Session::new(consumer, timeout(), backoff()).with_tls(TLS.get().cloned())
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
        let session =
            s.get_or_insert_with(|| session(format!("{}{}", instance(), std::process::id())));
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
