//! Log lines stay bounded: a queue name from script input is cut to 256
//! bytes in a log line, with its full length shown (issue 20).

mod common;

use std::time::Duration;

use common::{Cfg, Impl, Kamailio};

#[test]
fn an_unknown_64_kb_queue_name_logs_a_short_line() {
    // And a name whose 256th byte is inside a UTF-8 character.
    let utf8 = format!("{}é…", "a".repeat(255));
    let body = r#"modparam("mqueue", "mqueue", "name=q")
modparam("rtimer", "timer", "name=t;interval=1;mode=1")
modparam("rtimer", "exec", "timer=t;route=LONG")
route[LONG] {
    if ($var(done) == 1) { return; }
    $var(done) = 1;
    $var(q) = "x";
    while ($(var(q){s.len}) < 65536) { $var(q) = $var(q) + $var(q); }
    xlog("L_INFO", "LEN|$(var(q){s.len})\n");
    xlog("L_INFO", "SIZE|$mq_size($var(q))\n");
    $var(u) = "UTF8";
    xlog("L_INFO", "USIZE|$mq_size($var(u))\n");
}
"#
    .replace("UTF8", &utf8);
    let cfg = Cfg {
        modules: &["rtimer.so"],
        body: &body,
        ..Cfg::default()
    };
    let k = Kamailio::start(&cfg, Impl::Rust);
    let done = k.wait_marked("USIZE|", 1, Duration::from_secs(20));
    assert_eq!(k.marked("LEN|"), ["65536"], "{}", k.log());
    assert_eq!(done.len(), 1, "{}", k.log());
    let log = k.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("mqueue not found: x"))
        .collect();
    assert!(!lines.is_empty(), "{log}");
    for l in &lines {
        assert!(l.len() < 512, "a {}-byte log line", l.len());
        assert!(l.contains("... (65536 bytes)"), "{l}");
    }
    let cut = format!(
        "mqueue not found: {}... ({} bytes)",
        "a".repeat(255),
        utf8.len()
    );
    assert!(log.contains(&cut), "{log}");
    assert!(!log.contains('\u{fffd}'), "{log}");
    let longest = log.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 1024, "longest log line {longest} bytes");
}

/// A 64 KB queue name in the config (with a value the C module misreads,
/// so a warning names the queue): every start-up line that names it is cut.
#[test]
fn a_64_kb_queue_name_in_the_config_logs_short_lines() {
    let name = "n".repeat(65536);
    let body = format!(
        "modparam(\"mqueue\", \"mqueue\", \"name={name};size=10abc\")\n\
         event_route[core:worker-one-init] {{ xlog(\"L_INFO\", \"T|READY\\n\"); }}\n"
    );
    let cfg = Cfg {
        body: &body,
        ..Cfg::default()
    };
    let k = Kamailio::start(&cfg, Impl::Rust);
    assert_eq!(k.wait_marked("T|", 1, Duration::from_secs(20)).len(), 1);
    let log = k.log();
    assert!(
        log.contains("... (65536 bytes)"),
        "the name is not shown cut"
    );
    let longest = log.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 1024, "longest log line {longest} bytes");
}
