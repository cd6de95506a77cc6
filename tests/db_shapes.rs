//! DB load against tables that do not look like our schema: ids that are
//! NULL, repeated or text, NULL keys and values, missing columns, missing
//! tables, a read-only database, 200,000 rows under `-M 8`. Every row is
//! loaded exactly once (integer ids in order, then the rest in storage
//! order), rows are deleted only once they are in the queue, and a table
//! that cannot be read or emptied stays as it was. Where the C module
//! loads the same table whole, it must give the same items.

mod common;

use common::db::Db;
use common::{wait_until, Cfg, Impl, Kamailio};
use std::time::{Duration, Instant};

/// (table, CREATE TABLE columns, rows as SQL VALUES lists for (id, key, val)
/// or (key, val)), and the items expected in the queue, in order.
struct Shape {
    name: &'static str,
    create: &'static str,
    fill: String,
    expect: Vec<(String, String)>,
}

fn seq(n: usize, key: &str) -> Vec<(String, String)> {
    (0..n).map(|i| (key.to_string(), format!("v{i}"))).collect()
}

/// SQLite tables the C module loads whole (no fetch: storage order).
fn c_loadable() -> Vec<Shape> {
    vec![
        Shape {
            name: "int_pk",
            create: "id INT PRIMARY KEY, key VARCHAR(64), val TEXT",
            fill: "INSERT INTO int_pk (key, val) VALUES ('a','v0'),('a','v1'),('a','v2');".into(),
            expect: seq(3, "a"),
        },
        Shape {
            name: "zero_ids",
            create: "id INTEGER NOT NULL DEFAULT 0, key VARCHAR(64), val TEXT",
            fill: "WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i+1 FROM c WHERE i < 1099) \
                   INSERT INTO zero_ids (key, val) SELECT 'z', 'v' || i FROM c;"
                .into(),
            expect: seq(1100, "z"),
        },
        Shape {
            name: "text_ids",
            create: "id TEXT, key VARCHAR(64), val TEXT",
            fill: "WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i+1 FROM c WHERE i < 1199) \
                   INSERT INTO text_ids (id, key, val) SELECT 'id-' || (1199 - i), 't', 'v' || i FROM c;"
                .into(),
            expect: seq(1200, "t"),
        },
        Shape {
            name: "no_id",
            create: "key VARCHAR(64), val TEXT",
            fill: "INSERT INTO no_id VALUES ('n','v0'),('n','v1');".into(),
            expect: seq(2, "n"),
        },
    ]
}

fn row(k: &str, v: &str) -> (String, String) {
    (k.into(), v.into())
}

/// Tables where ours does better than the C module.
fn ours_only() -> Vec<Shape> {
    vec![
        // Integer ids in order first, then NULL, real and text ids in
        // storage order.
        Shape {
            name: "mixed",
            create: "id, key VARCHAR(64), val TEXT",
            fill: "INSERT INTO mixed VALUES ('x','m','t1'),(3,'m','i3'),(NULL,'m','n1'),\
                   (1,'m','i1'),(2.5,'m','r1'),(2,'m','i2'),(-7,'m','i-7');"
                .into(),
            expect: ["i-7", "i1", "i2", "i3", "t1", "n1", "r1"]
                .iter()
                .map(|v| row("m", v))
                .collect(),
        },
        // The C module refuses NULL keys and values and loads half a table.
        Shape {
            name: "nulls",
            create: "id INTEGER PRIMARY KEY, key VARCHAR(64), val TEXT",
            fill: "INSERT INTO nulls (key, val) VALUES ('k1', NULL), (NULL, 'v2'), (NULL, NULL), ('k4', 'v4');"
                .into(),
            expect: vec![row("k1", ""), row("", "v2"), row("", ""), row("k4", "v4")],
        },
        // Numbers in the key or value columns read as their text.
        Shape {
            name: "numbers",
            create: "id INTEGER PRIMARY KEY, key INTEGER, val REAL",
            fill: "INSERT INTO numbers (key, val) VALUES (42, 1.5), (-1, 0);".into(),
            expect: vec![row("42", "1.5"), row("-1", "0")],
        },
    ]
}

fn create(db: &Db, s: &Shape) {
    db.sql(&format!("CREATE TABLE {} ({});", s.name, s.create));
    db.sql(&s.fill);
}

fn count(db: &Db, table: &str) -> usize {
    db.sql(&format!("SELECT count(*) FROM {table};"))
        .trim()
        .parse()
        .expect("count")
}

fn cfg_body(db: &Db, queues: &[&str], extra: &str) -> String {
    let mut body = format!("modparam(\"mqueue\", \"db_url\", \"{}\")\n", db.url());
    for q in queues {
        body.push_str(&format!(
            "modparam(\"mqueue\", \"mqueue\", \"name={q};dbmode=2\")\n"
        ));
    }
    body.push_str(extra);
    body
}

fn start(imp: Impl, body: &str, args: &[&str]) -> Kamailio {
    let cfg = Cfg {
        modules: &["db_sqlite.so"],
        body,
        ..Cfg::default()
    };
    Kamailio::start_with(&cfg, imp, args)
}

#[test]
fn sqlite_tables_of_any_shape_load_whole_once() {
    let db = Db::sqlite();
    let shapes: Vec<Shape> = c_loadable().into_iter().chain(ours_only()).collect();
    for s in &shapes {
        create(&db, s);
    }
    // A table without the val column, and a queue without a table.
    db.sql("CREATE TABLE no_val (id INTEGER PRIMARY KEY, key VARCHAR(64));");
    db.sql("INSERT INTO no_val (key) VALUES ('kept1'), ('kept2');");
    let mut names: Vec<&str> = shapes.iter().map(|s| s.name).collect();
    names.extend(["no_val", "absent"]);
    let started = Instant::now();
    let k = start(Impl::Rust, &cfg_body(&db, &names, ""), &[]);
    // A loader linear in the rows starts within seconds; the bound leaves
    // room for a busy machine, not for a quadratic one.
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "start-up took {:?}",
        started.elapsed()
    );
    for s in &shapes {
        let got = if s.expect.len() > 100 {
            // Faster than draining 1,000 items over RPC: size, then peek.
            assert_eq!(k.queue_size(s.name), s.expect.len(), "{}", s.name);
            let peek = k.rpc(&["mqueue.peek", s.name, "3"]).expect("peek");
            assert!(
                peek.contains("v0") && peek.contains("v2"),
                "{}: {peek}",
                s.name
            );
            Vec::new()
        } else {
            k.drain(s.name)
        };
        if s.expect.len() <= 100 {
            assert_eq!(got, s.expect, "table {}", s.name);
        }
        assert_eq!(count(&db, s.name), 0, "table {} emptied", s.name);
    }
    assert_eq!(k.queue_size("no_val"), 0);
    assert_eq!(count(&db, "no_val"), 2, "rows of a table without val stay");
    let log = k.log();
    assert!(
        log.contains("mqueue no_val: cannot load from the database"),
        "{log}"
    );
    assert!(log.contains("mqueue absent: cannot load from the database"));
}

#[test]
fn sqlite_shapes_same_as_the_c_module() {
    for imp in common::BOTH {
        let db = Db::sqlite();
        let shapes = c_loadable();
        for s in &shapes {
            create(&db, s);
        }
        let names: Vec<&str> = shapes.iter().map(|s| s.name).collect();
        let k = start(imp, &cfg_body(&db, &names, ""), &[]);
        for s in &shapes {
            // Every item, in storage order, checked through peek.
            let n = s.expect.len();
            assert_eq!(k.queue_size(s.name), n, "{imp:?} {}", s.name);
            let first = k.rpc(&["mqueue.fetch", s.name]).expect("fetch");
            assert_eq!(common::field(&first, "val"), "v0", "{imp:?} {}", s.name);
            assert_eq!(count(&db, s.name), 0, "{imp:?} table {} emptied", s.name);
        }
    }
}

#[test]
fn sqlite_read_only_database_keeps_its_rows() {
    let db = Db::sqlite();
    db.create_table("q");
    db.insert("q", &[("a", "1"), ("b", "2")]);
    let path = db.url().trim_start_matches("sqlite:///").to_string();
    let body = cfg_body(
        &db,
        &["q"],
        &format!("modparam(\"db_sqlite\", \"db_set_readonly\", \"{path}\")\n"),
    );
    let k = start(Impl::Rust, &body, &[]);
    assert_eq!(k.queue_size("q"), 0, "nothing loaded twice");
    assert_eq!(count(&db, "q"), 2, "rows stay");
    assert!(k
        .log()
        .contains("2 items read were dropped from the queue again"));
}

#[test]
fn sqlite_200k_rows_under_small_pkg_memory() {
    let db = Db::sqlite();
    db.create_table("big");
    db.sql(
        "WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i+1 FROM c WHERE i < 199999) \
         INSERT INTO big (key, val) SELECT 'k', printf('%06d', i) FROM c;",
    );
    // An rtimer consumer checks the order of every item in the script.
    let extra = r#"loadmodule "rtimer.so"
modparam("rtimer", "timer", "name=t;interval=1;mode=1")
modparam("rtimer", "exec", "timer=t;route=DRAIN")
route[DRAIN] {
    $var(n) = 0;
    while (mq_fetch("big")) {
        if ($(mqv(big){s.int}) != $shv(next)) { $shv(bad) = $shv(bad) + 1; }
        $shv(next) = $(mqv(big){s.int}) + 1;
        $var(n) = $var(n) + 1;
    }
    if ($var(n) > 0) { xlog("L_INFO", "T|DRAINED $shv(next) bad=$shv(bad)\n"); }
}
"#;
    let body = cfg_body(&db, &["big"], extra).replace("loadmodule \"rtimer.so\"\n", "");
    let cfg = Cfg {
        globals: "children=1\nmax_while_loops=1000000",
        modules: &["db_sqlite.so", "rtimer.so"],
        body: &format!("modparam(\"pv\", \"shvset\", \"next=i:0\")\nmodparam(\"pv\", \"shvset\", \"bad=i:0\")\n{body}"),
        ..Cfg::default()
    };
    let k = Kamailio::start_with(&cfg, Impl::Rust, &["-M", "8"]);
    let last = wait_until(Duration::from_secs(120), || {
        k.marked("T|DRAINED ")
            .pop()
            .filter(|l| l.starts_with("200000 "))
    });
    assert_eq!(
        last.as_deref(),
        Some("200000 bad=0"),
        "not drained: {:?}",
        k.marked("T|DRAINED ")
    );
    assert_eq!(count(&db, "big"), 0);
    assert!(k
        .log()
        .contains("mqueue big: loaded 200000 items from the database"));
}

/// PostgreSQL (a driver with fetch): NULL and repeated ids over more than
/// one fetch batch, ids out of insertion order, a table without an id.
#[test]
fn postgres_tables_of_any_shape() {
    let db = Db::postgres();
    db.sql("CREATE TABLE dup (id INT, key VARCHAR, val VARCHAR);");
    db.sql(
        "INSERT INTO dup (id, key, val) SELECT 0, 'd', 'v' || i FROM generate_series(0, 1099) i;",
    );
    db.sql("CREATE TABLE ord (id INT, key VARCHAR, val VARCHAR);");
    db.sql("INSERT INTO ord VALUES (3,'o','c'),(NULL,'o','z'),(1,'o','a'),(2,'o','b');");
    db.sql("CREATE TABLE noid (key VARCHAR, val VARCHAR);");
    db.sql("INSERT INTO noid VALUES ('n','1'),('n','2');");
    let body = cfg_body(&db, &["dup", "ord", "noid"], "");
    let cfg = Cfg {
        modules: &["db_postgres.so"],
        body: &body,
        ..Cfg::default()
    };
    let k = Kamailio::start(&cfg, Impl::Rust);
    assert_eq!(k.queue_size("dup"), 1100);
    assert_eq!(
        k.drain("ord"),
        vec![row("o", "a"), row("o", "b"), row("o", "c"), row("o", "z")]
    );
    assert_eq!(k.drain("noid").len(), 2);
    for t in ["dup", "ord", "noid"] {
        assert_eq!(count(&db, t), 0, "table {t} emptied");
    }
}

/// db_text (no fetch, its own ORDER BY): a table without `id` and a table
/// whose ids are partly NULL load whole; NULL key or value load as empty.
#[test]
fn db_text_tables_of_any_shape() {
    let dir = common::TempDir::new("dbtext-shapes");
    std::fs::write(dir.0.join("noid"), "key(str) val(str)\na:1\nb:2\n").unwrap();
    std::fs::write(
        dir.0.join("nullid"),
        "id(int,null) key(str,null) val(str,null)\n2:b:2\n:n:x\n1:a:\n",
    )
    .unwrap();
    let body = format!(
        "modparam(\"mqueue\", \"db_url\", \"text://{}\")\n\
         modparam(\"mqueue\", \"mqueue\", \"name=noid;dbmode=2\")\n\
         modparam(\"mqueue\", \"mqueue\", \"name=nullid;dbmode=2\")\n",
        dir.0.display()
    );
    let cfg = Cfg {
        modules: &["db_text.so"],
        body: &body,
        ..Cfg::default()
    };
    let k = Kamailio::start(&cfg, Impl::Rust);
    let mut noid = k.drain("noid");
    noid.sort();
    assert_eq!(noid, vec![row("a", "1"), row("b", "2")]);
    let nullid = k.drain("nullid");
    assert_eq!(nullid.len(), 3, "{nullid:?}");
    assert!(
        nullid.contains(&row("a", ""))
            && nullid.contains(&row("b", "2"))
            && nullid.contains(&row("n", "x"))
    );
}
