//! Queues on Redis Streams (`redis=URL`) shared by several Kamailio
//! instances, against a real redis-server on loopback: exactly-once
//! delivery across instances with per-producer order, a whole instance
//! killed with SIGKILL, Redis stopped and restarted, unique keys across
//! instances, the same script-visible results as a local queue, and bad
//! URLs, passwords and keys.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::redis::RedisServer;
use common::{field, sipp_messages, Cfg, Impl, Kamailio};

/// A `Cfg` body for one instance: queue `work` on Redis, `children` SIP
/// workers that add one item per request, an rtimer producer that adds
/// `timer_items`, and `consumers` rtimer consumers. Every acknowledged add
/// logs `P|<producer>|<seq>`, every fetched item `C|<consumer>|<value>`
/// where the value is `<producer>|<seq>`.
fn instance_body(
    url: &str,
    tag: &str,
    timer_items: usize,
    consumers: usize,
    hold: bool,
    extra: &str,
) -> String {
    let mut b = format!(
        r#"modparam("mqueue", "redis_timeout", 300)
modparam("mqueue", "mqueue", "name=work;redis={url};claim_ms=1000")
modparam("rtimer", "timer", "name=prod;interval=10000u;mode=1")
modparam("rtimer", "exec", "timer=prod;route=PRODUCE")
{extra}
route[PRODUCE] {{
    $var(i) = 0;
    while ($var(i) < 20 && $var(seq) < {timer_items}) {{
        $var(seq) = $var(seq) + 1;
        if (mq_add("work", "k", "{tag}-$pp|$var(seq)")) {{
            xlog("L_INFO", "P|{tag}-$pp|$var(seq)\n");
        }} else {{
            xlog("L_INFO", "N|{tag}-$pp|$var(seq)\n");
            $var(seq) = $var(seq) - 1;
            $var(i) = 20;
        }}
        $var(i) = $var(i) + 1;
    }}
}}
request_route {{
    $var(seq) = $var(seq) + 1;
    if (mq_add("work", "$ci", "{tag}-$pp|$var(seq)")) {{
        xlog("L_INFO", "P|{tag}-$pp|$var(seq)\n");
    }} else {{
        xlog("L_INFO", "N|{tag}-$pp|$var(seq)\n");
        $var(seq) = $var(seq) - 1;
    }}
    sl_send_reply("200", "OK");
    exit;
}}
"#
    );
    for c in 0..consumers {
        // A holding consumer takes one entry per tick and keeps it until
        // the next tick; the others drain the queue.
        let (interval, body) = if hold {
            (
                "200000u",
                r#"if (mq_fetch("work")) { xlog("L_INFO", "C|CID|$mqv(work)\n"); }"#,
            )
        } else {
            (
                "5000u",
                r#"while (mq_fetch("work")) { xlog("L_INFO", "C|CID|$mqv(work)\n"); }"#,
            )
        };
        b.push_str(&format!(
            "modparam(\"rtimer\", \"timer\", \"name=c{c};interval={interval};mode=1\")\n\
             modparam(\"rtimer\", \"exec\", \"timer=c{c};route=CONSUME{c}\")\n\
             route[CONSUME{c}] {{ {} }}\n",
            body.replace("CID", &format!("{tag}-$pp"))
        ));
    }
    b
}

fn start_instance(body: &str, children: usize) -> Kamailio {
    let globals = format!("children={children}\nmax_while_loops=100000");
    let cfg = Cfg {
        globals: &globals,
        modules: &["rtimer.so"],
        body,
        ..Cfg::default()
    };
    Kamailio::start(&cfg, Impl::Rust)
}

/// An acknowledged add: producer and sequence number.
type Produced = (String, u64);
/// A consumption: consumer, producer and sequence number.
type Consumed = (String, String, u64);

/// `<producer>|<seq>` pairs acknowledged by the producers of these logs.
fn produced(logs: &[String]) -> Vec<(String, u64)> {
    marked_items(logs, "P|")
}

/// `<producer>|<seq>` pairs whose add returned -1 ("not acknowledged"; a
/// seq is tried again by the next add of that producer).
fn not_acknowledged(logs: &[String]) -> HashSet<(String, u64)> {
    marked_items(logs, "N|").into_iter().collect()
}

fn marked_items(logs: &[String], mark: &str) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for log in logs {
        for l in log.lines() {
            if let Some((_, rest)) = l.split_once(mark) {
                let (p, seq) = rest.trim_end().rsplit_once('|').expect("producer|seq");
                out.push((p.to_string(), seq.parse().expect("seq")));
            }
        }
    }
    out
}

/// (consumer, producer, seq) of every consumption in these logs, in log order.
fn consumed(logs: &[String]) -> Vec<(String, String, u64)> {
    let mut out = Vec::new();
    for log in logs {
        for l in log.lines() {
            if let Some((_, rest)) = l.split_once("C|") {
                let mut parts = rest.trim_end().splitn(2, '|');
                let consumer = parts.next().unwrap().to_string();
                let (p, seq) = parts
                    .next()
                    .unwrap()
                    .rsplit_once('|')
                    .expect("producer|seq");
                out.push((consumer, p.to_string(), seq.parse().expect("seq")));
            }
        }
    }
    out
}

/// Waits until every produced item has been consumed at least once.
fn wait_consumed(
    ks: &[&Kamailio],
    extra_logs: &[String],
    timeout: Duration,
) -> (Vec<Produced>, Vec<Consumed>) {
    let deadline = Instant::now() + timeout;
    loop {
        let mut logs: Vec<String> = ks.iter().map(|k| k.log()).collect();
        logs.extend_from_slice(extra_logs);
        let p = produced(&logs);
        let c = consumed(&logs);
        let seen: HashSet<(&str, u64)> = c.iter().map(|(_, p, s)| (p.as_str(), *s)).collect();
        if p.iter().all(|(pr, s)| seen.contains(&(pr.as_str(), *s))) || Instant::now() > deadline {
            return (settle(ks, extra_logs, p, &c), c);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A producer logs its acknowledgement just after `mq_add` returns, so a
/// consumer may log an item first: adds to `p` the consumed items whose
/// acknowledgement (or -1) shows in the logs within a few seconds. What
/// stays unacknowledged is for the caller to judge.
fn settle(
    ks: &[&Kamailio],
    extra_logs: &[String],
    mut p: Vec<Produced>,
    c: &[Consumed],
) -> Vec<Produced> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut logs: Vec<String> = ks.iter().map(|k| k.log()).collect();
        logs.extend_from_slice(extra_logs);
        let later: HashSet<Produced> = produced(&logs).into_iter().collect();
        let failed = not_acknowledged(&logs);
        let known: HashSet<Produced> = p.iter().cloned().collect();
        let open: Vec<Produced> = c
            .iter()
            .map(|(_, pr, s)| (pr.clone(), *s))
            .filter(|k| !known.contains(k))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let (acked, rest): (Vec<Produced>, Vec<Produced>) =
            open.into_iter().partition(|k| later.contains(k));
        if rest.iter().all(|k| failed.contains(k)) || Instant::now() > deadline {
            p.extend(acked);
            return p;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every produced item consumed; returns the number of duplicates. No
/// item that was not acknowledged may be consumed.
fn check_every_item(p: &[(String, u64)], c: &[(String, String, u64)]) -> usize {
    let (dups, phantoms) = check_items(p, c);
    assert_eq!(phantoms, 0, "consumed items nobody acknowledged");
    dups
}

/// Every produced item consumed, and the documented guarantee for adds that
/// returned -1: an item no add acknowledged may be consumed only if an add
/// of it returned -1 (its request reached Redis, the reply did not come
/// back within `redis_timeout`). Returns (duplicates, such items).
fn check_unacknowledged(
    p: &[(String, u64)],
    c: &[(String, String, u64)],
    not_acked: &HashSet<(String, u64)>,
) -> (usize, usize) {
    let (dups, _) = check_items(p, c);
    let produced: HashSet<(&str, u64)> = p.iter().map(|(pr, s)| (pr.as_str(), *s)).collect();
    let phantoms: HashSet<(String, u64)> = c
        .iter()
        .filter(|(_, pr, s)| !produced.contains(&(pr.as_str(), *s)))
        .map(|(_, pr, s)| (pr.clone(), *s))
        .collect();
    let unexplained: Vec<_> = phantoms.difference(not_acked).collect();
    assert!(
        unexplained.is_empty(),
        "consumed items that no add acknowledged nor returned -1 for: {unexplained:?}"
    );
    (dups, phantoms.len())
}

/// Every produced item consumed: (duplicates, items consumed that no add
/// acknowledged). The latter can only come from adds that timed out after
/// their request reached the server (mq_add returned -1, "not
/// acknowledged", and Redis ran the add when it went on).
fn check_items(p: &[(String, u64)], c: &[(String, String, u64)]) -> (usize, usize) {
    let produced: HashSet<(&str, u64)> = p.iter().map(|(pr, s)| (pr.as_str(), *s)).collect();
    assert_eq!(produced.len(), p.len(), "a producer logged a seq twice");
    let mut counts: HashMap<(&str, u64), usize> = HashMap::new();
    for (_, pr, s) in c {
        *counts.entry((pr.as_str(), *s)).or_default() += 1;
    }
    let lost: Vec<_> = produced
        .iter()
        .filter(|k| !counts.contains_key(*k))
        .collect();
    assert!(
        lost.is_empty(),
        "{} items lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    let phantoms = counts.keys().filter(|k| !produced.contains(*k)).count();
    let dups = counts
        .iter()
        .filter(|(k, _)| produced.contains(*k))
        .map(|(_, n)| n - 1)
        .sum();
    (dups, phantoms)
}

/// Per-producer order as each consumer sees it.
fn check_order(c: &[(String, String, u64)]) {
    let mut last: HashMap<(&str, &str), u64> = HashMap::new();
    for (con, pr, s) in c {
        let l = last.entry((con.as_str(), pr.as_str())).or_insert(0);
        assert!(*s > *l, "consumer {con} saw {pr} seq {s} after {l}");
        *l = *s;
    }
}

#[test]
fn three_instances_consume_every_item_exactly_once_in_order() {
    let redis = RedisServer::start();
    let (messages, timer_items) = (300, 1000);
    let ks: Vec<Kamailio> = ["a", "b", "c"]
        .iter()
        .map(|tag| {
            start_instance(
                &instance_body(&redis.url(), tag, timer_items, 2, false, ""),
                2,
            )
        })
        .collect();
    for k in &ks {
        assert_eq!(sipp_messages(k.port, messages, 300, &k.dir.0), 0, "sipp");
    }
    let refs: Vec<&Kamailio> = ks.iter().collect();
    // The producer timers may still be adding when the consumers have
    // caught up with what was added so far: wait for every add too.
    let expected = 3 * (messages + timer_items);
    let deadline = Instant::now() + Duration::from_secs(60);
    let (p, c) = loop {
        let (p, c) = wait_consumed(&refs, &[], Duration::from_secs(60));
        if p.len() >= expected || Instant::now() > deadline {
            break (p, c);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    // Every MESSAGE is added once, or more often when a busy machine
    // answers it later than sipp's retransmission timer (UDP): each
    // retransmission is a request of its own.
    assert!(p.len() >= expected, "acknowledged adds: {}", p.len());
    let dups = check_every_item(&p, &c);
    assert_eq!(dups, 0, "exactly once");
    check_order(&c);
    let mut per_instance = HashMap::new();
    for (con, _, _) in &c {
        *per_instance
            .entry(con.split('-').next().unwrap().to_string())
            .or_insert(0) += 1;
    }
    eprintln!(
        "3 instances: {} produced, {} consumed, 0 lost, 0 duplicated; consumed per instance {per_instance:?}",
        p.len(),
        c.len()
    );
    assert_eq!(per_instance.len(), 3, "every instance consumed");
    // The counters balance: every entry left the stream once, as fetched.
    let stats = ks[0].rpc(&["mqueue.stats", "work"]).expect("stats");
    assert_eq!(field(&stats, "added"), p.len().to_string(), "{stats}");
    assert_eq!(field(&stats, "fetched"), p.len().to_string(), "{stats}");
    assert_eq!(field(&stats, "size"), "0", "{stats}");
}

#[test]
fn killed_instance_loses_nothing() {
    let redis = RedisServer::start();
    // a produces and holds what it fetches until its next tick; once it
    // has consumed a few, it is killed whole, and b and c take over.
    let mut a = start_instance(&instance_body(&redis.url(), "a", 300, 2, true, ""), 1);
    let deadline = Instant::now() + Duration::from_secs(20);
    while consumed(&[a.log()]).len() < 4 {
        assert!(Instant::now() < deadline, "a consumes nothing");
        std::thread::sleep(Duration::from_millis(50));
    }
    let pending_before = redis.cli(&["XPENDING", "mqueue:work", "kamailio"]);
    a.kill9();
    let a_log = a.log();
    let b = start_instance(&instance_body(&redis.url(), "b", 300, 1, false, ""), 1);
    let c = start_instance(&instance_body(&redis.url(), "c", 0, 1, false, ""), 1);
    wait_consumed(
        &[&b, &c],
        std::slice::from_ref(&a_log),
        Duration::from_secs(60),
    );
    // What a held comes back after claim_ms: wait until the stream is empty.
    let deadline = Instant::now() + Duration::from_secs(30);
    while b.queue_size("work") > 0 {
        assert!(
            Instant::now() < deadline,
            "entries a held are not taken over"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let logs = [a_log.clone(), b.log(), c.log()];
    let (p, cons) = (produced(&logs), consumed(&logs));
    // An add of a that Redis had taken when the kill came never reached
    // the script (no acknowledgement logged): at most one per process of
    // a that adds (its SIP worker and its producer timer).
    let (dups, phantoms) = check_items(&p, &cons);
    let produced_set: HashSet<(&str, u64)> = p.iter().map(|(pr, s)| (pr.as_str(), *s)).collect();
    let strays: Vec<_> = cons
        .iter()
        .filter(|(_, pr, s)| !produced_set.contains(&(pr.as_str(), *s)))
        .collect();
    assert!(
        phantoms <= 2 && strays.iter().all(|(_, pr, _)| pr.starts_with("a-")),
        "consumed items nobody acknowledged: {strays:?}"
    );
    // At most what a's two consumer processes held (one entry each) is
    // delivered again.
    assert!(dups <= 2, "{dups} duplicates");
    let stats = b.rpc(&["mqueue.stats", "work"]).expect("stats");
    eprintln!(
        "kill -9: {} produced (a: {}), {} consumed, 0 lost, {dups} duplicated (redelivered: {}); pending at the kill: {}",
        p.len(),
        produced(&[a_log]).len(),
        cons.len(),
        field(&stats, "redelivered"),
        pending_before.split_whitespace().next().unwrap_or("?")
    );
    assert_eq!(field(&stats, "size"), "0", "{stats}");
    let redelivered: usize = field(&stats, "redelivered").parse().unwrap();
    assert!(redelivered >= 1 && dups <= redelivered, "{stats}");
}

/// An rtimer route that times each add ($TV in microseconds) and logs the
/// failures with their duration.
const PROBE: &str = r#"modparam("rtimer", "timer", "name=probe;interval=50000u;mode=1")
modparam("rtimer", "exec", "timer=probe;route=PROBE")
route[PROBE] {
    $var(s) = $TV(sn); $var(u) = $TV(un);
    $var(n) = $var(n) + 1;
    if (mq_add("work", "probe", "probe-$pp|$var(n)")) {
        xlog("L_INFO", "P|probe-$pp|$var(n)\n");
    } else {
        $var(us) = ($TV(sn) - $var(s)) * 1000000 + $TV(un) - $var(u);
        xlog("L_INFO", "F|$var(us)\n");
        xlog("L_INFO", "N|probe-$pp|$var(n)\n");
    }
}"#;

#[test]
fn redis_restart_loses_no_acknowledged_add() {
    let mut redis = RedisServer::start();
    let k = start_instance(&instance_body(&redis.url(), "a", 400, 1, false, PROBE), 2);
    assert_eq!(sipp_messages(k.port, 100, 100, &k.dir.0), 0, "sipp before");
    redis.pause();
    // While Redis is down: SIP is answered, adds fail within redis_timeout.
    let down = Instant::now();
    assert_eq!(
        sipp_messages(k.port, 50, 50, &k.dir.0),
        0,
        "SIP answered while Redis is down"
    );
    while k.marked("F|").len() < 5 {
        assert!(
            down.elapsed() < Duration::from_secs(20),
            "no failed add logged"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let failed: Vec<u64> = k.marked("F|").iter().map(|l| l.parse().unwrap()).collect();
    // redis_timeout (300 ms) ends each wait; a busy machine adds its
    // scheduling delay, not another timeout.
    assert!(
        failed.iter().all(|&us| us <= 5 * 300_000),
        "adds waited far longer than redis_timeout (300 ms): {failed:?}"
    );
    redis.resume();
    assert_eq!(sipp_messages(k.port, 100, 100, &k.dir.0), 0, "sipp after");
    let (p, c) = wait_consumed(&[&k], &[], Duration::from_secs(60));
    // An add whose request Redis took just before it stopped, and whose
    // reply was lost, returned -1 and may still be consumed.
    let (dups, phantoms) = check_unacknowledged(&p, &c, &not_acknowledged(&[k.log()]));
    eprintln!(
        "Redis restart: {} acknowledged adds, all consumed ({dups} duplicated); {} adds failed while down, \
         {phantoms} of them consumed all the same, the slowest in {} us",
        p.len(),
        failed.len(),
        failed.iter().max().unwrap()
    );
    assert!(k.log().contains("adds succeed again after"), "{}", k.log());
}

/// A server that accepts but does not answer (SIGSTOP): each add waits
/// `redis_timeout` (300 ms) and fails, SIP is answered, and once the server
/// goes on every acknowledged add is consumed.
#[test]
fn frozen_redis_costs_at_most_redis_timeout() {
    let redis = RedisServer::start();
    let k = start_instance(&instance_body(&redis.url(), "a", 100, 1, false, PROBE), 2);
    assert_eq!(sipp_messages(k.port, 20, 20, &k.dir.0), 0, "sipp before");
    redis.freeze();
    assert_eq!(
        sipp_messages(k.port, 10, 5, &k.dir.0),
        0,
        "SIP answered while Redis hangs"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while k.marked("F|").len() < 3 {
        assert!(Instant::now() < deadline, "no failed add logged");
        std::thread::sleep(Duration::from_millis(50));
    }
    redis.thaw();
    let failed: Vec<u64> = k.marked("F|").iter().map(|l| l.parse().unwrap()).collect();
    // Each add waits for redis_timeout (300 ms), not less, and then fails:
    // the fastest one shows the timeout; a busy machine may delay the others
    // by its scheduling, never by another timeout.
    let fastest = failed.iter().min().copied().unwrap_or_default();
    assert!(
        (250_000..=600_000).contains(&fastest)
            && failed
                .iter()
                .all(|&us| (250_000..=5 * 300_000).contains(&us)),
        "each add should wait about redis_timeout (300 ms): {failed:?}"
    );
    let (p, c) = wait_consumed(&[&k], &[], Duration::from_secs(60));
    // Adds that timed out may have reached Redis all the same: only those.
    let not_acked = not_acknowledged(&[k.log()]);
    let (dups, phantoms) = check_unacknowledged(&p, &c, &not_acked);
    // A producer tries a failed seq again: a copy per add that returned -1.
    assert!(dups <= not_acked.len(), "{dups} duplicates");
    eprintln!(
        "frozen Redis: {} adds failed after {:?} us each; {} acknowledged adds all consumed, \
         {phantoms} adds that timed out were executed by Redis after it went on",
        failed.len(),
        failed,
        p.len()
    );
}

#[test]
fn unique_keys_hold_across_instances() {
    let redis = RedisServer::start();
    let body = format!(
        "modparam(\"mqueue\", \"mqueue\", \"name=u1;addmode=1;redis={url}\")\n\
         modparam(\"mqueue\", \"mqueue\", \"name=u2;addmode=2;redis={url}\")\n",
        url = redis.url()
    );
    let a = start_instance(&body, 1);
    let b = start_instance(&body, 1);
    for (k, v) in [(&a, "from-a"), (&b, "from-b")] {
        for q in ["u1", "u2"] {
            assert_eq!(
                k.rpc(&["mqueue.add", q, "same", v]).expect("add").trim(),
                "1"
            );
        }
    }
    assert_eq!(a.queue_size("u1"), 1);
    assert_eq!(b.queue_size("u2"), 1);
    assert_eq!(
        common::field(&b.rpc(&["mqueue.fetch", "u1"]).unwrap(), "val"),
        "from-a"
    );
    assert_eq!(
        common::field(&a.rpc(&["mqueue.fetch", "u2"]).unwrap(), "val"),
        "from-b"
    );
    // Once delivered, the key may be queued again.
    assert_eq!(
        a.rpc(&["mqueue.add", "u1", "same", "again"])
            .unwrap()
            .trim(),
        "1"
    );
    assert_eq!(
        common::field(&b.rpc(&["mqueue.fetch", "u1"]).unwrap(), "val"),
        "again"
    );
    let stats = a.rpc(&["mqueue.stats", "u1"]).unwrap();
    assert_eq!(field(&stats, "rejected"), "1", "{stats}");
}

/// The script-API scenario on a local queue and on a Redis queue: the same
/// return codes, variables and sizes (read where no entry is in flight).
#[test]
fn redis_queue_gives_the_same_script_results_as_a_local_queue() {
    let redis = RedisServer::start();
    let script = r#"event_route[core:worker-one-init] {
    $var(r) = mq_add("q", "k1", "v1"); xlog("L_INFO", "T|add1 $var(r)\n");
    $var(r) = mq_add("q", "k2", "v2"); xlog("L_INFO", "T|add2 $var(r)\n");
    $var(r) = mq_add("q", "k1", "v3"); xlog("L_INFO", "T|add3 $var(r)\n");
    $var(r) = mq_add("u", "k", "1"); $var(r) = mq_add("u", "k", "2");
    xlog("L_INFO", "T|size $var(r) $mq_size(q) $mq_size(u)\n");
    $var(r) = mq_fetch("q"); xlog("L_INFO", "T|fetch $var(r) $mqk(q) $mqv(q)\n");
    $var(r) = mq_fetch("q"); xlog("L_INFO", "T|fetch $var(r) $mqk(q) $mqv(q)\n");
    mq_pv_free("q"); xlog("L_INFO", "T|free $mqk(q) $mq_size(q)\n");
    $var(r) = mq_fetch("u"); xlog("L_INFO", "T|u $var(r) $mqk(u) $mqv(u)\n");
    $var(r) = mq_fetch("q"); xlog("L_INFO", "T|fetch $var(r) $mqk(q) $mqv(q)\n");
    $var(r) = mq_fetch("q"); xlog("L_INFO", "T|empty $var(r) $mqk(q)\n");
    $var(r) = mq_size("q"); xlog("L_INFO", "T|mq_size $var(r)\n");
    $var(r) = mq_fetch("nope"); xlog("L_INFO", "T|unknown $var(r)\n");
    $var(r) = mq_add("l", "a", "1"); $var(r) = mq_add("l", "b", "2"); $var(r) = mq_add("l", "c", "3");
    xlog("L_INFO", "T|limit $mq_size(l)\n");
    $var(r) = mq_fetch("l"); xlog("L_INFO", "T|limited $var(r) $mqk(l)\n");
    xlog("L_INFO", "T|END\n");
}
"#;
    let mut results = Vec::new();
    for on_redis in [false, true] {
        let attr = if on_redis {
            format!(";redis={}", redis.url())
        } else {
            String::new()
        };
        let body = format!(
            "modparam(\"mqueue\", \"mqueue\", \"name=q{attr}\")\n\
             modparam(\"mqueue\", \"mqueue\", \"name=u;addmode=2{attr}\")\n\
             modparam(\"mqueue\", \"mqueue\", \"name=l;size=2{attr}\")\n{script}"
        );
        let k = start_instance(&body, 1);
        let lines = k.wait_marked("T|", 15, Duration::from_secs(10));
        assert_eq!(lines.len(), 15, "{lines:?}");
        assert!(
            lines.last().is_some_and(|l| l == "END"),
            "{lines:?}\n{}",
            k.log()
        );
        results.push(lines);
    }
    assert_eq!(results[0], results[1], "local vs Redis");
}

#[test]
fn bad_urls_passwords_and_keys_give_clear_errors() {
    let redis = RedisServer::start_with(Some("secret"));
    let port = redis.port;
    let start_refused = |attr: &str, why: &str| {
        let body = format!("modparam(\"mqueue\", \"mqueue\", \"name=q;{attr}\")\n");
        let cfg = Cfg {
            body: &body,
            ..Cfg::default()
        };
        let (code, log) = Kamailio::start_expect_failure(&cfg, Impl::Rust);
        assert!(
            code.is_some_and(|c| c != 0),
            "{attr}: exit {code:?} (None: crash)\n{log}"
        );
        assert!(log.contains(why), "{attr}: no '{why}' in:\n{log}");
        assert!(!log.contains("secret"), "{attr}: the password is logged");
    };
    start_refused(
        "redis=http://127.0.0.1:6379",
        "the URL must start with redis://",
    );
    start_refused("redis=redis://127.0.0.1:notaport", "malformed URL");
    start_refused(
        &format!("redis=redis://:wrong@127.0.0.1:{port}"),
        "mqueue q: redis://***@127.0.0.1",
    );
    start_refused(
        &format!("redis=redis://127.0.0.1:{port}"),
        "mqueue q: redis://127.0.0.1",
    );
    start_refused(
        &format!("redis=redis://:secret@127.0.0.1:{port};dbmode=1"),
        "dbmode cannot be used with redis",
    );
    start_refused(
        &format!("redis=redis://:secret@127.0.0.1:{port};maxbytes=100"),
        "maxbytes is not supported",
    );
    redis.cli(&["SET", "mqueue:q", "a string"]);
    start_refused(
        &format!("redis=redis://:secret@127.0.0.1:{port}"),
        "key mqueue:q holds a string, not a stream",
    );

    // Unreachable at start: Kamailio starts, calls fail fast, SIP answered.
    let dead = common::free_port();
    let body = format!(
        "modparam(\"mqueue\", \"mqueue\", \"name=q;redis=redis://127.0.0.1:{dead}\")\n\
         modparam(\"mqueue\", \"mqueue\", \"name=w;redis=redis://:secret@127.0.0.1:{port}\")\n"
    );
    let k = start_instance(&body, 1);
    assert!(k.log().contains("is unreachable at start"), "{}", k.log());
    assert!(k.rpc(&["mqueue.add", "q", "k", "v"]).is_err());
    assert_eq!(sipp_messages(k.port, 5, 10, &k.dir.0), 0, "SIP answered");
    // A key that turns into another type while running: per-call errors.
    assert_eq!(
        k.rpc(&["mqueue.add", "w", "k", "v"]).expect("add").trim(),
        "1"
    );
    redis.cli(&["DEL", "mqueue:w"]);
    redis.cli(&["SET", "mqueue:w", "x"]);
    let err = k.rpc(&["mqueue.add", "w", "k", "v"]).unwrap_err();
    assert!(err.contains("500"), "{err}");
    assert!(k.log().contains("WRONGTYPE"), "{}", k.log());
    assert!(k.rpc(&["mqueue.fetch", "w"]).is_err());
    assert!(k.rpc(&["core.uptime"]).is_ok(), "Kamailio still serves");
}
