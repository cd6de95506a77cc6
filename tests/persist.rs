//! DB persistence (`db_url`, `dbmode`) against real databases: db_text,
//! SQLite and a PostgreSQL server on loopback. Kamailio is stopped with
//! items queued, the rows are read with the database's own client, and a
//! restart brings every item back in order. Where the C module can run the
//! scenario (SQLite, PostgreSQL; no empty keys or values, which crash it)
//! it must leave the same rows and give the same items back.

mod common;

use common::db::{Db, Row};
use std::time::Duration;

use common::{Cfg, Impl, Kamailio};

/// Items with quotes, separators, UTF-8 and a 4 KB value; `empty` adds an
/// empty key and an empty value.
fn items(empty: bool) -> Vec<Row> {
    let big: String = (0..256).map(|i| format!("{:016x}", i * 7919)).collect();
    let mut v: Vec<Row> = vec![
        ("k1".into(), "plain".into()),
        ("quote'k".into(), r#"it's "quoted" \ back"#.into()),
        ("utf8-ключ".into(), "ünïcødé € 🚀".into()),
        ("colon:k".into(), "a:b,c;d|e".into()),
        ("big".into(), big),
    ];
    if empty {
        v.push(("".into(), "empty key".into()));
        v.push(("empty-val".into(), "".into()));
    }
    v.push(("last".into(), "z".into()));
    v
}

/// Cfg string literal of `s`.
fn lit(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn body(db: &Db, items: &[Row]) -> String {
    let mut adds = String::new();
    for (k, v) in items {
        adds.push_str(&format!("        mq_add(\"q\", {}, {});\n", lit(k), lit(v)));
    }
    format!(
        r#"modparam("mqueue", "db_url", "{url}")
modparam("mqueue", "mqueue", "name=q;dbmode=1")
modparam("mqueue", "mqueue", "name=ld;dbmode=2")
modparam("mqueue", "mqueue", "name=sv;dbmode=3")
event_route[core:worker-one-init] {{
    if (mq_size("q") == 0) {{
{adds}        mq_add("sv", "s1", "v1");
    }}
    xlog("L_INFO", "T|READY\n");
}}
"#,
        url = db.url()
    )
}

/// What one module leaves in the database and gives back over a restart.
#[derive(Debug, PartialEq)]
struct Outcome {
    sizes_first: Vec<String>,
    ld_after_load: Option<Vec<Row>>,
    rows_at_stop: Vec<Vec<Row>>,
    sizes_second: Vec<String>,
    q_after_reload: Option<Vec<Row>>,
    fetched: Vec<Row>,
    rows_at_second_stop: Vec<Vec<Row>>,
}

fn scenario(db: &Db, imp: Impl, items: &[Row], late_db_module: bool) -> Outcome {
    for t in ["q", "ld", "sv"] {
        db.create_table(t);
    }
    db.insert("ld", &[("l1", "a"), ("l2", "b")]);
    db.insert("sv", &[("old", "row")]);
    let body = body(db, items);
    let module = [db.module()];
    let cfg = Cfg {
        modules: if late_db_module { &[] } else { &module },
        late_modules: if late_db_module { &module } else { &[] },
        body: &body,
        ..Cfg::default()
    };
    let tables = |db: &Db| ["q", "ld", "sv"].map(|t| squash(db.rows(t))).to_vec();
    let sizes = |k: &Kamailio| {
        ["q", "ld", "sv"]
            .map(|t| k.queue_size(t).to_string())
            .to_vec()
    };

    let k = Kamailio::start(&cfg, imp);
    assert_eq!(
        k.wait_marked("T|", 1, Duration::from_secs(10)),
        ["READY"],
        "{}",
        k.log()
    );
    let sizes_first = sizes(&k);
    let ld_after_load = db.live().then(|| db.rows("ld"));
    let mut k = k;
    k.stop();
    let rows_at_stop = tables(db);
    let mut k = k.restart();
    assert_eq!(
        k.wait_marked("T|", 2, Duration::from_secs(10)).len(),
        2,
        "{}",
        k.log()
    );
    let sizes_second = sizes(&k);
    let q_after_reload = db.live().then(|| db.rows("q"));
    let fetched = squash(k.drain("q"));
    k.stop();
    let rows_at_second_stop = tables(db);
    Outcome {
        sizes_first,
        ld_after_load,
        rows_at_stop,
        sizes_second,
        q_after_reload,
        fetched,
        rows_at_second_stop,
    }
}

/// Long values shown as length and hash, so a failing comparison stays
/// readable.
fn squash(rows: Vec<Row>) -> Vec<Row> {
    rows.into_iter()
        .map(|(k, v)| {
            if v.len() <= 64 {
                return (k, v);
            }
            let h = v.bytes().fold(0xcbf29ce484222325u64, |h, b| {
                (h ^ b as u64).wrapping_mul(0x100000001b3)
            });
            (k, format!("<{} bytes, fnv {h:016x}>", v.len()))
        })
        .collect()
}

fn expected(db: &Db, items: &[Row]) -> Outcome {
    let items = squash(items.to_vec());
    let items = &items[..];
    let row = |k: &str, v: &str| (k.to_string(), v.to_string());
    Outcome {
        sizes_first: vec![items.len().to_string(), "2".into(), "1".into()],
        ld_after_load: db.live().then(Vec::new),
        rows_at_stop: vec![
            items.to_vec(),
            vec![],
            vec![row("old", "row"), row("s1", "v1")],
        ],
        sizes_second: vec![items.len().to_string(), "0".into(), "0".into()],
        q_after_reload: db.live().then(Vec::new),
        fetched: items.to_vec(),
        rows_at_second_stop: vec![vec![], vec![], vec![row("old", "row"), row("s1", "v1")]],
    }
}

fn check(db: fn() -> Db, late: bool) {
    let items = items(true);
    let db = db();
    let got = scenario(&db, Impl::Rust, &items, late);
    assert_eq!(got, expected(&db, &items));
}

#[test]
fn db_text_round_trip_with_db_module_loaded_after_mqueue() {
    check(Db::text, true);
}

#[test]
fn db_text_round_trip() {
    check(Db::text, false);
}

#[test]
fn sqlite_round_trip() {
    check(Db::sqlite, false);
}

#[test]
fn postgres_round_trip() {
    check(Db::postgres, true);
}

/// Without empty keys or values (they crash the C module's save), both
/// modules leave the same rows and give back the same items.
#[test]
fn same_rows_and_items_as_the_c_module() {
    let items = items(false);
    for db in [Db::sqlite as fn() -> Db, Db::postgres] {
        let mut outcomes = Vec::new();
        for imp in [Impl::Rust, Impl::C] {
            let db = db();
            outcomes.push(scenario(&db, imp, &items, false));
        }
        assert_eq!(outcomes[0], outcomes[1], "Rust vs C");
    }
}

/// The database is down at start and at shutdown: Kamailio serves anyway,
/// the rows stay in the table, the queued items go to a spill file in the
/// runtime directory, and the next start (database back) loads both, the
/// older rows first.
#[test]
fn unreachable_database_loses_nothing() {
    let db = Db::postgres();
    let Db::Postgres(pg) = &db else {
        unreachable!()
    };
    db.create_table("q");
    db.insert("q", &[("r1", "from-db")]);
    pg.pause();
    let body = format!(
        r#"modparam("mqueue", "db_url", "{}")
modparam("mqueue", "mqueue", "name=q;dbmode=1")
event_route[core:worker-one-init] {{
    if (mq_size("q") == 0) {{
        mq_add("q", "a", "1");
        mq_add("q", "b", "2");
    }}
    xlog("L_INFO", "T|READY\n");
}}
"#,
        db.url()
    );
    let cfg = Cfg {
        modules: &["db_postgres.so"],
        body: &body,
        ..Cfg::default()
    };
    let mut k = Kamailio::start(&cfg, Impl::Rust);
    assert_eq!(
        k.wait_marked("T|", 1, Duration::from_secs(10)).len(),
        1,
        "{}",
        k.log()
    );
    assert!(
        k.log().contains("mqueue q: cannot load from the database"),
        "{}",
        k.log()
    );
    assert_eq!(k.queue_size("q"), 2);
    k.stop();
    let log = k.log();
    assert!(
        log.contains("mqueue q: cannot save to the database"),
        "{log}"
    );
    assert!(
        log.contains("2 items the database did not take are kept in"),
        "{log}"
    );
    assert!(k.dir.0.join("mqueue-q.spill").exists());

    pg.resume();
    assert_eq!(db.rows("q"), [("r1".to_string(), "from-db".to_string())]);
    let mut k = k.restart();
    assert_eq!(
        k.wait_marked("T|", 2, Duration::from_secs(10)).len(),
        2,
        "{}",
        k.log()
    );
    let got = k.drain("q");
    let want: Vec<Row> = [("r1", "from-db"), ("a", "1"), ("b", "2")]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(got, want);
    assert!(
        !k.dir.0.join("mqueue-q.spill").exists(),
        "spill file not removed"
    );
    assert!(db.rows("q").is_empty());
    k.stop();
}

/// db_text with dbmode 3 (save only), db_text loaded before and after
/// mqueue: ours saves every item on every Kamailio version. What the C
/// module does is recorded, not asserted (with db_text loaded after it,
/// db_text is destroyed before the C module's save).
#[test]
fn db_text_save_only_queue_on_every_version() {
    let rows: Vec<Row> = (1..=3)
        .map(|i| (format!("k{i}"), format!("v{i}")))
        .collect();
    for late in [false, true] {
        for imp in common::BOTH {
            let db = Db::text();
            db.create_table("sv");
            let body = format!(
                r#"modparam("mqueue", "db_url", "{}")
modparam("mqueue", "mqueue", "name=sv;dbmode=3")
event_route[core:worker-one-init] {{
    mq_add("sv", "k1", "v1"); mq_add("sv", "k2", "v2"); mq_add("sv", "k3", "v3");
    xlog("L_INFO", "T|READY\n");
}}
"#,
                db.url()
            );
            let module = ["db_text.so"];
            let cfg = Cfg {
                modules: if late { &[] } else { &module },
                late_modules: if late { &module } else { &[] },
                body: &body,
                ..Cfg::default()
            };
            let mut k = Kamailio::start(&cfg, imp);
            assert_eq!(
                k.wait_marked("T|READY", 1, Duration::from_secs(10)).len(),
                1
            );
            k.stop();
            let saved = db.rows("sv");
            let order = if late { "after" } else { "before" };
            if imp == Impl::Rust {
                assert_eq!(saved, rows, "db_text loaded {order} mqueue:\n{}", k.log());
            } else {
                let crashed = k.log().contains("SIGSEGV") || k.log().contains("segfault");
                eprintln!(
                    "C module {:?}, db_text loaded {order} mqueue, dbmode=3: saved {} of 3 items{}",
                    common::host_version(),
                    saved.len(),
                    if crashed { " (crashed)" } else { "" }
                );
            }
        }
    }
}
