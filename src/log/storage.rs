//! Where segment files live: the [`Storage`] trait, the real files
//! ([`FileStorage`], written through a shared mapping so every write lands
//! in the kernel's page cache and survives the death of every process), and
//! a recording store for tests ([`RecStorage`]) that can replay a power
//! loss at any point of a run.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io;
use std::ops::Range;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// A segment file found in the directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub id: u64,
    /// False for a directory, FIFO, symlink, ... under a segment's name.
    pub regular: bool,
}

/// What fills in the bytes of a write.
pub type Fill<'a> = &'a mut dyn FnMut(&mut [u8]);

/// The files of one queue's log. Writes become durable only at `sync`.
pub trait Storage {
    /// Segment files present, in no particular order.
    fn segments(&mut self) -> io::Result<Vec<Found>>;
    /// The whole content of a segment.
    fn read(&mut self, id: u64) -> io::Result<Vec<u8>>;
    /// A new segment of `len` zero bytes whose space is reserved (a full
    /// disk fails here, never in `write`).
    fn create(&mut self, id: u64, len: usize) -> io::Result<()>;
    /// Writes the bytes `at` of a segment created before: `fill` gets them
    /// to fill in.
    fn write(&mut self, id: u64, at: Range<usize>, fill: Fill<'_>) -> io::Result<()>;
    /// Makes every write to the segment durable.
    fn sync(&mut self, id: u64) -> io::Result<()>;
    fn remove(&mut self, id: u64) -> io::Result<()>;
    /// Renames a damaged or foreign file out of the way; its new name.
    fn set_aside(&mut self, id: u64) -> io::Result<String>;
    /// The file's name, for log lines.
    fn name(&self, id: u64) -> String;
}

/// Renames `dir/name` (whatever it is: a link is renamed, not followed)
/// to `name.damaged` (or `.damaged.N`, a free name); the new name.
pub fn set_aside(dir: &Path, name: &str) -> io::Result<String> {
    let from = dir.join(name);
    for n in 0..1000 {
        let to = if n == 0 {
            format!("{name}.damaged")
        } else {
            format!("{name}.damaged.{n}")
        };
        let target = dir.join(&to);
        if std::fs::symlink_metadata(&target).is_err() {
            std::fs::rename(&from, &target)?;
            return Ok(to);
        }
    }
    Err(io::Error::other("too many set-aside copies"))
}

/// Hex of the queue name: any bytes make a safe file name. A name too
/// long for that (over 114 bytes: a file name holds 255) gives the hex of
/// its first 80 bytes, `~` and a 64-bit hash of the whole name.
pub fn file_prefix(queue: &[u8]) -> String {
    let hex = |b: &[u8]| b.iter().map(|b| format!("{b:02x}")).collect::<String>();
    if queue.len() <= 114 {
        return hex(queue);
    }
    let mut h = siphasher::sip::SipHasher13::new();
    std::hash::Hasher::write(&mut h, queue);
    format!(
        "{}~{:016x}",
        hex(&queue[..80]),
        std::hash::Hasher::finish(&h)
    )
}

struct Map {
    id: u64,
    ptr: *mut u8,
    len: usize,
    fd: i32,
}

/// Segment files `<queue name in hex>-<segment number, 16 hex digits>.mqlog`
/// in a directory, created 0600 without following symlinks.
pub struct FileStorage {
    dir: PathBuf,
    prefix: String,
    /// The segment this process last wrote, mapped.
    map: Option<Map>,
}

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn check(r: i32) -> io::Result<i32> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

// SAFETY: the mapping belongs to the process, not to a thread; a
// FileStorage is used by one thread at a time (it is `&mut` everywhere).
unsafe impl Send for FileStorage {}

impl FileStorage {
    pub fn new(dir: &Path, queue: &[u8]) -> Self {
        FileStorage {
            dir: dir.to_path_buf(),
            prefix: file_prefix(queue),
            map: None,
        }
    }

    fn path(&self, id: u64) -> PathBuf {
        self.dir.join(self.name(id))
    }

    fn unmap(&mut self) {
        if let Some(m) = self.map.take() {
            // SAFETY: ptr/len come from a successful mmap; nothing borrows
            // the mapping beyond a `write` call.
            unsafe {
                libc::munmap(m.ptr as *mut libc::c_void, m.len);
                libc::close(m.fd);
            }
        }
    }

    fn open_fd(&self, id: u64, flags: i32, mode: libc::mode_t) -> io::Result<i32> {
        let p = cstr(&self.path(id))?;
        // SAFETY: p is a valid C string; open has no other preconditions.
        check(unsafe {
            libc::open(
                p.as_ptr(),
                flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                mode as libc::c_uint,
            )
        })
    }

    fn map_segment(&mut self, id: u64) -> io::Result<&Map> {
        if self.map.as_ref().is_some_and(|m| m.id == id) {
            return self
                .map
                .as_ref()
                .ok_or_else(|| io::Error::other("mapping lost"));
        }
        self.unmap();
        let fd = self.open_fd(id, libc::O_RDWR, 0)?;
        // SAFETY: an all-zero stat is a valid out-buffer for fstat.
        let mut stat: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fd is open; stat is a valid out-pointer.
        let r = check(unsafe { libc::fstat(fd, &mut stat) }).and_then(|_| {
            let len = stat.st_size as usize;
            if len == 0 {
                return Err(io::Error::other("empty segment"));
            }
            // SAFETY: mapping an open regular file read-write and shared;
            // the result is checked for MAP_FAILED.
            let ptr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    fd,
                    0,
                )
            };
            if ptr == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            Ok(Map {
                id,
                ptr: ptr as *mut u8,
                len,
                fd,
            })
        });
        match r {
            Ok(m) => Ok(self.map.insert(m)),
            Err(e) => {
                // SAFETY: fd is open and owned here.
                unsafe { libc::close(fd) };
                Err(e)
            }
        }
    }

    fn sync_dir(&self) -> io::Result<()> {
        let p = cstr(&self.dir)?;
        // SAFETY: p is a valid C string.
        let fd = check(unsafe {
            libc::open(
                p.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        })?;
        // SAFETY: fd is open and closed right after.
        let r = check(unsafe { libc::fsync(fd) });
        // SAFETY: as above.
        unsafe { libc::close(fd) };
        r.map(|_| ())
    }
}

impl Drop for FileStorage {
    fn drop(&mut self) {
        self.unmap();
    }
}

impl Storage for FileStorage {
    fn segments(&mut self) -> io::Result<Vec<Found>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.dir)? {
            let e = e?;
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(rest) = name
                .strip_prefix(&self.prefix)
                .and_then(|r| r.strip_prefix('-'))
            else {
                continue;
            };
            let Some(hex) = rest.strip_suffix(".mqlog") else {
                continue;
            };
            if hex.len() != 16 {
                continue;
            }
            let Ok(id) = u64::from_str_radix(hex, 16) else {
                continue;
            };
            let ft = e.file_type()?;
            out.push(Found {
                id,
                regular: ft.is_file() && !ft.is_symlink() && !ft.is_fifo(),
            });
        }
        Ok(out)
    }

    fn read(&mut self, id: u64) -> io::Result<Vec<u8>> {
        use std::io::Read;
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(self.path(id))?;
        if !f.metadata()?.is_file() {
            return Err(io::Error::other("not a regular file"));
        }
        let mut v = Vec::new();
        f.read_to_end(&mut v)?;
        Ok(v)
    }

    fn create(&mut self, id: u64, len: usize) -> io::Result<()> {
        // Built at full size under a temporary name, then linked under its
        // own: a segment shorter than its full size is never legitimate, so
        // recovery can tell a truncated file from one a crash left behind.
        let path = self.path(id);
        let mut tmp = path.clone().into_os_string();
        tmp.push(".new");
        let tmp = PathBuf::from(tmp);
        let _ = std::fs::remove_file(&tmp);
        let c = cstr(&tmp)?;
        // SAFETY: c is a valid C string; open has no other preconditions.
        let fd = check(unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                0o600 as libc::c_uint,
            )
        })?;
        // SAFETY: fd is open; fallocate reserves the blocks so that later
        // writes through the mapping cannot fail for want of space.
        let r = unsafe { libc::posix_fallocate(fd, 0, len as libc::off_t) };
        // SAFETY: fd is open and owned here.
        unsafe { libc::close(fd) };
        // hard_link fails if the name exists (as O_EXCL did).
        let linked = if r != 0 {
            Err(io::Error::from_raw_os_error(r))
        } else {
            std::fs::hard_link(&tmp, &path)
        };
        let _ = std::fs::remove_file(&tmp);
        linked?;
        self.sync_dir()
    }

    fn write(&mut self, id: u64, at: Range<usize>, fill: Fill<'_>) -> io::Result<()> {
        let m = self.map_segment(id)?;
        if at.start > at.end || at.end > m.len {
            return Err(io::Error::other("write beyond the segment"));
        }
        // SAFETY: `at` is inside the live mapping (checked above); writers
        // hold the queue lock, so no one else writes these bytes.
        let slice = unsafe { std::slice::from_raw_parts_mut(m.ptr.add(at.start), at.len()) };
        fill(slice);
        Ok(())
    }

    fn sync(&mut self, id: u64) -> io::Result<()> {
        if let Some(m) = self.map.as_ref().filter(|m| m.id == id) {
            // SAFETY: fd is open while mapped.
            return check(unsafe { libc::fdatasync(m.fd) }).map(|_| ());
        }
        let fd = self.open_fd(id, libc::O_RDWR, 0)?;
        // SAFETY: fd is open and closed right after.
        let r = check(unsafe { libc::fdatasync(fd) });
        // SAFETY: as above.
        unsafe { libc::close(fd) };
        r.map(|_| ())
    }

    fn remove(&mut self, id: u64) -> io::Result<()> {
        if self.map.as_ref().is_some_and(|m| m.id == id) {
            self.unmap();
        }
        // Emptied first: other processes may still map it (each keeps the
        // segment it last wrote), which would keep its space in use after
        // the unlink, and a full disk needs that space for the next one.
        // They never write a removed segment again (writes go to the
        // newest), so no one touches the pages the truncation drops.
        if let Ok(fd) = self.open_fd(id, libc::O_RDWR, 0) {
            // SAFETY: fd is open and closed right after.
            unsafe {
                libc::ftruncate(fd, 0);
                libc::close(fd);
            }
        }
        std::fs::remove_file(self.path(id))
    }

    fn set_aside(&mut self, id: u64) -> io::Result<String> {
        if self.map.as_ref().is_some_and(|m| m.id == id) {
            self.unmap();
        }
        set_aside(&self.dir, &self.name(id))
    }

    fn name(&self, id: u64) -> String {
        format!("{}-{id:016x}.mqlog", self.prefix)
    }
}

/// One step of a recorded run.
#[derive(Clone, Debug)]
pub enum Op {
    Create(u64, usize),
    Write(u64, usize, Vec<u8>),
    Sync(u64),
    Remove(u64),
}

/// A store in memory that records every step, for crash replays: files
/// as last synced (`durable`) and as written (`current`).
#[derive(Default, Clone)]
pub struct RecStorage {
    pub current: BTreeMap<u64, Vec<u8>>,
    pub durable: BTreeMap<u64, Vec<u8>>,
    pub ops: Vec<Op>,
    /// Ids that are not regular files (tests of odd directory entries).
    pub odd: Vec<u64>,
    pub set_aside: Vec<u64>,
    /// Fails `create` (a full disk) while set.
    pub full: bool,
    pub syncs: u64,
}

impl RecStorage {
    /// A store holding these files, as after a restart.
    pub fn with_files(files: BTreeMap<u64, Vec<u8>>) -> Self {
        RecStorage {
            current: files.clone(),
            durable: files,
            ..Default::default()
        }
    }

    /// Files as a power loss after the first `n` recorded steps leaves them:
    /// what was synced, plus (when `extra` is given) the first `extra`
    /// bytes of step `n`'s write.
    pub fn crash_image(
        ops: &[Op],
        n: usize,
        torn: Option<(usize, usize)>,
    ) -> BTreeMap<u64, Vec<u8>> {
        let mut cur: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        let mut dur: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        for op in &ops[..n] {
            match op {
                Op::Create(id, len) => {
                    cur.insert(*id, vec![0; *len]);
                    dur.insert(*id, vec![0; *len]);
                }
                Op::Write(id, off, data) => {
                    if let Some(f) = cur.get_mut(id) {
                        f[*off..*off + data.len()].copy_from_slice(data);
                    }
                }
                Op::Sync(id) => {
                    if let Some(f) = cur.get(id) {
                        dur.insert(*id, f.clone());
                    }
                }
                Op::Remove(id) => {
                    cur.remove(id);
                    dur.remove(id);
                }
            }
        }
        if let (Some((start, len)), Some(Op::Write(id, off, data))) = (torn, ops.get(n)) {
            if let Some(f) = dur.get_mut(id) {
                let a = start.min(data.len());
                let b = (start + len).min(data.len());
                f[off + a..off + b].copy_from_slice(&data[a..b]);
            }
        }
        dur
    }
}

impl Storage for RecStorage {
    fn segments(&mut self) -> io::Result<Vec<Found>> {
        let mut v: Vec<Found> = self
            .current
            .keys()
            .map(|&id| Found { id, regular: true })
            .collect();
        v.extend(self.odd.iter().map(|&id| Found { id, regular: false }));
        Ok(v)
    }
    fn read(&mut self, id: u64) -> io::Result<Vec<u8>> {
        self.current
            .get(&id)
            .cloned()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }
    fn create(&mut self, id: u64, len: usize) -> io::Result<()> {
        if self.full {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        if self.current.contains_key(&id) {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        self.current.insert(id, vec![0; len]);
        self.durable.insert(id, vec![0; len]);
        self.ops.push(Op::Create(id, len));
        Ok(())
    }
    fn write(&mut self, id: u64, at: Range<usize>, fill: Fill<'_>) -> io::Result<()> {
        let f = self
            .current
            .get_mut(&id)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        let off = at.start;
        let slot = f
            .get_mut(at)
            .ok_or_else(|| io::Error::other("write beyond the segment"))?;
        fill(slot);
        self.ops.push(Op::Write(id, off, slot.to_vec()));
        Ok(())
    }
    fn sync(&mut self, id: u64) -> io::Result<()> {
        if let Some(f) = self.current.get(&id) {
            self.durable.insert(id, f.clone());
        }
        self.syncs += 1;
        self.ops.push(Op::Sync(id));
        Ok(())
    }
    fn remove(&mut self, id: u64) -> io::Result<()> {
        self.current.remove(&id);
        self.durable.remove(&id);
        self.ops.push(Op::Remove(id));
        Ok(())
    }
    fn set_aside(&mut self, id: u64) -> io::Result<String> {
        self.current.remove(&id);
        self.durable.remove(&id);
        self.odd.retain(|&o| o != id);
        self.set_aside.push(id);
        self.ops.push(Op::Remove(id));
        Ok(self.name(id))
    }
    fn name(&self, id: u64) -> String {
        format!("segment {id}")
    }
}
