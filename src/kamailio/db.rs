//! Kamailio's generic DB API (`lib/srdb1`): bind a driver module by URL,
//! open a connection, read a table in order, insert and delete rows.
//! Used only in the main process (start-up load, shutdown save).

use std::borrow::Cow;
use std::ffi::CStr;
use std::os::raw::c_int;
use std::ptr::{null, null_mut};

use crate::kamailio::str::{as_bytes, from_bytes};
use crate::sys;

use sys::{DB_CAP_DELETE, DB_CAP_FETCH, DB_CAP_INSERT, DB_CAP_QUERY};
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

/// What a [`Conn::read_rows`] handed out and was taken.
pub struct Taken {
    pub rows: usize,
    /// Every row of the table was taken.
    pub all: bool,
}

/// The generic query itself failed (a missing column, for instance).
struct QueryFailed;

/// A quoted SQL identifier.
pub fn ident(b: &[u8]) -> String {
    format!("\"{}\"", String::from_utf8_lossy(b).replace('"', "\"\""))
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

/// `int db_bind_mod(const str *mod, db_func_t *dbf)` of srdb1.
type DbBindMod = unsafe extern "C" fn(*const sys::str_, *mut sys::db_func_t) -> c_int;

/// srdb1's `db_bind_mod`, found at run time: in the process (CMake builds
/// link srdb1 into the kamailio binary), else in the `libsrdb1.so` of the
/// Kamailio the module was built for (Makefile builds), opened here, so
/// the module needs no RUNPATH into Kamailio's private directory.
fn db_bind_mod() -> Result<DbBindMod, String> {
    let name = c"db_bind_mod";
    // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name.
    let mut sym = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    let lib = env!("MQUEUE_SRDB1");
    if sym.is_null() && !lib.is_empty() {
        let path = std::ffi::CString::new(lib).map_err(|_| "bad libsrdb1 path".to_string())?;
        // SAFETY: dlopen of Kamailio's own srdb1 library (already loaded
        // by the DB modules, which link it); the handle is never closed.
        let h = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
        if h.is_null() {
            return Err(format!("cannot load {lib}"));
        }
        // SAFETY: as above, on the library's handle.
        sym = unsafe { libc::dlsym(h, name.as_ptr()) };
    }
    if sym.is_null() {
        return Err("db_bind_mod not found (srdb1)".into());
    }
    // SAFETY: the symbol is srdb1's db_bind_mod, of this signature.
    Ok(unsafe { std::mem::transmute::<*mut libc::c_void, DbBindMod>(sym) })
}

impl Driver {
    /// Binds the driver module named by the URL's scheme (`db_bind_mod`).
    pub fn bind(url: &[u8]) -> Result<Driver, String> {
        let bind = db_bind_mod()?;
        let mut f = sys::db_func_t::default();
        let s = from_bytes(url);
        // SAFETY: `s` borrows `url` for the call; `f` is a plain struct the
        // core fills with function pointers of a loaded module.
        if unsafe { bind(&s, &mut f) } < 0 {
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

    /// A SQLite database (`sqlite:` URL), whose driver takes raw SQL.
    pub fn is_sqlite(&self) -> bool {
        self.url.starts_with(b"sqlite:") && self.f.raw_query.is_some()
    }
}

/// The text of a DB value: strings and blobs as they are, numbers in
/// decimal, NULL as empty, so that no row of an unexpected shape is lost.
///
/// # Safety
/// `v` comes from a result set that is still alive.
unsafe fn value_text<'a>(v: &sys::db_val_t) -> Result<Cow<'a, [u8]>, String> {
    if v.nul != 0 {
        return Ok(Cow::Borrowed(&[]));
    }
    // SAFETY: the union member read matches `type_`, as the DB API defines.
    unsafe {
        Ok(match v.type_ {
            sys::DB1_STR => Cow::Borrowed(as_bytes(&v.val.str_val)),
            sys::DB1_BLOB => Cow::Borrowed(as_bytes(&v.val.blob_val)),
            sys::DB1_STRING if v.val.string_val.is_null() => Cow::Borrowed(&[]),
            sys::DB1_STRING => Cow::Borrowed(CStr::from_ptr(v.val.string_val).to_bytes()),
            sys::DB1_INT => Cow::Owned(v.val.int_val.to_string().into_bytes()),
            sys::DB1_BIGINT => Cow::Owned(v.val.ll_val.to_string().into_bytes()),
            sys::DB1_UINT => Cow::Owned(v.val.int_val.cast_unsigned().to_string().into_bytes()),
            sys::DB1_UBIGINT => Cow::Owned(v.val.ll_val.cast_unsigned().to_string().into_bytes()),
            sys::DB1_DOUBLE => Cow::Owned(v.val.double_val.to_string().into_bytes()),
            t => return Err(format!("column type {t} cannot be read as text")),
        })
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

    /// The table in use.
    pub fn table(&self) -> &[u8] {
        &self.table.0
    }

    /// Reads every row of the table in use once, for a move into a queue:
    /// the columns `cols` as text, in `order` where that column gives one
    /// (rows without a usable value after the others). `row` returns false
    /// when it cannot take a row; the read stops there. Memory stays
    /// bounded where the driver has `fetch_result` (batches).
    pub fn read_rows(
        &mut self,
        cols: [&[u8]; 2],
        order: &[u8],
        mut row: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<Taken, String> {
        // Without an `order` column the rows still load, unordered, as
        // the C module loads them on drivers without fetch.
        match self.read_query(cols, Some(order), &mut row) {
            Ok(taken) => taken,
            Err(QueryFailed) => self.read_query(cols, None, &mut row).unwrap_or_else(|_| {
                Err("the query failed (does the table exist, with the columns key and val?)".into())
            }),
        }
    }

    /// Whether the database is SQLite, which takes raw SQL.
    pub fn is_sqlite(&self) -> bool {
        self.d.is_sqlite()
    }

    /// Runs a raw SQL query and walks its rows as [`Conn::read_rows`] does,
    /// the third column (if any) read as an integer; `first` numbers the
    /// first row in errors. Returns the rows `row` took and whether it
    /// refused one.
    pub fn raw_rows(
        &mut self,
        sql: &str,
        first: usize,
        row: impl FnMut(&[u8], &[u8], Option<i64>) -> bool,
    ) -> Result<(usize, bool), String> {
        let raw = self.d.f.raw_query.ok_or_else(|| missing("raw_query"))?;
        let s = from_bytes(sql.as_bytes());
        let mut res: *mut sys::db1_res_t = null_mut();
        // SAFETY: the statement lives for the call; the result is freed
        // below.
        if unsafe { raw(self.h, &s, &mut res) } < 0 {
            self.free(res);
            return Err("the query failed (does the table have the columns key and val?)".into());
        }
        let walked = self.rows(res, first, row);
        self.free(res);
        walked
    }

    /// Reads through the generic query, ordered when `order` is given.
    fn read_query(
        &mut self,
        cols: [&[u8]; 2],
        order: Option<&[u8]>,
        row: &mut impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<Result<Taken, String>, QueryFailed> {
        let f = &self.d.f;
        let Some(query) = f.query else {
            return Ok(Err(missing("query")));
        };
        let mut names = [from_bytes(cols[0]), from_bytes(cols[1])];
        let keys: [sys::db_key_t; 2] = [&mut names[0], &mut names[1]];
        let mut ord = order.map(from_bytes);
        let ord_ptr = ord.as_mut().map_or(null_mut(), |o| o as *mut sys::str_);
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
                ord_ptr,
                if fetch.is_some() {
                    null_mut()
                } else {
                    &mut res
                },
            )
        };
        if rc < 0 {
            return Err(QueryFailed);
        }
        let mut taken = Taken {
            rows: 0,
            all: false,
        };
        // fetch_result keeps its position in the result it is handed:
        // the same result goes back each time and is freed once, at the end.
        let outcome = loop {
            if let Some(fetch) = fetch {
                // SAFETY: fetch_result refills `res` with the next batch.
                if unsafe { fetch(self.h, &mut res, FETCH_ROWS) } < 0 {
                    break Err("fetching the result failed".into());
                }
            }
            let (n, stopped) = match self.rows(res, taken.rows, |k, v, _| row(k, v)) {
                Ok(w) => w,
                Err(e) => break Err(e),
            };
            taken.rows += n;
            if stopped {
                break Ok(());
            }
            if fetch.is_none() || n == 0 {
                taken.all = true;
                break Ok(());
            }
        };
        self.free(res);
        Ok(outcome.map(|()| taken))
    }

    /// Deletes the rows that [`Conn::read_rows`] handed out and that were
    /// taken: only when all were (the generic API cannot name the others).
    pub fn delete_taken(&mut self, taken: &Taken) -> Result<(), String> {
        if !taken.all {
            return Err("this DB driver cannot delete part of a table".into());
        }
        self.delete_all()
    }

    fn free(&self, res: *mut sys::db1_res_t) {
        if let (false, Some(free)) = (res.is_null(), self.d.f.free_result) {
            // SAFETY: res came from this connection's driver, freed once.
            unsafe { free(self.h, res) };
        }
    }

    /// Walks a result set: the first two columns as text, the third (if
    /// any) as an integer. Returns the rows `row` took and whether it
    /// refused one (which ends the walk).
    fn rows(
        &self,
        res: *mut sys::db1_res_t,
        first: usize,
        mut row: impl FnMut(&[u8], &[u8], Option<i64>) -> bool,
    ) -> Result<(usize, bool), String> {
        if res.is_null() {
            return Ok((0, false));
        }
        // SAFETY: res is a live result set of this connection.
        let r = unsafe { &*res };
        if r.n <= 0 || r.rows.is_null() {
            return Ok((0, false));
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
                let k = value_text(&vals[0]).map_err(|e| format!("row {}: {e}", first + i))?;
                let v = value_text(&vals[1]).map_err(|e| format!("row {}: {e}", first + i))?;
                (k, v, id)
            };
            if !row(&k, &v, id) {
                return Ok((i, true));
            }
        }
        Ok((rows.len(), false))
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

    /// Runs a raw SQL statement without result rows; false when it
    /// failed or the driver takes no raw SQL.
    pub fn raw(&mut self, sql: &[u8]) -> bool {
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
