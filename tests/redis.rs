//! Queues on Redis Streams (`redis=URL`) shared by several Kamailio
//! instances, against a real redis-server on loopback: exactly-once
//! delivery across instances with per-producer order, a whole instance
//! killed with SIGKILL, Redis stopped and restarted, unique keys across
//! instances, the same script-visible results as a local queue, and bad
//! URLs, passwords and keys.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::redis::{FaultProxy, RedisCluster, RedisServer, Sentinel};
use common::{field, sipp_messages, wait_until, Cfg, Impl, Kamailio};

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
            xlog("L_INFO", "X|add failed\n");
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
        xlog("L_INFO", "X|add failed\n");
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
    common::start_timers(body, children, 100_000)
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

/// The logs of these instances, then `extra_logs`.
fn logs_of(ks: &[&Kamailio], extra_logs: &[String]) -> Vec<String> {
    let mut logs: Vec<String> = ks.iter().map(|k| k.log()).collect();
    logs.extend_from_slice(extra_logs);
    logs
}

/// Waits until every produced item has been consumed at least once (what
/// is still unconsumed at the timeout is for the caller's checks to name).
fn wait_consumed(
    ks: &[&Kamailio],
    extra_logs: &[String],
    timeout: Duration,
) -> (Vec<Produced>, Vec<Consumed>) {
    let read = || {
        let logs = logs_of(ks, extra_logs);
        (produced(&logs), consumed(&logs))
    };
    let all_consumed = |(p, c): &(Vec<Produced>, Vec<Consumed>)| {
        let seen: HashSet<(&str, u64)> = c.iter().map(|(_, p, s)| (p.as_str(), *s)).collect();
        p.iter().all(|(pr, s)| seen.contains(&(pr.as_str(), *s)))
    };
    let (p, c) = wait_until(timeout, || Some(read()).filter(all_consumed)).unwrap_or_else(read);
    (settle(ks, extra_logs, p, &c), c)
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
    let known: HashSet<Produced> = p.iter().cloned().collect();
    let open: HashSet<Produced> = c
        .iter()
        .map(|(_, pr, s)| (pr.clone(), *s))
        .filter(|k| !known.contains(k))
        .collect();
    // The open items acknowledged by now, and whether every other one
    // returned -1.
    let read = || {
        let logs = logs_of(ks, extra_logs);
        let later: HashSet<Produced> = produced(&logs).into_iter().collect();
        let failed = not_acknowledged(&logs);
        let (acked, rest): (Vec<Produced>, Vec<Produced>) =
            open.iter().cloned().partition(|k| later.contains(k));
        (acked, rest.iter().all(|k| failed.contains(k)))
    };
    let acked = wait_until(Duration::from_secs(5), || {
        let (acked, settled) = read();
        settled.then_some(acked)
    })
    .unwrap_or_else(|| read().0);
    p.extend(acked);
    p
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
            // Every add must be acknowledged here: a generous timeout, as
            // a stall of the loaded test machine must not fail an add.
            start_instance(
                &instance_body(&redis.url(), tag, timer_items, 2, false, "")
                    .replace("\"redis_timeout\", 300", "\"redis_timeout\", 3000"),
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
    let finished = wait_until(Duration::from_secs(60), || {
        (produced(&logs_of(&refs, &[])).len() >= expected).then_some(())
    });
    assert!(finished.is_some(), "the producers do not finish");
    let (p, c) = wait_consumed(&refs, &[], Duration::from_secs(60));
    // sipp may retransmit a MESSAGE the loaded machine answered late: a
    // request (and an add) more.
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
    // has produced everything (a kill between an add and its log line
    // would leave an acknowledged add unlogged) and consumed a few, it is
    // killed whole, and b and c take over.
    let mut a = start_instance(&instance_body(&redis.url(), "a", 300, 2, true, ""), 1);
    let busy = wait_until(Duration::from_secs(20), || {
        let log = [a.log()];
        (consumed(&log).len() >= 4 && produced(&log).len() >= 300).then_some(())
    });
    assert!(busy.is_some(), "a consumes nothing");
    let pending_before = redis.cli(&["XPENDING", "mqueue:{work}", "kamailio"]);
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
    wait_empty(&b);
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

/// An instance with [`PROBE`] and a producer of `timer_items`, once it
/// has answered `messages` SIP requests (each an add).
fn probed_instance(url: &str, timer_items: usize, messages: usize) -> Kamailio {
    let k = start_instance(&instance_body(url, "a", timer_items, 1, false, PROBE), 2);
    assert_eq!(
        sipp_messages(k.port, messages, messages, &k.dir.0),
        0,
        "sipp before"
    );
    k
}

/// How long each failed [`PROBE`] add took so far, in microseconds.
fn failed_adds(k: &Kamailio) -> Vec<u64> {
    k.marked("F|").iter().map(|l| l.parse().unwrap()).collect()
}

#[test]
fn redis_restart_loses_no_acknowledged_add() {
    let mut redis = RedisServer::start();
    let k = probed_instance(&redis.url(), 400, 100);
    redis.pause();
    // While Redis is down: SIP is answered, adds fail within redis_timeout.
    assert_eq!(
        sipp_messages(k.port, 50, 50, &k.dir.0),
        0,
        "SIP answered while Redis is down"
    );
    let failed = wait_until(Duration::from_secs(20), || {
        Some(failed_adds(&k)).filter(|f| f.len() >= 5)
    });
    let failed = failed.expect("no failed add logged");
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

/// A server that accepts but does not answer (SIGSTOP): an add waits
/// `redis_timeout` (300 ms) at most and fails, the adds after it in the
/// same process fail at once for `redis_backoff`, SIP is answered, and once
/// the server goes on every acknowledged add is consumed.
#[test]
fn frozen_redis_costs_at_most_redis_timeout() {
    let redis = RedisServer::start();
    let k = probed_instance(&redis.url(), 100, 20);
    redis.freeze();
    assert_eq!(
        sipp_messages(k.port, 10, 5, &k.dir.0),
        0,
        "SIP answered while Redis hangs"
    );
    // The call that meets the hang waits redis_timeout (300 ms); for
    // redis_backoff (1 s) after it, the process's adds fail without
    // touching the network: far below redis_timeout (under half of it
    // here, a bound a loaded machine meets; at rest it is microseconds).
    let fast = 150_000;
    let failed = wait_until(Duration::from_secs(20), || {
        let failed = failed_adds(&k);
        (failed.len() >= 3 && failed.iter().any(|&us| us < fast)).then_some(failed)
    });
    redis.thaw();
    let failed = failed.unwrap_or_else(|| {
        panic!(
            "no add failed fast (under {fast} us) during redis_backoff: {:?}",
            failed_adds(&k)
        )
    });
    assert!(
        failed.iter().all(|&us| us <= 1_300_000),
        "an add waited longer than redis_timeout (300 ms) plus a 1 s margin for a busy machine: {failed:?}"
    );
    assert!(
        failed.iter().any(|&us| us >= 250_000),
        "no add waited for the hanging Redis: {failed:?}"
    );
    let (p, c) = wait_consumed(&[&k], &[], Duration::from_secs(60));
    // Adds that timed out may have reached Redis all the same: only those.
    let not_acked = not_acknowledged(&[k.log()]);
    let (dups, phantoms) = check_unacknowledged(&p, &c, &not_acked);
    // A producer tries a failed seq again: a copy per add that returned -1.
    assert!(dups <= not_acked.len(), "{dups} duplicates");
    eprintln!(
        "frozen Redis: {} adds failed after {:?} us each (fastest {} us); {} acknowledged adds \
         all consumed, {phantoms} adds that timed out were executed by Redis after it went on",
        failed.len(),
        failed,
        failed.iter().min().unwrap_or(&0),
        p.len()
    );
}

/// Redis hanging under SIP load with four workers: once one worker's call
/// timed out, the others fail fast too, and after each back-off one worker
/// tries Redis: an outage blocks one worker per back-off, not each worker.
#[test]
fn an_outage_blocks_one_worker_per_back_off() {
    let redis = RedisServer::start();
    let body = format!(
        r#"modparam("mqueue", "redis_timeout", 300)
modparam("mqueue", "redis_backoff", 1000)
modparam("mqueue", "mqueue", "name=work;redis={}")
request_route {{
    $var(s) = $TV(sn); $var(u) = $TV(un);
    if (!mq_add("work", "k", "v")) {{
        $var(us) = ($TV(sn) - $var(s)) * 1000000 + $TV(un) - $var(u);
        xlog("L_INFO", "F|$var(us)\n");
    }}
    sl_send_reply("200", "OK");
    exit;
}}
"#,
        redis.url()
    );
    let k = start_instance(&body, 4);
    assert_eq!(sipp_messages(k.port, 8, 20, &k.dir.0), 0, "sipp before");
    redis.freeze();
    let t = Instant::now();
    let answered = sipp_messages(k.port, 100, 20, &k.dir.0);
    let secs = t.elapsed().as_secs_f64();
    redis.thaw();
    assert_eq!(answered, 0, "SIP answered while Redis hangs");
    let failed: Vec<u64> = k
        .marked("F|")
        .iter()
        .map(|l| l.parse().unwrap_or(0))
        .collect();
    let blocked = failed.iter().filter(|&&us| us >= 200_000).count();
    eprintln!(
        "Redis hanging 5 s under 20 requests/s, 4 workers: {} adds failed, {blocked} of them waited for Redis",
        failed.len()
    );
    assert_eq!(failed.len(), 100, "{}", k.log());
    // At most one per worker when the hang begins, then one per
    // redis_timeout + redis_backoff (1.3 s) of the hang, and one more for
    // the last one in flight. Each worker alone
    // would wait once per 1.3 s: about 16 in 5 s.
    let bound = 5 + (secs / 1.3).ceil() as usize;
    assert!(
        blocked <= bound,
        "{blocked} adds waited for Redis in {secs:.1} s (at most {bound}): {failed:?}"
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
    redis.cli(&["SET", "mqueue:{q}", "a string"]);
    start_refused(
        &format!("redis=redis://:secret@127.0.0.1:{port}"),
        "key mqueue:{q} holds a string, not a stream",
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
    redis.cli(&["DEL", "mqueue:{w}"]);
    redis.cli(&["SET", "mqueue:{w}", "x"]);
    let err = k.rpc(&["mqueue.add", "w", "k", "v"]).unwrap_err();
    assert!(err.contains("500"), "{err}");
    assert!(k.log().contains("WRONGTYPE"), "{}", k.log());
    assert!(k.rpc(&["mqueue.fetch", "w"]).is_err());
    assert!(k.rpc(&["core.uptime"]).is_ok(), "Kamailio still serves");
}

/// Queue `work` on Redis with `claim_ms` 10 minutes (so only a hand-back,
/// never the claim timer, can redeliver within a test) and an rtimer
/// consumer that takes one entry and holds it for good.
fn holder_body(url: &str, tag: &str) -> String {
    format!(
        r#"modparam("mqueue", "redis_timeout", 300)
modparam("mqueue", "mqueue", "name=work;redis={url};claim_ms=600000")
modparam("rtimer", "timer", "name=hold;interval=100000u;mode=1")
modparam("rtimer", "exec", "timer=hold;route=HOLD")
route[HOLD] {{
    if ($var(held) == 0 && mq_fetch("work")) {{
        $var(held) = 1;
        xlog("L_INFO", "C|{tag}-$pp|$mqv(work)\n");
    }}
}}
request_route {{ sl_send_reply("200", "OK"); exit; }}
"#
    )
}

/// Adds `n` items `<tag>|1..n` through RPC; each must be acknowledged.
fn add_items(k: &Kamailio, tag: &str, n: u64) -> Vec<Produced> {
    (1..=n)
        .map(|i| {
            let r = k.rpc(&["mqueue.add", "work", "k", &format!("{tag}|{i}")]);
            assert_eq!(r.as_deref().map(str::trim), Ok("1"), "add {i}");
            (tag.to_string(), i)
        })
        .collect()
}

/// Waits until every entry of `work` is acknowledged (XLEN 0).
fn wait_empty(k: &Kamailio) {
    let empty = wait_until(Duration::from_secs(30), || {
        (k.queue_size("work") == 0).then_some(())
    });
    assert!(empty.is_some(), "entries stay queued:\n{}", k.log());
}

/// A draining instance with `claim_ms` 10 minutes.
fn drainer(url: &str, tag: &str) -> Kamailio {
    start_instance(
        &instance_body(url, tag, 0, 1, false, "").replace("claim_ms=1000", "claim_ms=600000"),
        1,
    )
}

/// A consumer process killed alone (as a segfault or the OOM killer
/// would): Kamailio stops the instance, and the entry the process held
/// goes to another instance at once (claim_ms is 10 minutes), never
/// acknowledged unseen.
#[test]
fn consumer_killed_alone_its_item_goes_to_another_instance() {
    let redis = RedisServer::start();
    let mut a = start_instance(&holder_body(&redis.url(), "a"), 1);
    let p = add_items(&a, "x", 5);
    let held = a.wait_marked("C|", 1, Duration::from_secs(20));
    assert_eq!(held.len(), 1, "the holder takes nothing:\n{}", a.log());
    let (pid, item) = held[0]
        .trim_start_matches("a-")
        .split_once('|')
        .expect("pid|item");
    let pid: i32 = pid.parse().expect("pid");
    // SAFETY: signals a process of the Kamailio this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    a.stop();
    let a_log = a.log();
    let b = drainer(&redis.url(), "b");
    wait_empty(&b);
    let c = consumed(&[a_log.clone(), b.log()]);
    check_every_item(&p, &c);
    let again = consumed(&[b.log()])
        .into_iter()
        .any(|(_, pr, s)| format!("{pr}|{s}") == item);
    assert!(
        again,
        "the killed process's entry {item} was not delivered to b:\n{a_log}"
    );
    let stats = b.rpc(&["mqueue.stats", "work"]).expect("stats");
    assert_eq!(field(&stats, "size"), "0", "{stats}");
    assert_eq!(field(&stats, "fetched"), "5", "{stats}");
}

/// Redis frozen while a consumer polls: its fetches time out, Redis runs
/// them when it goes on (the entries become pending to that consumer), and
/// the instance is stopped at once. Every acknowledged add is consumed by
/// a script (here or by the next instance), and `fetched` counts each once.
#[test]
fn frozen_redis_then_stop_acknowledges_nothing_unseen() {
    let redis = RedisServer::start();
    let body = instance_body(&redis.url(), "a", 0, 1, true, "")
        .replace("claim_ms=1000", "claim_ms=600000")
        .replace("200000u", "50000u");
    let mut a = start_instance(&body, 1);
    let p = add_items(&a, "x", 20);
    redis.freeze();
    // The scenario, not a wait on state: Redis hangs 2.5 s, so that
    // several fetches time out (redis_timeout 300 ms, then the back-off).
    std::thread::sleep(Duration::from_millis(2500));
    redis.thaw();
    a.stop();
    let a_log = a.log();
    let b = drainer(&redis.url(), "b");
    wait_empty(&b);
    let c = consumed(&[a_log.clone(), b.log()]);
    check_every_item(&p, &c);
    let stats = b.rpc(&["mqueue.stats", "work"]).expect("stats");
    assert_eq!(field(&stats, "fetched"), "20", "{stats}");
    eprintln!(
        "frozen then stopped: 20 acknowledged adds, {} consumed by a, {} by b, redelivered {}",
        consumed(&[a_log]).len(),
        consumed(&[b.log()]).len(),
        field(&stats, "redelivered")
    );
}

/// A queue `work` on `url` (no timers), `redis_timeout` 500 ms and
/// `redis_backoff` 300 ms.
fn plain_instance(url: &str) -> Kamailio {
    plain_instance_with(url, "")
}

/// [`plain_instance`] with more queue attributes (`;a=b...`).
fn plain_instance_with(url: &str, attrs: &str) -> Kamailio {
    let body = format!(
        "modparam(\"mqueue\", \"redis_timeout\", 500)\n\
         modparam(\"mqueue\", \"redis_backoff\", 300)\n\
         modparam(\"mqueue\", \"mqueue\", \"name=work;redis={url}{attrs}\")\n\
         request_route {{ sl_send_reply(\"200\", \"OK\"); exit; }}\n"
    );
    start_with_kex(&body)
}

/// Our module with `body`, one SIP worker and no timers; kex loaded (for
/// `stats.get_statistics`).
fn start_with_kex(body: &str) -> Kamailio {
    let cfg = Cfg {
        modules: &["kex.so"],
        body,
        ..Cfg::default()
    };
    Kamailio::start(&cfg, Impl::Rust)
}

/// How much longer than `redis_timeout` an `mqueue.add` over kamcmd may
/// take: kamcmd's own start and the scheduling of a loaded 2-core machine.
/// (A call that waited for every step or byte of a misbehaving server
/// would not fail at all: each comes within the timeout.)
const KAMCMD_MARGIN: Duration = Duration::from_secs(1);

/// `mqueue.add` of `v<val>` to `work` over kamcmd: the reply and how long
/// the call took, kamcmd included.
fn rpc_add(k: &Kamailio, val: &str) -> (Result<String, String>, Duration) {
    let t = Instant::now();
    // Non-numeric, so that kamcmd sends a string.
    let val = format!("v{val}");
    let r = k.rpc(&["mqueue.add", "work", "k", &val]);
    (r.map(|s| s.trim().to_string()), t.elapsed())
}

/// A reply sent twice, the copy late (after the next call's check for a
/// closed connection, before its answer): the copy is never taken for the
/// next call's answer. Here that answer is an error, so an add that
/// answered 1 on the copy would be acknowledged and not in the stream.
/// Whatever the timing, every add answered 1 is in the stream.
#[test]
fn a_late_copy_of_a_reply_is_never_an_answer() {
    let redis = RedisServer::start();
    let proxy = FaultProxy::start(redis.port);
    let k = plain_instance(&format!("redis://127.0.0.1:{}", proxy.port));
    // The add script loaded (a first EVALSHA answered NOSCRIPT takes a
    // second round trip, which the late copy would break up).
    assert_eq!(rpc_add(&k, "warm").0.as_deref(), Ok("1"));
    k.rpc(&["mqueue.clear", "work"]).expect("clear");
    let mut refused = 0;
    for round in 0..3 {
        proxy.set("latedouble 300");
        let first = format!("first{round}");
        assert_eq!(rpc_add(&k, &first).0.as_deref(), Ok("1"));
        let mut acknowledged = vec![format!("v{first}")];
        let second = format!("second{round}");
        let (r, _) = rpc_add(&k, &second);
        eprintln!("round {round}: the add after the late copy answered {r:?}");
        match r.as_deref() {
            Ok("1") => acknowledged.push(format!("v{second}")),
            _ => refused += 1,
        }
        proxy.set("pass");
        // Read from the server itself, not through the proxy.
        let stream = redis.cli(&["XRANGE", "mqueue:{work}", "-", "+"]);
        for v in &acknowledged {
            assert!(
                stream.lines().any(|l| l.trim() == v),
                "round {round}: {v} was acknowledged and is not in the stream:\n{stream}"
            );
        }
        recovers_in_step(&k, &format!("after{round}"));
        k.rpc(&["mqueue.clear", "work"]).expect("clear");
    }
    // The copy came before the second add's answer at least once (it
    // comes 300 ms after the first answer; the second add follows at once).
    assert!(refused > 0, "no round tried the late copy:\n{}", k.log());
}

/// Redis closes idle connections (`timeout 1`) or kills them (`CLIENT
/// KILL`) between calls, as firewalls and load balancers do: the next call
/// reopens the connection and succeeds; no call fails.
#[test]
fn connections_closed_while_idle_are_reopened() {
    let redis = RedisServer::start();
    let k = plain_instance(&redis.url());
    let clients = || {
        redis
            .cli(&["CLIENT", "LIST"])
            .lines()
            .filter(|l| l.contains("cmd=") && !l.contains("cmd=client"))
            .count()
    };
    assert_eq!(rpc_add(&k, "1").0.as_deref(), Ok("1"));
    assert!(clients() >= 1, "the module keeps its connection");
    redis.cli(&["CLIENT", "KILL", "TYPE", "normal"]);
    let gone = wait_until(Duration::from_secs(10), || (clients() == 0).then_some(()));
    assert!(
        gone.is_some(),
        "CLIENT KILL leaves clients: {}",
        redis.cli(&["CLIENT", "LIST"])
    );
    assert_eq!(rpc_add(&k, "2").0.as_deref(), Ok("1"), "after CLIENT KILL");
    redis.cli(&["CONFIG", "SET", "timeout", "1"]);
    for round in 3..5 {
        let gone = wait_until(Duration::from_secs(20), || (clients() == 0).then_some(()));
        assert!(gone.is_some(), "Redis keeps idle clients");
        assert_eq!(
            rpc_add(&k, &round.to_string()).0.as_deref(),
            Ok("1"),
            "after an idle timeout"
        );
    }
    assert_eq!(k.queue_size("work"), 4);
    let fetched = k.rpc(&["mqueue.fetch", "work"]).expect("fetch");
    assert_eq!(field(&fetched, "val"), "v1");
    assert!(!k.log().contains("failed"), "{}", k.log());
}

/// Clears the queue once calls succeed again (after the back-off), then
/// proves the link answers in step: an add, the size, and a fetch that
/// gives exactly that item.
fn recovers_in_step(k: &Kamailio, val: &str) {
    let cleared = wait_until(Duration::from_secs(10), || {
        k.rpc(&["mqueue.clear", "work"]).ok()
    });
    assert!(cleared.is_some(), "calls keep failing:\n{}", k.log());
    assert_eq!(rpc_add(k, val).0.as_deref(), Ok("1"));
    assert_eq!(k.queue_size("work"), 1);
    let fetched = k.rpc(&["mqueue.fetch", "work"]).expect("fetch");
    assert_eq!(field(&fetched, "val"), format!("v{val}"), "{fetched}");
}

/// A Redis that answers each step just under the timeout, trickles its
/// reply a byte at a time, or sends push frames before it: each call fails
/// (one deadline for the whole call: every step alone comes in time) and
/// ends within `redis_timeout` (500 ms) plus a margin for kamcmd; once the
/// back-off has passed the next call on a good server gets the right
/// results. A malformed reply drops the connection (the next call is
/// right at once); a doubled reply is never read as the next answer.
#[test]
fn every_call_ends_within_redis_timeout_and_stays_in_step() {
    let redis = RedisServer::start();
    let proxy = FaultProxy::start(redis.port);
    let k = plain_instance(&format!("redis://127.0.0.1:{}", proxy.port));
    assert_eq!(rpc_add(&k, "first").0.as_deref(), Ok("1"));
    for fault in ["slow 400", "trickle 300", "push 100"] {
        proxy.set(fault);
        let (r, took) = rpc_add(&k, fault);
        assert!(r.is_err(), "{fault}: {r:?}");
        eprintln!("{fault}: the add failed after {took:?} (kamcmd included)");
        assert!(
            took < Duration::from_millis(500) + KAMCMD_MARGIN,
            "{fault}: the add took {took:?} with redis_timeout 500 ms"
        );
        proxy.set("pass");
        recovers_in_step(&k, &format!("after {fault}"));
    }
    proxy.set("malformed");
    assert!(rpc_add(&k, "bad").0.is_err(), "a malformed reply");
    proxy.set("pass");
    assert_eq!(rpc_add(&k, "next").0.as_deref(), Ok("1"), "right after");
    recovers_in_step(&k, "after malformed");
    // Two entries, then an add answered twice: the size asked next must be
    // 3, not the stale second answer of the add.
    k.rpc(&["mqueue.clear", "work"]).expect("clear");
    for v in ["a", "b"] {
        assert_eq!(rpc_add(&k, v).0.as_deref(), Ok("1"));
    }
    proxy.set("double");
    assert_eq!(rpc_add(&k, "c").0.as_deref(), Ok("1"), "doubled reply");
    proxy.set("pass");
    assert_eq!(k.queue_size("work"), 3);
    let cleared = k.rpc(&["mqueue.clear", "work"]).expect("clear");
    assert_eq!(field(&cleared, "cleared"), "3");
    // The start-up check is bounded the same way: a trickled reply makes
    // the server "unreachable at start", within redis_timeout.
    proxy.set("trickle 300");
    let started = Instant::now();
    let late = plain_instance(&format!("redis://127.0.0.1:{}", proxy.port));
    let log = late.log();
    assert!(
        log.contains("is unreachable at start") && log.contains("did not answer in time"),
        "{log}"
    );
    eprintln!(
        "start with a trickling Redis: ready after {:?}",
        started.elapsed()
    );
}

/// A counter damaged from outside (negative, not a number) reads as 0 with
/// a warning, never as a wrapped huge number.
#[test]
fn damaged_counters_read_as_zero() {
    let redis = RedisServer::start();
    let k = plain_instance(&redis.url());
    assert_eq!(rpc_add(&k, "1").0.as_deref(), Ok("1"));
    redis.cli(&[
        "HSET",
        "mqueue:{work}:stats",
        "fetched",
        "-40",
        "evicted",
        "lots",
    ]);
    let stats = k.rpc(&["stats.get_statistics", "mqueue:"]).expect("stats");
    assert!(stats.contains("work_fetched = 0"), "{stats}");
    assert!(stats.contains("work_evicted = 0"), "{stats}");
    assert!(stats.contains("work_added = 1"), "{stats}");
    let st = k.rpc(&["mqueue.stats", "work"]).expect("stats");
    assert_eq!(field(&st, "fetched"), "0", "{st}");
    assert!(
        k.log()
            .contains("counter fetched in mqueue:{work}:stats is \"-40\""),
        "{}",
        k.log()
    );
    // A counter that is not a number blocks nothing: adds and fetches that
    // would count on it still succeed (the counter stays as damaged).
    redis.cli(&[
        "HSET",
        "mqueue:{work}:stats",
        "added",
        "abc",
        "fetched",
        "x",
    ]);
    assert_eq!(
        rpc_add(&k, "2").0.as_deref(),
        Ok("1"),
        "add with damaged counters"
    );
    let first = k
        .rpc(&["mqueue.fetch", "work"])
        .expect("fetch with damaged counters");
    assert!(first.contains("val: v1"), "{first}");
    let second = k
        .rpc(&["mqueue.fetch", "work"])
        .expect("fetch with damaged counters");
    assert!(second.contains("val: v2"), "{second}");
    // A counter past 2^31 (weeks of a busy queue, kept by Redis across
    // restarts) shows whole in mqueue.stats, not capped at 2147483647.
    redis.cli(&["HSET", "mqueue:{work}:stats", "replaced", "5000000007"]);
    let st = k.rpc(&["mqueue.stats", "work"]).expect("stats");
    assert_eq!(field(&st, "replaced"), "5000000007", "{st}");
}

/// Every key of a queue carries the hash tag `{<name>}` (one Redis Cluster
/// slot); a queue of the previous release (`mqueue:<name>`, its entries,
/// group and counters) is moved to the new names at start.
#[test]
fn old_key_names_are_moved_to_hash_tagged_ones() {
    let redis = RedisServer::start();
    redis.cli(&[
        "XGROUP",
        "CREATE",
        "mqueue:work",
        "kamailio",
        "0",
        "MKSTREAM",
    ]);
    for v in ["old1", "old2"] {
        redis.cli(&["XADD", "mqueue:work", "*", "k", "k", "v", v]);
    }
    redis.cli(&["HSET", "mqueue:work:stats", "added", "2"]);
    let k = plain_instance(&redis.url());
    assert!(
        k.log()
            .contains("keys of the previous release (mqueue:<name>) were moved"),
        "{}",
        k.log()
    );
    assert_eq!(redis.cli(&["EXISTS", "mqueue:work"]).trim(), "0");
    assert_eq!(k.queue_size("work"), 2);
    assert_eq!(rpc_add(&k, "new").0.as_deref(), Ok("1"));
    let mut vals = Vec::new();
    while let Ok(r) = k.rpc(&["mqueue.fetch", "work"]) {
        vals.push(field(&r, "val"));
    }
    assert_eq!(vals, ["old1", "old2", "vnew"]);
    assert_eq!(k.stat("work", "added"), 3);
    let keys = redis.cli(&["KEYS", "mqueue:*"]);
    let mut keys: Vec<&str> = keys.lines().collect();
    keys.sort();
    assert_eq!(keys, ["mqueue:{work}", "mqueue:{work}:stats"]);
}

/// A poison item: delivered to consumers that never acknowledge it (as
/// processes that die on it would; here the test's own redis crate
/// commands play them), it goes to the dead letters instead of a fourth
/// delivery with `max_deliveries=3`; `mqueue.dead_list` shows it,
/// `mqueue.dead_requeue` puts it back.
#[test]
fn poison_item_goes_to_the_dead_letters_after_max_deliveries() {
    let redis = RedisServer::start();
    let k = plain_instance_with(&redis.url(), ";claim_ms=1;max_deliveries=3");
    assert_eq!(rpc_add(&k, "poison").0.as_deref(), Ok("1"));
    redis.cli(&[
        "XREADGROUP",
        "GROUP",
        "kamailio",
        "crash1",
        "COUNT",
        "1",
        "STREAMS",
        "mqueue:{work}",
        ">",
    ]);
    let pending = redis.cli(&["XPENDING", "mqueue:{work}", "kamailio", "-", "+", "1"]);
    let id = pending
        .lines()
        .next()
        .expect("a pending entry")
        .trim()
        .to_string();
    for c in ["crash2", "crash3"] {
        redis.cli(&["XCLAIM", "mqueue:{work}", "kamailio", c, "0", &id]);
    }
    let r = k.rpc(&["mqueue.fetch", "work"]);
    assert!(
        r.as_ref().is_err_and(|e| e.contains("Empty queue")),
        "the poison item was delivered a fourth time: {r:?}"
    );
    assert_eq!(k.stat("work", "dead"), 1);
    assert_eq!(k.queue_size("work"), 0);
    let dead = k
        .rpc(&["mqueue.dead_list", "work", "5"])
        .expect("dead_list");
    assert_eq!(field(&dead, "val"), "vpoison", "{dead}");
    let r = k
        .rpc(&["mqueue.dead_requeue", "work"])
        .expect("dead_requeue");
    assert_eq!(field(&r, "requeued"), "1", "{r}");
    let r = k.rpc(&["mqueue.fetch", "work"]).expect("fetch");
    assert_eq!(field(&r, "val"), "vpoison");
    assert!(k
        .rpc(&["mqueue.dead_list", "work"])
        .expect("dead_list")
        .trim()
        .is_empty());
    // Counters balance: added = fetched + dead + size (+ the held one).
    assert_eq!(k.stat("work", "added"), 2);
}

/// `mqueue.dead_requeue` keeps keys unique as an add would: under addmode
/// 1 a dead letter whose key is queued again stays a dead letter; under
/// addmode 2 it replaces the queued entry.
#[test]
fn dead_requeue_keeps_keys_unique() {
    for (mode, requeued, val) in [(1, "0", "vsecond"), (2, "1", "first")] {
        let redis = RedisServer::start();
        let k = plain_instance_with(&redis.url(), &format!(";addmode={mode}"));
        redis.cli(&["XADD", "mqueue:{work}:dead", "*", "k", "k", "v", "first"]);
        assert_eq!(rpc_add(&k, "second").0.as_deref(), Ok("1"));
        let r = k
            .rpc(&["mqueue.dead_requeue", "work", "5"])
            .expect("dead_requeue");
        assert_eq!(field(&r, "requeued"), requeued, "addmode {mode}: {r}");
        assert_eq!(k.queue_size("work"), 1, "addmode {mode}");
        let r = k.rpc(&["mqueue.fetch", "work"]).expect("fetch");
        assert_eq!(field(&r, "val"), val, "addmode {mode}");
        let left = k.rpc(&["mqueue.dead_list", "work"]).expect("dead_list");
        assert_eq!(left.contains("first"), mode == 1, "addmode {mode}: {left}");
    }
}

/// `mqueue.dead_list` and `mqueue.dead_requeue` refuse a count below 1,
/// as `mqueue.fetch` does, and cap a huge one.
#[test]
fn dead_letter_rpcs_check_the_count() {
    let redis = RedisServer::start();
    let k = plain_instance_with(&redis.url(), ";max_deliveries=3");
    for cmd in ["mqueue.dead_list", "mqueue.dead_requeue"] {
        for count in ["0", "abc"] {
            let r = k.rpc(&[cmd, "work", count]);
            assert!(
                r.as_ref().is_err_and(|e| e.contains("Invalid count")),
                "{cmd} work {count}: {r:?}"
            );
        }
    }
    for count in ["2000000000", "s:99999999999"] {
        let r = k
            .rpc(&["mqueue.dead_requeue", "work", count])
            .expect("dead_requeue with a huge count");
        assert_eq!(field(&r, "requeued"), "0", "{r}");
    }
}

/// Consumers that hold nothing and were idle for `consumer_idle_ms` (left
/// by instances killed long ago) leave the group when an instance starts;
/// a consumer that holds an entry stays.
#[test]
fn idle_empty_consumers_leave_the_group() {
    let redis = RedisServer::start();
    redis.cli(&[
        "XGROUP",
        "CREATE",
        "mqueue:{work}",
        "kamailio",
        "0",
        "MKSTREAM",
    ]);
    redis.cli(&["XADD", "mqueue:{work}", "*", "k", "k", "v", "held"]);
    let read = |c: &str| {
        redis.cli(&[
            "XREADGROUP",
            "GROUP",
            "kamailio",
            c,
            "COUNT",
            "1",
            "STREAMS",
            "mqueue:{work}",
            ">",
        ])
    };
    read("busy");
    redis.cli(&[
        "XGROUP",
        "CREATECONSUMER",
        "mqueue:{work}",
        "kamailio",
        "ghost",
    ]);
    let consumers = || redis.cli(&["XINFO", "CONSUMERS", "mqueue:{work}", "kamailio"]);
    assert!(consumers().contains("ghost"));
    let k = plain_instance_with(&redis.url(), ";consumer_idle_ms=1");
    let now = consumers();
    assert!(!now.contains("ghost"), "{now}");
    assert!(now.contains("busy"), "{now}");
    assert!(k.log().contains("removed 1 consumers"), "{}", k.log());
}

/// `replicas=1`: an add returns 1 only once a replica has the entry
/// (`WAIT`, pipelined: still one round trip); with the replica gone, adds
/// return -1 within `redis_timeout`.
#[test]
fn replicas_have_every_acknowledged_add() {
    let master = RedisServer::start();
    let mut replica = RedisServer::start_replica_of(master.port);
    let k = plain_instance_with(&master.url(), ";replicas=1");
    for i in 1..=20 {
        assert_eq!(rpc_add(&k, &i.to_string()).0.as_deref(), Ok("1"));
        assert_eq!(
            replica.cli(&["XLEN", "mqueue:{work}"]).trim(),
            i.to_string(),
            "the replica lacks an acknowledged add"
        );
    }
    replica.pause();
    let (r, took) = rpc_add(&k, "alone");
    assert!(r.is_err(), "acknowledged without a replica: {r:?}");
    eprintln!("replica gone: the add failed after {took:?} (kamcmd included)");
    assert!(
        took < Duration::from_millis(500) + KAMCMD_MARGIN,
        "the add took {took:?} with redis_timeout 500 ms"
    );
    // WAIT answered 0 (or, on a loaded machine, not within the deadline).
    let log = k.log();
    assert!(
        log.contains("only 0 of 1 replicas") || log.contains("did not answer in time"),
        "{log}"
    );
}

/// The URL leads to a replica (a demoted master): Kamailio starts, adds
/// fail with READONLY logged; once it is promoted, adds succeed again
/// without a restart.
#[test]
fn a_replica_promoted_to_master_is_used_without_a_restart() {
    let master = RedisServer::start();
    let replica = RedisServer::start_replica_of(master.port);
    let k = plain_instance(&replica.url());
    assert!(k.log().contains("is unreachable at start"), "{}", k.log());
    assert!(rpc_add(&k, "1").0.is_err(), "an add on a replica");
    assert!(k.log().contains("read only replica"), "{}", k.log());
    replica.cli(&["REPLICAOF", "NO", "ONE"]);
    assert_eq!(rpc_add(&k, "2").0.as_deref(), Ok("1"), "{}", k.log());
    assert_eq!(k.queue_size("work"), 1);
}

/// Sentinel failover under load: a master, two replicas, a sentinel
/// (`down-after-milliseconds` 1000), the queue on
/// `redis+sentinel://.../mq` with `replicas=1` and an rtimer producer. The
/// master hangs (SIGSTOP); the sentinel promotes a replica; adds succeed
/// again on it, and every acknowledged add is on the new master.
#[test]
fn sentinel_failover_loses_no_acknowledged_add() {
    let master = RedisServer::start();
    let replicas = [
        RedisServer::start_replica_of(master.port),
        RedisServer::start_replica_of(master.port),
    ];
    let sentinel = Sentinel::start(master.port, "mq", 1000);
    let seen = wait_until(Duration::from_secs(30), || {
        let listed = sentinel.cli(&["SENTINEL", "replicas", "mq"]);
        replicas
            .iter()
            .all(|r| listed.contains(&r.port.to_string()))
            .then_some(())
    });
    assert!(seen.is_some(), "the sentinel does not see the replicas");
    let body = format!(
        r#"modparam("mqueue", "redis_timeout", 300)
modparam("mqueue", "redis_backoff", 200)
modparam("mqueue", "mqueue", "name=work;replicas=1;redis=redis+sentinel://127.0.0.1:{}/mq")
modparam("rtimer", "timer", "name=prod;interval=20000u;mode=1")
modparam("rtimer", "exec", "timer=prod;route=PRODUCE")
route[PRODUCE] {{
    if ($var(n) < 500) {{
        $var(n) = $var(n) + 1;
        if (mq_add("work", "k", "p|$var(n)")) {{
            xlog("L_INFO", "P|p|$var(n)\n");
        }} else {{
            xlog("L_INFO", "X|$var(n)\n");
        }}
    }}
}}
request_route {{ sl_send_reply("200", "OK"); exit; }}
"#,
        sentinel.port
    );
    let k = start_instance(&body, 1);
    k.wait_marked("P|", 50, Duration::from_secs(30));
    master.freeze();
    let frozen = Instant::now();
    let before = k.marked("P|").len();
    // Adds fail while the master hangs, then succeed on the new master.
    let back = wait_until(Duration::from_secs(30), || {
        (k.marked("P|").len() > before + 5).then(|| frozen.elapsed())
    });
    let back = back.unwrap_or_else(|| panic!("no add succeeded after the failover:\n{}", k.log()));
    let new_master = sentinel.master_port("mq");
    assert_ne!(new_master, Some(master.port), "no failover");
    let finished = wait_until(Duration::from_secs(60), || {
        (k.marked("P|").len() + k.marked("X|").len() >= 500).then_some(())
    });
    assert!(finished.is_some(), "the producer does not finish");
    let acknowledged: HashSet<String> = k.marked("P|").into_iter().collect();
    let on_new: HashSet<String> = k.drain("work").into_iter().map(|(_, v)| v).collect();
    let lost: Vec<_> = acknowledged.difference(&on_new).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged adds lost: {lost:?}",
        lost.len()
    );
    eprintln!(
        "sentinel failover: {} acknowledged adds, 0 lost, {} failed; adds succeed again {back:?} after the master hung",
        acknowledged.len(),
        k.marked("X|").len()
    );
}

/// Calls of `command` the server has run (`INFO commandstats`).
fn command_calls(redis: &RedisServer, command: &str) -> u64 {
    let stats = redis.cli(&["INFO", "commandstats"]);
    let prefix = format!("cmdstat_{command}:calls=");
    stats
        .lines()
        .find_map(|l| l.trim().strip_prefix(prefix.as_str()))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// `mqueue.fetch` once calls succeed again (after a back-off): Ok(value)
/// or Err(fault).
fn fetch_when_up(k: &Kamailio) -> Result<String, String> {
    let mut last = String::new();
    let answered = wait_until(Duration::from_secs(10), || {
        match k.rpc(&["mqueue.fetch", "work"]) {
            Err(e) if e.contains("Cannot fetch") => {
                last = e;
                None
            }
            other => Some(other),
        }
    });
    let answered = answered.unwrap_or_else(|| panic!("fetches keep failing: {last}"));
    answered.map(|r| field(&r, "val"))
}

/// Fetches that Redis ran but whose answer came after `redis_timeout`
/// delivered nothing to a script, so they are no deliveries: with
/// `max_deliveries=2`, an entry behind three such stalls is delivered
/// once the answers come in time, not moved to the dead letters unseen.
#[test]
fn fetches_that_timed_out_are_no_deliveries() {
    let redis = RedisServer::start();
    let proxy = FaultProxy::start(redis.port);
    let url = format!("redis://127.0.0.1:{}", proxy.port);
    let k = plain_instance_with(&url, ";max_deliveries=2");
    // Loads the fetch script while the answers come in time.
    assert!(fetch_when_up(&k).is_err_and(|e| e.contains("Empty queue")));
    assert_eq!(rpc_add(&k, "healthy").0.as_deref(), Ok("1"));
    proxy.set("late 800");
    for stall in 1..=3 {
        let before = command_calls(&redis, "evalsha");
        // Fetches fail fast during the back-off, then one reaches Redis.
        let ran = wait_until(Duration::from_secs(10), || {
            if command_calls(&redis, "evalsha") != before {
                return Some(());
            }
            let r = k.rpc(&["mqueue.fetch", "work"]);
            assert!(r.is_err(), "stall {stall}: {r:?}");
            None
        });
        assert!(ran.is_some(), "stall {stall}: no fetch ran");
    }
    proxy.set("pass");
    assert_eq!(fetch_when_up(&k).as_deref(), Ok("vhealthy"), "{}", k.log());
    assert_eq!(k.stat("work", "dead"), 0);
    let pending = redis.cli(&["XPENDING", "mqueue:{work}", "kamailio", "-", "+", "1"]);
    assert_eq!(
        pending.lines().nth(3).map(str::trim),
        Some("1"),
        "delivered to a script once: {pending}"
    );
}

/// An item too large for a kamcmd reply (20 KB) is handed back at once,
/// not kept by the ctl process until `claim_ms` (30 s here): it stays the
/// first item, no later one overtakes it, any instance can take it at
/// once, and the refused fetches do not count as deliveries.
#[test]
fn an_item_too_large_for_the_rpc_reply_keeps_its_place() {
    let redis = RedisServer::start();
    let k = plain_instance_with(&redis.url(), ";max_deliveries=2");
    let big = "0123456789abcdef".repeat(1280);
    assert_eq!(
        k.rpc(&["mqueue.add", "work", "k", &big])
            .map(|r| r.trim().to_string()),
        Ok("1".to_string())
    );
    assert_eq!(rpc_add(&k, "small").0.as_deref(), Ok("1"));
    for attempt in 1..=3 {
        let r = k.rpc(&["mqueue.fetch", "work"]);
        assert!(
            r.as_ref().is_err_and(|e| e.contains("too large")),
            "attempt {attempt}: {r:?}"
        );
    }
    assert_eq!(k.stat("work", "dead"), 0);
    assert_eq!(k.queue_size("work"), 2);
    // Another instance (the test's own redis crate command plays it)
    // takes it at once, first.
    let claimed = redis.cli(&[
        "XAUTOCLAIM",
        "mqueue:{work}",
        "kamailio",
        "other",
        "30000",
        "0-0",
        "COUNT",
        "1",
    ]);
    assert!(claimed.contains(&big), "not handed back: {claimed}");
}

/// While Redis is away, `mqueue.get_size` answers a fault and
/// `mqueue.get_sizes` size -1, never an empty queue.
#[test]
fn sizes_redis_cannot_give_are_no_empty_queue() {
    let mut redis = RedisServer::start();
    let k = plain_instance(&redis.url());
    assert_eq!(rpc_add(&k, "a").0.as_deref(), Ok("1"));
    assert_eq!(k.queue_size("work"), 1);
    redis.pause();
    let one = k.rpc(&["mqueue.get_size", "work"]);
    assert!(
        one.as_ref()
            .is_err_and(|e| e.contains("Cannot read the size")),
        "{one:?}"
    );
    let all = k.rpc(&["mqueue.get_sizes"]).expect("get_sizes");
    assert_eq!(common::field(&all, "size"), "-1", "{all}");
    redis.resume();
    let back = common::wait_until(Duration::from_secs(10), || {
        k.rpc(&["mqueue.get_size", "work"])
            .ok()
            .filter(|r| common::field(r, "size") == "1")
    });
    assert!(back.is_some(), "{}", k.log());
}

/// `mqueue.fetch NAME COUNT` on a Redis queue acknowledges none of the
/// items of its reply before the reply is out: they stay pending (a crash
/// meanwhile delivers them all again) until that process fetches again.
#[test]
fn a_batch_fetch_acknowledges_its_items_only_after_the_reply() {
    let redis = RedisServer::start();
    let k = plain_instance(&redis.url());
    for i in 0..4 {
        assert_eq!(rpc_add(&k, &i.to_string()).0.as_deref(), Ok("1"));
    }
    let pending = || {
        let out = redis.cli(&["XPENDING", "mqueue:{work}", "kamailio"]);
        out.lines()
            .next()
            .unwrap_or("")
            .trim()
            .parse::<u64>()
            .unwrap_or(u64::MAX)
    };
    let batch = k.rpc(&["mqueue.fetch", "work", "3"]).expect("batch fetch");
    for i in 0..3 {
        assert!(
            batch.contains(&format!("v{i}")),
            "item {i} missing: {batch}"
        );
    }
    assert_eq!(pending(), 3, "{}", k.log());
    assert_eq!(k.queue_size("work"), 4);
    let next = k.rpc(&["mqueue.fetch", "work"]).expect("fetch");
    assert_eq!(common::field(&next, "val"), "v3");
    assert_eq!(pending(), 1, "{}", k.log());
    assert_eq!(k.queue_size("work"), 1);
    assert_eq!(k.stat("work", "fetched"), 3);
}

/// CPU time of process `pid` (user and system), in milliseconds.
fn cpu_ms(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // Fields after the command name (which may hold spaces), from field 3.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // SAFETY: sysconf has no preconditions.
    let hz = (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).max(1) as u64;
    (f[11] + f[12]) * 1000 / hz
}

/// The times (`$TV(Sn)`, seconds) logged on lines `I|<pid>|<time>`.
fn idle_times(k: &Kamailio) -> Vec<f64> {
    k.marked("I|")
        .iter()
        .filter_map(|l| l.rsplit('|').next()?.trim().parse().ok())
        .collect()
}

/// An instance whose rtimer process loops on `mq_fetch_wait("work",
/// wait_ms)` (marks `C|<value>` for an item, `I|<pid>|<time>` for none),
/// with `redis_timeout` and `redis_backoff` as given.
fn waiting_consumer(redis: &RedisServer, timeout: u64, backoff: u64, wait_ms: u64) -> Kamailio {
    let body = format!(
        r#"modparam("mqueue", "redis_timeout", {timeout})
modparam("mqueue", "redis_backoff", {backoff})
modparam("mqueue", "mqueue", "name=work;redis={}")
modparam("rtimer", "timer", "name=w;interval=1000u;mode=1")
modparam("rtimer", "exec", "timer=w;route=WAIT")
route[WAIT] {{
    if (mq_fetch_wait("work", {wait_ms})) {{
        xlog("L_INFO", "C|$mqv(work)\n");
    }} else {{
        xlog("L_INFO", "I|$pp|$TV(Sn)\n");
    }}
}}
request_route {{ sl_send_reply("200", "OK"); exit; }}
"#,
        redis.url()
    );
    start_instance(&body, 1)
}

/// A Redis with `hz 1` ends a blocking read up to a second late, past
/// `redis_timeout`: the waiting consumer's read times out, which drops its
/// connection but is no outage: the instance's other calls (adds from
/// RPC here) never fail on that healthy server.
#[test]
fn a_late_blocking_read_is_no_outage() {
    let redis = RedisServer::start();
    redis.cli(&["CONFIG", "SET", "hz", "1"]);
    let k = waiting_consumer(&redis, 500, 1000, 700);
    assert_eq!(k.wait_marked("I|", 2, Duration::from_secs(10)).len(), 2);
    // Adds rarer than the blocking reads (an add ends a block at once).
    for i in 0..6 {
        std::thread::sleep(Duration::from_millis(1300));
        let (r, _) = rpc_add(&k, &format!("late{i}"));
        assert_eq!(r.as_deref(), Ok("1"), "add {i}:\n{}", k.log());
    }
    let got = k.wait_marked("C|", 6, Duration::from_secs(20));
    assert_eq!(got.len(), 6, "{}", k.log());
}

/// `mq_fetch_wait` on a Redis queue blocks on Redis (`XREAD BLOCK`)
/// instead of polling: an idle waiting consumer costs next to no CPU and
/// a few calls per second; an add reaches it at once; while Redis hangs,
/// each wait sleeps through the back-off and returns at its timeout, not
/// at once (no spinning consumer).
#[test]
fn a_waiting_consumer_blocks_instead_of_polling() {
    let redis = RedisServer::start();
    let k = waiting_consumer(&redis, 300, 300, 1000);
    assert_eq!(k.wait_marked("I|", 1, Duration::from_secs(10)).len(), 1);
    let pids = k.pids_of("timer=w");
    assert_eq!(pids.len(), 1, "consumer process: {pids:?}");
    let (cpu, calls) = (cpu_ms(pids[0]), command_calls(&redis, "evalsha"));
    let waits = 4;
    let seen = k.wait_marked("I|", 1 + waits, Duration::from_secs(30));
    assert_eq!(seen.len(), 1 + waits, "the consumer stopped:\n{}", k.log());
    let (cpu, calls) = (
        cpu_ms(pids[0]) - cpu,
        command_calls(&redis, "evalsha") - calls,
    );
    eprintln!(
        "idle waiting consumer: {cpu} ms of CPU and {calls} fetches over {waits} one-second waits"
    );
    // Polling every 10 ms makes about 100 fetches a second; a blocking
    // read about one per wait and per three quarters of redis_timeout.
    assert!(
        calls < 10 * waits as u64,
        "{calls} fetches in {waits} waits"
    );
    assert!(
        cpu < 50 * waits as u64,
        "{cpu} ms of CPU in {waits} s of waiting"
    );
    // A healthy Redis (default hz 10: it ends a block up to 100 ms late)
    // fails none of the blocking reads: they ask it to end well before
    // redis_timeout (300 ms here). One is allowed to a machine too busy
    // to run Redis for 150 ms; three quarters of redis_timeout failed
    // about one read in four.
    let failed = k.stat("work", "failed");
    assert!(
        failed <= 1,
        "{failed} failed calls on a healthy Redis:\n{}",
        k.log()
    );

    let t = Instant::now();
    assert_eq!(rpc_add(&k, "ping").0.as_deref(), Ok("1"));
    let got = k.wait_marked("C|vping", 1, Duration::from_secs(10));
    assert_eq!(
        got.len(),
        1,
        "the add never reached the waiter:\n{}",
        k.log()
    );
    eprintln!(
        "add to waiting consumer: {:?} (RPC add included)",
        t.elapsed()
    );

    redis.freeze();
    let before = idle_times(&k).len();
    let cpu = cpu_ms(pids[0]);
    let waits = 3;
    let seen = k.wait_marked("I|", before + 1 + waits, Duration::from_secs(30));
    redis.thaw();
    assert_eq!(seen.len(), before + 1 + waits, "{}", k.log());
    let cpu = cpu_ms(pids[0]) - cpu;
    let times = idle_times(&k);
    let during = &times[before..before + 1 + waits];
    // Each wait (1000 ms) returns at its timeout: failing fast during the
    // back-off, it sleeps rather than returning -1 at once.
    for w in during.windows(2) {
        assert!(
            w[1] - w[0] >= 0.99,
            "a wait returned after {:.3} s while Redis hung: {during:?}",
            w[1] - w[0]
        );
    }
    eprintln!("waiting consumer while Redis hangs: {cpu} ms of CPU over {waits} one-second waits");
    assert!(
        cpu < 50 * waits as u64,
        "{cpu} ms of CPU in {waits} s of waiting"
    );
}

/// Runs the openssl CLI in `dir`; it must succeed.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl: run `make deps` (package openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `openssl req` with a new EC P-256 key `<name>.key` (no passphrase) for
/// subject CN=`name`; `args` say what to write with it.
fn openssl_req(dir: &std::path::Path, name: &str, args: &[&str]) {
    let (key, subject) = (format!("{name}.key"), format!("/CN={name}"));
    let mut all = vec![
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        &key,
        "-subj",
        &subject,
    ];
    all.extend_from_slice(args);
    openssl(dir, &all);
}

/// A CA `<name>.crt`/`<name>.key` (EC P-256) in `dir`.
fn make_ca(dir: &std::path::Path, name: &str) {
    let crt = format!("{name}.crt");
    openssl_req(
        dir,
        name,
        &[
            "-x509",
            "-out",
            &crt,
            "-days",
            "2",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

/// A certificate `<name>.crt`/`<name>.key` signed by CA `ca`, for
/// 127.0.0.1, with extended key usage `usage` (serverAuth, clientAuth).
fn make_cert(dir: &std::path::Path, ca: &str, name: &str, usage: &str) {
    std::fs::write(
        dir.join(format!("{name}.ext")),
        format!(
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n"
        ),
    )
    .expect("ext file");
    openssl_req(dir, name, &["-new", "-out", &format!("{name}.csr")]);
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.crt"),
        ],
    );
}

/// A redis-server with a plain port (for the test's own commands) and a
/// TLS port, its certificate signed by `ca.crt` in `dir`, asking clients
/// for a certificate signed by the same CA; killed on drop. The server
/// `MQUEUE_REDIS_SERVER` names (see `common::redis`); the TLS sentinel is
/// always this machine's.
struct TlsRedis {
    port: u16,
    tls_port: u16,
    child: std::process::Child,
    /// The server's `--pidfile`, if it was given one.
    pidfile: std::path::PathBuf,
    /// The overlay of the Debian 13 root (`MQUEUE_REDIS_SERVER`).
    _root_work: Option<common::TempDir>,
}

impl TlsRedis {
    fn start(dir: &std::path::Path) -> TlsRedis {
        let path = |f: &str| dir.join(f).to_string_lossy().into_owned();
        let pidfile = dir.join("server.pid");
        // Started again on other ports when it exits at start (a port
        // another test process took first).
        for _ in 0..common::PORT_ATTEMPTS {
            let (port, tls_port) = (common::free_port(), common::free_port());
            let work = common::TempDir::new("redis-root");
            let mut cmd = common::redis::server_command(dir, &work.0);
            cmd.arg("--pidfile")
                .arg(&pidfile)
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--tls-port", &tls_port.to_string()])
                .args(["--tls-cert-file", &path("server.crt")])
                .args(["--tls-key-file", &path("server.key")])
                .args(["--tls-ca-cert-file", &path("ca.crt")])
                .args(["--tls-auth-clients", "yes"])
                .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
                .arg("--dir")
                .arg(dir);
            let mut child = common::redis::spawn_quiet(cmd);
            let up = common::redis::ready_or_exited(&mut child, Duration::from_secs(10), || {
                common::redis::answers_from(port, None, dir)
            });
            let r = TlsRedis {
                port,
                tls_port,
                child,
                pidfile: pidfile.clone(),
                _root_work: Some(work),
            };
            match up {
                Some(true) => return r,
                Some(false) => {
                    eprintln!("redis-server with TLS exited at start: trying other ports")
                }
                None => panic!("redis-server with TLS does not answer (built without TLS?)"),
            }
            // Its pid file (if any) names no process of ours any more.
            let _ = std::fs::remove_file(&pidfile);
            drop(r);
        }
        panic!("redis-server with TLS does not start");
    }

    fn cli(&self, args: &[&str]) -> String {
        common::redis::query_text(self.port, None, args)
    }
}

/// A sentinel watching master `mq` on the TLS port `master`, answering on
/// a plain and a TLS port, talking TLS to the master; killed on drop.
fn tls_sentinel(dir: &std::path::Path, master: u16) -> TlsRedis {
    let path = |f: &str| dir.join(f).to_string_lossy().into_owned();
    let conf = dir.join("sentinel.conf");
    // Started again on other ports when it exits at start.
    for _ in 0..common::PORT_ATTEMPTS {
        let (port, tls_port) = (common::free_port(), common::free_port());
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {dir}\n\
                 tls-port {tls_port}\ntls-cert-file {cert}\ntls-key-file {key}\n\
                 tls-ca-cert-file {ca}\ntls-auth-clients no\ntls-replication yes\n\
                 sentinel monitor mq 127.0.0.1 {master} 1\n",
                dir = dir.display(),
                cert = path("server.crt"),
                key = path("server.key"),
                ca = path("ca.crt"),
            ),
        )
        .expect("sentinel.conf");
        let mut cmd = std::process::Command::new("redis-server");
        cmd.arg(&conf).arg("--sentinel");
        let mut child = common::redis::spawn_quiet(cmd);
        let named = common::redis::ready_or_exited(&mut child, Duration::from_secs(10), || {
            common::redis::master_port_on(port, "mq") == Some(master)
        });
        let s = TlsRedis {
            port,
            tls_port,
            child,
            pidfile: dir.join("no.pid"),
            _root_work: None,
        };
        match named {
            Some(true) => return s,
            Some(false) => eprintln!("the TLS sentinel exited at start: trying other ports"),
            None => panic!("the TLS sentinel does not name the master"),
        }
    }
    panic!("the TLS sentinel does not start");
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        common::redis::kill_by_pidfile(&self.pidfile);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The config of queue `work` on `url` with the TLS parameters `tls`
/// (`(name, file)` pairs).
fn tls_cfg_body(url: &str, tls: &[(&str, String)]) -> String {
    let mut body = format!(
        "modparam(\"mqueue\", \"redis_timeout\", 1000)\n\
         modparam(\"mqueue\", \"mqueue\", \"name=work;redis={url}\")\n"
    );
    for (name, file) in tls {
        body.push_str(&format!("modparam(\"mqueue\", \"{name}\", \"{file}\")\n"));
    }
    body.push_str("request_route { sl_send_reply(\"200\", \"OK\"); exit; }\n");
    body
}

/// `rediss://`: adds and fetches over TLS (the server checked against
/// `redis_tls_ca`); with a server that asks for a client certificate,
/// `redis_tls_cert`/`redis_tls_key` give it and the start fails clearly
/// without; a server whose certificate another CA signed is refused at
/// start with a clear error; `rediss+sentinel://` asks a sentinel over TLS
/// and talks TLS to the master it names.
#[test]
fn rediss_urls_talk_tls() {
    let dir = common::TempDir::new("tls");
    let d = dir.0.as_path();
    make_ca(d, "ca");
    make_ca(d, "other-ca");
    make_cert(d, "ca", "server", "serverAuth");
    make_cert(d, "ca", "client", "clientAuth");
    let redis = TlsRedis::start(d);
    let url = format!("rediss://127.0.0.1:{}", redis.tls_port);
    let file = |f: &str| d.join(f).to_string_lossy().into_owned();
    let with_client = [
        ("redis_tls_ca", file("ca.crt")),
        ("redis_tls_cert", file("client.crt")),
        ("redis_tls_key", file("client.key")),
    ];
    let start = |tls: &[(&str, String)]| start_with_kex(&tls_cfg_body(&url, tls));
    let refused = |tls: &[(&str, String)], why: &[&str]| {
        let body = tls_cfg_body(&url, tls);
        let cfg = Cfg {
            body: &body,
            ..Cfg::default()
        };
        let (code, log) = Kamailio::start_expect_failure(&cfg, Impl::Rust);
        assert!(code.is_some_and(|c| c != 0), "exit {code:?}\n{log}");
        for w in why {
            assert!(log.contains(w), "no '{w}' in:\n{log}");
        }
        let line = log.lines().find(|l| l.contains(why[0])).unwrap_or_default();
        eprintln!("refused: {}", line.trim());
    };
    // A client certificate given: adds and fetches work, on one
    // connection (what the server sends after the handshake, session
    // tickets, does not make it look stale).
    let k = start(&with_client);
    let connections = || {
        let stats = redis.cli(&["INFO", "stats"]);
        stats
            .lines()
            .find_map(|l| l.trim().strip_prefix("total_connections_received:"))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert_eq!(rpc_add(&k, "1").0.as_deref(), Ok("1"), "{}", k.log());
    let opened = connections();
    assert_eq!(rpc_add(&k, "2").0.as_deref(), Ok("1"), "{}", k.log());
    // The test's own INFO is one connection.
    assert_eq!(connections(), opened + 1, "a new connection per add");
    // A connection the server closed is reopened, over TLS too.
    redis.cli(&["CLIENT", "KILL", "TYPE", "normal"]);
    let gone = wait_until(Duration::from_secs(10), || {
        let list = redis.cli(&["CLIENT", "LIST"]);
        (!list
            .lines()
            .any(|l| l.contains("cmd=") && !l.contains("cmd=client")))
        .then_some(())
    });
    assert!(gone.is_some(), "CLIENT KILL leaves clients");
    assert_eq!(rpc_add(&k, "3").0.as_deref(), Ok("1"), "{}", k.log());
    let got = k.rpc(&["mqueue.fetch", "work"]).expect("fetch");
    assert_eq!(field(&got, "val"), "v1");
    // On the server: every entry (the fetched one is acknowledged by the
    // next fetch).
    assert_eq!(redis.cli(&["XLEN", "mqueue:{work}"]).trim(), "3");
    drop(k);
    // The server asks for a client certificate; none is given.
    refused(
        &[("redis_tls_ca", file("ca.crt"))],
        &["mqueue work: rediss://127.0.0.1", "TLS"],
    );
    // The server's certificate is signed by a CA not in redis_tls_ca.
    refused(
        &[
            ("redis_tls_ca", file("other-ca.crt")),
            ("redis_tls_cert", file("client.crt")),
            ("redis_tls_key", file("client.key")),
        ],
        &["mqueue work: rediss://127.0.0.1", "TLS", "certificate"],
    );
    // A missing CA file stops the start, naming it.
    refused(
        &[("redis_tls_ca", file("nowhere.crt"))],
        &["redis_tls_ca", "nowhere.crt"],
    );
    // A server that asks for no client certificate.
    redis.cli(&["CONFIG", "SET", "tls-auth-clients", "no"]);
    let k = start(&[("redis_tls_ca", file("ca.crt"))]);
    assert_eq!(rpc_add(&k, "4").0.as_deref(), Ok("1"), "{}", k.log());
    let got = k.rpc(&["mqueue.fetch", "work"]).expect("fetch");
    assert_eq!(field(&got, "val"), "v2");
    drop(k);
    // rediss+sentinel://: TLS to the sentinel, then to the master it names.
    let sentinel_dir = common::TempDir::new("tls-sentinel");
    for f in ["ca.crt", "server.crt", "server.key"] {
        std::fs::copy(d.join(f), sentinel_dir.0.join(f)).expect("copy");
    }
    let sentinel = tls_sentinel(&sentinel_dir.0, redis.tls_port);
    let body = tls_cfg_body(
        &format!("rediss+sentinel://127.0.0.1:{}/mq", sentinel.tls_port),
        &[("redis_tls_ca", file("ca.crt"))],
    );
    let k = start_with_kex(&body);
    assert_eq!(rpc_add(&k, "5").0.as_deref(), Ok("1"), "{}", k.log());
    let got = k.rpc(&["mqueue.fetch", "work"]).expect("fetch");
    assert_eq!(field(&got, "val"), "v3");
}

/// Redis Cluster: three masters on loopback, the URL names them all as
/// seed nodes. Queues whose slots fall in every shard take adds (script
/// and RPC) and give every item exactly once (script and RPC), while one
/// queue's slot moves to another node: `ASK` while its keys are migrated
/// (an `ASKING` then the command on the importing node), `MOVED` once the
/// slot is there. Nothing is lost or delivered twice.
#[test]
fn cluster_queues_in_every_shard_and_a_migrated_slot_lose_nothing() {
    let cluster = RedisCluster::start();
    let url = cluster.url();
    // One queue per shard, by the slot of its hash tag.
    let mut names = vec![String::new(); 3];
    for i in 0..1000 {
        let n = format!("q{i}");
        let owner = cluster.owner(cluster.slot(&format!("mqueue:{{{n}}}")), 0);
        if names[owner].is_empty() {
            names[owner] = n;
        }
        if names.iter().all(|n| !n.is_empty()) {
            break;
        }
    }
    assert!(names.iter().all(|n| !n.is_empty()), "no name per shard");
    let mut queues = String::from("modparam(\"mqueue\", \"redis_timeout\", 2000)\n");
    let (mut produce, mut consume) = (String::new(), String::new());
    for n in &names {
        queues.push_str(&format!(
            "modparam(\"mqueue\", \"mqueue\", \"name={n};addmode=1;redis={url}\")\n"
        ));
        produce.push_str(&format!(
            "$var(i) = 0;\n\
             while ($var(i) < 5) {{\n\
                 $var(i) = $var(i) + 1;\n\
                 if (mq_add(\"{n}\", \"s$var(i)\", \"{n}|s|$var(i)\")) {{ xlog(\"L_INFO\", \"P|{n}|s|$var(i)\\n\"); }}\n\
                 else {{ xlog(\"L_INFO\", \"X|{n}|$var(i)\\n\"); }}\n\
             }}\n"
        ));
        consume.push_str(&format!(
            "$var(n) = 0;\n\
             while ($var(n) < 4 && mq_fetch(\"{n}\")) {{\n\
                 xlog(\"L_INFO\", \"C|$mqv({n})\\n\");\n\
                 $var(n) = $var(n) + 1;\n\
             }}\n\
             mq_pv_free(\"{n}\");\n"
        ));
    }
    let once = |route: &str, body: &str| {
        format!(
            "{queues}\
             modparam(\"rtimer\", \"timer\", \"name=once;interval=100000u;mode=1\")\n\
             modparam(\"rtimer\", \"exec\", \"timer=once;route={route}\")\n\
             route[{route}] {{ if ($var(done) == 0) {{ $var(done) = 1;\n{body}}} }}\n\
             request_route {{ sl_send_reply(\"200\", \"OK\"); exit; }}\n"
        )
    };
    // Adds by the script, then by RPC, in every shard.
    let a = start_instance(&once("PRODUCE", &produce), 1);
    let mut produced: Vec<String> = a.wait_marked("P|", 15, Duration::from_secs(30));
    assert_eq!(produced.len(), 15, "script adds failed:\n{}", a.log());
    let rpc_add = |n: &str, i: u32| {
        let val = format!("{n}|r|{i}");
        let r = a.rpc(&["mqueue.add", n, &format!("r{i}"), &val]);
        assert_eq!(r.as_deref().map(str::trim), Ok("1"), "add {val}");
        val
    };
    for n in &names {
        produced.extend((1..=5).map(|i| rpc_add(n, i)));
    }
    // The first queue's slot moves from node `from` to node `to`.
    let moving = &names[0];
    let slot = cluster.slot(&format!("mqueue:{{{moving}}}"));
    let (from, to) = (cluster.owner(slot, 0), (cluster.owner(slot, 0) + 1) % 3);
    let slot_s = slot.to_string();
    let (from_id, to_id) = (cluster.id(from), cluster.id(to));
    let ok = |i: usize, args: &[&str]| {
        let r = cluster.nodes[i].cli(args);
        assert_eq!(r.trim(), "OK", "{args:?} on node {i}: {r}");
    };
    ok(to, &["CLUSTER", "SETSLOT", &slot_s, "IMPORTING", &from_id]);
    ok(from, &["CLUSTER", "SETSLOT", &slot_s, "MIGRATING", &to_id]);
    let keys = cluster.nodes[from].cli(&["CLUSTER", "GETKEYSINSLOT", &slot_s, "100"]);
    let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
    assert!(keys.len() >= 3, "the queue's keys: {keys:?}");
    let to_port = cluster.nodes[to].port.to_string();
    let mut migrate = vec!["MIGRATE", "127.0.0.1", &to_port, "", "0", "5000", "KEYS"];
    migrate.extend(&keys);
    ok(from, &migrate);
    // Keys gone from `from`, slot not yet `to`'s: ASK.
    let (asked, asking) = (
        cluster.info_count(from, "errorstats", "errorstat_ASK"),
        cluster.info_count(to, "commandstats", "cmdstat_asking"),
    );
    produced.extend((6..=8).map(|i| rpc_add(moving, i)));
    assert_eq!(a.queue_size(moving), 13);
    assert!(
        cluster.info_count(from, "errorstats", "errorstat_ASK") > asked,
        "no ASK redirection"
    );
    assert!(
        cluster.info_count(to, "commandstats", "cmdstat_asking") > asking,
        "no ASKING"
    );
    // A fetch names the dead-letter stream, which does not exist: the
    // importing node answers TRYAGAIN (a key missing mid-import) until the
    // slot is its own, given 300 ms from now; the fetch is sent there
    // again until then, within redis_timeout (2000).
    let fetched = std::thread::scope(|scope| {
        scope.spawn(|| {
            std::thread::sleep(Duration::from_millis(300));
            for i in 0..3 {
                ok(i, &["CLUSTER", "SETSLOT", &slot_s, "NODE", &to_id]);
            }
        });
        a.rpc(&["mqueue.fetch", moving])
    });
    let fetched = fetched.expect("a fetch during the migration");
    let mut consumed_early = vec![field(&fetched, "val")];
    // The slot is `to`'s: the next call to `from` (or to a seed, for a
    // process that never used the queue) is answered MOVED.
    let moves = || -> u64 {
        (0..3)
            .map(|i| cluster.info_count(i, "errorstats", "errorstat_MOVED"))
            .sum()
    };
    let moved = moves();
    produced.extend((9..=10).map(|i| rpc_add(moving, i)));
    assert!(moves() > moved, "no MOVED redirection");
    assert_eq!(cluster.owner(slot, to), to);
    // Fetches: 4 of each queue by another instance's script, the rest by
    // RPC.
    let b = start_instance(&once("CONSUME", &consume), 1);
    let mut consumed = b.wait_marked("C|", 12, Duration::from_secs(30));
    assert_eq!(consumed.len(), 12, "script fetches failed:\n{}", b.log());
    consumed.append(&mut consumed_early);
    for n in &names {
        consumed.extend(a.drain(n).into_iter().map(|(_, v)| v));
        assert_eq!(a.queue_size(n), 0, "{n}");
    }
    let mut seen = HashSet::new();
    let twice: Vec<_> = consumed.iter().filter(|v| !seen.insert(*v)).collect();
    assert!(twice.is_empty(), "delivered twice: {twice:?}");
    let want: HashSet<&String> = produced.iter().collect();
    let got: HashSet<&String> = consumed.iter().collect();
    assert_eq!(produced.len(), 35);
    assert_eq!(got, want, "lost or unknown items");
    assert!(a.marked("X|").is_empty(), "{}", a.log());
}
