//! A Rust panic inside the module is caught at the entry point, logged, and
//! turned into the host's error value; the process keeps serving. Uses the
//! test-only build with the `panic-inject` feature, where an add with the
//! key `__panic__` panics (the shipped module has no such code).

mod common;

use std::time::Duration;

use common::{sipp_messages, Cfg, Impl, Kamailio};

#[test]
fn panics_are_caught_and_the_worker_keeps_serving() {
    let cfg = Cfg {
        globals: "children=1",
        body: r#"modparam("mqueue", "mqueue", "name=q")
request_route {
    $var(rc) = mq_add("q", "__panic__", "x");
    $var(rc2) = mq_add("q", "ok-$ci", "y");
    xlog("L_INFO", "T|$var(rc) $var(rc2)\n");
    sl_send_reply("200", "OK");
    exit;
}
"#,
        ..Cfg::default()
    };
    let k = Kamailio::start(&cfg, Impl::RustPanic);
    // RPC entry (ctl process).
    let err = k.rpc(&["mqueue.add", "q", "__panic__", "v"]).unwrap_err();
    assert_eq!(err, "error: 500 - Internal error");
    assert_eq!(
        k.rpc(&["mqueue.add", "q", "after", "v"]).unwrap().trim(),
        "1"
    );
    // Script entry (SIP worker), several times: the same worker answers.
    assert_eq!(sipp_messages(k.port, 5, 20, &k.dir.0), 0, "{}", k.log());
    let lines = k.wait_marked("T|", 5, Duration::from_secs(10));
    assert_eq!(lines, vec!["-1 1"; 5], "{}", k.log());
    let size = k.rpc(&["mqueue.get_size", "q"]).unwrap();
    assert!(size.contains("size: 6"), "{size}");
    let log = k.log();
    let caught = log.matches("injected panic").count();
    assert!(caught >= 6, "every panic is logged ({caught}):\n{log}");
    assert!(
        !log.contains("exited") && !log.contains("signal 6"),
        "a process died:\n{log}"
    );
}
