//! DB persistence (`dbmode`, `db_url`), with the C module's meaning:
//! 1 loads at start and saves at shutdown, 2 only loads, 3 only saves; a
//! load moves the rows into the queue. The table is named after the queue,
//! with the columns `id` (order), `key` and `val`.
//!
//! Everything here runs in the main process: the load after every module
//! is initialised (`child_init(PROC_INIT)`, before the fork), the save at
//! shutdown once every worker has exited, before any module's destroy
//! function (`core::run_first_at_destroy`). Items the database cannot take
//! go to a checked spill file in the runtime directory (`queue::spill`),
//! loaded back at the next start.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::registry::{self, QueueDef};
use super::table_load::TableLoad;
use crate::kamailio::db::Driver;
use crate::queue::{spill, AddOutcome};
use crate::{kerr, kinfo, kwarn};

const COLS: [&[u8]; 2] = [b"key", b"val"];
const ORDER: &[u8] = b"id";

/// The bound driver, set in `mod_init` when some queue has a dbmode.
pub struct Persist {
    driver: Driver,
}

// SAFETY: used only by the main process, which runs one thread; the
// driver's function pointers are immutable after binding.
unsafe impl Send for Persist {}
// SAFETY: as above.
unsafe impl Sync for Persist {}

static PERSIST: OnceLock<Persist> = OnceLock::new();

/// A queue's `dbmode`, with the C module's numbers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DbMode {
    /// 0 (and any number other than 1 to 3): no persistence.
    #[default]
    None,
    /// 1: loads at start, saves at shutdown.
    LoadAndSave,
    /// 2: only loads.
    LoadOnly,
    /// 3: only saves.
    SaveOnly,
}

impl DbMode {
    pub fn from_int(n: i64) -> DbMode {
        match n {
            1 => DbMode::LoadAndSave,
            2 => DbMode::LoadOnly,
            3 => DbMode::SaveOnly,
            _ => DbMode::None,
        }
    }

    pub fn as_int(self) -> i32 {
        match self {
            DbMode::None => 0,
            DbMode::LoadAndSave => 1,
            DbMode::LoadOnly => 2,
            DbMode::SaveOnly => 3,
        }
    }

    pub fn loads(self) -> bool {
        matches!(self, DbMode::LoadAndSave | DbMode::LoadOnly)
    }

    pub fn saves(self) -> bool {
        matches!(self, DbMode::LoadAndSave | DbMode::SaveOnly)
    }
}

fn loads(d: &QueueDef) -> bool {
    d.dbmode.loads()
}

fn saves(d: &QueueDef) -> bool {
    d.dbmode.saves()
}

/// `mod_init`: checks db_url and binds its driver when a queue needs it.
pub fn init(queues: &[QueueDef], url: Option<&[u8]>) -> Result<bool, String> {
    let Some(first) = queues.iter().find(|d| loads(d) || saves(d)) else {
        return Ok(false);
    };
    let url = url.filter(|u| !u.is_empty()).ok_or_else(|| {
        format!(
            "mqueue {}: dbmode={} needs the db_url module parameter",
            first.name_lossy(),
            first.dbmode.as_int()
        )
    })?;
    check_spill_dir(first)?;
    let driver = Driver::bind(url).map_err(|e| format!("db_url: {e}"))?;
    let _ = PERSIST.set(Persist { driver });
    Ok(queues.iter().any(saves))
}

/// `child_init(PROC_INIT)`: loads every queue with dbmode 1 or 2, then any
/// spill file of a queue that saves.
pub fn load_all() {
    let (Some(p), Some(reg)) = (PERSIST.get(), registry::frozen()) else {
        return;
    };
    for d in &reg.queues {
        if loads(d) {
            load_table(p, d);
        }
        if loads(d) || saves(d) {
            load_spill(d);
        }
    }
}

/// Adds one loaded item; false when the queue cannot take it (no shared
/// memory, or larger than `maxbytes`), which ends the load there.
fn add_loaded(d: &QueueDef, k: &[u8], v: &[u8]) -> bool {
    !matches!(
        d.queue().lock().add(k, v),
        AddOutcome::NoMemory | AddOutcome::TooLarge
    )
}

/// Moves the table's rows into the queue: rows are deleted only once they
/// are in shared memory and the read has succeeded; if the rows taken
/// cannot be deleted, the queue gives them back (they stay in the table,
/// nothing is loaded twice).
fn load_table(p: &Persist, d: &QueueDef) {
    let name = d.name_lossy();
    let before = d.queue().lock().len();
    let moved = p.driver.connect().and_then(|mut c| {
        c.use_table(&d.name)?;
        let mut load = TableLoad::new(&mut c);
        let taken = load.read(COLS, ORDER, |k, v| add_loaded(d, k, v))?;
        if taken.rows > 0 {
            load.delete_taken(&taken)?;
        }
        Ok(taken)
    });
    match moved {
        Ok(taken) if taken.all => {
            kinfo!(
                "mqueue {name}: loaded {} items from the database",
                taken.rows
            )
        }
        Ok(taken) => kerr!(
            "mqueue {name}: loaded {} items from the database; the next row does not fit \
             (shared memory, -m, or maxbytes): it and the rows after it stay in table {name} \
             for the next start",
            taken.rows
        ),
        Err(e) => {
            let mut q = d.queue().lock();
            let back = q.len().saturating_sub(before);
            if before == 0 && back > 0 {
                q.clear();
            }
            drop(q);
            kerr!(
                "mqueue {name}: cannot load from the database ({e}); its rows stay in table {name}{}",
                if back > 0 {
                    format!(" ({back} items read were dropped from the queue again)")
                } else {
                    String::new()
                }
            );
        }
    }
}

/// `mod_destroy`: saves every queue with dbmode 1 or 3.
/// Runs once: first in the destroy walk (see `core::run_first_at_destroy`),
/// and again, as a no-op, from our own `mod_destroy`.
pub fn save_all() {
    static SAVED: std::sync::Once = std::sync::Once::new();
    SAVED.call_once(|| {
        let (Some(p), Some(reg)) = (PERSIST.get(), registry::frozen()) else {
            return;
        };
        for d in reg.queues.iter().filter(|d| saves(d)) {
            save_queue(p, d);
        }
    });
}

fn snapshot(d: &QueueDef) -> Vec<(Vec<u8>, Vec<u8>)> {
    let q = d.queue();
    let deadline = Instant::now() + Duration::from_secs(2);
    let guard = loop {
        if let Some(g) = q.try_lock() {
            break g;
        }
        if Instant::now() >= deadline {
            kerr!(
                "mqueue {}: queue lock still held at shutdown (a process died holding it); reading it anyway",
                d.name_lossy()
            );
            // SAFETY: mod_destroy runs in the main process after every
            // child has exited, so no process can hold or take the lock.
            unsafe { q.force_unlock() };
            break q.lock();
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut guard = guard;
    if guard.interrupted() {
        let n = guard.repair();
        kwarn!(
            "mqueue {}: a process died while changing the queue; repaired, {n} items",
            d.name_lossy()
        );
    }
    let mut items = Vec::with_capacity(guard.len());
    guard.peek(usize::MAX, |k, v| items.push((k.to_vec(), v.to_vec())));
    items
}

fn save_queue(p: &Persist, d: &QueueDef) {
    let name = d.name_lossy();
    let items = snapshot(d);
    let mut unsaved: Vec<usize> = Vec::new();
    let result = p.driver.connect().and_then(|mut c| {
        c.use_table(&d.name)?;
        c.begin();
        for (i, (k, v)) in items.iter().enumerate() {
            if let Err(e) = c.insert(COLS, [k, v]) {
                if unsaved.is_empty() {
                    kerr!("mqueue {name}: item {i}: {e}");
                }
                unsaved.push(i);
            }
        }
        c.commit()
    });
    let spill: Vec<&(Vec<u8>, Vec<u8>)> = match result {
        Ok(()) => unsaved.iter().map(|&i| &items[i]).collect(),
        Err(e) => {
            kerr!("mqueue {name}: cannot save to the database: {e}");
            items.iter().collect()
        }
    };
    let saved = items.len() - spill.len();
    kinfo!("mqueue {name}: saved {saved} items in the database");
    if spill.is_empty() {
        return;
    }
    let path = spill_path(d);
    match write_spill(d, &path, &spill) {
        Ok(()) => kerr!(
            "mqueue {name}: {} items the database did not take are kept in {} and load at the next start",
            spill.len(),
            path.display()
        ),
        Err(e) => kerr!(
            "mqueue {name}: {} items are lost: the database did not take them and {} cannot be written: {e}",
            spill.len(),
            path.display()
        ),
    }
}

/// `spill_dir`, when set.
pub static SPILL_DIR: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);

/// Where spill files go: `spill_dir`, or Kamailio's runtime directory.
fn spill_dir() -> PathBuf {
    SPILL_DIR
        .lock()
        .ok()
        .and_then(|d| d.clone())
        .unwrap_or_else(crate::kamailio::core::runtime_dir)
}

fn spill_path(d: &QueueDef) -> PathBuf {
    spill_dir().join(spill::file_name(&d.name))
}

/// `mod_init`, when a queue has a dbmode: `spill_dir` must be a directory;
/// a spill directory on tmpfs (the default `/run/kamailio`) is gone after
/// a reboot, so it is named in a warning.
fn check_spill_dir(queue: &QueueDef) -> Result<(), String> {
    let explicit = SPILL_DIR.lock().ok().and_then(|d| d.clone());
    let dir = spill_dir();
    if let Some(dir) = &explicit {
        if !fs::metadata(dir).is_ok_and(|m| m.is_dir()) {
            return Err(format!("spill_dir {}: not a directory", dir.display()));
        }
    }
    if fs::metadata(&dir).is_ok_and(|m| {
        use std::os::unix::fs::PermissionsExt;
        m.permissions().mode() & 0o002 != 0
    }) {
        kwarn!(
            "mqueue {}: spill files go to {}, which every user can write: use a directory \
             only Kamailio's user can write (a spill file there that is not owned by \
             Kamailio's user or root is set aside at start, not loaded)",
            queue.name_lossy(),
            dir.display()
        );
    }
    if on_tmpfs(&dir) {
        kwarn!(
            "mqueue {}: spill files (items the database does not take at shutdown) go to {}, \
             a tmpfs: they do not survive a reboot; set the spill_dir parameter to a \
             persistent directory",
            queue.name_lossy(),
            dir.display()
        );
    }
    Ok(())
}

/// `child_init(PROC_INIT)`: Kamailio has taken its user (`-u`, `user`)
/// by then, before any child is forked. When a queue saves, a probe file
/// (created exclusively, never following a link, removed at once) shows
/// whether that user can write spill files. An explicit `spill_dir` it
/// cannot write stops the start: the operator chose it for the items the
/// database does not take. The default (the runtime directory) only warns,
/// since the C module, which writes no spill file, starts there.
pub fn check_spill_writable(queues: &[QueueDef]) -> Result<(), String> {
    let Some(first) = queues.iter().find(|d| saves(d)) else {
        return Ok(());
    };
    let explicit = SPILL_DIR.lock().ok().and_then(|d| d.clone()).is_some();
    let dir = spill_dir();
    let Err(e) = probe_write(&dir) else {
        return Ok(());
    };
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    if explicit {
        return Err(format!(
            "spill_dir {}: Kamailio's user (uid {uid}) cannot create files there ({e}): items the database does not take at shutdown would be lost",
            dir.display()
        ));
    }
    kwarn!(
        "mqueue {}: spill files go to {}, where Kamailio's user (uid {uid}) cannot create files ({e}): items the database does not take at shutdown would be lost; set the spill_dir parameter to a directory it can write",
        first.name_lossy(),
        dir.display()
    );
    Ok(())
}

/// Creates and removes a file of an unpredictable name in `dir`.
fn probe_write(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let name = format!(".mqueue-probe-{:016x}", super::registry::random_seed());
    let path = dir.join(name);
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)?;
    fs::remove_file(&path)
}

fn on_tmpfs(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into the zeroed struct; the path is
    // NUL-terminated.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type == libc::TMPFS_MAGIC
    }
}

/// Writes `items` to the spill file, after the items a spill file already
/// there holds (written whole to a temporary file, then renamed).
fn write_spill(d: &QueueDef, path: &Path, items: &[&(Vec<u8>, Vec<u8>)]) -> io::Result<()> {
    let old = match read_regular(path) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            set_aside(d, path, &e.to_string());
            None
        }
        Err(e) => return Err(e),
    };
    let mut all: Vec<(&[u8], &[u8])> = Vec::new();
    if let Some(old) = &old {
        match spill::decode(old, &d.name) {
            Ok(dec) if dec.unreadable == 0 => all.extend(dec.items),
            Ok(dec) => set_aside(
                d,
                path,
                &format!("{} items could not be read", dec.unreadable),
            ),
            Err(e) => set_aside(d, path, &e.to_string()),
        }
    }
    all.extend(items.iter().map(|(k, v)| (k.as_slice(), v.as_slice())));
    replace_file(path, &spill::encode(&d.name, &all))
}

/// Reads a spill file, which must be a regular file: a symbolic link, a
/// FIFO, a device or a directory left under its name is refused, never
/// read or followed (a link could point anywhere, a FIFO would block the
/// start, `/dev/zero` would never end), and so is a file owned by
/// another user than Kamailio's or root (planted in a directory others
/// can write). At most the size the file had when opened is read.
fn read_regular(path: &Path) -> io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                io::Error::new(io::ErrorKind::InvalidData, "a symbolic link")
            } else {
                e
            }
        })?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a regular file",
        ));
    }
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me && meta.uid() != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "owned by uid {}, neither Kamailio's user (uid {me}) nor root",
                meta.uid()
            ),
        ));
    }
    let mut buf = Vec::with_capacity(meta.len() as usize);
    f.take(meta.len()).read_to_end(&mut buf)?;
    Ok(buf)
}

/// Writes `bytes` to `path` atomically: a temporary file, synced, renamed
/// over `path` (a link or file there is replaced, never followed). The
/// temporary file has a name no one can guess, is created only if nothing
/// is there (`O_EXCL`, `O_NOFOLLOW`) and readable by Kamailio's user only
/// (0600, whatever the umask): queue items hold call data.
fn replace_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", random_hex()));
    let tmp = path.with_file_name(name);
    let write = || -> io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.set_permissions(fs::Permissions::from_mode(0o600))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    if let Some(dir) = path.parent() {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// 16 random hex digits.
fn random_hex() -> String {
    format!("{:016x}", crate::queue::random_u64())
}

/// Renames a spill file that cannot be trusted whole, so that it is kept
/// for inspection and never read again.
fn set_aside(d: &QueueDef, path: &Path, why: &str) {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.as_secs());
    let mut aside = path.with_extension(format!("spill.damaged-{stamp}"));
    let mut n = 1;
    while fs::symlink_metadata(&aside).is_ok() {
        aside = path.with_extension(format!("spill.damaged-{stamp}-{n}"));
        n += 1;
    }
    match fs::rename(path, &aside) {
        Ok(()) => kerr!(
            "mqueue {}: spill file {}: {why}; it was set aside as {}",
            d.name_lossy(),
            path.display(),
            aside.display()
        ),
        Err(e) => kerr!(
            "mqueue {}: spill file {}: {why}; it cannot be set aside ({e})",
            d.name_lossy(),
            path.display()
        ),
    }
}

/// Loads the queue's spill file: every item that checks out, in order.
/// A file that is damaged in part or whole is set aside under a new name;
/// items that do not fit the queue are written back for the next start.
fn load_spill(d: &QueueDef) {
    let path = spill_path(d);
    let name = d.name_lossy();
    let bytes = match read_regular(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return,
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            set_aside(d, &path, &format!("{e}, no item could be read"));
            return;
        }
        Err(e) => {
            kerr!(
                "mqueue {name}: cannot read {}: {e}; the file is left in place",
                path.display()
            );
            return;
        }
    };
    let dec = match spill::decode(&bytes, &d.name) {
        Ok(dec) => dec,
        Err(e) => {
            set_aside(d, &path, &format!("{e}, no item could be read"));
            return;
        }
    };
    let loaded = dec
        .items
        .iter()
        .take_while(|(k, v)| add_loaded(d, k, v))
        .count();
    let rest = &dec.items[loaded..];
    kinfo!(
        "mqueue {name}: loaded {loaded} items from {}",
        path.display()
    );
    if dec.unreadable > 0 {
        set_aside(
            d,
            &path,
            &format!(
                "{} items could not be read ({loaded} were loaded)",
                dec.unreadable
            ),
        );
    }
    let result = if rest.is_empty() {
        if dec.unreadable > 0 {
            return;
        }
        fs::remove_file(&path)
    } else {
        replace_file(&path, &spill::encode(&d.name, rest))
    };
    match result {
        Ok(()) if rest.is_empty() => {}
        Ok(()) => kerr!(
            "mqueue {name}: {} items from the spill file do not fit the queue (shared memory, \
             -m, or maxbytes); they stay in {} for the next start",
            rest.len(),
            path.display()
        ),
        Err(e) => kerr!("mqueue {name}: cannot update {}: {e}", path.display()),
    }
}
