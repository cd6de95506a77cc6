//! Kamailio's generic DB API (`lib/srdb1`): bind a driver module by URL,
//! open a connection, read a table in order, insert and delete rows.
//! Used only in the main process (start-up load, shutdown save).

use std::ptr::{null, null_mut};

use crate::kamailio::str::{as_bytes, from_bytes};
use crate::sys;

const DB_CAP_QUERY: u32 = 1 << 0;
const DB_CAP_INSERT: u32 = 1 << 2;
const DB_CAP_DELETE: u32 = 1 << 3;
const DB_CAP_FETCH: u32 = 1 << 6;
/// Rows asked for per `fetch_result` call.
const FETCH_ROWS: i32 = 1000;

/// A bound DB driver (`db_func_t`).
pub struct Driver {
    f: sys::db_func_t,
    url: Vec<u8>,
}

/// An open connection; closed on drop.
pub struct Conn<'d> {
    d: &'d Driver,
    h: *mut sys::db1_con_t,
    in_tx: Tx,
    /// The table name: the driver keeps the `str` pointer, not a copy, so
    /// both live as long as the connection.
    table: Box<(Vec<u8>, sys::str_)>,
}

#[derive(PartialEq)]
enum Tx {
    None,
    Api,
    Sql,
}

fn missing(what: &str) -> String {
    format!("the DB driver has no {what} function")
}

impl Driver {
    /// Binds the driver module named by the URL's scheme (`db_bind_mod`).
    pub fn bind(url: &[u8]) -> Result<Driver, String> {
        let mut f = sys::db_func_t::default();
        let s = from_bytes(url);
        // SAFETY: `s` borrows `url` for the call; `f` is a plain struct the
        // core fills with function pointers of a loaded module.
        if unsafe { sys::db_bind_mod(&s, &mut f) } < 0 {
            return Err("no DB module for db_url is loaded".into());
        }
        let need = DB_CAP_QUERY | DB_CAP_INSERT | DB_CAP_DELETE;
        if f.cap & need != need {
            return Err("the DB module cannot query, insert and delete".into());
        }
        Ok(Driver {
            f,
            url: url.to_vec(),
        })
    }

    /// Opens a connection.
    pub fn connect(&self) -> Result<Conn<'_>, String> {
        let init = self.f.init.ok_or_else(|| missing("init"))?;
        let s = from_bytes(&self.url);
        // SAFETY: init copies what it needs from the URL during the call.
        let h = unsafe { init(&s) };
        if h.is_null() {
            return Err("cannot connect to the database".into());
        }
        Ok(Conn {
            d: self,
            h,
            in_tx: Tx::None,
            table: Box::new((Vec::new(), from_bytes(&[]))),
        })
    }

    fn is_sqlite(&self) -> bool {
        self.url.starts_with(b"sqlite:")
    }
}

/// The bytes of a string-like DB value; NULL reads as empty.
///
/// # Safety
/// `v` comes from a result set that is still alive.
unsafe fn value_bytes<'a>(v: &sys::db_val_t) -> Result<&'a [u8], String> {
    if v.nul != 0 {
        return Ok(&[]);
    }
    // SAFETY: the union member read matches `type_`, as the DB API defines.
    unsafe {
        match v.type_ {
            sys::DB1_STR => Ok(as_bytes(&v.val.str_val)),
            sys::DB1_BLOB => Ok(as_bytes(&v.val.blob_val)),
            sys::DB1_STRING => {
                let p = v.val.string_val;
                if p.is_null() {
                    Ok(&[])
                } else {
                    Ok(std::ffi::CStr::from_ptr(p).to_bytes())
                }
            }
            t => Err(format!("column type {t} is not a string")),
        }
    }
}

fn str_val(bytes: &[u8]) -> sys::db_val_t {
    let mut v = sys::db_val_t {
        type_: sys::DB1_STR,
        nul: 0,
        free: 0,
        val: sys::db_val_t__bindgen_ty_1 { int_val: 0 },
    };
    v.val.str_val = from_bytes(bytes);
    v
}

impl Conn<'_> {
    pub fn use_table(&mut self, table: &[u8]) -> Result<(), String> {
        let f = self.d.f.use_table.ok_or_else(|| missing("use_table"))?;
        self.table.0 = table.to_vec();
        self.table.1 = from_bytes(&self.table.0);
        // SAFETY: the handle is open; the driver keeps the pointer to the
        // boxed str, which lives (unmoved) as long as the connection.
        if unsafe { f(self.h, &self.table.1) } < 0 {
            return Err("cannot use the table".into());
        }
        Ok(())
    }

    /// Calls `row` with the two string columns `cols` of every row, ordered
    /// by column `order`. Drivers with `fetch_result` deliver the rows in
    /// batches; SQLite (no fetch) is paged with `LIMIT`, so a large table
    /// never sits whole in pkg memory; other drivers return all at once.
    pub fn select(
        &mut self,
        cols: [&[u8]; 2],
        order: &[u8],
        mut row: impl FnMut(&[u8], &[u8]),
    ) -> Result<usize, String> {
        let f = &self.d.f;
        if f.cap & DB_CAP_FETCH == 0 && self.d.is_sqlite() && f.raw_query.is_some() {
            return self.select_paged(cols, order, row);
        }
        let query = f.query.ok_or_else(|| missing("query"))?;
        let mut names = [from_bytes(cols[0]), from_bytes(cols[1])];
        let keys: [sys::db_key_t; 2] = [&mut names[0], &mut names[1]];
        let mut ord = from_bytes(order);
        let fetch = f.fetch_result.filter(|_| f.cap & DB_CAP_FETCH != 0);
        let mut res: *mut sys::db1_res_t = null_mut();
        // SAFETY: keys and order point to strs alive for the call; with the
        // fetch capability the result is filled by fetch_result below.
        let rc = unsafe {
            query(
                self.h,
                null(),
                null(),
                null(),
                keys.as_ptr(),
                0,
                2,
                &mut ord,
                if fetch.is_some() {
                    null_mut()
                } else {
                    &mut res
                },
            )
        };
        if rc < 0 {
            return Err("the query failed".into());
        }
        let mut count = 0;
        loop {
            if let Some(fetch) = fetch {
                // SAFETY: fetch_result replaces `res` with the next batch.
                if unsafe { fetch(self.h, &mut res, FETCH_ROWS) } < 0 {
                    self.free(res);
                    return Err("fetching the result failed".into());
                }
            }
            let n = self.rows(res, count, |k, v, _| row(k, v));
            self.free(res);
            let n = n?;
            count += n;
            if fetch.is_none() || n == 0 {
                return Ok(count);
            }
        }
    }

    /// SQLite: `SELECT key, val, id ... WHERE id > last ORDER BY id LIMIT n`
    /// until a page comes back short.
    fn select_paged(
        &mut self,
        cols: [&[u8]; 2],
        order: &[u8],
        mut row: impl FnMut(&[u8], &[u8]),
    ) -> Result<usize, String> {
        let raw = self.d.f.raw_query.ok_or_else(|| missing("raw_query"))?;
        let ident = |b: &[u8]| format!("\"{}\"", String::from_utf8_lossy(b).replace('"', "\"\""));
        let (k, v, o, t) = (
            ident(cols[0]),
            ident(cols[1]),
            ident(order),
            ident(&self.table.0),
        );
        let mut last: i64 = i64::MIN;
        let mut count = 0;
        loop {
            let sql = format!(
                "SELECT {k}, {v}, {o} FROM {t} WHERE {o} > {last} ORDER BY {o} LIMIT {FETCH_ROWS}"
            );
            let s = from_bytes(sql.as_bytes());
            let mut res: *mut sys::db1_res_t = null_mut();
            // SAFETY: the statement lives for the call; the result is freed
            // below.
            if unsafe { raw(self.h, &s, &mut res) } < 0 {
                self.free(res);
                return Err("the query failed".into());
            }
            let n = self.rows(res, count, |k, v, id| {
                row(k, v);
                if let Some(id) = id {
                    last = id;
                }
            });
            self.free(res);
            let n = n?;
            count += n;
            if n < FETCH_ROWS as usize {
                return Ok(count);
            }
        }
    }

    fn free(&self, res: *mut sys::db1_res_t) {
        if let (false, Some(free)) = (res.is_null(), self.d.f.free_result) {
            // SAFETY: res came from this connection's driver, freed once.
            unsafe { free(self.h, res) };
        }
    }

    /// Walks a result set: the first two columns as strings, the third (if
    /// any) as an integer id. Returns the number of rows.
    fn rows(
        &self,
        res: *mut sys::db1_res_t,
        first: usize,
        mut row: impl FnMut(&[u8], &[u8], Option<i64>),
    ) -> Result<usize, String> {
        if res.is_null() {
            return Ok(0);
        }
        // SAFETY: res is a live result set of this connection.
        let r = unsafe { &*res };
        if r.n <= 0 || r.rows.is_null() {
            return Ok(0);
        }
        // SAFETY: the driver allocated r.n rows at r.rows.
        let rows = unsafe { std::slice::from_raw_parts(r.rows, r.n as usize) };
        for (i, dr) in rows.iter().enumerate() {
            if dr.n < 2 || dr.values.is_null() {
                return Err(format!("row {} has fewer than 2 columns", first + i));
            }
            // SAFETY: each row has dr.n values, read while the set is alive;
            // the union member read matches the value's type.
            let (k, v, id) = unsafe {
                let vals = std::slice::from_raw_parts(dr.values, dr.n as usize);
                let id = vals.get(2).and_then(|x| match x.type_ {
                    _ if x.nul != 0 => None,
                    sys::DB1_INT => Some(x.val.int_val as i64),
                    sys::DB1_BIGINT => Some(x.val.ll_val),
                    _ => None,
                });
                let k = value_bytes(&vals[0]).map_err(|e| format!("row {}: {e}", first + i))?;
                let v = value_bytes(&vals[1]).map_err(|e| format!("row {}: {e}", first + i))?;
                (k, v, id)
            };
            row(k, v, id);
        }
        Ok(rows.len())
    }

    /// Deletes every row of the table in use.
    pub fn delete_all(&mut self) -> Result<(), String> {
        let f = self.d.f.delete.ok_or_else(|| missing("delete"))?;
        // SAFETY: no filter arrays: the driver deletes all rows.
        if unsafe { f(self.h, null(), null(), null(), 0) } < 0 {
            return Err("cannot empty the table".into());
        }
        Ok(())
    }

    /// Inserts one row of two string columns.
    pub fn insert(&mut self, cols: [&[u8]; 2], vals: [&[u8]; 2]) -> Result<(), String> {
        let f = self.d.f.insert.ok_or_else(|| missing("insert"))?;
        let mut names = [from_bytes(cols[0]), from_bytes(cols[1])];
        let keys: [sys::db_key_t; 2] = [&mut names[0], &mut names[1]];
        let v = [str_val(vals[0]), str_val(vals[1])];
        // SAFETY: keys and values borrow live buffers for the call; the
        // driver copies or escapes them into its statement.
        if unsafe { f(self.h, keys.as_ptr(), v.as_ptr(), 2) } < 0 {
            return Err("insert failed".into());
        }
        Ok(())
    }

    fn raw(&mut self, sql: &[u8]) -> bool {
        let Some(f) = self.d.f.raw_query else {
            return false;
        };
        let s = from_bytes(sql);
        let mut res: *mut sys::db1_res_t = null_mut();
        // SAFETY: a statement without result rows; any result is freed.
        let rc = unsafe { f(self.h, &s, &mut res) };
        self.free(res);
        rc >= 0
    }

    /// Starts a transaction where the driver has one (many inserts then
    /// cost one commit); a no-op elsewhere.
    pub fn begin(&mut self) {
        if let Some(f) = self.d.f.start_transaction {
            // SAFETY: the handle is open; DB_LOCKING_NONE asks no table lock.
            if unsafe { f(self.h, 0) } >= 0 {
                self.in_tx = Tx::Api;
            }
        } else if self.d.is_sqlite() && self.raw(b"BEGIN") {
            self.in_tx = Tx::Sql;
        }
    }

    /// Commits what `begin` started.
    pub fn commit(&mut self) -> Result<(), String> {
        let ok = match self.in_tx {
            Tx::None => true,
            Tx::Api => match self.d.f.end_transaction {
                // SAFETY: a transaction is open on this handle.
                Some(f) => (unsafe { f(self.h) }) >= 0,
                None => false,
            },
            Tx::Sql => self.raw(b"COMMIT"),
        };
        self.in_tx = Tx::None;
        if ok {
            Ok(())
        } else {
            Err("commit failed".into())
        }
    }
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        if self.in_tx == Tx::Api {
            if let Some(f) = self.d.f.abort_transaction {
                // SAFETY: a transaction is open on this handle.
                unsafe { f(self.h) };
            }
        } else if self.in_tx == Tx::Sql {
            self.raw(b"ROLLBACK");
        }
        if let Some(close) = self.d.f.close {
            // SAFETY: the handle came from init and is closed once.
            unsafe { close(self.h) };
        }
    }
}
