//! `mq_fetch_wait`: consumers that sleep until an add wakes them.
//!
//! - SIP MESSAGEs at a fixed rate, each queued with the time of its add
//!   (`$TV(Sn)`), one rtimer consumer waiting with `mq_fetch_wait`: every
//!   item arrives and is logged once; the delays (median, p99) are printed,
//!   not asserted (`make bench` reports them).
//! - An idle waiting consumer uses next to no CPU (from `/proc`).
//! - Kamailio with 8 waiting consumers stops as without them (no shutdown
//!   timeout), and stops by itself when one waiter is killed with SIGKILL.
//! - Timeouts from variables, an unknown queue, no wait, a wait an add
//!   ends, on a memory queue and on a Redis queue.
//! - The KEMI twin waits and returns as the script function does.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::redis::RedisServer;
use common::{sipp_messages, Impl, Kamailio};

/// Logged by Kamailio's main process when children outlive `exit_timeout`.
const SHUTDOWN_TIMEOUT: &str = "shutdown timeout triggered";

fn start(body: &str, children: usize) -> Kamailio {
    common::start_timers(body, children, 1_000_000)
}

/// `utime + stime` of a process, in clock ticks.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // Fields after the command name (which may hold spaces), from field 3.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[test]
fn every_item_reaches_the_waiting_consumer_once() {
    const MESSAGES: usize = 2000;
    const RATE: usize = 500;
    let body = r#"modparam("mqueue", "mqueue", "name=q")
modparam("rtimer", "timer", "name=c;interval=1000u;mode=1;")
modparam("rtimer", "exec", "timer=c;route=CONSUME")
route[CONSUME] {
    while (mq_fetch_wait("q", 500)) {
        xlog("L_INFO", "D|$mqv(q)|$TV(Sn)|$mqk(q)\n");
    }
}
request_route {
    # The body (item-N) last in the log line: it ends with a line break.
    if (!mq_add("q", "$rb", "$TV(Sn)")) { sl_send_reply("500", "queue"); exit; }
    sl_send_reply("200", "queued");
    exit;
}
"#;
    let k = start(body, 2);
    let rc = sipp_messages(k.port, MESSAGES, RATE, &k.dir.0);
    assert_eq!(rc, 0, "sipp failed (rc {rc})");
    let lines = k.wait_marked("D|", MESSAGES, Duration::from_secs(30));
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut delays_ms = Vec::new();
    for l in &lines {
        let f: Vec<&str> = l.split('|').collect();
        let (added, fetched, key) = (f[0], f[1], f[2]);
        *seen.entry(key.trim().to_string()).or_default() += 1;
        let added: f64 = added.parse().expect("$TV(Sn) in the value");
        let fetched: f64 = fetched.trim().parse().expect("$TV(Sn) at the fetch");
        delays_ms.push((fetched - added) * 1000.0);
    }
    for i in 1..=MESSAGES {
        let n = seen.get(&format!("item-{i}")).copied().unwrap_or(0);
        assert_eq!(n, 1, "item-{i} logged {n} times");
    }
    assert_eq!(lines.len(), MESSAGES, "items logged more than once");
    delays_ms.sort_by(f64::total_cmp);
    eprintln!(
        "add-to-fetch delay over {MESSAGES} items at {RATE}/s: median {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        percentile(&delays_ms, 0.5),
        percentile(&delays_ms, 0.99),
        percentile(&delays_ms, 1.0)
    );
}

#[test]
fn an_idle_waiting_consumer_uses_next_to_no_cpu() {
    // Each run of the route waits up to a second and logs a line.
    let body = r#"modparam("mqueue", "mqueue", "name=q")
modparam("rtimer", "timer", "name=idle;interval=1000u;mode=1;")
modparam("rtimer", "exec", "timer=idle;route=IDLE")
route[IDLE] {
    if (!mq_fetch_wait("q", 1000)) { xlog("L_INFO", "I|$pp\n"); }
}
"#;
    let k = start(body, 1);
    let first = k.wait_marked("I|", 1, Duration::from_secs(10));
    assert_eq!(first.len(), 1, "the consumer does not run:\n{}", k.log());
    let pids = k.pids_of("timer=idle");
    assert_eq!(pids.len(), 1, "consumer process: {pids:?}");
    let before = cpu_ticks(pids[0]);
    let waits: u64 = 4;
    let seen = k.wait_marked("I|", 1 + waits as usize, Duration::from_secs(30));
    assert_eq!(
        seen.len() as u64,
        1 + waits,
        "the consumer stopped:\n{}",
        k.log()
    );
    let used = cpu_ticks(pids[0]) - before;
    let tick_ms = 1000 / clock_ticks_per_second();
    eprintln!(
        "idle waiting consumer: {} ms of CPU over {waits} one-second waits",
        used * tick_ms
    );
    // A polling consumer at 1 ms would burn a good share of a core; a
    // sleeping one about nothing. Generous: under 5 % of the waits.
    assert!(
        used * tick_ms < waits * 1000 / 20,
        "{} ms of CPU in {waits} s of waiting",
        used * tick_ms
    );
}

fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).max(1) as u64
}

/// Kamailio with 8 consumers, each waiting (up to 10 minutes) for an item,
/// once every one of them is about to wait.
fn eight_waiters() -> Kamailio {
    let mut body = String::from("modparam(\"mqueue\", \"mqueue\", \"name=q\")\n");
    for i in 1..=8 {
        body.push_str(&format!(
            "modparam(\"rtimer\", \"timer\", \"name=w{i};interval=1000u;mode=1;\")\n\
             modparam(\"rtimer\", \"exec\", \"timer=w{i};route=WAIT\")\n"
        ));
    }
    body.push_str(
        r#"route[WAIT] {
    xlog("L_INFO", "W|$pp\n");
    if (mq_fetch_wait("q", 600000)) { xlog("L_INFO", "G|$pp|$mqk(q)\n"); }
}
"#,
    );
    let k = start(&body, 1);
    let waiting = k.wait_marked("W|", 8, Duration::from_secs(20));
    assert_eq!(waiting.len(), 8, "not every consumer waits:\n{}", k.log());
    k
}

#[test]
fn eight_waiting_consumers_share_items_and_do_not_hold_up_the_stop() {
    let mut k = eight_waiters();
    // Each item goes to one waiter; every waiter then waits again.
    for i in 0..16 {
        k.rpc(&["mqueue.add", "q", &format!("k{i}"), "v"])
            .expect("mqueue.add");
    }
    let got = k.wait_marked("G|", 16, Duration::from_secs(20));
    let mut keys: Vec<_> = got
        .iter()
        .map(|l| l.rsplit('|').next().unwrap().trim().to_string())
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 16, "items lost or doubled: {got:?}");
    assert_eq!(got.len(), 16, "items doubled: {got:?}");
    let again = k.wait_marked("W|", 8 + 16, Duration::from_secs(20));
    assert_eq!(again.len(), 8 + 16, "waiters did not wait again");
    let main = k.pids_of("attendant");
    assert_eq!(main.len(), 1, "main process: {main:?}");
    let t0 = std::time::Instant::now();
    // SAFETY: kill on our own Kamailio's main process.
    unsafe { libc::kill(main[0], libc::SIGTERM) };
    // exit_timeout is 4 s: past it the main process kills the children
    // itself and logs SHUTDOWN_TIMEOUT.
    assert!(
        k.wait_exit(Duration::from_secs(15)),
        "Kamailio did not exit"
    );
    eprintln!("stop with 8 waiting consumers: {:?}", t0.elapsed());
    let log = k.log();
    assert!(
        !log.contains(SHUTDOWN_TIMEOUT),
        "waiters held up the stop:\n{log}"
    );
}

#[test]
fn a_waiter_killed_while_waiting_leaves_nothing_stuck() {
    let mut k = eight_waiters();
    let pids = k.pids_of("timer=w3");
    assert_eq!(pids.len(), 1, "waiter w3: {pids:?}");
    // SAFETY: kill on a child process of our own Kamailio.
    unsafe { libc::kill(pids[0], libc::SIGKILL) };
    // Kamailio stops itself when a child dies; the other seven waiters
    // must not hold that up.
    assert!(
        k.wait_exit(Duration::from_secs(15)),
        "Kamailio did not exit"
    );
    let log = k.log();
    assert!(
        !log.contains(SHUTDOWN_TIMEOUT),
        "waiters held up the stop:\n{log}"
    );
    assert!(log.contains("terminating due to SIGCHLD"), "{log}");
}

#[test]
fn timeouts_given_by_variables_wait_and_return_as_mq_fetch() {
    check_timeouts(&start(TIMEOUTS_BODY, 1), "q");
}

const TIMEOUTS_BODY: &str = r#"modparam("mqueue", "mqueue", "name=q")
modparam("rtimer", "timer", "name=t;interval=100000u;mode=1;")
modparam("rtimer", "exec", "timer=t;route=T")
modparam("pv", "shvset", "go=i:0")
route[T] {
    if ($shv(go) != 1) { return; }
    $shv(go) = 0;
    $var(ms) = 50;
    $var(rc) = mq_fetch_wait("q", "$var(ms)");
    xlog("L_INFO", "R|empty|$var(rc)\n");
    $var(rc) = mq_fetch_wait("nosuch", "10");
    xlog("L_INFO", "R|unknown|$var(rc)\n");
    $var(rc) = mq_fetch_wait("q", "0");
    xlog("L_INFO", "R|nowait|$var(rc)\n");
    $var(rc) = mq_fetch_wait("q", "60000");
    xlog("L_INFO", "R|item|$var(rc)|$mqk(q)|$mqv(q)\n");
}
"#;

/// A timeout that is not a number fails every call (-1) but is logged
/// once, not once per call.
#[test]
fn a_bad_timeout_is_logged_once_not_per_call() {
    let body = r#"modparam("mqueue", "mqueue", "name=q")
modparam("rtimer", "timer", "name=t;interval=100000u;mode=1;")
modparam("rtimer", "exec", "timer=t;route=T")
modparam("pv", "shvset", "go=i:0")
route[T] {
    if ($shv(go) != 1) { return; }
    $shv(go) = 0;
    $var(ms) = "abc";
    $var(i) = 0;
    $var(bad) = 0;
    while ($var(i) < 50) {
        $var(rc) = mq_fetch_wait("q", "$var(ms)");
        if ($var(rc) == -1) { $var(bad) = $var(bad) + 1; }
        $var(i) = $var(i) + 1;
    }
    xlog("L_INFO", "R|bad|$var(bad)\n");
}
"#;
    let k = start(body, 1);
    k.rpc(&["pv.shvSet", "go", "int", "1"]).expect("pv.shvSet");
    let r = k.wait_marked("R|", 1, Duration::from_secs(10));
    assert_eq!(r, ["bad|50"], "{}", k.log());
    let log = k.log();
    let errors = log.matches("the timeout is not a number").count();
    assert_eq!(errors, 1, "{log}");
}

#[test]
fn a_redis_queue_waits_too() {
    let redis = RedisServer::start();
    let body = TIMEOUTS_BODY.replace("name=q\")", &format!("name=q;redis={}\")", redis.url()));
    check_timeouts(&start(&body, 1), "q");
}

/// Runs the TIMEOUTS_BODY script: timeouts, an unknown queue, no wait,
/// then a wait an add ends.
fn check_timeouts(k: &Kamailio, q: &str) {
    k.rpc(&["pv.shvSet", "go", "int", "1"]).expect("pv.shvSet");
    let r = k.wait_marked("R|", 3, Duration::from_secs(10));
    assert_eq!(r, ["empty|-2", "unknown|-1", "nowait|-2"], "{}", k.log());
    // The last call is waiting now (or about to): an add ends it.
    k.rpc(&["mqueue.add", q, "k1", "v1"]).expect("mqueue.add");
    let r = k.wait_marked("R|", 4, Duration::from_secs(10));
    assert_eq!(
        r.get(3).map(String::as_str),
        Some("item|1|k1|v1"),
        "{}",
        k.log()
    );
}

#[test]
fn kemi_twin_waits_and_returns_as_mq_fetch() {
    let params = "modparam(\"mqueue\", \"mqueue\", \"name=q\")\n";
    let k = common::start_kemi("app_lua", "lua", "fetch_wait.lua", params, Impl::Rust);
    assert_eq!(sipp_messages(k.port, 1, 10, &k.dir.0), 0, "{}", k.log());
    let lines = k.wait_marked("T|", 1, Duration::from_secs(10));
    assert_eq!(
        lines,
        ["empty=-2 unknown=-1 nowait=-2 item=1/k1/v1"],
        "{}",
        k.log()
    );
}
