//! Restart with persistence (dbmode 1, SQLite): Kamailio is stopped while a
//! producer is adding and a consumer fetching, with over 100,000 items
//! queued. Every item acknowledged by `mq_add` before the stop was either
//! fetched before it or is in the table, exactly once and in order; the
//! next start loads them all.

mod common;

use std::time::Duration;

use common::db::Db;
use common::{wait_until, Cfg, Impl, Kamailio};

const QUEUED: u64 = 100_000;

#[test]
fn stop_under_load_keeps_every_acknowledged_item() {
    let db = Db::sqlite();
    db.create_table("q");
    let body = format!(
        r#"modparam("mqueue", "db_url", "{}")
modparam("mqueue", "mqueue", "name=q;dbmode=1")
modparam("rtimer", "timer", "name=prod;interval=5000u;mode=1")
modparam("rtimer", "exec", "timer=prod;route=PRODUCE")
modparam("rtimer", "timer", "name=cons;interval=10000u;mode=1")
modparam("rtimer", "exec", "timer=cons;route=CONSUME")
route[PRODUCE] {{
    if ($var(seq) >= 400000) {{ return; }}
    $var(i) = 0;
    while ($var(i) < 2000) {{
        if (!mq_add("q", "p", "$var(seq)")) {{ xlog("L_ERR", "T|ADDFAIL\n"); return; }}
        $var(seq) = $var(seq) + 1;
        $var(i) = $var(i) + 1;
    }}
    xlog("L_INFO", "P|$var(seq)\n");
}}
route[CONSUME] {{
    $var(i) = 0;
    while ($var(i) < 20 && mq_fetch("q")) {{
        xlog("L_INFO", "C|$mqv(q)\n");
        $var(i) = $var(i) + 1;
    }}
}}
"#,
        db.url()
    );
    let cfg = Cfg {
        globals: "children=1\nmax_while_loops=1000000",
        modules: &["db_sqlite.so", "rtimer.so"],
        body: &body,
        ..Cfg::default()
    };
    let mut k = Kamailio::start(&cfg, Impl::Rust);
    let acked = |k: &Kamailio| -> u64 {
        k.marked("P|")
            .last()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    };
    let acked_before_stop = wait_until(Duration::from_secs(60), || {
        let acked = acked(&k);
        (acked >= QUEUED + k.marked("C|").len() as u64).then_some(acked)
    })
    .unwrap_or_else(|| panic!("producer too slow: {}", acked(&k)));
    k.stop();
    assert!(k.marked("T|ADDFAIL").is_empty());
    let log = k.log();
    assert!(log.contains("mqueue q: saved "), "{log}");

    // Fetched before the stop: 0..F in order; saved rows: F.. in order; no
    // gap, no duplicate, nothing acknowledged missing.
    let fetched: Vec<u64> = k.marked("C|").iter().map(|v| v.parse().unwrap()).collect();
    let rows: Vec<u64> = db
        .rows("q")
        .iter()
        .map(|(_, v)| v.parse().unwrap())
        .collect();
    let all: Vec<u64> = fetched.iter().chain(rows.iter()).copied().collect();
    let want: Vec<u64> = (0..all.len() as u64).collect();
    assert!(all == want, "items lost, duplicated or out of order");
    assert!(
        all.len() as u64 >= acked_before_stop,
        "{} items kept, {acked_before_stop} acknowledged",
        all.len()
    );
    assert!(rows.len() as u64 >= QUEUED, "only {} rows", rows.len());
    eprintln!(
        "restart: {} acknowledged before the stop was asked, {} fetched + {} saved = {}, 0 lost",
        acked_before_stop,
        fetched.len(),
        rows.len(),
        all.len()
    );

    let k = k.restart();
    let loaded = format!("mqueue q: loaded {} items from the database", rows.len());
    let seen = wait_until(Duration::from_secs(10), || {
        k.log().contains(&loaded).then_some(())
    });
    assert!(seen.is_some(), "no '{loaded}':\n{}", k.log());
    drop(k);
}
