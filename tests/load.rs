//! Accounting under concurrency: producers in four SIP workers and in an
//! rtimer process, consumers in three rtimer processes. Every item produced
//! is consumed exactly once, and each consumer sees each producer's items
//! in the order they were produced. `MQUEUE_LOAD_ITEMS` sets the total
//! (50,000 in `make test`, 1,000,000 in `make stress`).

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{sipp_messages, wait_until, Kamailio};

const BATCH: u64 = 50;

fn items() -> u64 {
    std::env::var("MQUEUE_LOAD_ITEMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000)
}

fn body(timer_items: u64) -> String {
    format!(
        r#"modparam("mqueue", "mqueue", "name=q")
modparam("rtimer", "timer", "name=prod;interval=10000u;mode=1")
modparam("rtimer", "exec", "timer=prod;route=PRODUCE")
modparam("rtimer", "timer", "name=c1;interval=5000u;mode=1")
modparam("rtimer", "exec", "timer=c1;route=CONSUME")
modparam("rtimer", "timer", "name=c2;interval=5000u;mode=1")
modparam("rtimer", "exec", "timer=c2;route=CONSUME")
modparam("rtimer", "timer", "name=c3;interval=5000u;mode=1")
modparam("rtimer", "exec", "timer=c3;route=CONSUME")
route[PRODUCE] {{
    if ($var(seq) >= {timer_items}) {{ return; }}
    $var(i) = 0;
    while ($var(i) < {BATCH} && $var(seq) < {timer_items}) {{
        $var(seq) = $var(seq) + 1;
        if (!mq_add("q", "$pp", "$var(seq)")) {{ xlog("L_ERR", "T|ADDFAIL\n"); }}
        $var(i) = $var(i) + 1;
    }}
    xlog("L_INFO", "P|$pp|$var(seq)\n");
}}
route[CONSUME] {{
    while (mq_fetch("q")) {{
        xlog("L_INFO", "C|$pp|$mqk(q)|$mqv(q)\n");
    }}
}}
request_route {{
    $var(i) = 0;
    while ($var(i) < {BATCH}) {{
        $var(seq) = $var(seq) + 1;
        if (!mq_add("q", "$pp", "$var(seq)")) {{ xlog("L_ERR", "T|ADDFAIL\n"); }}
        $var(i) = $var(i) + 1;
    }}
    xlog("L_INFO", "P|$pp|$var(seq)\n");
    sl_send_reply("200", "OK");
    exit;
}}
"#
    )
}

/// Produced count per producer pid (the highest sequence logged).
fn produced(k: &Kamailio) -> HashMap<u32, u64> {
    let mut m = HashMap::new();
    for l in k.marked("P|") {
        let (pid, seq) = l.split_once('|').expect("pid|seq");
        let e = m.entry(pid.parse().unwrap()).or_insert(0);
        *e = (*e).max(seq.parse().unwrap());
    }
    m
}

#[test]
fn every_item_consumed_exactly_once_in_producer_order() {
    let total = items();
    let timer_items = total / 10;
    let messages = ((total - timer_items) / BATCH) as usize;
    let body = body(timer_items);
    let k = common::start_timers(&body, 4, 10_000_000);
    let rate = 400;
    assert_eq!(
        sipp_messages(k.port, messages, rate, &k.dir.0),
        0,
        "sipp failed"
    );

    let (made, consumed) = wait_until(Duration::from_secs(120 + total / 5_000), || {
        let made = produced(&k);
        let want: u64 = made.values().sum();
        let consumed = k.marked("C|");
        let timer_done = made.values().any(|&n| n == timer_items);
        (timer_done && want >= total && consumed.len() as u64 >= want).then_some((made, consumed))
    })
    .unwrap_or_else(|| {
        let made: u64 = produced(&k).values().sum();
        panic!(
            "timed out: produced {made} of {total}, consumed {}",
            k.marked("C|").len()
        )
    });
    assert!(k.marked("T|ADDFAIL").is_empty(), "adds failed");

    // Exactly once per (producer, seq); increasing per (consumer, producer).
    let mut seen: HashMap<u32, Vec<u8>> = made
        .iter()
        .map(|(&p, &n)| (p, vec![0u8; n as usize + 1]))
        .collect();
    let mut last: HashMap<(u32, u32), u64> = HashMap::new();
    let mut consumers = HashMap::new();
    for l in &consumed {
        let mut f = l.split('|');
        let (c, p, s) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
        let (c, p, s): (u32, u32, u64) =
            (c.parse().unwrap(), p.parse().unwrap(), s.parse().unwrap());
        *consumers.entry(c).or_insert(0u64) += 1;
        let slot = seen
            .get_mut(&p)
            .and_then(|v| v.get_mut(s as usize))
            .unwrap_or_else(|| panic!("item {p}/{s} was never produced"));
        *slot += 1;
        assert_eq!(*slot, 1, "item {p}/{s} consumed twice");
        let prev = last.insert((c, p), s).unwrap_or(0);
        assert!(s > prev, "consumer {c} saw producer {p}'s {s} after {prev}");
    }
    for (p, v) in &seen {
        let lost = v[1..].iter().filter(|&&n| n == 0).count();
        assert_eq!(lost, 0, "producer {p}: {lost} items lost");
    }
    let sum: u64 = made.values().sum();
    assert_eq!(consumed.len() as u64, sum);
    assert!(made.len() >= 3, "producers: {made:?}");
    assert!(consumers.len() >= 2, "consumers: {consumers:?}");
    let size = k.rpc(&["mqueue.get_size", "q"]).unwrap();
    assert!(size.contains("size: 0"), "{size}");
    eprintln!(
        "load: {sum} items from {} producers, consumed by {} consumers {consumers:?}: 0 lost, 0 duplicated",
        made.len(),
        consumers.len()
    );
}
