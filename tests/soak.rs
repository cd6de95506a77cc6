//! Soak: SIP traffic through a queue with producers and consumers running
//! for `MQUEUE_SOAK_SECS` seconds (15 in `make test`, 600 in `make
//! stress`); once the queue drains, shared memory in use returns to its
//! starting level.

mod common;

use std::time::{Duration, Instant};

use common::{sipp_messages, wait_until, Cfg, Impl, Kamailio};

fn shm_used(k: &Kamailio) -> i64 {
    k.shm("used")
}

/// Waits until the consumers have drained both queues and each queue holds
/// no more than one small chunk (a spare chunk ages out on the core timer
/// within two ticks): the level the soak is measured against.
fn wait_settled(k: &Kamailio, when: &str) {
    let settled = wait_until(Duration::from_secs(30), || {
        ["q", "u"]
            .iter()
            .all(|q| k.queue_size(q) == 0 && k.stat(q, "shm_bytes") <= 512)
            .then_some(())
    });
    assert!(
        settled.is_some(),
        "{when}: queues do not drain and settle: q {} items {} B, u {} items {} B",
        k.queue_size("q"),
        k.stat("q", "shm_bytes"),
        k.queue_size("u"),
        k.stat("u", "shm_bytes")
    );
}

#[test]
fn shm_returns_to_its_starting_level() {
    let secs: usize = std::env::var("MQUEUE_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    let rate = 300;
    let cfg = Cfg {
        globals: "children=2\nmax_while_loops=1000000",
        modules: &["rtimer.so"],
        body: r#"modparam("mqueue", "mqueue", "name=q")
modparam("mqueue", "mqueue", "name=u;addmode=2")
modparam("rtimer", "timer", "name=c1;interval=50000u;mode=1")
modparam("rtimer", "exec", "timer=c1;route=CONSUME")
modparam("rtimer", "timer", "name=c2;interval=70000u;mode=1")
modparam("rtimer", "exec", "timer=c2;route=CONSUME")
route[CONSUME] {
    while (mq_fetch("q")) { $var(n) = $var(n) + 1; }
    while (mq_fetch("u")) { $var(n) = $var(n) + 1; }
}
request_route {
    mq_add("q", "$ci", "$mb");
    mq_add("u", "$(ci{s.select,0,-}){s.int} mod 100", "$mb");
    sl_send_reply("200", "OK");
    exit;
}
"#,
        ..Cfg::default()
    };
    let k = Kamailio::start(&cfg, Impl::Rust);
    // Warm-up: a drained queue keeps one small storage chunk (at most
    // 256 bytes) for its next items; the baseline includes it.
    assert_eq!(sipp_messages(k.port, 200, rate, &k.dir.0), 0, "sipp failed");
    wait_settled(&k, "warm-up");
    let before = shm_used(&k);
    let started = Instant::now();
    assert_eq!(
        sipp_messages(k.port, rate * secs, rate, &k.dir.0),
        0,
        "sipp failed"
    );
    let ran = started.elapsed();
    wait_settled(&k, "soak");
    let after = shm_used(&k);
    let stats = k.rpc(&["mqueue.stats", "q"]).unwrap();
    let drift = after - before;
    eprintln!(
        "soak: {} messages in {:.0} s, shm used {before} -> {after} bytes (drift {drift})\n{stats}",
        rate * secs,
        ran.as_secs_f64()
    );
    assert!(
        stats.contains(&format!("added: {}", rate * secs + 200)),
        "{stats}"
    );
    assert!(drift.abs() <= 1024, "shm drift {drift} bytes\n{stats}");
}
