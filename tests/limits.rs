//! Memory limits: the per-queue `maxbytes` cap, and shared memory running
//! out under a queue without limits (Kamailio started with a small `-m`).

mod common;

use std::time::Duration;

use common::{sipp_messages, Cfg, Impl, Kamailio};

fn stat(stats: &str, name: &str) -> u64 {
    stats
        .lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{name}: ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {stats}"))
}

/// `maxbytes` evicts the oldest items like `size` does, refuses an item
/// larger than the cap, and counts both in `mqueue.stats`.
#[test]
fn maxbytes_caps_the_queue() {
    let cfg = Cfg {
        globals: "children=1\nmax_while_loops=100000",
        body: r#"modparam("mqueue", "mqueue", "name=q;maxbytes=2000")
event_route[core:worker-one-init] {
    $var(i) = 0;
    while ($var(i) < 100) {
        $var(i) = $var(i) + 1;
        mq_add("q", "k$var(i)", "0123456789012345678901234567890123456789");
    }
    $var(big) = "x";
    $var(j) = 0;
    while ($var(j) < 12) { $var(big) = $var(big) + $var(big); $var(j) = $var(j) + 1; }
    $var(rc) = mq_add("q", "big", "$var(big)");
    mq_fetch("q");
    xlog("L_INFO", "T|$var(rc) first=$mqk(q)\n");
}
"#,
        ..Cfg::default()
    };
    let k = Kamailio::start(&cfg, Impl::Rust);
    let lines = k.wait_marked("T|", 1, Duration::from_secs(10));
    // Each item takes 24 + 4 + 40 bytes, rounded to 72: 27 fit in 2000.
    assert_eq!(lines, ["-1 first=k74"], "{}", k.log());
    let stats = k.rpc(&["mqueue.stats", "q"]).unwrap();
    assert_eq!(stat(&stats, "maxbytes"), 2000);
    assert_eq!(stat(&stats, "size"), 26);
    assert_eq!(stat(&stats, "added"), 100);
    assert_eq!(stat(&stats, "evicted"), 73);
    assert_eq!(stat(&stats, "failed"), 1);
    assert!(stat(&stats, "item_bytes") <= 2000, "{stats}");
    assert!(
        k.log().contains("larger than the queue's maxbytes"),
        "{}",
        k.log()
    );
}

/// Shared memory runs out: `mq_add` returns -1 and the module logs once
/// for the burst; SIP requests are still answered; after a drain every
/// acknowledged item comes out, in order, and adds succeed again.
#[test]
fn shm_exhaustion_fails_adds_and_loses_nothing() {
    let cfg = Cfg {
        globals: "children=1\nmax_while_loops=1000000",
        modules: &["rtimer.so"],
        body: r#"modparam("mqueue", "mqueue", "name=big")
modparam("pv", "shvset", "drain=i:0")
modparam("rtimer", "timer", "name=fill;interval=200000u;mode=1")
modparam("rtimer", "exec", "timer=fill;route=FILL")
route[FILL] {
    if ($var(done) == 1) {
        if ($shv(drain) == 1) { route(DRAIN); }
        return;
    }
    $var(done) = 1;
    $var(pad) = "x";
    $var(j) = 0;
    while ($var(j) < 12) { $var(pad) = $var(pad) + $var(pad); $var(j) = $var(j) + 1; }
    $var(n) = 0;
    while (mq_add("big", "$var(n)", "$var(pad)")) {
        $var(n) = $var(n) + 1;
    }
    $var(failed) = 1;
    $var(j) = 0;
    while ($var(j) < 500) {
        if (!mq_add("big", "more", "$var(pad)")) { $var(failed) = $var(failed) + 1; }
        $var(j) = $var(j) + 1;
    }
    xlog("L_INFO", "T|FULL acked=$var(n) failed=$var(failed)\n");
}
route[DRAIN] {
    $shv(drain) = 0;
    $var(expect) = 0;
    $var(bad) = 0;
    $var(sip) = 0;
    while (mq_fetch("big")) {
        if ($mqk(big) == "sip") {
            $var(sip) = $var(sip) + 1;
        } else {
            if ($(mqk(big){s.int}) != $var(expect)) { $var(bad) = $var(bad) + 1; }
            $var(expect) = $var(expect) + 1;
        }
    }
    $var(rc) = mq_add("big", "again", "$var(pad)");
    xlog("L_INFO", "T|DRAINED count=$var(expect) out_of_order=$var(bad) sip=$var(sip) add_after=$var(rc)\n");
}
request_route {
    $var(rc) = mq_add("big", "sip", "x");
    xlog("L_INFO", "T|SIP $var(rc)\n");
    sl_send_reply("200", "OK");
    exit;
}
"#,
        ..Cfg::default()
    };
    let k = Kamailio::start_with(&cfg, Impl::Rust, &["-m", "24"]);
    let full = k.wait_marked("T|FULL", 1, Duration::from_secs(30));
    assert_eq!(full.len(), 1, "{}", k.log());
    let acked: u64 = full[0]
        .split_whitespace()
        .find_map(|w| w.strip_prefix("acked="))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(acked > 1000, "shm filled too early: {}", full[0]);
    assert!(full[0].ends_with("failed=501"), "{}", full[0]);

    // SIP keeps being answered while the queue holds all the memory.
    assert_eq!(sipp_messages(k.port, 20, 50, &k.dir.0), 0, "{}", k.log());

    k.rpc(&["pv.shvSet", "drain", "int", "1"])
        .expect("pv.shvSet");
    let drained = k.wait_marked("T|DRAINED", 1, Duration::from_secs(30));
    assert_eq!(drained.len(), 1, "{}", k.log());
    // Every acknowledged item, in order. The SIP workers' small items
    // still fit in the last chunk, so they were acknowledged too.
    let sip_acked = k.marked("T|SIP 1").len();
    assert_eq!(
        drained[0],
        format!(" count={acked} out_of_order=0 sip={sip_acked} add_after=1"),
        "{}",
        k.log()
    );
    let log = k.log();
    let fill_pid_lines = log
        .lines()
        .filter(|l| l.contains("mqueue big: cannot add item"))
        .count();
    // Once per burst per process: the filler's burst and the SIP worker's.
    assert!(
        (1..=2).contains(&fill_pid_lines),
        "{fill_pid_lines} failure lines:\n{}",
        log.lines()
            .filter(|l| l.contains("mqueue big"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        log.contains("mqueue big: adds succeed again after 501 failed"),
        "{log}"
    );
}
