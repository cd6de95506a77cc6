//! Durable queues (`durable=sync|N`, `durable_dir`) on a real Kamailio:
//! every process killed with SIGKILL at random moments under SIP load and
//! restarted (nothing acknowledged lost, duplicates only for leased items,
//! counted as `redelivered`, per-producer order kept), a clean restart,
//! damaged files of every kind, a second instance on the same directory,
//! a directory that cannot be created, `durable` with `dbmode`, and the
//! script API against a memory queue.

mod common;

use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{field, free_port, wait_until, Cfg, Impl, Kamailio};

/// Producers add on every SIP request (200 only when `mq_add` returned 1,
/// logged `P|<producer>|<n>` first); one rtimer consumer logs every item
/// it fetches as `C|<producer>|<n>`, then calls `mq_pv_free`.
fn crash_body(dir: &str, durable: &str) -> String {
    format!(
        r#"modparam("mqueue", "durable_dir", "{dir}/durable")
modparam("mqueue", "mqueue", "name=work;durable={durable}")
modparam("rtimer", "timer", "name=c;interval=2000u;mode=1")
modparam("rtimer", "exec", "timer=c;route=CONSUME")
route[CONSUME] {{
    while (mq_fetch("work")) {{
        xlog("L_INFO", "C|$mqv(work)\n");
        # Work on the item a while: kills land inside leases too.
        $var(w) = 0;
        while ($var(w) < 1000) {{ $var(w) = $var(w) + 1; }}
        mq_pv_free("work");
    }}
}}
request_route {{
    $var(n) = $var(n) + 1;
    if (mq_add("work", "$ci", "$Tb-$pp|$var(n)")) {{
        xlog("L_INFO", "P|$Tb-$pp|$var(n)\n");
        sl_send_reply("200", "OK");
    }} else {{
        sl_send_reply("500", "Not queued");
    }}
    exit;
}}
"#
    )
}

fn start(body: &str) -> Kamailio {
    common::start_timers(body, 2, 1_000_000)
}

/// sipp sending MESSAGEs in the background until killed.
fn sipp_load(port: u16, dir: &std::path::Path) -> Child {
    let scenario = format!("{}/tests/sipp/message.xml", env!("CARGO_MANIFEST_DIR"));
    Command::new("sipp")
        .arg(format!("127.0.0.1:{port}"))
        .args([
            "-sf", &scenario, "-r", "2000", "-m", "10000000", "-l", "200",
        ])
        .args([
            "-i",
            "127.0.0.1",
            "-p",
            &free_port().to_string(),
            "-nostdin",
        ])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run sipp: run `make deps` (package sip-tester)")
}

fn lines<'a>(log: &'a str, tag: &str) -> Vec<&'a str> {
    log.lines()
        .filter_map(|l| l.split_once(tag).map(|(_, r)| r.trim_end()))
        .collect()
}

fn parse(item: &str) -> (String, u64) {
    let (p, n) = item.rsplit_once('|').expect("producer|n");
    (p.to_string(), n.parse().expect("n"))
}

/// Waits until no process holds the directory's lock (every process of a
/// killed instance has exited).
fn wait_unlocked(path: &std::path::Path) {
    use std::os::fd::AsRawFd;
    let f = fs::File::open(path).expect("lock file");
    let unlocked = wait_until(Duration::from_secs(20), || {
        // SAFETY: flock on a file we opened; released right away.
        (unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0).then_some(())
    });
    assert!(
        unlocked.is_some(),
        "the killed instance's processes do not exit"
    );
    // SAFETY: as above.
    unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_UN) };
}

fn crash_test(durable: &str) {
    let tmp = common::TempDir::new("durable-crash");
    let dir = tmp.0.display().to_string();
    let body = crash_body(&dir, durable);
    let mut k = start(&body);
    let seed = fastrand::u64(..);
    eprintln!("crash moments: seed {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut redelivered = 0i64;
    for round in 0..20 {
        let mut sipp = sipp_load(k.port, &k.dir.0);
        // A random moment under load: after a random number of adds.
        let base = lines(&k.log(), "P|").len();
        let want = base + 50 + rng.usize(..400);
        let loaded = wait_until(Duration::from_secs(60), || {
            (lines(&k.log(), "P|").len() >= want).then_some(())
        });
        assert!(loaded.is_some(), "round {round}: no load\n{}", k.log());
        k.kill9();
        let _ = sipp.kill();
        let _ = sipp.wait();
        wait_unlocked(&tmp.0.join("durable/mqueue.lock"));
        k = k.restart();
        redelivered += k.stat("work", "redelivered");
    }
    // Drain: every acknowledged add is consumed.
    let drained = wait_until(Duration::from_secs(60), || {
        (k.queue_size("work") == 0 && k.stat("work", "leased") <= 1).then_some(())
    });
    assert!(drained.is_some(), "queue does not drain");
    let log = k.log();
    k.stop();
    let produced: Vec<(String, u64)> = lines(&log, "P|").into_iter().map(parse).collect();
    let consumed: Vec<(String, u64)> = lines(&log, "C|").into_iter().map(parse).collect();
    let p: HashSet<&(String, u64)> = produced.iter().collect();
    assert_eq!(p.len(), produced.len(), "a producer logged an item twice");
    let mut top: HashMap<&str, u64> = HashMap::new();
    for (pr, n) in &produced {
        let t = top.entry(pr).or_default();
        *t = (*t).max(*n);
    }
    let mut counts: HashMap<&(String, u64), usize> = HashMap::new();
    let mut unacknowledged = HashSet::new();
    for c in &consumed {
        if !p.contains(c) {
            // A process killed inside mq_add, after its record was written
            // and before it returned: only that producer's next item.
            let next = top.get(c.0.as_str()).copied().unwrap_or(0) + 1;
            assert_eq!(c.1, next, "consumed an item never added: {c:?}");
            unacknowledged.insert(c);
            continue;
        }
        *counts.entry(c).or_default() += 1;
    }
    assert!(unacknowledged.len() <= 2 * 20, "{unacknowledged:?}");
    let lost: Vec<_> = produced
        .iter()
        .filter(|x| !counts.contains_key(x))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged items lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    let dups: usize = counts.values().map(|&n| n - 1).sum();
    // Per producer, first deliveries in the order of the adds.
    let mut last: HashMap<&str, u64> = HashMap::new();
    let mut seen = HashSet::new();
    for c in &consumed {
        if seen.insert(c) {
            let prev = last.insert(&c.0, c.1).unwrap_or(0);
            assert!(
                c.1 > prev,
                "producer {} out of order: {} after {prev}",
                c.0,
                c.1
            );
        }
    }
    eprintln!(
        "durable={durable}: 20 SIGKILLs, {} acknowledged adds, all consumed; {dups} duplicates, redelivered {redelivered}; \
         {} adds interrupted by a kill (consumed, never acknowledged)",
        produced.len(),
        unacknowledged.len()
    );
    assert!(
        dups as i64 <= redelivered,
        "{dups} duplicates but {redelivered} redelivered"
    );
}

#[test]
fn sigkill_under_load_sync() {
    crash_test("sync");
}

#[test]
fn sigkill_under_load_10ms() {
    crash_test("10");
}

/// The script API on a durable queue gives the lines a memory queue gives:
/// return codes, `$mqk`/`$mqv`/`$mq_size`, addmodes, size and byte limits.
#[test]
fn script_api_matches_a_memory_queue() {
    let script = r#"
        mq_size("Q"); xlog("L_INFO", "T|Q|size-empty $rc $mq_size(Q)\n");
        if($mqk(Q) == $null) { xlog("L_INFO", "T|Q|null-before\n"); }
        mq_add("Q", "a", "1"); xlog("L_INFO", "T|Q|add $rc\n");
        mq_add("Q", "b", "2"); xlog("L_INFO", "T|Q|add $rc\n");
        mq_add("Q", "a", "3"); xlog("L_INFO", "T|Q|add-again $rc\n");
        mq_add("Q", "c", "4444444444444444444444444444444444444444"); xlog("L_INFO", "T|Q|add-long $rc\n");
        mq_add("Q", "d", "5"); xlog("L_INFO", "T|Q|add $rc\n");
        mq_size("Q"); xlog("L_INFO", "T|Q|size $rc $mq_size(Q)\n");
        mq_fetch("Q"); xlog("L_INFO", "T|Q|fetch $rc $mqk(Q)=$mqv(Q) $mq_size(Q)\n");
        mq_pv_free("Q"); xlog("L_INFO", "T|Q|pv_free $rc\n");
        if($mqk(Q) == $null) { xlog("L_INFO", "T|Q|null-after-free\n"); }
        while(mq_fetch("Q")) { xlog("L_INFO", "T|Q|got $mqk(Q)=$mqv(Q)\n"); }
        mq_fetch("Q"); xlog("L_INFO", "T|Q|fetch-empty $rc\n");
        if($mqk(Q) == $null) { xlog("L_INFO", "T|Q|null-after-empty\n"); }
        mq_add("Q", "e", "6"); mq_add("Q", "f", "7");
        xlog("L_INFO", "T|Q|END\n");
    "#;
    let tmp = common::TempDir::new("durable-api");
    let mut params = format!(
        "modparam(\"mqueue\", \"durable_dir\", \"{}\")\n",
        tmp.0.display()
    );
    let mut routes = String::new();
    let variants = [
        ("", "m0", "d0"),
        (";addmode=1", "m1", "d1"),
        (";addmode=2;size=2", "m2", "d2"),
        (";maxbytes=120", "m3", "d3"),
    ];
    for (i, (attrs, m, d)) in variants.iter().enumerate() {
        let durable = if i % 2 == 0 { "sync" } else { "10" };
        params.push_str(&format!(
            "modparam(\"mqueue\", \"mqueue\", \"name={m}{attrs}\")\n\
             modparam(\"mqueue\", \"mqueue\", \"name={d}{attrs};durable={durable}\")\n"
        ));
        routes.push_str(&script.replace('Q', m));
        routes.push_str(&script.replace('Q', d));
    }
    let body = format!("{params}event_route[core:worker-one-init] {{\n{routes}\n}}\n");
    let cfg = Cfg {
        body: &body,
        ..Cfg::default()
    };
    let k = Kamailio::start(&cfg, Impl::Rust);
    let ended = k.wait_marked("|END", 8, Duration::from_secs(20));
    assert!(ended.len() >= 8, "script did not finish:\n{}", k.log());
    let lines = k.marked("T|");
    for (_, m, d) in variants {
        let of = |q: &str| -> Vec<String> {
            lines
                .iter()
                .filter_map(|l| l.strip_prefix(&format!("{q}|")).map(str::to_string))
                .collect()
        };
        let (ml, dl) = (of(m), of(d));
        assert!(ml.len() > 10, "{ml:?}");
        assert_eq!(dl, ml, "durable {d} and memory {m} differ");
        // RPC views agree too.
        for cmd in [["mqueue.get_size", m], ["mqueue.peek", m]] {
            let a = k.rpc(&cmd).unwrap_or_else(|e| e).replace(m, "Q");
            let b = k.rpc(&[cmd[0], d]).unwrap_or_else(|e| e).replace(d, "Q");
            assert_eq!(a, b, "{}", cmd[0]);
        }
        let a = k.rpc(&["mqueue.fetch", m]).unwrap_or_else(|e| e);
        let b = k.rpc(&["mqueue.fetch", d]).unwrap_or_else(|e| e);
        assert_eq!(a, b, "mqueue.fetch");
        let a = k
            .rpc(&["mqueue.clear", m])
            .unwrap_or_else(|e| e)
            .replace(m, "Q");
        let b = k
            .rpc(&["mqueue.clear", d])
            .unwrap_or_else(|e| e)
            .replace(d, "Q");
        assert_eq!(a, b, "mqueue.clear");
        assert_eq!(k.queue_size(d), 0);
        for name in [
            "added", "fetched", "evicted", "replaced", "rejected", "cleared", "max_size",
        ] {
            assert_eq!(k.stat(d, name), k.stat(m, name), "{name} of {d}");
        }
    }
    let stats = k.rpc(&["mqueue.stats", "d0"]).expect("stats");
    assert_eq!(field(&stats, "backend"), "durable");
    assert!(k.stat("d0", "syncs") >= 1, "{stats}");
    // durable=10: the flush timer process syncs what was added (one sync
    // at start for the snapshot, then the timer's).
    let synced = wait_until(Duration::from_secs(10), || {
        (k.stat("d1", "syncs") >= 2).then_some(())
    });
    assert!(
        synced.is_some(),
        "no timer sync: {}",
        k.rpc(&["mqueue.stats", "d1"]).unwrap_or_default()
    );
}

fn durable_cfg(dir: &std::path::Path, queues: &str) -> String {
    format!(
        "modparam(\"mqueue\", \"durable_dir\", \"{}\")\n{queues}",
        dir.display()
    )
}

fn start_on(body: &str) -> Kamailio {
    let cfg = Cfg {
        body,
        ..Cfg::default()
    };
    Kamailio::start(&cfg, Impl::Rust)
}

fn refused(body: &str) -> String {
    let cfg = Cfg {
        body,
        ..Cfg::default()
    };
    let (code, log) = Kamailio::start_expect_failure(&cfg, Impl::Rust);
    assert_ne!(code, Some(0), "{log}");
    log
}

#[test]
fn refused_starts_say_why() {
    let log = refused("modparam(\"mqueue\", \"mqueue\", \"name=jobs;durable=sync\")\n");
    assert!(
        log.contains("mqueue jobs is durable: the durable_dir parameter is required"),
        "{log}"
    );
    let tmp = common::TempDir::new("durable-refused");
    let log = refused(&durable_cfg(
        &tmp.0,
        "modparam(\"mqueue\", \"mqueue\", \"name=jobs;durable=10;dbmode=1\")\n",
    ));
    assert!(
        log.contains("durable and dbmode cannot be used together"),
        "{log}"
    );
    let log = refused(&durable_cfg(
        &tmp.0,
        "modparam(\"mqueue\", \"mqueue\", \"name=jobs;durable=fast\")\n",
    ));
    assert!(log.contains("attribute durable"), "{log}");
    // A directory that cannot be created (a file is in the way).
    let file = tmp.0.join("a-file");
    fs::write(&file, "x").expect("file");
    let log = refused(&durable_cfg(
        &file.join("sub"),
        "modparam(\"mqueue\", \"mqueue\", \"name=jobs;durable=sync\")\n",
    ));
    assert!(
        log.contains("mqueue jobs: cannot create durable_dir"),
        "{log}"
    );
    // A second instance on a directory in use.
    let dir = tmp.0.join("shared");
    let body = durable_cfg(
        &dir,
        "modparam(\"mqueue\", \"mqueue\", \"name=jobs;durable=sync\")\n",
    );
    let first = start_on(&body);
    let pid = fs::read_to_string(dir.join("mqueue.lock")).expect("lock file");
    let log = refused(&body);
    assert!(
        log.contains(&format!(
            "durable_dir {} is in use by another Kamailio instance (PID {pid})",
            dir.display()
        )),
        "{log}"
    );
    drop(first);
}

/// A durable queue defined and never used leaves no segment file.
#[test]
fn unused_queue_takes_no_space() {
    let tmp = common::TempDir::new("durable-unused");
    let body = durable_cfg(
        &tmp.0,
        "modparam(\"mqueue\", \"mqueue\", \"name=idle;durable=10\")\n\
         modparam(\"mqueue\", \"mqueue\", \"name=used;durable=sync\")\n",
    );
    let mut k = start_on(&body);
    add_items(&k, "used", 1);
    k.stop();
    let k = k.restart();
    assert_eq!(k.queue_size("used"), 1);
    assert_eq!(k.queue_size("idle"), 0);
    drop(k);
    let segments: Vec<String> = fs::read_dir(&tmp.0)
        .expect("dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".mqlog"))
        .collect();
    // Only the queue that was used ("used" in hex) has a segment.
    assert!(!segments.is_empty(), "{segments:?}");
    assert!(
        segments.iter().all(|n| n.starts_with("75736564-")),
        "{segments:?}"
    );
}

/// A durable_dir every user can write is named in a warning at start (the
/// queue still works: yesterday's config is not refused).
#[test]
fn a_durable_dir_everyone_can_write_warns() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = common::TempDir::new("durable-open");
    fs::set_permissions(&tmp.0, fs::Permissions::from_mode(0o777)).unwrap();
    let body = durable_cfg(
        &tmp.0,
        "modparam(\"mqueue\", \"mqueue\", \"name=q;durable=10\")\n",
    );
    let k = start_on(&body);
    assert!(
        k.log().contains(&format!(
            "durable_dir {} can be written by every user",
            tmp.0.display()
        )),
        "{}",
        k.log()
    );
    add_items(&k, "q", 2);
    assert_eq!(k.queue_size("q"), 2);
}

/// A directory, FIFO or symlink under the name `mqueue.lock` is set aside
/// (a symlink is not followed: its target stays as it was) with a log line
/// naming it; Kamailio starts, and a second instance is still refused.
#[test]
fn odd_lock_files_are_set_aside() {
    let tmp = common::TempDir::new("durable-lock");
    let target = tmp.0.join("target");
    fs::write(&target, "keep me").expect("target");
    for (shape, make) in [
        ("a directory", "dir"),
        ("a FIFO", "fifo"),
        ("a symbolic link", "symlink"),
    ] {
        let dir = tmp.0.join(make);
        fs::create_dir(&dir).expect("dir");
        let lock = dir.join("mqueue.lock");
        match make {
            "dir" => fs::create_dir(&lock).expect("lock dir"),
            "fifo" => {
                let c = std::ffi::CString::new(lock.to_string_lossy().as_bytes()).expect("c");
                // SAFETY: mkfifo with a valid path.
                assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
            }
            _ => std::os::unix::fs::symlink(&target, &lock).expect("symlink"),
        }
        let body = durable_cfg(
            &dir,
            "modparam(\"mqueue\", \"mqueue\", \"name=q;durable=sync\")\n",
        );
        let first = start_on(&body);
        let log = first.log();
        assert!(
            log.contains(&format!(
                "{} is not a regular file ({shape}): set aside as mqueue.lock.damaged",
                lock.display()
            )),
            "{make}: {log}"
        );
        assert!(fs::symlink_metadata(&lock).expect("new lock").is_file());
        add_items(&first, "q", 1);
        let log = refused(&body);
        assert!(
            log.contains(&format!(
                "durable_dir {} is in use by another Kamailio instance (PID {})",
                dir.display(),
                fs::read_to_string(&lock).expect("pid")
            )),
            "{make}: {log}"
        );
        drop(first);
    }
    assert_eq!(fs::read_to_string(&target).expect("target"), "keep me");
}

fn add_items(k: &Kamailio, q: &str, n: usize) {
    for i in 0..n {
        k.rpc(&["mqueue.add", q, &format!("key-{i}"), &format!("value-{i}")])
            .expect("add");
    }
}

/// A clean restart keeps every item in order; an item fetched and not
/// acknowledged when every process is killed is delivered again first and
/// counted.
#[test]
fn restarts_keep_items() {
    let tmp = common::TempDir::new("durable-restart");
    let body = durable_cfg(
        &tmp.0,
        "modparam(\"mqueue\", \"mqueue\", \"name=q;durable=10;addmode=2\")\n",
    );
    let k = start_on(&body);
    add_items(&k, "q", 5);
    k.rpc(&["mqueue.add", "q", "key-1", "value-1b"])
        .expect("replace");
    let mut k = k.restart();
    assert_eq!(k.queue_size("q"), 5);
    // The key index was rebuilt: key-2 replaces the loaded one.
    k.rpc(&["mqueue.add", "q", "key-2", "value-2b"])
        .expect("replace");
    assert_eq!(k.queue_size("q"), 5);
    // Leased by the RPC process, then every process killed.
    let first = k.rpc(&["mqueue.fetch", "q"]).expect("fetch");
    assert_eq!(field(&first, "key"), "key-0");
    assert_eq!(k.stat("q", "leased"), 1);
    k.kill9();
    wait_unlocked(&tmp.0.join("mqueue.lock"));
    let k = k.restart();
    assert_eq!(k.stat("q", "redelivered"), 1);
    assert_eq!(k.queue_size("q"), 5);
    let items: Vec<String> = k
        .drain("q")
        .into_iter()
        .map(|(key, v)| format!("{key}={v}"))
        .collect();
    assert_eq!(
        items,
        [
            "key-0=value-0",
            "key-3=value-3",
            "key-4=value-4",
            "key-1=value-1b",
            "key-2=value-2b"
        ]
    );
    // Drained: one segment left.
    let segments = fs::read_dir(&tmp.0).expect("dir").filter(|e| {
        e.as_ref()
            .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".mqlog"))
    });
    assert_eq!(segments.count(), 1);
}

/// On a queue with unique keys, an item added while an item of the same
/// key was leased keeps its place through a crash and a clean stop (its
/// add was acknowledged); the leased one gives way, with a warning.
#[test]
fn a_key_added_again_while_leased_survives_a_crash() {
    for mode in [1, 2] {
        let tmp = common::TempDir::new("durable-lease-key");
        let body = durable_cfg(
            &tmp.0,
            &format!("modparam(\"mqueue\", \"mqueue\", \"name=q;durable=sync;addmode={mode}\")\n"),
        );
        let mut k = start_on(&body);
        k.rpc(&["mqueue.add", "q", "cdr-42", "attempt1"])
            .expect("add");
        let first = k.rpc(&["mqueue.fetch", "q"]).expect("fetch");
        assert_eq!(field(&first, "val"), "attempt1");
        k.rpc(&["mqueue.add", "q", "cdr-42", "attempt2"])
            .expect("add");
        k.rpc(&["mqueue.add", "q", "other", "x"]).expect("add");
        k.kill9();
        wait_unlocked(&tmp.0.join("mqueue.lock"));
        let k = k.restart();
        assert!(
            k.log()
                .contains("1 items leased at the stop are not delivered again"),
            "addmode {mode}: {}",
            k.log()
        );
        let k = k.restart();
        let items: Vec<String> = k
            .drain("q")
            .into_iter()
            .map(|(key, v)| format!("{key}={v}"))
            .collect();
        assert_eq!(items, ["cdr-42=attempt2", "other=x"], "addmode {mode}");
    }
}

/// Started as root with `-u nobody -g nogroup`, the directory made at
/// start and the files recovered there go to that user: its processes add,
/// and a restart after a crash (recovery, as root, writes a new file)
/// keeps adding.
#[test]
fn files_go_to_kamailios_user() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "run the tests as root (make test does)");
    let tmp = common::TempDir::new("durable-user");
    // Searchable by nobody; the durable directory and two levels above it
    // are made at start.
    fs::set_permissions(&tmp.0, fs::Permissions::from_mode(0o755)).expect("chmod");
    let cfg_for = |dir: &std::path::Path| {
        format!(
            "modparam(\"mqueue\", \"durable_dir\", \"{}\")\n\
             modparam(\"mqueue\", \"mqueue\", \"name=q;durable=sync\")\n",
            dir.display()
        )
    };
    let as_nobody = ["-u", "nobody", "-g", "nogroup"];
    // Under a directory only root may enter: refused at start.
    let private = tmp.0.join("private");
    fs::create_dir(&private).expect("mkdir");
    fs::set_permissions(&private, fs::Permissions::from_mode(0o700)).expect("chmod");
    let body = cfg_for(&private.join("dur"));
    let cfg = Cfg {
        body: &body,
        ..Cfg::default()
    };
    let (code, log) = Kamailio::start_expect_failure_with(&cfg, Impl::Rust, &as_nobody);
    assert_ne!(code, Some(0), "{log}");
    assert!(log.contains("cannot write there"), "{log}");
    let dir = tmp.0.join("a").join("b").join("dur");
    let body = cfg_for(&dir);
    let cfg = Cfg {
        body: &body,
        ..Cfg::default()
    };
    let mut k = Kamailio::start_with(&cfg, Impl::Rust, &as_nobody);
    for i in 0..3 {
        let r = k.rpc(&["mqueue.add", "q", &format!("k{i}"), "v"]);
        assert_eq!(r.as_deref().map(str::trim), Ok("1"), "{}", k.log());
    }
    k.rpc(&["mqueue.fetch", "q"]).expect("fetch");
    k.kill9();
    wait_unlocked(&dir.join("mqueue.lock"));
    let k = k.restart();
    let r = k.rpc(&["mqueue.add", "q", "k3", "v"]);
    assert_eq!(r.as_deref().map(str::trim), Ok("1"), "{}", k.log());
    assert_eq!(k.queue_size("q"), 4);
}

/// A queue name too long for a hex file name (over 114 bytes) still gets
/// its files, and keeps its items through a restart.
#[test]
fn long_queue_names_get_files() {
    let tmp = common::TempDir::new("durable-long");
    let name = "q".repeat(200);
    let body = durable_cfg(
        &tmp.0,
        &format!("modparam(\"mqueue\", \"mqueue\", \"name={name};durable=sync\")\n"),
    );
    let k = start_on(&body);
    add_items(&k, &name, 3);
    let k = k.restart();
    assert_eq!(k.queue_size(&name), 3, "{}", k.log());
    let names: Vec<String> = fs::read_dir(&tmp.0)
        .expect("dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".mqlog"))
        .collect();
    assert!(
        !names.is_empty() && names.iter().all(|n| n.len() <= 200),
        "{names:?}"
    );
}

/// `mqueue.fetch NAME COUNT` keeps every item of its reply leased until
/// the process fetches again: a kill right after the reply delivers them
/// all again (none was acknowledged before the reply was out).
#[test]
fn batch_fetch_leases_every_item_until_the_next_fetch() {
    let tmp = common::TempDir::new("durable-batch");
    let body = durable_cfg(
        &tmp.0,
        "modparam(\"mqueue\", \"mqueue\", \"name=q;durable=sync\")\n",
    );
    let mut k = start_on(&body);
    add_items(&k, "q", 5);
    let reply = k.rpc(&["mqueue.fetch", "q", "3"]).expect("batch fetch");
    for i in 0..3 {
        assert!(reply.contains(&format!("key-{i}")), "{reply}");
    }
    assert_eq!(k.stat("q", "leased"), 3, "every item of the reply leased");
    k.kill9();
    wait_unlocked(&tmp.0);
    let k = k.restart();
    assert_eq!(k.stat("q", "redelivered"), 3);
    let keys: Vec<String> = k.drain("q").into_iter().map(|(key, _)| key).collect();
    assert_eq!(keys, ["key-0", "key-1", "key-2", "key-3", "key-4"]);
    // A fetch that follows a batch ends its leases.
    add_items(&k, "q", 3);
    k.rpc(&["mqueue.fetch", "q", "2"]).expect("batch fetch");
    k.rpc(&["mqueue.fetch", "q"]).expect("fetch");
    assert_eq!(k.stat("q", "leased"), 1);
    // One batch holds at most 100 leases (the table is shared).
    add_items(&k, "q", 120);
    let reply = k.rpc(&["mqueue.fetch", "q", "120"]).expect("batch fetch");
    assert_eq!(reply.matches("key:").count(), 100, "{reply}");
    assert_eq!(k.stat("q", "leased"), 100);
}

/// Damaged files: a flipped byte inside one item, a file of another
/// format, a directory and a FIFO under segment names. Each is set aside
/// with an error naming it; every intact item is loaded; Kamailio starts.
#[test]
fn damaged_files_are_set_aside() {
    let tmp = common::TempDir::new("durable-damage");
    let body = durable_cfg(
        &tmp.0,
        "modparam(\"mqueue\", \"mqueue\", \"name=q;durable=sync\")\n",
    );
    let mut k = start_on(&body);
    add_items(&k, "q", 10);
    k.stop();
    let seg = fs::read_dir(&tmp.0)
        .expect("dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "mqlog"))
        .expect("a segment");
    let mut data = fs::read(&seg).expect("read");
    let at = data
        .windows(7)
        .position(|w| w == b"value-4")
        .expect("item 4 in the segment");
    data[at + 2] ^= 0x20;
    fs::write(&seg, &data).expect("write");
    fs::write(
        tmp.0.join("71-00000000000000f0.mqlog"),
        "not a log at all\n".repeat(20),
    )
    .expect("foreign");
    fs::create_dir(tmp.0.join("71-00000000000000f1.mqlog")).expect("dir");
    let fifo = std::ffi::CString::new(
        tmp.0
            .join("71-00000000000000f2.mqlog")
            .to_string_lossy()
            .as_bytes(),
    )
    .expect("c");
    // SAFETY: mkfifo with a valid path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let k = k.restart();
    let log = k.log();
    let name = seg
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    assert!(log.contains(&format!("{name}: damaged at offset")), "{log}");
    assert!(
        log.contains("71-00000000000000f0.mqlog: not an mqueue log segment"),
        "{log}"
    );
    assert!(
        log.contains("71-00000000000000f1.mqlog is not a regular file"),
        "{log}"
    );
    assert!(
        log.contains("71-00000000000000f2.mqlog is not a regular file"),
        "{log}"
    );
    assert!(log.contains("mqueue q: 9 items loaded"), "{log}");
    let vals: Vec<String> = k.drain("q").into_iter().map(|(_, v)| v).collect();
    let want: Vec<String> = (0..10)
        .filter(|&i| i != 4)
        .map(|i| format!("value-{i}"))
        .collect();
    assert_eq!(vals, want);
    for f in [
        &name,
        "71-00000000000000f0.mqlog",
        "71-00000000000000f1.mqlog",
        "71-00000000000000f2.mqlog",
    ] {
        assert!(
            tmp.0.join(format!("{f}.damaged")).exists(),
            "{f} not set aside"
        );
    }
}

fn only_segment(dir: &std::path::Path) -> std::path::PathBuf {
    let segs: Vec<_> = fs::read_dir(dir)
        .expect("dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "mqlog"))
        .collect();
    assert_eq!(segs.len(), 1, "{segs:?}");
    segs[0].clone()
}

#[test]
fn truncated_segments_are_set_aside() {
    // Segments are created at full size (their header says it): one cut
    // at a page boundary, to its header, or to nothing, is damage (reported and set aside), not an empty queue.
    let tmp = common::TempDir::new("durable-truncated");
    let body = durable_cfg(
        &tmp.0,
        "modparam(\"mqueue\", \"mqueue\", \"name=q;durable=sync\")\n",
    );
    let mut k = start_on(&body);
    for len in [4096u64, 40, 0] {
        add_items(&k, "q", 10);
        k.stop();
        let seg = only_segment(&tmp.0);
        let name = seg
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        fs::OpenOptions::new()
            .write(true)
            .open(&seg)
            .expect("open")
            .set_len(len)
            .expect("truncate");
        k = k.restart();
        let log = k.log();
        let said = if len == 0 {
            format!("{name} is empty (truncated")
        } else {
            format!("{name}: truncated to {len} bytes")
        };
        assert!(log.contains(&said), "{log}");
        assert!(log.contains("may have been lost"), "{log}");
        assert!(
            tmp.0.join(format!("{name}.damaged")).exists(),
            "{name} not set aside"
        );
        // Cut at a page boundary, the records before the cut load.
        let loaded = if len == 4096 { 10 } else { 0 };
        assert_eq!(k.drain("q").len(), loaded, "{log}");
    }
    k.stop();
}

/// A tmpfs of `size` at `dir`, in a mount namespace private to this test
/// thread (and the processes it starts): needs root, like `unshare --mount`.
fn private_tmpfs(dir: &std::path::Path, size: &str, flags: libc::c_ulong) {
    // SAFETY: unshare of this thread's fs and mount namespace; the calls
    // below only take valid C strings.
    unsafe {
        assert_eq!(
            libc::unshare(libc::CLONE_FS | libc::CLONE_NEWNS),
            0,
            "a private mount namespace needs root (unshare --mount): {}",
            std::io::Error::last_os_error()
        );
        let none = c"none";
        assert_eq!(
            libc::mount(
                none.as_ptr(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null()
            ),
            0
        );
        let target = std::ffi::CString::new(dir.to_string_lossy().as_bytes()).expect("path");
        let opts = std::ffi::CString::new(format!("size={size},mode=0700")).expect("opts");
        assert_eq!(
            libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                flags,
                opts.as_ptr() as *const libc::c_void
            ),
            0,
            "mount tmpfs: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// A full disk: adds fail (-1, logged once per burst), SIP is answered,
/// consumers go on and free space, adds succeed again, and nothing
/// A `durable=10` queue in `dir`: each SIP request adds 500 items of 1 KB
/// (`F|` logged per failed add); `$shv(drain)` 1 makes an rtimer consumer
/// fetch up to 20,000 items and log `D|<count>`.
fn full_disk_cfg(dir: &std::path::Path) -> String {
    let value = "x".repeat(1000);
    format!(
        r#"modparam("mqueue", "durable_dir", "{}")
modparam("mqueue", "mqueue", "name=q;durable=10")
modparam("pv", "shvset", "drain=i:0")
modparam("rtimer", "timer", "name=c;interval=20000u;mode=1")
modparam("rtimer", "exec", "timer=c;route=DRAIN")
route[DRAIN] {{
    if ($shv(drain) == 1) {{
        $var(j) = 0;
        while ($var(j) < 20000 && mq_fetch("q")) {{ $var(j) = $var(j) + 1; }}
        mq_pv_free("q");
        $shv(drain) = 0;
        xlog("L_INFO", "D|$var(j)\n");
    }}
}}
request_route {{
    $var(i) = 0;
    while ($var(i) < 500) {{
        if (!mq_add("q", "k", "$var(i)-{value}")) {{ xlog("L_INFO", "F|\n"); }}
        $var(i) = $var(i) + 1;
    }}
    sl_send_reply("200", "OK");
    exit;
}}
"#,
        dir.display()
    )
}

/// acknowledged is lost across a SIGKILL.
#[test]
fn full_disk() {
    let tmp = common::TempDir::new("durable-full");
    let dir = tmp.0.join("dur");
    fs::create_dir(&dir).expect("dir");
    private_tmpfs(&dir, "40m", 0);
    let body = full_disk_cfg(&dir);
    let mut k = start(&body);
    assert_eq!(
        common::sipp_messages(k.port, 100, 20, &k.dir.0),
        0,
        "SIP answered on a full disk"
    );
    let log = k.log();
    let failed = lines(&log, "F|").len();
    assert!(failed > 1000, "the disk did not fill: {failed} failed adds");
    let logged = log.matches("cannot write the durable log").count();
    assert!(
        (1..=2).contains(&logged),
        "{logged} lines for one burst per worker:\n{log}"
    );
    assert!(log.contains("No space left on device"), "{log}");
    let queued = k.queue_size("q");
    assert_eq!(k.stat("q", "added") as usize, queued);
    // Consumers free space; then adds succeed again.
    k.rpc(&["pv.shvSet", "drain", "int", "1"]).expect("shvSet");
    let drained = k.wait_marked("D|", 1, Duration::from_secs(30));
    assert!(!drained.is_empty(), "no drain");
    let drained: usize = drained[0].parse().expect("n");
    assert_eq!(k.queue_size("q"), queued - drained);
    assert_eq!(common::sipp_messages(k.port, 4, 10, &k.dir.0), 0);
    assert!(k.log().contains("adds succeed again after"), "{}", k.log());
    let before = k.queue_size("q");
    assert!(
        before > queued - drained,
        "no add succeeded after the drain"
    );
    k.kill9();
    wait_unlocked(&dir.join("mqueue.lock"));
    let k = k.restart();
    let after = k.queue_size("q");
    assert!(
        after >= before,
        "{after} items after the kill, {before} before"
    );
    eprintln!("full disk: {failed} adds failed, {queued} kept, {drained} drained, {before} queued at the kill, {after} after");
}

/// A disk with room for one segment only: once the queue is drained, its
/// full segment gives way to the next (though other processes still map
/// it), and adds succeed again.
#[test]
fn a_drained_queue_on_a_full_disk_takes_adds_again() {
    let tmp = common::TempDir::new("durable-full-one");
    let dir = tmp.0.join("dur");
    fs::create_dir(&dir).expect("dir");
    private_tmpfs(&dir, "20m", 0);
    let k = start(&full_disk_cfg(&dir));
    common::sipp_messages(k.port, 60, 20, &k.dir.0);
    let queued = k.queue_size("q");
    assert!(!lines(&k.log(), "F|").is_empty(), "the disk did not fill");
    k.rpc(&["pv.shvSet", "drain", "int", "1"]).expect("shvSet");
    let drained = common::wait_until(Duration::from_secs(30), || k.marked("D|").first().cloned());
    assert_eq!(
        drained.as_deref(),
        Some(queued.to_string().as_str()),
        "{}",
        k.log()
    );
    assert_eq!(k.queue_size("q"), 0);
    assert_eq!(common::sipp_messages(k.port, 1, 10, &k.dir.0), 0);
    assert_eq!(k.queue_size("q"), 500, "adds after the drain:\n{}", k.log());
}

/// A directory that cannot be written (a read-only file system: root
/// ignores permission bits) refuses the start, naming the queue.
#[test]
fn unwritable_dir_refused() {
    let tmp = common::TempDir::new("durable-ro");
    let dir = tmp.0.join("dur");
    fs::create_dir(&dir).expect("dir");
    private_tmpfs(&dir, "1m", libc::MS_RDONLY);
    let log = refused(&durable_cfg(
        &dir,
        "modparam(\"mqueue\", \"mqueue\", \"name=cdr;durable=sync\")\n",
    ));
    assert!(
        log.contains(&format!(
            "mqueue cdr: cannot write in durable_dir {}",
            dir.display()
        )),
        "{log}"
    );
}

/// KEMI (Lua and JavaScript) on a durable queue: the same results as on a
/// memory queue.
#[test]
fn kemi_on_a_durable_queue_matches_a_memory_queue() {
    for (module, engine, file) in [
        ("app_lua", "lua", "mqueue.lua"),
        ("app_jsdt", "jsdt", "mqueue.js"),
    ] {
        let tmp = common::TempDir::new("durable-kemi");
        let run = |attr: &str| {
            let params = format!(
                "modparam(\"mqueue\", \"durable_dir\", \"{}\")\nmodparam(\"mqueue\", \"mqueue\", \"name=q{attr}\")\n",
                tmp.0.display()
            );
            let k = common::start_kemi(module, engine, file, &params, Impl::Rust);
            assert_eq!(
                common::sipp_messages(k.port, 1, 10, &k.dir.0),
                0,
                "{}",
                k.log()
            );
            let lines = k.wait_marked("T|", 1, Duration::from_secs(10));
            assert_eq!(lines.len(), 1, "{}", k.log());
            lines[0].clone()
        };
        let memory = run("");
        let durable = run(";durable=sync");
        assert!(memory.contains("fetch=1"), "{memory}");
        assert_eq!(durable, memory, "{engine}");
    }
}
