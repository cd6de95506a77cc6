//! The inter-module API (`bind_mq`): `acc_json` (compiled against the C
//! module's `api.h`) writes one JSON record per call into a queue through
//! our `mq_api_t.add`. Real INVITE transactions from sipp pass through
//! `tm` to a sipp UAS; an rtimer route drains the queue. Every call's
//! record arrives, once, with both modules.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{free_port, wait_until, Cfg, Impl, Kamailio, BOTH};

const CALLS: usize = 30;

struct Uas(Child);

impl Drop for Uas {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn body(uas_port: u16, attr: &str) -> String {
    format!(
        r#"modparam("mqueue", "mqueue", "name=acc{attr}")
modparam("acc_json", "acc_flag", 2)
modparam("acc_json", "acc_output_mqueue", "acc")
modparam("rtimer", "timer", "name=drain;interval=100000u;mode=1")
modparam("rtimer", "exec", "timer=drain;route=DRAIN")
route[DRAIN] {{
    while (mq_fetch("acc")) {{
        xlog("L_INFO", "ACC|$mqk(acc)|$mqv(acc)\n");
    }}
}}
onreply_route[ANSWERED] {{
    if ($rs == 200) {{
        xlog("L_INFO", "OK200|$ci\n");
    }}
}}
request_route {{
    if ($rm == "INVITE") {{
        setflag(2);
        t_on_reply("ANSWERED");
    }}
    $du = "sip:127.0.0.1:{uas_port}";
    if (!t_relay()) {{
        sl_reply_error();
    }}
    exit;
}}
"#
    )
}

fn run(imp: Impl) -> Run {
    run_on(imp, "")
}

/// What a run gave: the records drained from the queue, and the calls
/// (numbers) whose INVITE was answered 200.
struct Run {
    lines: Vec<String>,
    answered: Vec<usize>,
}

/// `attr` is added to the queue's definition (`;redis=URL`).
fn run_on(imp: Impl, attr: &str) -> Run {
    let uas_port = free_port();
    let body = body(uas_port, attr);
    let cfg = Cfg {
        globals: "children=2",
        modules: &["tm.so", "acc.so", "acc_json.so", "rtimer.so"],
        body: &body,
        ..Cfg::default()
    };
    let k = Kamailio::start(&cfg, imp);
    let sipp = |args: &[&str]| {
        let mut c = Command::new("sipp");
        c.args(args)
            .args([
                "-i",
                "127.0.0.1",
                "-nostdin",
                "-timeout",
                "60s",
                "-timeout_error",
            ])
            .current_dir(&k.dir.0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    };
    let _uas = Uas(sipp(&["-sn", "uas", "-p", &uas_port.to_string()])
        .spawn()
        .expect("run sipp: run `make deps` (package sip-tester)"));
    // The UAS listens once its port is taken.
    let listening = wait_until(Duration::from_secs(10), || {
        std::net::UdpSocket::bind(("127.0.0.1", uas_port))
            .is_err()
            .then_some(())
    });
    assert!(listening.is_some(), "sipp uas does not listen");
    let uac = sipp(&[
        &format!("127.0.0.1:{}", k.port),
        "-sn",
        "uac",
        "-p",
        &free_port().to_string(),
        "-m",
        &CALLS.to_string(),
        "-r",
        "20",
        "-d",
        "50",
    ])
    .status()
    .expect("run sipp");
    // A call sipp gave up on after its 200 (a retransmitted 200 on a busy
    // machine is an unexpected message to its scenario) still has its
    // record: the calls answered 200, as Kamailio relayed them, are what
    // the records are checked against. Most must be answered.
    let mut answered: Vec<usize> = k
        .marked("OK200|")
        .iter()
        .map(|ci| call_id_number(ci))
        .collect();
    answered.sort_unstable();
    answered.dedup();
    if uac.success() {
        assert_eq!(answered.len(), CALLS, "{imp:?}: {answered:?}");
    }
    assert!(
        answered.len() >= CALLS / 2,
        "{imp:?}: sipp uac failed ({uac}), {} calls answered:\n{}",
        answered.len(),
        k.log()
    );
    let lines = k.wait_marked("ACC|", answered.len(), Duration::from_secs(10));
    // Nothing more arrives later: no transaction is left to make a record,
    // and the queue is drained.
    let settled = wait_until(Duration::from_secs(10), || {
        let tm = k.rpc(&["tm.stats"]).expect("tm.stats");
        (common::field(&tm, "current") == "0" && k.queue_size("acc") == 0).then_some(())
    });
    assert!(settled.is_some(), "{imp:?}: transactions or records left");
    assert_eq!(k.marked("ACC|").len(), lines.len(), "{imp:?}: late records");
    Run { lines, answered }
}

/// The call number of a sipp Call-ID (`<n>-<pid>@<ip>`).
fn call_id_number(callid: &str) -> usize {
    callid
        .split_once('-')
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("not a sipp Call-ID: {callid}"))
}

/// The call number of sipp's Call-ID (`<n>-<pid>@<ip>`) in a JSON record.
fn call_number(record: &serde_json::Value) -> usize {
    call_id_number(
        record["callid"]
            .as_str()
            .unwrap_or_else(|| panic!("no callid in {record}")),
    )
}

/// One record per call answered 200, each once.
fn check_records(imp: Impl, run: &Run) {
    let lines = &run.lines;
    assert_eq!(lines.len(), run.answered.len(), "{imp:?}: {lines:#?}");
    let calls: Vec<usize> = lines
        .iter()
        .map(|l| {
            let (key, json) = l.split_once('|').expect("key|json");
            assert_eq!(key, "acc", "{imp:?}: key");
            let record: serde_json::Value = serde_json::from_str(json)
                .unwrap_or_else(|e| panic!("{imp:?}: not JSON ({e}): {json}"));
            assert_eq!(record["method"], "INVITE", "{record}");
            assert_eq!(record["sip_code"], "200", "{record}");
            call_number(&record)
        })
        .collect();
    // Two SIP workers write the records: on a busy machine one may
    // add call n+1's record before the other adds call n's, so the
    // queue (FIFO by add) keeps every record once, not call order.
    let mut sorted = calls.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted, run.answered,
        "{imp:?}: records missing or repeated: {calls:?}"
    );
}

#[test]
fn every_call_record_arrives_in_order() {
    for imp in BOTH {
        check_records(imp, &run(imp));
    }
}

/// `bind_mq` on a queue on Redis Streams: acc_json's records go through
/// Redis and arrive the same way.
#[test]
fn every_call_record_arrives_through_a_redis_queue() {
    let redis = common::redis::RedisServer::start();
    let run = run_on(Impl::Rust, &format!(";redis={}", redis.url()));
    check_records(Impl::Rust, &run);
}

/// `bind_mq` on a durable queue: acc_json's records go through the log and
/// arrive the same way.
#[test]
fn every_call_record_arrives_through_a_durable_queue() {
    let dir = common::TempDir::new("acc-durable");
    // The queue's definition, then one more modparam line: durable_dir.
    let attr = format!(
        ";durable=sync\")\nmodparam(\"mqueue\", \"durable_dir\", \"{}",
        dir.0.display()
    );
    let run = run_on(Impl::Rust, &attr);
    check_records(Impl::Rust, &run);
}
