//! The config-script API (functions, return codes, variables, addmodes,
//! limits) driven through a real Kamailio, differentially: every scenario
//! runs on our module and on Debian's C module and must give the same lines,
//! which must also equal what the scenario expects.

mod common;

use std::time::Duration;

use common::{wait_until, Cfg, Impl, Kamailio, BOTH};

/// Runs `script` once in the first SIP worker and returns its `T|` lines.
fn run(imp: Impl, params: &str, script: &str) -> Vec<String> {
    let body = format!(
        "{params}\nevent_route[core:worker-one-init] {{\n{script}\nxlog(\"L_INFO\", \"T|END\\n\");\n}}\n"
    );
    let cfg = Cfg {
        body: &body,
        ..Cfg::default()
    };
    let k = Kamailio::start(&cfg, imp);
    let mut lines = wait_until(Duration::from_secs(15), || {
        let lines = k.marked("T|");
        lines.iter().any(|l| l == "END").then_some(lines)
    })
    .unwrap_or_else(|| panic!("{imp:?}: no END:\n{}", k.log()));
    lines.retain(|l| l != "END");
    lines
}

/// Asserts both modules print `expected`.
fn check(params: &str, script: &str, expected: &[&str]) {
    for imp in BOTH {
        let got = run(imp, params, script);
        assert_eq!(got, expected, "{imp:?} module gave other lines");
    }
}

#[test]
fn fifo_and_return_codes() {
    check(
        r#"modparam("mqueue", "mqueue", "name=q")"#,
        r#"
        mq_size("q"); xlog("L_INFO", "T|size-empty $rc $mq_size(q)\n");
        mq_add("q", "k1", "v1"); xlog("L_INFO", "T|add $rc\n");
        mq_add("q", "k2", "v2");
        mq_add("q", "k3", "v3");
        mq_size("q"); xlog("L_INFO", "T|size $rc $mq_size(q)\n");
        while(mq_fetch("q")) { xlog("L_INFO", "T|got $mqk(q)=$mqv(q)\n"); }
        mq_fetch("q"); xlog("L_INFO", "T|fetch-empty $rc\n");
        "#,
        &[
            "size-empty -1 0",
            "add 1",
            "size 3 3",
            "got k1=v1",
            "got k2=v2",
            "got k3=v3",
            "fetch-empty -2",
        ],
    );
}

#[test]
fn null_values() {
    check(
        r#"modparam("mqueue", "mqueue", "name=q")"#,
        r#"
        if($mqk(q) == $null) { xlog("L_INFO", "T|before-fetch null\n"); }
        mq_add("q", "k", "v");
        mq_fetch("q");
        xlog("L_INFO", "T|fetched $mqk(q) $mqv(q)\n");
        mq_pv_free("q"); xlog("L_INFO", "T|pv_free $rc\n");
        if($mqk(q) == $null && $mqv(q) == $null) { xlog("L_INFO", "T|after-free null\n"); }
        mq_add("q", "k", "v");
        mq_fetch("q");
        mq_fetch("q");
        if($mqk(q) == $null) { xlog("L_INFO", "T|after-empty-fetch null\n"); }
        "#,
        &[
            "before-fetch null",
            "fetched k v",
            "pv_free 1",
            "after-free null",
            "after-empty-fetch null",
        ],
    );
}

#[test]
fn empty_key_and_value() {
    check(
        r#"modparam("mqueue", "mqueue", "name=q")"#,
        r#"
        $var(e) = "";
        mq_add("q", "$var(e)", "v1"); xlog("L_INFO", "T|add-empty-key $rc\n");
        mq_add("q", "k2", "$var(e)"); xlog("L_INFO", "T|add-empty-val $rc\n");
        mq_fetch("q");
        if($mqk(q) == $null) { xlog("L_INFO", "T|empty key is null, val $mqv(q)\n"); }
        mq_fetch("q");
        if($mqv(q) == $null) { xlog("L_INFO", "T|empty val is null, key $mqk(q)\n"); }
        "#,
        &[
            "add-empty-key 1",
            "add-empty-val 1",
            "empty key is null, val v1",
            "empty val is null, key k2",
        ],
    );
}

#[test]
fn unique_keys_keep_oldest() {
    check(
        r#"modparam("mqueue", "mqueue", "name=u1;addmode=1")"#,
        r#"
        mq_add("u1", "a", "1"); mq_add("u1", "b", "1");
        mq_add("u1", "a", "2"); xlog("L_INFO", "T|dup-add $rc\n");
        xlog("L_INFO", "T|size $mq_size(u1)\n");
        while(mq_fetch("u1")) { xlog("L_INFO", "T|got $mqk(u1)=$mqv(u1)\n"); }
        mq_add("u1", "a", "3");
        mq_fetch("u1"); xlog("L_INFO", "T|after-fetch $mqk(u1)=$mqv(u1)\n");
        "#,
        &[
            "dup-add 1",
            "size 2",
            "got a=1",
            "got b=1",
            "after-fetch a=3",
        ],
    );
}

#[test]
fn unique_keys_keep_newest_at_tail() {
    check(
        r#"modparam("mqueue", "mqueue", "name=u2;addmode=2")"#,
        r#"
        mq_add("u2", "a", "1"); mq_add("u2", "b", "1"); mq_add("u2", "c", "1");
        mq_add("u2", "a", "2"); mq_add("u2", "c", "2"); mq_add("u2", "c", "3");
        xlog("L_INFO", "T|size $mq_size(u2)\n");
        while(mq_fetch("u2")) { xlog("L_INFO", "T|got $mqk(u2)=$mqv(u2)\n"); }
        "#,
        &["size 3", "got b=1", "got a=2", "got c=3"],
    );
}

#[test]
fn size_limit_evicts_oldest() {
    check(
        r#"modparam("mqueue", "mqueue", "name=s;size=3")
modparam("mqueue", "mqueue", "name=s2;size=2;addmode=2")"#,
        r#"
        $var(i) = 0;
        while($var(i) < 6) { mq_add("s", "k$var(i)", "v$var(i)"); $var(i) = $var(i) + 1; }
        xlog("L_INFO", "T|size $mq_size(s)\n");
        while(mq_fetch("s")) { xlog("L_INFO", "T|got $mqk(s)\n"); }
        mq_add("s2", "a", "1"); mq_add("s2", "b", "1"); mq_add("s2", "a", "2"); mq_add("s2", "c", "1");
        while(mq_fetch("s2")) { xlog("L_INFO", "T|s2 $mqk(s2)=$mqv(s2)\n"); }
        "#,
        &["size 3", "got k3", "got k4", "got k5", "s2 a=2", "s2 c=1"],
    );
}

#[test]
fn names_from_variables() {
    check(
        r#"modparam("mqueue", "mqueue", "name=qa")
modparam("mqueue", "mqueue", "name=qb")"#,
        r#"
        $var(q) = "qb";
        mq_add("$var(q)", "$var(q)-key", "val-$var(q)");
        mq_add("qa", "x", "y");
        xlog("L_INFO", "T|sizes $mq_size(qa) $mq_size($var(q))\n");
        mq_fetch("$var(q)");
        xlog("L_INFO", "T|got $mqk($var(q))=$mqv($var(q))\n");
        $var(q) = "qa";
        mq_fetch("$var(q)");
        xlog("L_INFO", "T|got $mqk($var(q))=$mqv($var(q))\n");
        "#,
        &["sizes 1 1", "got qb-key=val-qb", "got x=y"],
    );
}

#[test]
fn unknown_queue() {
    check(
        r#"modparam("mqueue", "mqueue", "name=q")"#,
        r#"
        $var(q) = "nope";
        mq_add("nope", "k", "v"); xlog("L_INFO", "T|add $rc\n");
        mq_add("$var(q)", "k", "v"); xlog("L_INFO", "T|add-var $rc\n");
        mq_fetch("nope"); xlog("L_INFO", "T|fetch $rc\n");
        mq_size("nope"); xlog("L_INFO", "T|size $rc\n");
        mq_pv_free("nope"); xlog("L_INFO", "T|pv_free $rc\n");
        $var(s) = $mq_size(nope);
        xlog("L_INFO", "T|pv-size [$var(s)]\n");
        "#,
        &[
            "add -1",
            "add-var -1",
            "fetch -1",
            "size -2",
            "pv_free 1",
            "pv-size [0]",
        ],
    );
}

#[test]
fn mqueue_name_with_default_size_and_addmode() {
    check(
        r#"modparam("mqueue", "mqueue_size", 2)
modparam("mqueue", "mqueue_addmode", 1)
modparam("mqueue", "mqueue_name", "n1")"#,
        r#"
        mq_add("n1", "a", "1"); mq_add("n1", "a", "2"); mq_add("n1", "b", "1"); mq_add("n1", "c", "1");
        while(mq_fetch("n1")) { xlog("L_INFO", "T|got $mqk(n1)=$mqv(n1)\n"); }
        "#,
        &["got b=1", "got c=1"],
    );
}
