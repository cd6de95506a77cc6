//! Real databases for the persistence tests: a db_text directory, an SQLite
//! file and a PostgreSQL server started on loopback in a temp dir. Each
//! creates mqueue's tables (`id`, `key`, `val`) and reads rows back in `id`
//! order with its own client, not through Kamailio.

use std::fs;
use std::process::{Command, Stdio};

use super::{free_port, TempDir};

pub type Row = (String, String);

pub enum Db {
    Text(TempDir),
    Sqlite(TempDir),
    Postgres(PgServer),
}

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}: run `make deps`"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Db {
    pub fn text() -> Db {
        Db::Text(TempDir::new("dbtext"))
    }

    pub fn sqlite() -> Db {
        Db::Sqlite(TempDir::new("sqlite"))
    }

    pub fn postgres() -> Db {
        Db::Postgres(PgServer::start())
    }

    /// The Kamailio module that drives this database.
    pub fn module(&self) -> &'static str {
        match self {
            Db::Text(_) => "db_text.so",
            Db::Sqlite(_) => "db_sqlite.so",
            Db::Postgres(_) => "db_postgres.so",
        }
    }

    /// Whether another client sees changes while Kamailio runs (db_text
    /// writes its files only when Kamailio stops).
    pub fn live(&self) -> bool {
        !matches!(self, Db::Text(_))
    }

    pub fn url(&self) -> String {
        match self {
            Db::Text(d) => format!("text://{}", d.0.display()),
            // sqlite:// then the absolute path (its leading slash included).
            Db::Sqlite(d) => format!("sqlite:///{}/mq.db", d.0.display()),
            Db::Postgres(pg) => format!("postgres://postgres:x@127.0.0.1:{}/mq", pg.port),
        }
    }

    pub fn create_table(&self, name: &str) {
        match self {
            // db_text writes an empty string as an empty field, which
            // reads back as NULL: the columns must allow it.
            Db::Text(d) => fs::write(d.0.join(name), "id(int,auto) key(str,null) val(str,null)\n")
                .expect("db_text table"),
            Db::Sqlite(_) => {
                self.sql(&format!(
                    "CREATE TABLE {name} (id INTEGER PRIMARY KEY AUTOINCREMENT, \
                     key VARCHAR(255) NOT NULL DEFAULT '', val TEXT NOT NULL DEFAULT '');"
                ));
            }
            // VARCHAR, not TEXT: db_postgres reads TEXT as an escaped
            // blob and drops backslashes.
            Db::Postgres(_) => {
                self.sql(&format!(
                    "CREATE TABLE {name} (id SERIAL PRIMARY KEY, \
                     key VARCHAR NOT NULL DEFAULT '', val VARCHAR NOT NULL DEFAULT '');"
                ));
            }
        }
    }

    /// Inserts rows with the database's own client.
    pub fn insert(&self, table: &str, rows: &[(&str, &str)]) {
        match self {
            Db::Text(d) => {
                let path = d.0.join(table);
                let mut text = fs::read_to_string(&path).expect("db_text table");
                let next = text.lines().count();
                for (i, (k, v)) in rows.iter().enumerate() {
                    text.push_str(&format!("{}:{k}:{v}\n", next + i));
                }
                fs::write(path, text).expect("db_text rows");
            }
            _ => {
                for (k, v) in rows {
                    self.sql(&format!(
                        "INSERT INTO {table} (key, val) VALUES ('{}', '{}');",
                        k.replace('\'', "''"),
                        v.replace('\'', "''")
                    ));
                }
            }
        }
    }

    /// The rows of a table in `id` order.
    pub fn rows(&self, table: &str) -> Vec<Row> {
        match self {
            Db::Text(d) => {
                let text = fs::read_to_string(d.0.join(table)).expect("db_text table");
                let mut rows: Vec<(u64, Row)> =
                    text.lines().skip(1).map(parse_dbtext_row).collect();
                rows.sort_by_key(|(id, _)| *id);
                rows.into_iter().map(|(_, r)| r).collect()
            }
            Db::Sqlite(_) | Db::Postgres(_) => {
                // Hex keeps any byte intact through the client's output.
                let q = match self {
                    Db::Sqlite(_) => {
                        format!("SELECT hex(key) || ' ' || hex(val) FROM {table} ORDER BY id;")
                    }
                    _ => format!(
                        "SELECT encode(convert_to(key,'UTF8'),'hex') || ' ' || \
                         encode(convert_to(val,'UTF8'),'hex') FROM {table} ORDER BY id;"
                    ),
                };
                self.sql(&q)
                    .lines()
                    .filter(|l| !l.is_empty())
                    .map(|l| {
                        let (k, v) = l.split_once(' ').unwrap_or((l, ""));
                        (unhex(k), unhex(v))
                    })
                    .collect()
            }
        }
    }

    pub fn sql(&self, q: &str) -> String {
        match self {
            Db::Sqlite(d) => run(
                Command::new("sqlite3").arg(d.0.join("mq.db")).arg(q),
                "sqlite3 (package sqlite3)",
            ),
            Db::Postgres(pg) => pg.psql(q),
            Db::Text(_) => unreachable!("db_text has no SQL client"),
        }
    }
}

fn unhex(h: &str) -> String {
    let bytes: Vec<u8> = (0..h.len() / 2)
        .map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).expect("hex"))
        .collect();
    String::from_utf8(bytes).expect("utf-8")
}

/// A db_text row `id:key:val`, with db_text's escapes (`\:`, `\\`, `\n`...).
fn parse_dbtext_row(line: &str) -> (u64, Row) {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('n') => fields.last_mut().unwrap().push('\n'),
                Some('r') => fields.last_mut().unwrap().push('\r'),
                Some('t') => fields.last_mut().unwrap().push('\t'),
                Some('0') => fields.last_mut().unwrap().push('\0'),
                Some(o) => fields.last_mut().unwrap().push(o),
                None => {}
            },
            ':' => fields.push(String::new()),
            c => fields.last_mut().unwrap().push(c),
        }
    }
    assert_eq!(fields.len(), 3, "db_text row: {line}");
    let id = fields[0].parse().expect("db_text id");
    (id, (fields[1].clone(), fields[2].clone()))
}

/// A PostgreSQL server of its own, on 127.0.0.1 and a free port, with a
/// database `mq`; stopped on drop.
pub struct PgServer {
    dir: TempDir,
    pub port: u16,
}

fn pg_bin(tool: &str) -> String {
    let base = "/usr/lib/postgresql";
    let mut versions: Vec<_> = fs::read_dir(base)
        .unwrap_or_else(|_| panic!("{base} missing: run `make deps` (package postgresql)"))
        .flatten()
        .map(|e| e.path())
        .collect();
    versions.sort();
    let bin = versions
        .last()
        .expect("a PostgreSQL version")
        .join("bin")
        .join(tool);
    bin.display().to_string()
}

/// Runs a PostgreSQL tool as the `postgres` user when we are root (the
/// server refuses to run as root).
fn as_pg(tool: &str) -> Command {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(pg_bin(tool));
        c
    } else {
        Command::new(pg_bin(tool))
    }
}

impl PgServer {
    fn start() -> PgServer {
        let dir = TempDir::new("pg");
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            run(
                Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(&dir.0),
                "chown",
            );
        }
        let data = dir.0.join("data");
        run(
            as_pg("initdb")
                .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "-D"])
                .arg(&data)
                .stdout(Stdio::null()),
            "initdb (package postgresql)",
        );
        let pg = PgServer {
            dir,
            port: free_port(),
        };
        pg.resume();
        let port = pg.port;
        run(
            Command::new(pg_bin("createdb")).args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                "postgres",
                "mq",
            ]),
            "createdb",
        );
        pg
    }

    fn ctl(&self, action: &str) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.0.display()
        );
        run(
            as_pg("pg_ctl")
                .args(["-w", "-m", "fast", "-D"])
                .arg(self.dir.0.join("data"))
                .args(["-o", &opts, "-l"])
                .arg(self.dir.0.join("pg.log"))
                .arg(action),
            "pg_ctl",
        );
    }

    /// Stops the server (the database becomes unreachable).
    pub fn pause(&self) {
        self.ctl("stop");
    }

    pub fn resume(&self) {
        self.ctl("start");
    }

    fn psql(&self, q: &str) -> String {
        run(
            Command::new(pg_bin("psql"))
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "postgres",
                ])
                .args([
                    "-d",
                    "mq",
                    "-X",
                    "-q",
                    "-A",
                    "-t",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-c",
                    q,
                ]),
            "psql",
        )
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = as_pg("pg_ctl")
            .args(["-m", "immediate", "-D"])
            .arg(self.dir.0.join("data"))
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
