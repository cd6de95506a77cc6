//! DB persistence (`dbmode`, `db_url`), with the C module's meaning:
//! 1 loads at start and saves at shutdown, 2 only loads, 3 only saves; a
//! load empties the table. The table is named after the queue, with the
//! columns `id` (order), `key` and `val`.
//!
//! Everything here runs in the main process: the load after every module
//! is initialised (`child_init(PROC_INIT)`, before the fork), the save in
//! `mod_destroy`, once every worker has exited. Items the database cannot
//! take at shutdown go to a spill file in the runtime directory, loaded
//! back (and removed) at the next start.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::registry::{self, QueueDef};
use crate::kamailio::db::Driver;
use crate::queue::AddOutcome;
use crate::{kerr, kinfo, kwarn};

const COLS: [&[u8]; 2] = [b"key", b"val"];
const ORDER: &[u8] = b"id";
const SPILL_MAGIC: &str = "mqueue-spill 1";

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

fn loads(d: &QueueDef) -> bool {
    d.dbmode == 1 || d.dbmode == 2
}

fn saves(d: &QueueDef) -> bool {
    d.dbmode == 1 || d.dbmode == 3
}

/// `mod_init`: checks db_url and binds its driver when a queue needs it.
pub fn init(queues: &[QueueDef], url: Option<&[u8]>) -> Result<bool, String> {
    let Some(first) = queues.iter().find(|d| d.dbmode != 0) else {
        return Ok(false);
    };
    let url = url.filter(|u| !u.is_empty()).ok_or_else(|| {
        format!(
            "mqueue {}: dbmode={} needs the db_url module parameter",
            first.name_lossy(),
            first.dbmode
        )
    })?;
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
        if d.dbmode != 0 {
            load_spill(d);
        }
    }
}

fn add_all(d: &QueueDef, items: &[(Vec<u8>, Vec<u8>)]) -> usize {
    let mut q = d.queue().lock();
    items
        .iter()
        .filter(|(k, v)| matches!(q.add(k, v), AddOutcome::Added | AddOutcome::Duplicate))
        .count()
}

fn load_table(p: &Persist, d: &QueueDef) {
    let name = d.name_lossy();
    let mut items = Vec::new();
    let read = p.driver.connect().and_then(|mut c| {
        c.use_table(&d.name)?;
        c.select(COLS, ORDER, |k, v| items.push((k.to_vec(), v.to_vec())))?;
        if !items.is_empty() {
            if let Err(e) = c.delete_all() {
                kerr!(
                    "mqueue {name}: loaded {} rows but {e}: they will be loaded again at the next start",
                    items.len()
                );
            }
        }
        Ok(())
    });
    if let Err(e) = read {
        kerr!("mqueue {name}: cannot load from the database ({e}); its rows stay in table {name}");
        return;
    }
    let added = add_all(d, &items);
    if added < items.len() {
        kwarn!(
            "mqueue {name}: {} of {} loaded rows did not fit the queue's limits",
            items.len() - added,
            items.len()
        );
    }
    kinfo!(
        "mqueue {name}: loaded {} items from the database",
        items.len()
    );
}

/// `mod_destroy`: saves every queue with dbmode 1 or 3.
pub fn save_all() {
    let (Some(p), Some(reg)) = (PERSIST.get(), registry::frozen()) else {
        return;
    };
    for d in reg.queues.iter().filter(|d| saves(d)) {
        save_queue(p, d);
    }
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
    match write_spill(&path, &spill) {
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

fn spill_path(d: &QueueDef) -> PathBuf {
    let safe: String = d
        .name_lossy()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    crate::kamailio::core::runtime_dir().join(format!("mqueue-{safe}.spill"))
}

/// One header line, then per item `<key length> <value length>\n`, the
/// key and value bytes, and a newline.
fn write_spill(path: &PathBuf, items: &[&(Vec<u8>, Vec<u8>)]) -> std::io::Result<()> {
    // Append: a spill file not yet loaded (database still down) is kept.
    let fresh = !path.exists();
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let mut w = std::io::BufWriter::new(f);
    if fresh {
        writeln!(w, "{SPILL_MAGIC}")?;
    }
    for (k, v) in items {
        writeln!(w, "{} {}", k.len(), v.len())?;
        w.write_all(k)?;
        w.write_all(v)?;
        w.write_all(b"\n")?;
    }
    w.into_inner().map_err(|e| e.into_error())?.sync_all()
}

fn read_spill(path: &PathBuf) -> std::io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let mut r = BufReader::new(std::fs::File::open(path)?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    if line.trim_end() != SPILL_MAGIC {
        return Err(bad("not an mqueue spill file"));
    }
    let mut items = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Ok(items);
        }
        let mut it = line.split_ascii_whitespace().map(str::parse::<usize>);
        let (Some(Ok(kl)), Some(Ok(vl))) = (it.next(), it.next()) else {
            return Err(bad("bad item header"));
        };
        let mut buf = vec![0u8; kl + vl + 1];
        r.read_exact(&mut buf)?;
        if buf.pop() != Some(b'\n') {
            return Err(bad("item not terminated"));
        }
        let val = buf.split_off(kl);
        items.push((buf, val));
    }
}

fn load_spill(d: &QueueDef) {
    let path = spill_path(d);
    if !path.exists() {
        return;
    }
    let name = d.name_lossy();
    match read_spill(&path) {
        Ok(items) => {
            let added = add_all(d, &items);
            kinfo!(
                "mqueue {name}: loaded {added} of {} items from {}",
                items.len(),
                path.display()
            );
            if let Err(e) = std::fs::remove_file(&path) {
                kerr!("mqueue {name}: cannot remove {}: {e}", path.display());
            }
        }
        Err(e) => kerr!(
            "mqueue {name}: cannot read {}: {e}; the file is left in place",
            path.display()
        ),
    }
}
