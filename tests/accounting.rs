//! Memory in proportion to what is queued, and counters that balance.
//!
//! - 1,000 queues holding one 15-byte item each under `-m 16`: every add
//!   succeeds, shared memory per queued item stays within 2x of the C
//!   module's (same run), and draining gives the memory back (within 512
//!   bytes per queue).
//! - Concurrent producers, consumers and `mqueue.clear`: every item that
//!   entered the queue is accounted for once, as fetched, evicted,
//!   replaced, cleared or still queued.

mod common;

use std::time::Duration;

use common::{field, wait_until, Cfg, Impl, Kamailio};

const QUEUES: usize = 1000;

/// `core.shmmem` real_used (bytes, allocator overhead included).
fn shm_used(k: &Kamailio) -> i64 {
    k.shm("real_used")
}

fn set_phase(k: &Kamailio, phase: i32) {
    k.rpc(&["pv.shvSet", "phase", "int", &phase.to_string()])
        .expect("pv.shvSet");
}

/// (shm per queued item, shm left after the drain per queue, adds that
/// succeeded).
fn many_queues(imp: Impl, queues: usize) -> (f64, f64, usize) {
    let mut body = String::from(
        "modparam(\"pv\", \"shvset\", \"phase=i:0\")\n\
         modparam(\"rtimer\", \"timer\", \"name=t;interval=100000u;mode=1\")\n\
         modparam(\"rtimer\", \"exec\", \"timer=t;route=WORK\")\n",
    );
    for i in 0..queues {
        body.push_str(&format!(
            "modparam(\"mqueue\", \"mqueue\", \"name=q{i}\")\n"
        ));
    }
    body.push_str(
        &r#"route[WORK] {
    if ($shv(phase) == 1) {
        $shv(phase) = 0;
        $var(i) = 0; $var(ok) = 0;
        while ($var(i) < QUEUES) {
            if (mq_add("q$var(i)", "key", "0123456789ab")) { $var(ok) = $var(ok) + 1; }
            $var(i) = $var(i) + 1;
        }
        xlog("L_INFO", "T|ADDED $var(ok)\n");
    }
    if ($shv(phase) == 2) {
        $shv(phase) = 0;
        $var(i) = 0; $var(n) = 0;
        while ($var(i) < QUEUES) {
            while (mq_fetch("q$var(i)")) { $var(n) = $var(n) + 1; }
            $var(i) = $var(i) + 1;
        }
        xlog("L_INFO", "T|DRAINED $var(n)\n");
    }
}
"#
        .replace("QUEUES", &queues.to_string()),
    );
    let cfg = Cfg {
        globals: "children=1\nmax_while_loops=100000",
        modules: &["rtimer.so"],
        body: &body,
        ..Cfg::default()
    };
    let k = Kamailio::start_with(&cfg, imp, &["-m", "16"]);
    // Per item: the first fill. Left over: after the second drain, against
    // the level before the first fill (what a drained queue keeps for
    // reuse counts against it).
    let base = shm_used(&k);
    let mut per_item = 0.0;
    let mut added = 0;
    for round in 1..=2 {
        let before = shm_used(&k);
        set_phase(&k, 1);
        let lines = k.wait_marked("T|ADDED ", round, Duration::from_secs(30));
        assert_eq!(lines.len(), round, "{imp:?} adds:\n{}", k.log());
        added = lines[round - 1].trim().parse().expect("count");
        if round == 1 {
            per_item = (shm_used(&k) - before) as f64 / added.max(1) as f64;
        }
        set_phase(&k, 2);
        let drained = k.wait_marked("T|DRAINED ", round, Duration::from_secs(30));
        assert_eq!(drained.len(), round, "{imp:?} drain");
    }
    let left = (shm_used(&k) - base) as f64 / queues as f64;
    (per_item, left, added)
}

#[test]
fn thousand_queues_memory_follows_the_items() {
    let (c_per_item, _, c_added) = many_queues(Impl::C, QUEUES);
    let (per_item, left_per_queue, added) = many_queues(Impl::Rust, QUEUES);
    eprintln!(
        "shm per queued item: ours {per_item:.1} B, C {c_per_item:.1} B (C added {c_added}); \
         left after drain: {left_per_queue:.1} B per queue"
    );
    assert_eq!(added, QUEUES, "every add succeeds");
    assert!(
        per_item <= 2.0 * c_per_item,
        "ours {per_item:.1} B per item, C {c_per_item:.1}"
    );
    assert!(
        left_per_queue <= 512.0,
        "{left_per_queue:.1} B per queue left after the drain"
    );
}

/// One queue alone gets its memory back too: the packing of queue bodies
/// takes no large block for the first one.
#[test]
fn one_queue_memory_comes_back() {
    let (_, left, added) = many_queues(Impl::Rust, 1);
    eprintln!("one queue: {left:.0} B left after the drain");
    assert_eq!(added, 1);
    assert!(left <= 512.0, "{left:.0} B left after the drain");
}

#[test]
fn counters_balance_under_concurrent_clears() {
    let body = r#"modparam("mqueue", "mqueue", "name=q;addmode=2;size=300")
modparam("pv", "shvset", "stop=i:0")
modparam("rtimer", "timer", "name=p1;interval=2000u;mode=1")
modparam("rtimer", "exec", "timer=p1;route=PRODUCE")
modparam("rtimer", "timer", "name=p2;interval=2000u;mode=1")
modparam("rtimer", "exec", "timer=p2;route=PRODUCE")
modparam("rtimer", "timer", "name=c1;interval=3000u;mode=1")
modparam("rtimer", "exec", "timer=c1;route=CONSUME")
modparam("rtimer", "timer", "name=c2;interval=3000u;mode=1")
modparam("rtimer", "exec", "timer=c2;route=CONSUME")
route[PRODUCE] {
    if ($shv(stop) == 1) {
        if ($var(done) == 0) { $var(done) = 1; xlog("L_INFO", "T|PRODUCED $pp $var(ok)\n"); }
        return;
    }
    $var(i) = 0;
    while ($var(i) < 20) {
        $var(seq) = $var(seq) + 1;
        $var(key) = $var(seq) mod 500;
        if (mq_add("q", "k$var(key)", "$pp-$var(seq)")) { $var(ok) = $var(ok) + 1; }
        $var(i) = $var(i) + 1;
    }
}
route[CONSUME] {
    $var(i) = 0;
    while ($var(i) < 10 && mq_fetch("q")) {
        xlog("L_INFO", "T|GOT $mqv(q)\n");
        $var(i) = $var(i) + 1;
    }
}
"#;
    let cfg = Cfg {
        globals: "children=1",
        modules: &["rtimer.so"],
        body,
        ..Cfg::default()
    };
    let k = Kamailio::start(&cfg, Impl::Rust);
    // Rounds of concurrent work: each waits until the producers have
    // pushed the queue past its size again (an eviction), then clears it.
    let mut cleared_by_rpc = 0i64;
    for round in 0..20 {
        let evicted = k.stat("q", "evicted");
        let grew = wait_until(Duration::from_secs(10), || {
            (k.stat("q", "evicted") > evicted).then_some(())
        });
        assert!(grew.is_some(), "round {round}: no eviction");
        let r = k.rpc(&["mqueue.clear", "q"]).expect("mqueue.clear");
        cleared_by_rpc += field(&r, "cleared").parse::<i64>().expect("cleared");
    }
    k.rpc(&["pv.shvSet", "stop", "int", "1"]).expect("stop");
    let produced = k.wait_marked("T|PRODUCED", 2, Duration::from_secs(10));
    assert_eq!(produced.len(), 2, "{produced:?}");
    let added_ok: i64 = produced
        .iter()
        .map(|l| l.rsplit(' ').next().unwrap().parse::<i64>().unwrap())
        .sum();
    // Let the consumers drain what is left.
    let drained = wait_until(Duration::from_secs(20), || {
        (k.queue_size("q") == 0).then_some(())
    });
    assert!(drained.is_some(), "queue does not drain");
    let fetched_now = k.stat("q", "fetched") as usize;
    let got = k.wait_marked("T|GOT ", fetched_now, Duration::from_secs(10));
    let distinct: std::collections::HashSet<&String> = got.iter().collect();
    assert_eq!(distinct.len(), got.len(), "an item was fetched twice");
    let s = |n: &str| k.stat("q", n);
    let (added, fetched, evicted, replaced, cleared, size) = (
        s("added"),
        s("fetched"),
        s("evicted"),
        s("replaced"),
        s("cleared"),
        s("size"),
    );
    eprintln!(
        "added {added} = fetched {fetched} + evicted {evicted} + replaced {replaced} + \
         cleared {cleared} + size {size}"
    );
    assert_eq!(added, added_ok, "adds that returned 1");
    assert_eq!(fetched, got.len() as i64, "fetches seen by the consumers");
    assert_eq!(cleared, cleared_by_rpc, "items the clears reported");
    assert!(cleared > 0 && evicted > 0 && replaced > 0 && fetched > 0);
    assert_eq!(added, fetched + evicted + replaced + cleared + size);
}
