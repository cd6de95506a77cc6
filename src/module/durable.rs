//! Durable queues in the module: the `durable_dir` parameter, the lock
//! that keeps a second instance off the directory, each process's mapping
//! of the log files, recovery at start, the flush timer of `durable=N`
//! and the clean stop (every lease ends, the log is synced).

use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::raw::{c_uint, c_void};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::registry::{Backend, Registry};
use crate::host_entry;
use crate::kamailio::process_local::ProcessLocal;
use crate::kamailio::shm::{shm_box, ShmAlloc};
use crate::log::{recover, Durability, Durable, FileStorage, SEGMENT_SIZE};
use crate::queue::{AddMode, Limits};
use crate::sys;
use crate::{kerr, kinfo, kwarn};

/// `durable_dir`.
pub static DURABLE_DIR: Mutex<Option<PathBuf>> = Mutex::new(None);
/// The directory, fixed at mod_init.
static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
/// The directory's lock, held for the life of the instance.
static LOCK: Mutex<Option<DirLock>> = Mutex::new(None);

/// A durable queue's state in shm.
pub struct DurableRef(*const Durable<ShmAlloc>);

// SAFETY: points into shm, valid in every process for the life of the
// server; the state behind it is reached through its cross-process lock.
unsafe impl Send for DurableRef {}
// SAFETY: as above.
unsafe impl Sync for DurableRef {}

impl DurableRef {
    pub fn get(&self) -> &Durable<ShmAlloc> {
        // SAFETY: set from shm_box at definition and never freed while the
        // module is loaded.
        unsafe { &*self.0 }
    }
}

/// The shm state of a new durable queue (module parameters).
pub fn create(
    mode: AddMode,
    limits: Limits,
    seed: u64,
    d: Durability,
) -> Result<DurableRef, String> {
    shm_box(Durable::new(mode, limits, seed, d, SEGMENT_SIZE))
        .map(|p| DurableRef(p as *const _))
        .ok_or_else(|| "no more shm for the durable queue".to_string())
}

/// This process's view of each queue's files, by queue index.
static STORAGE: ProcessLocal<Vec<Option<FileStorage>>> = ProcessLocal::new(Vec::new());

/// Runs `f` with this process's storage of queue `idx`.
pub fn with_storage<R>(idx: usize, name: &[u8], f: impl FnOnce(&mut FileStorage) -> R) -> R {
    STORAGE.with(|all| {
        if all.len() <= idx {
            all.resize_with(idx + 1, || None);
        }
        let dir = DIR.get().cloned().unwrap_or_default();
        f(all[idx].get_or_insert_with(|| FileStorage::new(&dir, name)))
    })
}

/// Creates the directory if missing and checks that it can be written.
fn prepare_dir(dir: &Path) -> Result<(), String> {
    // Missing parents as `mkdir -p` makes them (searchable by Kamailio's
    // user, should it be another), the directory itself private.
    let made = match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent),
        _ => Ok(()),
    };
    made.and_then(|_| {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
    })
    .map_err(|e| format!("cannot create durable_dir {}: {e}", dir.display()))?;
    if std::fs::metadata(dir).is_ok_and(|m| {
        use std::os::unix::fs::PermissionsExt;
        m.permissions().mode() & 0o002 != 0
    }) {
        crate::kwarn!(
            "durable_dir {} can be written by every user: another user could remove or \
             replace queue files there; make it writable by Kamailio's user only",
            dir.display()
        );
    }
    let probe = dir.join(format!(".mqueue-probe-{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&probe)
        .and_then(|_| std::fs::remove_file(&probe))
        .map_err(|e| format!("cannot write in durable_dir {}: {e}", dir.display()))
}

/// What keeps a second instance off the directory: a lock on the
/// directory itself (held open for the life of the instance) and the file
/// `mqueue.lock` that names the PID holding it.
struct DirLock {
    _dir: std::fs::File,
    _file: std::fs::File,
}

/// The PID written in `mqueue.lock`, if it is a regular file.
fn lock_owner(path: &Path) -> String {
    let mut pid = String::new();
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
    {
        if f.metadata().is_ok_and(|m| m.is_file()) {
            let _ = f.read_to_string(&mut pid);
        }
    }
    match pid.trim() {
        "" => "unknown".to_string(),
        p => p.to_string(),
    }
}

/// Locks the directory: a second instance on it is refused, naming the
/// first one's PID (from `mqueue.lock`). Anything but a regular file under
/// the name `mqueue.lock` (a directory, FIFO, symlink) is set aside, not
/// followed, and a new one written.
fn lock_dir(dir: &Path) -> Result<DirLock, String> {
    let d = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)
        .map_err(|e| format!("cannot open durable_dir {}: {e}", dir.display()))?;
    let path = dir.join("mqueue.lock");
    let in_use = || {
        format!(
            "durable_dir {} is in use by another Kamailio instance (PID {})",
            dir.display(),
            lock_owner(&path)
        )
    };
    // SAFETY: flock on a file descriptor we own.
    if unsafe { libc::flock(d.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(in_use());
    }
    if let Ok(m) = std::fs::symlink_metadata(&path) {
        if !m.file_type().is_file() {
            let to = crate::log::storage::set_aside(dir, "mqueue.lock")
                .map_err(|e| format!("cannot set aside {}: {e}", path.display()))?;
            kerr!(
                "mqueue: {} is not a regular file ({}): set aside as {to}, a new one written",
                path.display(),
                file_kind(&m)
            );
        }
    }
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    // The file's own lock too, as earlier versions of the module took it.
    // SAFETY: flock on a file descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(in_use());
    }
    let pid = std::process::id().to_string();
    f.set_len(0)
        .and_then(|_| f.rewind())
        .and_then(|_| f.write_all(pid.as_bytes()))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(DirLock { _dir: d, _file: f })
}

fn file_kind(m: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = m.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symbolic link"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else {
        "a device"
    }
}

/// mod_init: for the durable queues, the directory is prepared and locked
/// and each queue is recovered from its files. Errors name the queue.
/// Returns whether a flush timer is needed (a queue with `durable=N`).
/// Started as root with `-u`/`-g` (or `user`/`group`), Kamailio takes its
/// user after the modules' init: the directory and the files made or
/// recovered as root here go to that user, whose processes write them.
fn give_to_kamailio_user(dir: &Path) -> Result<(), String> {
    // SAFETY: two ints Kamailio set while reading its command line and
    // config, before mod_init; geteuid has no preconditions.
    let (uid, gid, euid) = unsafe { (sys::uid, sys::gid, libc::geteuid()) };
    if euid != 0 || uid <= 0 {
        return Ok(());
    }
    let gid = (gid > 0).then_some(gid as u32);
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("durable_dir {}: {e}", dir.display()))?;
    let paths = std::iter::once(dir.to_path_buf()).chain(entries.flatten().map(|e| e.path()));
    for p in paths {
        std::os::unix::fs::lchown(&p, Some(uid as u32), gid).map_err(|e| {
            format!(
                "durable_dir: cannot give {} to Kamailio's user (uid {uid}): {e}",
                p.display()
            )
        })?;
    }
    probe_as(dir, uid as u32, gid).map_err(|e| {
        format!(
            "durable_dir {}: Kamailio's user (uid {uid}) cannot write there ({e}): check the modes of the directories above it",
            dir.display()
        )
    })
}

/// Creates and removes a file in `dir` as Kamailio's user will be (a
/// child process takes its user, groups included, as the core does
/// after the modules' init).
fn probe_as(dir: &Path, uid: u32, gid: Option<u32>) -> Result<(), std::io::Error> {
    let probe = std::ffi::CString::new(
        dir.join(format!(".mqueue-probe-{}", std::process::id()))
            .as_os_str()
            .as_encoded_bytes(),
    )
    .map_err(std::io::Error::other)?;
    // SAFETY: fork in the main process at mod_init (no other thread);
    // the child only makes async-signal-tolerant libc calls and _exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: the child: takes the user, tries the file, exits with
        // 0 or the errno.
        unsafe {
            let fail = || *libc::__errno_location();
            if let Some(g) = gid {
                if libc::setgid(g) < 0 {
                    libc::_exit(fail());
                }
            }
            let pw = libc::getpwuid(uid);
            if !pw.is_null() && libc::initgroups((*pw).pw_name, (*pw).pw_gid) < 0 {
                libc::_exit(fail());
            }
            if libc::setuid(uid) < 0 {
                libc::_exit(fail());
            }
            let fd = libc::open(
                probe.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
                0o600,
            );
            if fd < 0 {
                libc::_exit(fail());
            }
            libc::close(fd);
            libc::unlink(probe.as_ptr());
            libc::_exit(0);
        }
    }
    let mut status = 0;
    // SAFETY: waits for the child forked above.
    if unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    match (libc::WIFEXITED(status), libc::WEXITSTATUS(status)) {
        (true, 0) => Ok(()),
        (true, errno) => Err(std::io::Error::from_raw_os_error(errno)),
        _ => Err(std::io::Error::other("the probe process died")),
    }
}

pub fn init(reg: &Registry) -> Result<bool, String> {
    let durable: Vec<_> = reg
        .queues
        .iter()
        .enumerate()
        .filter_map(|(i, d)| match &d.backend {
            Backend::Durable(q) => Some((i, d, q)),
            _ => None,
        })
        .collect();
    let Some((_, first, _)) = durable.first() else {
        return Ok(false);
    };
    let dir = DURABLE_DIR.lock().ok().and_then(|d| d.clone());
    let Some(dir) = dir else {
        return Err(format!(
            "mqueue {} is durable: the durable_dir parameter is required",
            first.name_lossy()
        ));
    };
    prepare_dir(&dir).map_err(|e| format!("mqueue {}: {e}", first.name_lossy()))?;
    let lock = lock_dir(&dir)?;
    if let Ok(mut l) = LOCK.lock() {
        *l = Some(lock);
    }
    let _ = DIR.set(dir.clone());
    let mut timer = false;
    for (idx, d, q) in durable {
        let q = q.get();
        timer |= matches!(q.durability(), Durability::Within(_));
        let (mode, limits) = {
            let g = q.lock();
            (g.queue.mode(), g.queue.limits())
        };
        let name = d.name_lossy();
        let started = std::time::Instant::now();
        let (loaded, redelivered, aside) = with_storage(idx, &d.name, |st| {
            let rec = recover(st, mode, limits).map_err(|e| {
                format!(
                    "mqueue {name}: cannot read its log in {}: {e}",
                    dir.display()
                )
            })?;
            for e in &rec.errors {
                kerr!("mqueue {name}: {e}");
            }
            if rec.superseded_leases > 0 {
                kwarn!(
                    "mqueue {name}: {} items leased at the stop are not delivered again: their key was added again after they were fetched, and the newer item keeps it (addmode {})",
                    rec.superseded_leases,
                    mode.as_int()
                );
            }
            let (n, r) = (rec.len(), rec.redelivered);
            let aside = q.open(st, rec).map_err(|e| {
                format!(
                    "mqueue {name}: cannot write its log in {}: {e}",
                    dir.display()
                )
            })?;
            Ok::<_, String>((n, r, aside))
        })?;
        for a in aside {
            kerr!("mqueue {name}: {a}");
        }
        kinfo!(
            "mqueue {name}: {loaded} items loaded from the durable log ({redelivered} to be delivered again) in {} ms",
            started.elapsed().as_millis()
        );
    }
    give_to_kamailio_user(&dir)?;
    // Unmapped before the fork: a mapping inherited by every process
    // would keep the space of a deleted segment in use.
    STORAGE.with(|all| all.clear());
    if timer {
        // SAFETY: called from mod_init, as register_basic_timers requires.
        if unsafe { sys::register_basic_timers(1) } < 0 {
            return Err("cannot register the durable flush timer process".into());
        }
    }
    Ok(timer)
}

/// The shortest flush bound of the `durable=N` queues, in ms.
fn flush_ms(reg: &Registry) -> Option<u32> {
    reg.queues
        .iter()
        .filter_map(|d| match &d.backend {
            Backend::Durable(q) => match q.get().durability() {
                Durability::Within(n) => Some(n),
                Durability::Sync => None,
            },
            _ => None,
        })
        .min()
}

host_entry! {
    /// The flush timer: syncs every `durable=N` queue's log.
    fn flush_timer(_ticks: c_uint, _param: *mut c_void), "durable flush timer", () => {
        flush_all();
    }
}

/// Syncs the logs of the `durable=N` queues.
fn flush_all() {
    let Some(reg) = super::registry::frozen() else {
        return;
    };
    for (idx, d) in reg.queues.iter().enumerate() {
        let Backend::Durable(q) = &d.backend else {
            continue;
        };
        let q = q.get();
        if q.durability() == Durability::Sync {
            continue;
        }
        if let Err(e) = with_storage(idx, &d.name, |st| q.flush(st)) {
            kerr!(
                "mqueue {}: cannot sync the durable log: {e}",
                d.name_lossy()
            );
        }
    }
}

/// child_init(PROC_MAIN): forks the flush timer process when needed.
pub fn start_timer() -> Result<(), String> {
    let Some(ms) = super::registry::frozen().and_then(flush_ms) else {
        return Ok(());
    };
    // Half the bound between flushes, so each add is on disk within it.
    let us = (ms as i32 * 500).max(500);
    // SAFETY: called from child_init in the main process, after
    // register_basic_timers(1) in mod_init; the name is a static string.
    let pid = unsafe {
        sys::fork_basic_utimer(
            sys::PROC_TIMER,
            c"mqueue durable flush".as_ptr() as *mut _,
            1,
            Some(flush_timer),
            std::ptr::null_mut(),
            us,
        )
    };
    if pid < 0 {
        return Err("cannot start the durable flush timer process".into());
    }
    Ok(())
}

/// How long the stop waits for a queue lock before taking it over.
const STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// mod_destroy (every worker stopped): leases end, logs are synced.
pub fn stop(reg: &Registry) {
    for (idx, d) in reg.queues.iter().enumerate() {
        let Backend::Durable(q) = &d.backend else {
            continue;
        };
        // SAFETY: mod_destroy runs in the main process after every child
        // has exited: no one else uses the queue.
        match with_storage(idx, &d.name, |st| unsafe { q.get().stop(st, STOP_WAIT) }) {
            Ok(false) => {}
            Ok(true) => kerr!(
                "mqueue {}: durable queue lock still held at stop (a process died holding it): its leased items are delivered again at the next start",
                d.name_lossy()
            ),
            Err(e) => kerr!(
                "mqueue {}: cannot sync the durable log at stop: {e}",
                d.name_lossy()
            ),
        }
    }
}
