//! Reading a queue's table for a load, in the C module's order (`id`),
//! and deleting what was taken. On SQLite, whose ids may hold anything,
//! the order is recorded first in a temporary table (integer ids first, by
//! id, then every other row in storage order), so that the rows can be
//! read in pages and the rows taken deleted by position, whatever the ids
//! hold. Other drivers go through the generic DB API
//! ([`Conn::read_rows`]).

use crate::kamailio::db::{ident, Conn, Taken};

/// The temporary table that holds a SQLite load order.
const SNAPSHOT: &str = "mqueue_load_order";
/// Rows read per SQLite page.
const PAGE_ROWS: usize = 1000;

/// A load from the table in use on `conn`; a SQLite snapshot is dropped
/// with it.
pub struct TableLoad<'c, 'd> {
    conn: &'c mut Conn<'d>,
    /// SQLite: the position of the last row taken from the snapshot.
    snapshot: Option<i64>,
}

impl<'c, 'd> TableLoad<'c, 'd> {
    pub fn new(conn: &'c mut Conn<'d>) -> Self {
        TableLoad {
            conn,
            snapshot: None,
        }
    }

    /// Hands every row (`cols` as text) to `row` in `order`, until `row`
    /// refuses one.
    pub fn read(
        &mut self,
        cols: [&[u8]; 2],
        order: &[u8],
        mut row: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<Taken, String> {
        if self.conn.is_sqlite() && self.record_sqlite_order(order) {
            return self.read_snapshot(cols, &mut row);
        }
        self.conn.read_rows(cols, order, row)
    }

    /// Deletes the rows [`TableLoad::read`] handed out and that were taken.
    pub fn delete_taken(&mut self, taken: &Taken) -> Result<(), String> {
        let Some(last) = self.snapshot else {
            return self.conn.delete_taken(taken);
        };
        let t = ident(self.conn.table());
        let sql = format!(
            "DELETE FROM {t} WHERE rowid IN (SELECT r FROM {SNAPSHOT} WHERE seq <= {last})"
        );
        if self.conn.raw(sql.as_bytes()) {
            Ok(())
        } else {
            Err("cannot delete the loaded rows".into())
        }
    }

    /// SQLite: records the load order in the snapshot table.
    fn record_sqlite_order(&mut self, order: &[u8]) -> bool {
        let (t, o) = (ident(self.conn.table()), ident(order));
        if !self.drop_snapshot()
            || !self.conn.raw(
                format!("CREATE TEMP TABLE {SNAPSHOT} (seq INTEGER PRIMARY KEY, r INTEGER)")
                    .as_bytes(),
            )
        {
            return false;
        }
        // Qualified column names: SQLite reads an unknown "name" alone as
        // a string literal, t."name" is an error.
        let by_id = format!(
            "INSERT INTO {SNAPSHOT} (r) SELECT t.rowid FROM {t} AS t ORDER BY \
             typeof(t.{o}) <> 'integer', CASE WHEN typeof(t.{o}) = 'integer' THEN t.{o} END, t.rowid"
        );
        let by_storage =
            format!("INSERT INTO {SNAPSHOT} (r) SELECT t.rowid FROM {t} AS t ORDER BY t.rowid");
        if self.conn.raw(by_id.as_bytes()) || self.conn.raw(by_storage.as_bytes()) {
            self.snapshot = Some(0);
            return true;
        }
        self.drop_snapshot();
        false
    }

    fn read_snapshot(
        &mut self,
        cols: [&[u8]; 2],
        row: &mut impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<Taken, String> {
        let (k, v, t) = (ident(cols[0]), ident(cols[1]), ident(self.conn.table()));
        let mut taken = Taken {
            rows: 0,
            all: false,
        };
        loop {
            let last = self.snapshot.unwrap_or(0);
            let sql = format!(
                "SELECT t.{k}, t.{v}, m.seq FROM {SNAPSHOT} AS m JOIN {t} AS t ON t.rowid = m.r \
                 WHERE m.seq > {last} ORDER BY m.seq LIMIT {PAGE_ROWS}"
            );
            let mut last_taken = None;
            let walked = self.conn.raw_rows(&sql, taken.rows, |k, v, seq| {
                let ok = row(k, v);
                if ok {
                    last_taken = seq;
                }
                ok
            });
            if last_taken.is_some() {
                self.snapshot = last_taken;
            }
            let (n, stopped) = walked?;
            taken.rows += n;
            if stopped {
                return Ok(taken);
            }
            if n < PAGE_ROWS {
                taken.all = true;
                return Ok(taken);
            }
        }
    }

    fn drop_snapshot(&mut self) -> bool {
        self.conn
            .raw(format!("DROP TABLE IF EXISTS temp.{SNAPSHOT}").as_bytes())
    }
}

impl Drop for TableLoad<'_, '_> {
    fn drop(&mut self) {
        if self.snapshot.is_some() {
            self.drop_snapshot();
        }
    }
}
