//! RPC commands over kamcmd/ctl: the C module's three commands give the
//! same replies and faults from both modules; the operator commands
//! (`stats`, `peek`, `clear`, `add`) are ours.

mod common;

use std::time::Duration;

use common::{jsonrpc, Cfg, Impl, Kamailio, BOTH};

const PARAMS: &str = r#"modparam("mqueue", "mqueue", "name=q1")
modparam("mqueue", "mqueue", "name=q2;size=5")
event_route[core:worker-one-init] {
    mq_add("q1", "k1", "v1");
    mq_add("q1", "k2", "v2 with spaces");
    mq_add("q2", "x", "y");
    xlog("L_INFO", "T|READY\n");
}
"#;

fn start(imp: Impl) -> Kamailio {
    let cfg = Cfg {
        body: PARAMS,
        ..Cfg::default()
    };
    let k = Kamailio::start(&cfg, imp);
    assert_eq!(
        k.wait_marked("T|", 1, Duration::from_secs(10)),
        ["READY"],
        "{}",
        k.log()
    );
    k
}

#[test]
fn c_module_commands_reply_the_same() {
    let calls: &[&[&str]] = &[
        &["mqueue.get_size", "q1"],
        &["mqueue.get_size", "nope"],
        &["mqueue.get_size", ""],
        &["mqueue.get_size"],
        &["mqueue.get_sizes"],
        &["mqueue.fetch", "q1"],
        &["mqueue.fetch", "q1"],
        &["mqueue.fetch", "q1"],
        &["mqueue.fetch", "nope"],
        &["mqueue.fetch"],
        &["mqueue.get_size", "q1"],
    ];
    let mut replies = Vec::new();
    for imp in BOTH {
        let k = start(imp);
        let r: Vec<_> = calls.iter().map(|c| k.rpc(c)).collect();
        replies.push(r);
    }
    assert_eq!(replies[0], replies[1], "Rust vs C replies differ");
    let ours = &replies[0];
    assert!(ours[0].as_ref().unwrap().contains("size: 2"), "{ours:?}");
    assert_eq!(ours[1].as_ref().unwrap_err(), "error: 404 - No such queue");
    assert!(ours[5].as_ref().unwrap().contains("key: k1"), "{ours:?}");
    assert!(
        ours[6].as_ref().unwrap().contains("val: v2 with spaces"),
        "{ours:?}"
    );
    assert_eq!(ours[7].as_ref().unwrap_err(), "error: 404 - Empty queue");
    assert_eq!(ours[8].as_ref().unwrap_err(), "error: 500 - No such queue");
    let sizes = ours[4].as_ref().unwrap();
    assert!(
        sizes.find("q2").unwrap() < sizes.find("q1").unwrap(),
        "C order: newest first"
    );
}

#[test]
fn operator_commands() {
    let k = start(Impl::Rust);
    assert_eq!(k.rpc(&["mqueue.add", "q2", "a", "b"]).unwrap().trim(), "1");
    let peek = k.rpc(&["mqueue.peek", "q2", "10"]).unwrap();
    assert!(
        peek.find("key: x").unwrap() < peek.find("key: a").unwrap(),
        "{peek}"
    );
    let stats = k.rpc(&["mqueue.stats", "q2"]).unwrap();
    for field in [
        "name: q2",
        "size: 2",
        "limit: 5",
        "addmode: 0",
        "added: 2",
        "fetched: 0",
    ] {
        assert!(stats.contains(field), "no {field} in {stats}");
    }
    let cleared = k.rpc(&["mqueue.clear", "q2"]).unwrap();
    assert!(cleared.contains("cleared: 2"), "{cleared}");
    assert!(k
        .rpc(&["mqueue.get_size", "q2"])
        .unwrap()
        .contains("size: 0"));
    assert_eq!(
        k.rpc(&["mqueue.stats", "zz"]).unwrap_err(),
        "error: 404 - No such queue"
    );
    for _ in 0..7 {
        k.rpc(&["mqueue.add", "q2", "k", "v"]).unwrap();
    }
    let stats = k.rpc(&["mqueue.stats", "q2"]).unwrap();
    assert!(
        stats.contains("evicted: 2") && stats.contains("max_size: 5"),
        "{stats}"
    );
    let all = k.rpc(&["mqueue.stats"]).unwrap();
    assert!(
        all.contains("name: q1") && all.contains("name: q2"),
        "{all}"
    );
    // kamcmd sends numbers as integers: taken as text.
    k.rpc(&["mqueue.clear", "q1"]).unwrap();
    assert_eq!(k.rpc(&["mqueue.add", "q1", "42", "7"]).unwrap().trim(), "1");
    let got = k.rpc(&["mqueue.fetch", "q1"]).unwrap();
    assert!(got.contains("key: 42") && got.contains("val: 7"), "{got}");
}

/// The same commands over JSON-RPC (jsonrpcs over HTTP): identical
/// bodies from both modules.
#[test]
fn json_rpc_replies_the_same() {
    let calls = [
        r#""mqueue.get_size", "params": ["q1"]"#,
        r#""mqueue.get_size", "params": ["nope"]"#,
        r#""mqueue.get_sizes""#,
        r#""mqueue.fetch", "params": ["q1"]"#,
        r#""mqueue.fetch", "params": ["q2"]"#,
        r#""mqueue.fetch", "params": ["q2"]"#,
        r#""mqueue.fetch", "params": ["nope"]"#,
    ];
    let mut replies = Vec::new();
    for imp in BOTH {
        let (k, port) = common::start_http_rpc(PARAMS, &[], imp, &[]);
        assert_eq!(k.wait_marked("T|", 1, Duration::from_secs(10)).len(), 1);
        let r: Vec<serde_json::Value> = calls
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let req = format!(r#"{{"jsonrpc": "2.0", "method": {c}, "id": {i}}}"#);
                jsonrpc(port, &req).expect("JSON-RPC reply")
            })
            .collect();
        replies.push(r);
    }
    assert_eq!(replies[0], replies[1], "Rust vs C over JSON-RPC");
    let ours = &replies[0];
    assert_eq!(ours[0]["result"]["size"], 2, "{ours:?}");
    assert_eq!(ours[1]["error"]["code"], 404, "{ours:?}");
    assert_eq!(ours[3]["result"]["key"], "k1", "{ours:?}");
    assert_eq!(ours[5]["error"]["message"], "Empty queue", "{ours:?}");
}

/// `mqueue.fetch` run from the script (`jsonrpc_exec`): the fetched item
/// becomes the process's current item, as in the C module, also when the
/// reply is a fault in the C module (empty value); an empty queue drops
/// the previous one.
#[test]
fn rpc_fetch_sets_the_current_item() {
    let body = r#"modparam("mqueue", "mqueue", "name=q")
event_route[core:worker-one-init] {
    mq_add("q", "k1", "v1");
    mq_add("q", "k2", "");
    jsonrpc_exec('{"jsonrpc": "2.0", "method": "mqueue.fetch", "params": ["q"], "id": 1}');
    xlog("L_INFO", "T|A $mqk(q)|$mqv(q)|$jsonrpl(code)\n");
    jsonrpc_exec('{"jsonrpc": "2.0", "method": "mqueue.fetch", "params": ["q"], "id": 2}');
    xlog("L_INFO", "T|B $mqk(q)|$mqv(q)\n");
    jsonrpc_exec('{"jsonrpc": "2.0", "method": "mqueue.fetch", "params": ["q"], "id": 3}');
    xlog("L_INFO", "T|C $mqk(q)|$mqv(q)|$jsonrpl(code)\n");
}
"#;
    let mut seen = Vec::new();
    for imp in BOTH {
        let cfg = Cfg {
            modules: &["jsonrpcs.so"],
            body,
            ..Cfg::default()
        };
        let k = Kamailio::start(&cfg, imp);
        seen.push(k.wait_marked("T|", 3, Duration::from_secs(10)));
    }
    assert_eq!(seen[0], seen[1], "Rust vs C");
    assert_eq!(
        seen[0],
        ["A k1|v1|200", "B k2|<null>", "C <null>|<null>|404"],
        "{seen:?}"
    );
}

/// `mqueue.fetch` with a count: a list of up to that many items in one
/// reply, over binrpc (kamcmd) and JSON-RPC; items the reply cannot take
/// stay queued, in order.
#[test]
fn fetch_with_count_returns_a_list() {
    let (k, port) = common::start_http_rpc(PARAMS, &[], Impl::Rust, &[]);
    assert_eq!(k.wait_marked("T|", 1, Duration::from_secs(10)).len(), 1);
    let json = |params: &str| {
        let req = format!(
            r#"{{"jsonrpc": "2.0", "method": "mqueue.fetch", "params": [{params}], "id": 1}}"#
        );
        jsonrpc(port, &req).expect("JSON-RPC reply")
    };
    k.rpc(&["mqueue.add", "q1", "k3", "v3"]).unwrap();
    // q1 holds k1, k2, k3: two, then the one left, then empty as without
    // a count.
    let two = json(r#""q1", 2"#);
    assert_eq!(
        two["result"],
        serde_json::json!([{ "key": "k1", "val": "v1" }, { "key": "k2", "val": "v2 with spaces" }]),
        "{two}"
    );
    let rest = k.rpc(&["mqueue.fetch", "q1", "10"]).unwrap();
    assert_eq!(rest.matches("key:").count(), 1, "{rest}");
    assert!(
        rest.contains("key: k3") && rest.contains("val: v3"),
        "{rest}"
    );
    assert_eq!(
        k.rpc(&["mqueue.fetch", "q1", "5"]).unwrap_err(),
        "error: 404 - Empty queue"
    );
    let empty = json(r#""q1", 5"#);
    assert_eq!(empty["error"]["message"], "Empty queue", "{empty}");
    assert_eq!(
        k.rpc(&["mqueue.fetch", "q1", "0"]).unwrap_err(),
        "error: 400 - Invalid count"
    );
    // A count that is not a number: 400 over both, nothing taken.
    k.rpc(&["mqueue.add", "q1", "k4", "v4"]).unwrap();
    assert_eq!(
        k.rpc(&["mqueue.fetch", "q1", "abc"]).unwrap_err(),
        "error: 400 - Invalid count"
    );
    let bad = json(r#""q1", "abc""#);
    assert_eq!(bad["error"]["code"], 400, "{bad}");
    assert!(k
        .rpc(&["mqueue.get_size", "q1"])
        .unwrap()
        .contains("size: 1"));
    k.rpc(&["mqueue.fetch", "q1"]).unwrap();
    // Past the first item, a list stops before one over 4 KB (a 16 KB
    // value does not fit in a struct of ctl's binrpc reply, see
    // big_values.rs): it stays queued, first; JSON-RPC then returns it.
    let value = |i: usize| {
        let kb = if i == 5 { 4096 } else { 768 };
        format!("v{i:03}").repeat(kb)
    };
    for i in 0..10 {
        k.rpc(&["mqueue.add", "q1", &format!("b{i}"), &value(i)])
            .unwrap();
    }
    let some = k.rpc(&["mqueue.fetch", "q1", "10"]).unwrap();
    assert_eq!(some.matches("key:").count(), 5, "{some}");
    for i in 0..5 {
        assert!(some.contains(&format!("key: b{i}")), "b{i} missing");
        assert!(some.contains(&value(i)), "value of b{i} damaged");
    }
    assert!(k
        .rpc(&["mqueue.get_size", "q1"])
        .unwrap()
        .contains("size: 5"));
    let big = json(r#""q1", 1"#);
    assert_eq!(big["result"][0]["key"], "b5", "{big}");
    assert_eq!(
        big["result"][0]["val"],
        value(5).as_str(),
        "value of b5 damaged"
    );
    let rest = json(r#""q1", 10"#);
    let keys: Vec<&str> = rest["result"]
        .as_array()
        .map(|a| a.iter().filter_map(|i| i["key"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(keys, ["b6", "b7", "b8", "b9"], "{rest}");
    // 300 CDR-sized items (500 bytes) asked for at once: each reply stays
    // small enough for kamcmd and a datagram; every item arrives once, in
    // order, over several calls, none lost to a reply too big to send.
    let cdr = "C".repeat(500);
    for i in 0..300 {
        k.rpc(&["mqueue.add", "q1", &format!("cdr{i}"), &cdr])
            .unwrap();
    }
    let mut got = Vec::new();
    for _ in 0..300 {
        let Ok(reply) = k.rpc(&["mqueue.fetch", "q1", "1000"]) else {
            break;
        };
        let n = reply.matches("key:").count();
        assert!((1..300).contains(&n), "one reply took {n} items");
        got.extend(
            reply
                .lines()
                .filter_map(|l| l.trim().strip_prefix("key: "))
                .map(str::to_string),
        );
    }
    let want: Vec<String> = (0..300).map(|i| format!("cdr{i}")).collect();
    assert_eq!(got, want, "every item once, in order");
}
