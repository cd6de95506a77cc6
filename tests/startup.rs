//! Bad configuration stops Kamailio at start with an error naming the
//! problem, where the C module refuses it too (or crashes on it); values
//! the C module reads its own way start with the same meaning and a
//! warning.

mod common;

use common::{Cfg, Impl, Kamailio, BOTH};

fn refuse(imp: Impl, params: &str) -> (Option<i32>, String) {
    let cfg = Cfg {
        body: params,
        ..Cfg::default()
    };
    Kamailio::start_expect_failure(&cfg, imp)
}

/// Both modules refuse these; ours says why in its own words.
#[test]
fn bad_queue_definitions_refused_by_both() {
    let cases = [
        (r#"modparam("mqueue", "mqueue", "size=10")"#, "queue name not defined"),
        (r#"modparam("mqueue", "mqueue", "name=")"#, "queue name not defined"),
        (r#"modparam("mqueue", "mqueue", "name=q;colour=red")"#, "unknown attribute: colour"),
        (
            "modparam(\"mqueue\", \"mqueue\", \"name=q\")\nmodparam(\"mqueue\", \"mqueue\", \"name=q\")",
            "mqueue redefined: q",
        ),
        (r#"modparam("mqueue", "mqueue_name", "")"#, "mqueue name not defined"),
    ];
    for (params, why) in cases {
        for imp in BOTH {
            let (code, log) = refuse(imp, params);
            assert!(
                code.is_some_and(|c| c != 0),
                "{imp:?} {params}: exit {code:?}\n{log}"
            );
            if imp == Impl::Rust {
                assert!(log.contains(why), "no '{why}' for {params}:\n{log}");
                assert!(
                    log.contains("modparam mqueue"),
                    "error does not name the parameter:\n{log}"
                );
            }
        }
    }
}

/// Values the C module reads its own way (Kamailio's `str2sint`, result
/// unchecked): both modules start, the queue behaves the same (15 adds of
/// one key, then its size), and ours warns, naming the queue and how the
/// value was read.
#[test]
fn odd_values_start_with_the_c_meaning() {
    let cases = [
        ("name=q;size=-1", 15, Some("size -1 means no limit")),
        ("name=q;size=", 15, Some("size= is read as 0")),
        ("name=q;size=10abc", 10, Some("size=10abc is read as 10")),
        ("name=q;size=0x10", 15, Some("size=0x10 is read as 0")),
        ("name=q;size=ten", 15, Some("size=ten is read as 0")),
        (
            "name=q;size=99999999999999999999",
            15,
            Some("size=99999999999999999999 is read as 2147483647"),
        ),
        ("name=q;addmode=3", 15, Some("addmode 3 means 0")),
        ("name=q;addmode=-1", 15, Some("addmode -1 means 0")),
        ("name=q;addmode=1x", 1, Some("addmode=1x is read as 1")),
        ("name=q;dbmode=7", 15, Some("dbmode 7 means no persistence")),
        ("name=q;size=4", 4, None),
    ];
    for (def, size, warning) in cases {
        let body = format!("modparam(\"mqueue\", \"mqueue\", \"{def}\")\n{}", FILL);
        check_same(&body, def, size, warning);
    }
    for (params, size, warning) in [
        (
            "modparam(\"mqueue\", \"mqueue_size\", -5)",
            15,
            "size -5 means no limit",
        ),
        (
            "modparam(\"mqueue\", \"mqueue_addmode\", 9)",
            15,
            "addmode 9 means 0",
        ),
    ] {
        let body = format!("{params}\nmodparam(\"mqueue\", \"mqueue_name\", \"q\")\n{FILL}");
        check_same(&body, params, size, Some(warning));
    }
}

const FILL: &str = r#"event_route[core:worker-one-init] {
    $var(i) = 0;
    while ($var(i) < 15) { mq_add("q", "k", "v$var(i)"); $var(i) = $var(i) + 1; }
    xlog("L_INFO", "T|SIZE $mq_size(q)\n");
}
"#;

fn check_same(body: &str, what: &str, size: usize, warning: Option<&str>) {
    for imp in BOTH {
        let cfg = Cfg {
            body,
            ..Cfg::default()
        };
        let k = Kamailio::start(&cfg, imp);
        let lines = k.wait_marked("T|SIZE ", 1, std::time::Duration::from_secs(10));
        assert_eq!(lines, [size.to_string()], "{imp:?} {what}");
        if imp == Impl::Rust {
            let log = k.log();
            match warning {
                Some(w) => assert!(
                    log.contains(&format!("mqueue q: {w}")) && log.contains("WARNING"),
                    "{what}: no warning '{w}':\n{log}"
                ),
                None => assert!(!log.contains("mqueue q: "), "{what}: unexpected warning"),
            }
        }
    }
}

/// dbmode without db_url: the C module crashes while reading the
/// parameter; ours stops with an error naming the queue and db_url.
#[test]
fn dbmode_without_db_url_refused() {
    let (code, log) = refuse(
        Impl::Rust,
        r#"modparam("mqueue", "mqueue", "name=q;dbmode=1")"#,
    );
    assert!(
        code.is_some_and(|c| c != 0),
        "exit {code:?} (None: killed by a signal)\n{log}"
    );
    assert!(
        log.contains("mqueue q: dbmode=1 needs the db_url module parameter"),
        "{log}"
    );
    // What the C module does differs by version (5.6.3 dies with SIGSEGV):
    // recorded, not asserted.
    let cfg = Cfg {
        body: r#"modparam("mqueue", "mqueue", "name=q;dbmode=1")"#,
        ..Cfg::default()
    };
    let c = Kamailio::start_outcome(&cfg, Impl::C);
    eprintln!(
        "C module {:?}, dbmode=1 without db_url: {c}",
        common::host_version()
    );
}
