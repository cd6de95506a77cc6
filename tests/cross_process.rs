//! One set of queues for every process: SIP workers (fed by sipp) add,
//! rtimer processes fetch, and the other way round; every item is fetched
//! exactly once. Runs on both modules.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{sipp_messages, wait_until, Cfg, Kamailio, BOTH};

const MESSAGES: usize = 300;
const BACK_ITEMS: usize = 40;

fn body() -> String {
    format!(
        r#"modparam("mqueue", "mqueue", "name=work")
modparam("mqueue", "mqueue", "name=back")
modparam("rtimer", "timer", "name=c1;interval=20000u;mode=1;")
modparam("rtimer", "timer", "name=c2;interval=20000u;mode=1;")
modparam("rtimer", "timer", "name=p1;interval=10000u;mode=1;")
modparam("rtimer", "exec", "timer=c1;route=CONSUME")
modparam("rtimer", "exec", "timer=c2;route=CONSUME")
modparam("rtimer", "exec", "timer=p1;route=PRODUCE")
modparam("pv", "shvset", "produced=i:0")
route[CONSUME] {{
    while(mq_fetch("work")) {{ xlog("L_INFO", "C|$pp|$mqk(work)|$mqv(work)\n"); }}
}}
route[PRODUCE] {{
    if($shv(produced) < {BACK_ITEMS}) {{
        $shv(produced) = $shv(produced) + 1;
        mq_add("back", "b$shv(produced)", "from-timer-$pp");
    }}
}}
request_route {{
    if(!mq_add("work", "$ci", "$rb")) {{ sl_send_reply("500", "queue"); exit; }}
    while(mq_fetch("back")) {{ xlog("L_INFO", "B|$pp|$mqk(back)\n"); }}
    sl_send_reply("200", "queued");
    exit;
}}
"#
    )
}

#[test]
fn workers_and_timers_share_queues() {
    let body = body();
    for imp in BOTH {
        let cfg = Cfg {
            globals: "children=2",
            modules: &["rtimer.so", "cfgutils.so"],
            body: &body,
            ..Cfg::default()
        };
        let k = Kamailio::start(&cfg, imp);
        // The timer has produced every "back" item before SIP traffic.
        let produced = wait_until(Duration::from_secs(10), || {
            (k.queue_size("back") >= BACK_ITEMS).then_some(())
        });
        assert!(produced.is_some(), "{imp:?}: the timer does not produce");
        let rc = sipp_messages(k.port, MESSAGES, 200, &k.dir.0);
        assert_eq!(rc, 0, "{imp:?}: sipp failed (rc {rc})");
        let consumed = k.wait_marked("C|", MESSAGES, Duration::from_secs(20));
        assert_eq!(
            consumed.len(),
            MESSAGES,
            "{imp:?}: items lost or duplicated"
        );
        let bodies: HashSet<_> = consumed
            .iter()
            .map(|l| l.rsplit('|').next().unwrap().to_string())
            .collect();
        assert_eq!(
            bodies.len(),
            MESSAGES,
            "{imp:?}: duplicates among consumed items"
        );
        for i in 1..=MESSAGES {
            assert!(
                bodies.contains(&format!("item-{i}")),
                "{imp:?}: item-{i} missing"
            );
        }
        let consumer_pids: HashSet<_> = consumed
            .iter()
            .map(|l| l.split('|').next().unwrap())
            .collect();
        assert!(!consumer_pids.is_empty());
        // Items made in the timer process were fetched in SIP workers.
        let back = k.wait_marked("B|", BACK_ITEMS, Duration::from_secs(5));
        let keys: HashSet<_> = back
            .iter()
            .map(|l| l.rsplit('|').next().unwrap().to_string())
            .collect();
        assert_eq!(keys.len(), BACK_ITEMS, "{imp:?}: {back:?}");
        assert_eq!(back.len(), BACK_ITEMS, "{imp:?}: duplicates in {back:?}");
        assert!(k
            .rpc(&["mqueue.get_size", "work"])
            .unwrap()
            .contains("size: 0"));
    }
}
