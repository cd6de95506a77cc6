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
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{field, free_port, Cfg, Impl, Kamailio};

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
    let cfg = Cfg {
        globals: "children=2\nmax_while_loops=1000000",
        modules: &["rtimer.so"],
        body,
        ..Cfg::default()
    };
    Kamailio::start(&cfg, Impl::Rust)
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

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Waits until no process holds the directory's lock (every process of a
/// killed instance has exited).
fn wait_unlocked(path: &std::path::Path) {
    use std::os::fd::AsRawFd;
    let f = fs::File::open(path).expect("lock file");
    let deadline = Instant::now() + Duration::from_secs(20);
    // SAFETY: flock on a file we opened; released right away.
    while unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        assert!(
            Instant::now() < deadline,
            "the killed instance's processes do not exit"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // SAFETY: as above.
    unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_UN) };
}

fn crash_test(durable: &str) {
    let tmp = common::TempDir::new("durable-crash");
    let dir = tmp.0.display().to_string();
    let body = crash_body(&dir, durable);
    let mut k = start(&body);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    let mut rng = Rng(seed);
    let mut redelivered = 0i64;
    for round in 0..20 {
        let mut sipp = sipp_load(k.port, &k.dir.0);
        // A random moment under load: after a random number of adds.
        let base = lines(&k.log(), "P|").len();
        let want = base + 50 + rng.below(400) as usize;
        let deadline = Instant::now() + Duration::from_secs(60);
        while lines(&k.log(), "P|").len() < want {
            assert!(
                Instant::now() < deadline,
                "round {round}: no load\n{}",
                k.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        k.kill9();
        let _ = sipp.kill();
        let _ = sipp.wait();
        wait_unlocked(&tmp.0.join("durable/mqueue.lock"));
        k = k.restart();
        redelivered += k.stat("work", "redelivered");
    }
    // Drain: every acknowledged add is consumed.
    let deadline = Instant::now() + Duration::from_secs(60);
    while k.queue_size("work") > 0 || k.stat("work", "leased") > 1 {
        assert!(Instant::now() < deadline, "queue does not drain");
        std::thread::sleep(Duration::from_millis(50));
    }
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
