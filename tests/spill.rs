//! Spill files (items the database did not take at shutdown) through a real
//! Kamailio: every queue name gets a file of its own, and damaged,
//! truncated, empty, foreign or misplaced files never stop Kamailio: the
//! items that check out load, the file is set aside under a new name with
//! an error that names it and counts what could not be read.
//!
//! The database is SQLite opened read-only (`db_set_readonly`), so every
//! save fails and every queue spills.

mod common;

use common::db::Db;
use common::{Cfg, Impl, Kamailio};
use mqueue::queue::spill;
use std::fs;
use std::path::Path;

const QUEUES: [&str; 11] = [
    "dé", "d_", "trunc", "flip", "empty", "foreign", "huge", "other", "legacy", "fifo", "dir",
];

fn cfg_body(db: &Db) -> String {
    let path = db.url().trim_start_matches("sqlite:///").to_string();
    let mut body = format!(
        "modparam(\"mqueue\", \"db_url\", \"{}\")\n\
         modparam(\"db_sqlite\", \"db_set_readonly\", \"{path}\")\n",
        db.url()
    );
    for q in QUEUES {
        body.push_str(&format!(
            "modparam(\"mqueue\", \"mqueue\", \"name={q};dbmode=3\")\n"
        ));
    }
    body
}

fn spill_file(dir: &Path, encoded: &str) -> std::path::PathBuf {
    dir.join(format!("mqueue-{encoded}.spill"))
}

/// Where item `n` (0-based) of queue `q`'s spill file starts: the length
/// of the file the module's own encoder writes for the items before it.
fn item_offset(q: &str, n: usize) -> usize {
    let items: Vec<(String, String)> = (0..n)
        .map(|i| (format!("{q}-key-{i}"), format!("{q}-val-{i}")))
        .collect();
    let refs: Vec<(&[u8], &[u8])> = items
        .iter()
        .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
        .collect();
    spill::encode(q.as_bytes(), &refs).len()
}

#[test]
fn spill_files_are_per_queue_checked_and_set_aside_when_damaged() {
    let db = Db::sqlite();
    for q in QUEUES {
        db.sql(&format!(
            "CREATE TABLE \"{q}\" (id INTEGER PRIMARY KEY, key VARCHAR(64), val TEXT);"
        ));
    }
    let k = Kamailio::start(&sqlite_cfg(&cfg_body(&db)), Impl::Rust);
    for q in QUEUES {
        let n = if q == "dé" { 2 } else { 5 };
        for i in 0..n {
            k.rpc(&[
                "mqueue.add",
                q,
                &format!("{q}-key-{i}"),
                &format!("{q}-val-{i}"),
            ])
            .expect("mqueue.add");
        }
    }
    let dir = k.dir.0.clone();
    let mut k = k;
    k.stop();
    assert!(
        k.log()
            .contains("items the database did not take are kept in"),
        "{}",
        k.log()
    );

    // Names that differ only outside [A-Za-z0-9_] spill to their own files.
    let de = spill_file(&dir, "d%C3%A9");
    let d_ = spill_file(&dir, "d_");
    assert!(
        de.exists() && d_.exists(),
        "{:?}",
        fs::read_dir(&dir).unwrap().collect::<Vec<_>>()
    );

    // Damage the others, each its own way.
    let path = |q: &str| spill_file(&dir, q);
    let good = fs::read(path("trunc")).unwrap();
    let len = good.len();
    fs::write(path("trunc"), &good[..len - 3]).unwrap();

    // One bit of item 1's value.
    let mut flip = fs::read(path("flip")).unwrap();
    let one = item_offset("flip", 1);
    assert_eq!(&flip[one..one + 4], b"MQIT");
    let last = item_offset("flip", 2) - 5;
    flip[last] ^= 0x10;
    fs::write(path("flip"), &flip).unwrap();

    fs::write(path("empty"), b"").unwrap();
    fs::write(path("foreign"), b"<html>not a spill file</html>\n").unwrap();

    let mut huge = fs::read(path("huge")).unwrap();
    let zero = item_offset("huge", 0);
    assert_eq!(&huge[zero..zero + 4], b"MQIT");
    huge[zero + 4..zero + 8].copy_from_slice(&u32::MAX.to_le_bytes());
    fs::write(path("huge"), &huge).unwrap();

    // A valid file of another queue under this queue's name.
    fs::copy(&d_, path("other")).unwrap();
    // The earlier text format, with a length no file can hold.
    fs::write(path("legacy"), b"mqueue-spill 1\n999999999999 1\nx\n").unwrap();

    // Not regular files: a FIFO (reading it would block the start) and a
    // directory.
    for q in ["fifo", "dir"] {
        fs::remove_file(path(q)).unwrap();
    }
    let c = std::ffi::CString::new(path("fifo").to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    fs::create_dir(path("dir")).unwrap();

    let k = k.restart();
    let expect = [
        ("dé", 2),
        ("d_", 5),
        ("trunc", 4),
        ("flip", 4),
        ("empty", 0),
        ("foreign", 0),
        ("huge", 4),
        ("other", 0),
        ("legacy", 0),
        ("fifo", 0),
        ("dir", 0),
    ];
    for (q, n) in expect {
        assert_eq!(k.queue_size(q), n, "queue {q}");
    }
    // Each queue holds only its own items, in order.
    let de_items = k.drain("dé");
    assert_eq!(
        de_items,
        vec![
            ("dé-key-0".to_string(), "dé-val-0".to_string()),
            ("dé-key-1".to_string(), "dé-val-1".to_string())
        ]
    );
    let flip_keys: Vec<String> = k.drain("flip").into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        flip_keys,
        ["flip-key-0", "flip-key-2", "flip-key-3", "flip-key-4"]
    );
    let huge_keys: Vec<String> = k.drain("huge").into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        huge_keys,
        ["huge-key-1", "huge-key-2", "huge-key-3", "huge-key-4"]
    );

    let log = k.log();
    for (q, why) in [
        ("trunc", "1 items could not be read (4 were loaded)"),
        ("flip", "1 items could not be read (4 were loaded)"),
        ("huge", "1 items could not be read (4 were loaded)"),
        ("empty", "the file is empty, no item could be read"),
        ("foreign", "not an mqueue spill file, no item could be read"),
        ("legacy", "not an mqueue spill file, no item could be read"),
        (
            "other",
            "the file belongs to queue d_, no item could be read",
        ),
    ] {
        let line = format!(
            "mqueue {q}: spill file {}: {why}; it was set aside as",
            path(q).display()
        );
        assert!(log.contains(&line), "missing: {line}\n{log}");
    }
    // Set-aside files are kept; good files are gone once loaded.
    let names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    for q in [
        "trunc", "flip", "empty", "foreign", "huge", "other", "legacy",
    ] {
        assert!(
            names
                .iter()
                .any(|n| n.starts_with(&format!("mqueue-{q}.spill.damaged-"))),
            "{q} not set aside: {names:?}"
        );
    }
    assert!(
        !de.exists() && !d_.exists(),
        "loaded files removed: {names:?}"
    );
    assert!(!log.contains("memory allocation"), "{log}");
}

/// A configuration with db_sqlite loaded and `body`.
fn sqlite_cfg(body: &str) -> Cfg<'_> {
    Cfg {
        modules: &["db_sqlite.so"],
        body,
        ..Cfg::default()
    }
}

/// Queue `q` (dbmode 1) on `db` opened read-only, its spill files in
/// `spill_dir` when given.
fn one_queue(db: &Db, spill_dir: Option<&str>) -> String {
    let path = db.url().trim_start_matches("sqlite:///").to_string();
    db.sql("CREATE TABLE q (id INTEGER PRIMARY KEY, key VARCHAR(64), val TEXT);");
    let mut body = format!(
        "modparam(\"mqueue\", \"db_url\", \"{}\")\n\
         modparam(\"db_sqlite\", \"db_set_readonly\", \"{path}\")\n\
         modparam(\"mqueue\", \"mqueue\", \"name=q;dbmode=1\")\n",
        db.url()
    );
    if let Some(dir) = spill_dir {
        body.push_str(&format!("modparam(\"mqueue\", \"spill_dir\", \"{dir}\")\n"));
    }
    body
}

fn add_three(k: &Kamailio) {
    for i in 0..3 {
        k.rpc(&["mqueue.add", "q", &format!("key-{i}"), "call data"])
            .expect("mqueue.add");
    }
}

fn mode_of(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
}

/// Symbolic links at the old temporary name and at the spill file's name,
/// pointing at a victim file: the victim is never written or read, the
/// link at the spill name is set aside, the spill file is 0600 under
/// umask 022.
#[test]
fn spill_files_are_private_and_never_follow_links() {
    // SAFETY: umask only sets this process's file mode mask (inherited by
    // Kamailio).
    unsafe { libc::umask(0o022) };
    let db = Db::sqlite();
    let mut k = Kamailio::start(&sqlite_cfg(&one_queue(&db, None)), Impl::Rust);
    add_three(&k);
    let dir = k.dir.0.clone();
    let victim = dir.join("victim");
    fs::write(&victim, b"not queue data\n").unwrap();
    let spill = spill_file(&dir, "q");
    std::os::unix::fs::symlink(&victim, dir.join("mqueue-q.spill.tmp")).unwrap();
    std::os::unix::fs::symlink(&victim, &spill).unwrap();
    k.stop();
    let log = k.log();
    assert_eq!(fs::read(&victim).unwrap(), b"not queue data\n", "{log}");
    let meta = fs::symlink_metadata(&spill).unwrap();
    assert!(meta.file_type().is_file(), "{log}");
    assert_eq!(mode_of(&spill), 0o600);
    assert!(
        log.contains(&format!(
            "mqueue q: spill file {}: a symbolic link; it was set aside as",
            spill.display()
        )),
        "{log}"
    );
    let aside: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("mqueue-q.spill.damaged-")
        })
        .collect();
    assert_eq!(aside.len(), 1);
    assert!(aside[0].file_type().unwrap().is_symlink());
    // No temporary file is left behind.
    let names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.contains(".spill.tmp-")),
        "{names:?}"
    );

    // A link at the spill name, even to a valid spill file, is not read
    // at start either.
    let real = dir.join("real.spill");
    fs::rename(&spill, &real).unwrap();
    std::os::unix::fs::symlink(&real, &spill).unwrap();
    let mut k = k.restart();
    assert_eq!(k.queue_size("q"), 0);
    assert!(fs::symlink_metadata(&spill).is_err(), "link set aside");
    assert!(k
        .log()
        .contains("a symbolic link, no item could be read; it was set aside as"));
    // Back in place as a file, it loads.
    fs::rename(&real, &spill).unwrap();
    k.stop();
    let k = k.restart();
    assert_eq!(k.queue_size("q"), 3);
    assert_eq!(fs::read(&victim).unwrap(), b"not queue data\n");
}

/// `spill_dir` on a persistent directory: the spill file is written there,
/// not in the runtime directory, and loads at the next start after the
/// runtime directory was emptied of mqueue files.
#[test]
fn spill_dir_survives_a_wiped_runtime_dir() {
    let db = Db::sqlite();
    let keep = common::TempDir::new("spilldir");
    let body = one_queue(&db, Some(&keep.0.display().to_string()));
    let mut k = Kamailio::start(&sqlite_cfg(&body), Impl::Rust);
    add_three(&k);
    k.stop();
    assert!(spill_file(&keep.0, "q").exists(), "{}", k.log());
    assert_eq!(mode_of(&spill_file(&keep.0, "q")), 0o600);
    for e in fs::read_dir(&k.dir.0).unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with("mqueue-") {
            fs::remove_file(e.path()).unwrap();
        }
    }
    let k = k.restart();
    assert_eq!(k.queue_size("q"), 3);
    assert!(!k.log().contains("a tmpfs"), "{}", k.log());
}

/// A spill directory on tmpfs is named in a warning at start; one that is
/// not a directory stops the start.
#[test]
fn spill_dir_on_tmpfs_warns_and_a_missing_one_is_refused() {
    let db = Db::sqlite();
    let k = Kamailio::start(&sqlite_cfg(&one_queue(&db, Some("/dev/shm"))), Impl::Rust);
    assert!(
        k.log().contains(
            "mqueue q: spill files (items the database does not take at shutdown) go to /dev/shm, a tmpfs"
        ),
        "{}",
        k.log()
    );
    drop(k);
    let db = Db::sqlite();
    let body = one_queue(&db, Some("/nonexistent/mq"));
    let (_, log) = Kamailio::start_expect_failure(&sqlite_cfg(&body), Impl::Rust);
    assert!(
        log.contains("spill_dir /nonexistent/mq: not a directory"),
        "{log}"
    );
}

/// A `spill_dir` that Kamailio's user cannot write is found at start
/// (after Kamailio has taken its user), not at the first save: set
/// explicitly, it stops the start with the reason. (/proc/1 takes no new
/// file, whoever asks, root included.)
#[test]
fn an_unwritable_spill_dir_is_refused_at_start() {
    let db = Db::sqlite();
    let body = one_queue(&db, Some("/proc/1"));
    let (code, log) = Kamailio::start_expect_failure(&sqlite_cfg(&body), Impl::Rust);
    assert_ne!(code, Some(0), "{log}");
    assert!(
        log.contains("spill_dir /proc/1: Kamailio's user (uid ")
            && log.contains("cannot create files there"),
        "{log}"
    );
    // A writable one starts, and leaves no probe file behind.
    let dir = common::TempDir::new("spill-ok");
    let db = Db::sqlite();
    let body = one_queue(&db, Some(&dir.0.display().to_string()));
    let k = Kamailio::start(&sqlite_cfg(&body), Impl::Rust);
    assert!(!k.log().contains("cannot create files"), "{}", k.log());
    let left: Vec<_> = std::fs::read_dir(&dir.0)
        .expect("read spill_dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// A spill directory every user can write is named in a warning, and a
/// spill file there owned by another user than Kamailio's or root (one
/// planted by that user) is set aside, never loaded; owned by root again,
/// it loads.
#[test]
fn a_spill_file_of_another_owner_is_not_loaded() {
    use std::os::unix::fs::PermissionsExt;
    let db = Db::sqlite();
    let open = common::TempDir::new("spill-open");
    fs::set_permissions(&open.0, fs::Permissions::from_mode(0o1777)).unwrap();
    let body = one_queue(&db, Some(&open.0.display().to_string()));
    let mut k = Kamailio::start(&sqlite_cfg(&body), Impl::Rust);
    assert!(
        k.log().contains(&format!(
            "mqueue q: spill files go to {}, which every user can write",
            open.0.display()
        )),
        "{}",
        k.log()
    );
    add_three(&k);
    k.stop();
    let spill = spill_file(&open.0, "q");
    assert!(spill.exists(), "{}", k.log());
    std::os::unix::fs::chown(&spill, Some(65534), Some(65534)).unwrap();
    let mut k = k.restart();
    assert_eq!(k.queue_size("q"), 0);
    let log = k.log();
    assert!(
        log.contains(&format!(
            "mqueue q: spill file {}: owned by uid 65534, neither Kamailio's user (uid 0) nor root, no item could be read; it was set aside as",
            spill.display()
        )),
        "{log}"
    );
    k.stop();
    // Put back under its name and given to root, it loads.
    let aside = fs::read_dir(&open.0)
        .unwrap()
        .flatten()
        .find(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("mqueue-q.spill.damaged-")
        })
        .expect("set aside")
        .path();
    fs::rename(&aside, &spill).unwrap();
    std::os::unix::fs::chown(&spill, Some(0), Some(0)).unwrap();
    let k = k.restart();
    assert_eq!(k.queue_size("q"), 3, "{}", k.log());
}
