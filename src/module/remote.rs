//! Module glue for queues on Redis Streams (`redis=URL`): the start-up
//! check, this process's session (opened on first use, so after the fork),
//! consumer names unique per instance and process, and error logs that do
//! not flood while Redis is down.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::params::REDIS_TIMEOUT_MS;
use super::registry::Registry;
use crate::kamailio::process_local::ProcessLocal;
use crate::stream::{CheckError, Session};
use crate::{kerr, kinfo};

/// `<host>-<random>-`: this instance's consumer name prefix, made in
/// `mod_init` (before the fork, so every process shares it).
static INSTANCE: OnceLock<String> = OnceLock::new();
/// This process's session; None until the first Redis call here.
static SESSION: ProcessLocal<Option<Session>> = ProcessLocal::new(None);
/// When this process last logged a Redis error (not for adds, which log
/// once per burst), so that a down Redis logs every few seconds at most.
static LAST_ERROR_LOG: ProcessLocal<Option<Instant>> = ProcessLocal::new(None);

fn timeout() -> Duration {
    let ms = REDIS_TIMEOUT_MS.load(std::sync::atomic::Ordering::Relaxed);
    Duration::from_millis(ms.max(1) as u64)
}

fn instance() -> &'static str {
    INSTANCE.get_or_init(|| {
        let mut host = [0u8; 64];
        // SAFETY: gethostname writes at most host.len() bytes.
        let ok =
            unsafe { libc::gethostname(host.as_mut_ptr() as *mut libc::c_char, host.len()) } == 0;
        let end = host.iter().position(|&b| b == 0).unwrap_or(host.len());
        let host = if ok {
            String::from_utf8_lossy(&host[..end]).into_owned()
        } else {
            "kamailio".into()
        };
        let mut rnd = [0u8; 4];
        // SAFETY: getrandom writes at most 4 bytes into the buffer.
        unsafe { libc::getrandom(rnd.as_mut_ptr() as *mut libc::c_void, 4, 0) };
        format!(
            "{host}-{:08x}-",
            u32::from_ne_bytes(rnd) ^ std::process::id()
        )
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
    let prefix = instance();
    let check = Session::new(format!("{prefix}main"), timeout());
    for (d, st) in streams {
        match check.check(st) {
            Ok(()) => kinfo!(
                "mqueue {}: on {} (stream {}, group {})",
                d.name_lossy(),
                st.shown_url,
                st.stream,
                st.group
            ),
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

/// Runs `f` with this process's session.
pub fn with<R>(f: impl FnOnce(&mut Session) -> R) -> R {
    SESSION.with(|s| {
        let session = s.get_or_insert_with(|| {
            Session::new(format!("{}{}", instance(), std::process::id()), timeout())
        });
        f(session)
    })
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
/// instance's processes still hold are acknowledged, as each process's
/// fetched item is released when it exits, and their consumers leave the
/// group.
pub fn release_all(reg: &Registry) {
    let Some(prefix) = INSTANCE.get() else { return };
    let mut session = Session::new(format!("{prefix}main"), timeout());
    for d in &reg.queues {
        let Some(st) = d.remote() else { continue };
        match session.release_consumers(st, prefix) {
            Ok(0) => {}
            Ok(n) => kinfo!("mqueue {}: acknowledged {n} entries this instance's processes held", d.name_lossy()),
            Err(e) => kerr!(
                "mqueue {}: cannot release this instance's consumers ({e}); their entries are delivered again after claim_ms",
                d.name_lossy()
            ),
        }
    }
}
