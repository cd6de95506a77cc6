//! Bad configuration stops Kamailio at start with an error naming the
//! problem; the two inputs that crash or mislead the C module are refused
//! cleanly by ours.

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

/// The C module silently reads "ten" as 0 (unbounded) and addmode 7 as 0;
/// ours refuses the typo instead of running with another meaning.
#[test]
fn non_numeric_and_out_of_range_attributes_refused() {
    for (params, why) in [
        (
            r#"modparam("mqueue", "mqueue", "name=q;size=ten")"#,
            "attribute size: not a number",
        ),
        (
            r#"modparam("mqueue", "mqueue", "name=q;addmode=7")"#,
            "addmode must be 0, 1 or 2",
        ),
        (
            r#"modparam("mqueue", "mqueue_addmode", 5)"#,
            "mqueue_addmode",
        ),
    ] {
        let (code, log) = refuse(Impl::Rust, params);
        assert!(
            code.is_some_and(|c| c != 0),
            "{params}: exit {code:?}\n{log}"
        );
        assert!(log.contains(why), "no '{why}':\n{log}");
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
    // The C module of Kamailio 5.6.3 dies with SIGSEGV here (a C bug we fix).
    let (c_code, c_log) = refuse(
        Impl::C,
        r#"modparam("mqueue", "mqueue", "name=q;dbmode=1")"#,
    );
    assert_eq!(c_code, None, "the C module was expected to crash:\n{c_log}");
}
