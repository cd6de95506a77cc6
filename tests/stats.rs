//! Queue counters in Kamailio's statistics framework: `kamcmd
//! stats.get_statistics` and a Prometheus scrape over HTTP (`xhttp_prom`)
//! show what the queue did.

mod common;

use std::time::Duration;

use common::{free_port, http, Cfg, Impl, Kamailio};

#[test]
fn counters_in_statistics_and_prometheus() {
    let http_port = free_port();
    let globals = format!("children=1\nlisten=tcp:127.0.0.1:{http_port}\ntcp_accept_no_cl=yes");
    let cfg = Cfg {
        globals: &globals,
        modules: &["kex.so", "xhttp.so", "xhttp_prom.so"],
        body: r#"modparam("mqueue", "mqueue", "name=q;size=2")
modparam("mqueue", "mqueue", "name=u;addmode=1")
modparam("xhttp_prom", "xhttp_prom_stats", "mqueue:")
event_route[xhttp:request] { prom_dispatch(); }
event_route[core:worker-one-init] {
    mq_add("q", "a", "1");
    mq_add("q", "b", "2");
    mq_add("q", "c", "3");
    mq_fetch("q");
    mq_add("u", "k", "1");
    mq_add("u", "k", "2");
    mq_add("u", "x", "1");
    mq_add("u", "y", "1");
    xlog("L_INFO", "T|READY\n");
}
"#,
        ..Cfg::default()
    };
    let k = Kamailio::start(&cfg, Impl::Rust);
    assert_eq!(
        k.wait_marked("T|", 1, Duration::from_secs(10)).len(),
        1,
        "{}",
        k.log()
    );

    // Two of u's three items go with a clear (counted as cleared).
    k.rpc(&["mqueue.fetch", "u"]).expect("fetch");
    k.rpc(&["mqueue.clear", "u"]).expect("clear");
    let stats = k.rpc(&["stats.get_statistics", "mqueue:"]).expect("stats");
    let want = [
        ("q_size", 1),
        ("q_added", 3),
        ("q_fetched", 1),
        ("q_evicted", 1),
        ("q_max_size", 2),
        ("u_size", 0),
        ("u_added", 3),
        ("u_fetched", 1),
        ("u_cleared", 2),
        ("q_cleared", 0),
        ("u_rejected", 1),
        ("u_replaced", 0),
        ("u_failed", 0),
    ];
    for (name, v) in want {
        let line = format!("mqueue:{name} = {v}");
        assert!(stats.contains(&line), "no '{line}' in:\n{stats}");
    }
    let shm: u64 = stats
        .lines()
        .find_map(|l| l.trim().strip_prefix("mqueue:q_shm_bytes = "))
        .and_then(|v| v.trim().parse().ok())
        .expect("q_shm_bytes");
    assert!(shm > 0, "{stats}");

    let metrics = http(http_port, "GET", "/metrics", "").expect("scrape");
    assert_eq!(metrics.status, 200, "{}", metrics.body);
    let metrics = metrics.body;
    for (name, v) in want {
        let prefix = format!("kamailio_mqueue_{name} {v}");
        assert!(
            metrics.lines().any(|l| l.starts_with(&prefix)),
            "no '{prefix}' in:\n{metrics}"
        );
    }
}

/// A Redis queue's statistics: the counters every instance shares, read
/// for a whole scrape in one Redis round trip (`HGETALL` of the counter
/// hash), not one per statistic.
#[test]
fn redis_queue_statistics_cost_one_round_trip_per_scrape() {
    let redis = common::redis::RedisServer::start();
    let body = format!(
        r#"modparam("mqueue", "mqueue", "name=r;redis={}")
"#,
        redis.url()
    );
    let cfg = Cfg {
        modules: &["kex.so"],
        body: &body,
        ..Cfg::default()
    };
    let k = Kamailio::start(&cfg, Impl::Rust);
    for key in ["a", "b"] {
        k.rpc(&["mqueue.add", "r", key, "v"]).expect("add");
    }
    redis.cli(&["CONFIG", "RESETSTAT"]);
    let stats = k.rpc(&["stats.get_statistics", "mqueue:"]).expect("stats");
    for line in [
        "mqueue:r_size = 2",
        "mqueue:r_added = 2",
        "mqueue:r_failed = 0",
    ] {
        assert!(stats.contains(line), "no '{line}' in:\n{stats}");
    }
    let statistics = stats.matches("mqueue:r_").count();
    let info = redis.cli(&["INFO", "commandstats"]);
    let hgetall: usize = info
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_hgetall:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no HGETALL in:\n{info}"));
    eprintln!("one scrape of {statistics} statistics: {hgetall} HGETALL");
    assert!(
        hgetall >= 1 && hgetall < statistics,
        "{hgetall} HGETALL for {statistics} statistics:\n{stats}"
    );
}

/// With the default `stats_queues`, a config of 100 queues still gets the
/// whole of `kamcmd stats.get_statistics all` in ctl's binrpc reply (its
/// default 32 KB): every group, `shmem:` after `mqueue:` included, and no
/// overflow logged (with 100 queues exported, the reply was cut inside the
/// `mqueue` group).
#[test]
fn all_statistics_fit_one_reply_with_many_queues() {
    let body: String = (0..100)
        .map(|i| format!("modparam(\"mqueue\", \"mqueue\", \"name=q{i}\")\n"))
        .collect();
    let cfg = Cfg {
        modules: &["kex.so"],
        body: &body,
        ..Cfg::default()
    };
    let k = Kamailio::start(&cfg, Impl::Rust);
    let all = k.rpc(&["stats.get_statistics", "all"]).expect("statistics");
    for want in [
        "mqueue:q0_added = 0",
        "mqueue:q9_shm_bytes",
        "shmem:free_size",
    ] {
        assert!(all.contains(want), "{want} missing from:\n{all}");
    }
    assert!(!all.contains("q10_"), "q10 exported:\n{all}");
    let log = k.log();
    assert!(!log.contains("buffer too small"), "{log}");
    assert!(
        log.contains("the 90 queues from q10 to q99 are in mqueue.stats only"),
        "{log}"
    );
}
