//! Queues on Redis Streams, shared by every Kamailio instance configured
//! with the same URL: the stream `mqueue:<name>` read through a consumer
//! group, one consumer per instance and process. Each operation is one
//! round trip (a Lua script, see [`scripts`]), bounded by a timeout.
//!
//! Connections are process-local and opened on first use, so never before
//! the fork; a connection that fails is dropped and the next call opens a
//! new one, so a Redis that comes back is used again without a restart.
//! Nothing here depends on Kamailio.

mod scripts;

use std::collections::HashMap;
use std::time::Duration;

use redis::{Connection, RedisResult, Script, Value};

use crate::queue::AddMode;

/// One Redis queue as configured.
pub struct StreamSpec {
    /// The URL as written (for messages, without the password).
    pub shown_url: String,
    /// The server and database, as the key of this process's connections.
    server: String,
    info: redis::ConnectionInfo,
    pub stream: String,
    keys: String,
    stats: String,
    pub group: String,
    pub mode: AddMode,
    pub max_items: usize,
    pub claim_ms: u64,
}

/// Default `group` attribute.
pub const DEFAULT_GROUP: &str = "kamailio";
/// Default `claim_ms` attribute.
pub const DEFAULT_CLAIM_MS: u64 = 30_000;

/// The password in a URL, masked for logs.
fn masked(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_string(),
    }
}

impl StreamSpec {
    /// Checks the URL (`redis://[user:password@]host:port[/db]`).
    pub fn new(
        queue: &[u8],
        url: &str,
        group: &str,
        mode: AddMode,
        max_items: usize,
        claim_ms: u64,
    ) -> Result<StreamSpec, String> {
        let shown_url = masked(url);
        if !url.starts_with("redis://") {
            return Err(format!(
                "redis={shown_url}: the URL must start with redis://"
            ));
        }
        let info: redis::ConnectionInfo = redis::IntoConnectionInfo::into_connection_info(url)
            .map_err(|e| format!("redis={shown_url}: malformed URL ({e})"))?;
        // No CLIENT SETINFO round trips when connecting: opening a
        // connection must fit the call's time bound.
        let settings = info.redis_settings().clone().set_skip_set_lib_name();
        let info = info.set_redis_settings(settings);
        if group.is_empty() {
            return Err("group must not be empty".into());
        }
        // The name goes into Redis key names as it is.
        let name = std::str::from_utf8(queue)
            .map_err(|_| "a queue on redis needs a UTF-8 name".to_string())?;
        let server = format!("{:?}/{}", info.addr(), info.redis_settings().db());
        Ok(StreamSpec {
            shown_url,
            server,
            info,
            stream: format!("mqueue:{name}"),
            keys: format!("mqueue:{name}:keys"),
            stats: format!("mqueue:{name}:stats"),
            group: group.to_string(),
            mode,
            max_items,
            claim_ms,
        })
    }
}

/// A queued item: key and value.
pub type Item = (Vec<u8>, Vec<u8>);

/// An entry delivered to this process.
pub struct Delivered {
    pub id: String,
    pub key: Vec<u8>,
    pub val: Vec<u8>,
}

/// What an add did.
#[derive(Debug, PartialEq, Eq)]
pub enum Added {
    Added,
    /// addmode 1: the key is queued already.
    Kept,
}

/// The counters the scripts keep (see [`scripts`]), in the order shown:
/// the storage counters of the one counter table.
pub const COUNTERS: [&str; 7] = crate::queue::counters::STORAGE_NAMES;

/// The figures `mqueue.stats` shows for a Redis queue.
#[derive(Debug, Default)]
pub struct Figures {
    pub length: i64,
    pub pending: i64,
    pub consumers: i64,
    pub counters: Vec<(String, i64)>,
}

/// This process's connections, one per Redis server, and what every call
/// needs besides its connection.
pub struct Session {
    timeout: Duration,
    conns: HashMap<String, Connection>,
    ctx: Ctx,
}

/// The consumer name (unique per instance and process) and the scripts.
struct Ctx {
    consumer: String,
    add: Script,
    fetch: Script,
    clear: Script,
}

/// Why a start-up check failed.
#[derive(Debug)]
pub enum CheckError {
    /// No answer (down, refused, timed out): may come back later.
    Unreachable(String),
    /// An answer that will not change by waiting: a refused password, a
    /// key of another type.
    Refused(String),
}

fn classify(e: redis::RedisError) -> CheckError {
    let text = err_text(&e);
    if e.is_io_error() || e.is_timeout() || e.is_connection_refusal() || e.is_connection_dropped() {
        CheckError::Unreachable(text)
    } else {
        CheckError::Refused(text)
    }
}

fn err_text(e: &redis::RedisError) -> String {
    if e.is_timeout() {
        "Redis did not answer in time".into()
    } else if e.is_connection_refusal() {
        "Redis refuses connections (down?)".into()
    } else {
        e.to_string()
    }
}

impl Session {
    /// A session for consumer `consumer` (unique per instance and
    /// process) whose calls wait at most `timeout`.
    pub fn new(consumer: String, timeout: Duration) -> Session {
        Session {
            timeout,
            conns: HashMap::new(),
            ctx: Ctx {
                consumer,
                add: Script::new(scripts::ADD),
                fetch: Script::new(scripts::FETCH),
                clear: Script::new(scripts::CLEAR),
            },
        }
    }

    /// Runs `f` on the connection to the spec's server, opening it first
    /// if needed; a connection that failed is dropped. A missing consumer
    /// group (a new or restarted server) is created and `f` tried again.
    /// The whole call, opening included, waits at most the timeout.
    fn call<T>(
        &mut self,
        spec: &StreamSpec,
        mut f: impl FnMut(&mut Connection, &Ctx) -> RedisResult<T>,
    ) -> Result<T, String> {
        let shortened = !self.conns.contains_key(&spec.server);
        if shortened {
            let start = std::time::Instant::now();
            let conn = self.open(spec)?;
            // Opening (connect, handshake) used part of the budget.
            let left = self.timeout.saturating_sub(start.elapsed());
            if left < Duration::from_millis(1) {
                return Err("Redis did not answer in time".into());
            }
            conn.set_read_timeout(Some(left))
                .and_then(|()| conn.set_write_timeout(Some(left)))
                .map_err(|e| err_text(&e))?;
            self.conns.insert(spec.server.clone(), conn);
        }
        let Some(conn) = self.conns.get_mut(&spec.server) else {
            return Err("no connection".into());
        };
        let mut result = f(conn, &self.ctx);
        if let Err(e) = &result {
            if e.code() == Some("NOGROUP") {
                let created = create_group(conn, spec);
                result = created.and_then(|()| f(conn, &self.ctx));
            }
        }
        let keep = match &result {
            Ok(_) => true,
            // A reply error (WRONGTYPE, ...) leaves the connection usable;
            // a broken or timed-out one is dropped.
            Err(e) => {
                !(e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal())
            }
        };
        let restored = !shortened
            || conn
                .set_read_timeout(Some(self.timeout))
                .and_then(|()| conn.set_write_timeout(Some(self.timeout)))
                .is_ok();
        if !keep || !restored {
            self.conns.remove(&spec.server);
        }
        result.map_err(|e| err_text(&e))
    }

    fn open(&self, spec: &StreamSpec) -> Result<Connection, String> {
        self.open_raw(spec).map_err(|e| err_text(&e))
    }

    fn open_raw(&self, spec: &StreamSpec) -> RedisResult<Connection> {
        let client = redis::Client::open(spec.info.clone())?;
        let conn = client.get_connection_with_timeout(self.timeout)?;
        conn.set_read_timeout(Some(self.timeout))?;
        conn.set_write_timeout(Some(self.timeout))?;
        Ok(conn)
    }

    /// Checks the server at start, on a connection of its own that is
    /// closed again: reachable, the password accepted, the stream key a
    /// stream (or absent), the consumer group there.
    pub fn check(&self, spec: &StreamSpec) -> Result<(), CheckError> {
        let mut conn = self.open_raw(spec).map_err(classify)?;
        let kind: String = redis::cmd("TYPE")
            .arg(&spec.stream)
            .query(&mut conn)
            .map_err(classify)?;
        if kind != "stream" && kind != "none" {
            return Err(CheckError::Refused(format!(
                "key {} holds a {kind}, not a stream",
                spec.stream
            )));
        }
        create_group(&mut conn, spec).map_err(classify)
    }

    /// Adds an entry, acknowledged by the server when this returns Ok.
    pub fn add(&mut self, spec: &StreamSpec, key: &[u8], val: &[u8]) -> Result<Added, String> {
        let r: i64 = self.call(spec, |c, x| {
            x.add
                .key(&spec.stream)
                .key(&spec.keys)
                .key(&spec.stats)
                .arg(spec.mode.as_int())
                .arg(spec.max_items)
                .arg(key)
                .arg(val)
                .invoke(c)
        })?;
        Ok(if r == 2 { Added::Kept } else { Added::Added })
    }

    /// Acknowledges `held` (the entry this process fetched last, if any)
    /// and delivers the next entry, if any.
    pub fn fetch(
        &mut self,
        spec: &StreamSpec,
        held: Option<&str>,
    ) -> Result<Option<Delivered>, String> {
        self.fetch_script(spec, held, "fetch")
    }

    /// Acknowledges and deletes `held`.
    pub fn ack(&mut self, spec: &StreamSpec, held: &str) -> Result<(), String> {
        self.fetch_script(spec, Some(held), "ack").map(|_| ())
    }

    fn fetch_script(
        &mut self,
        spec: &StreamSpec,
        held: Option<&str>,
        what: &str,
    ) -> Result<Option<Delivered>, String> {
        let v: Value = self.call(spec, |c, x| {
            x.fetch
                .key(&spec.stream)
                .key(&spec.keys)
                .key(&spec.stats)
                .arg(&spec.group)
                .arg(&x.consumer)
                .arg(held.unwrap_or(""))
                .arg(spec.mode.as_int())
                .arg(spec.claim_ms)
                .arg(what)
                .invoke(c)
        })?;
        match v {
            Value::Array(items) if items.len() == 3 => {
                let mut it = items.into_iter().map(bytes_of);
                let (id, key, val) = (it.next(), it.next(), it.next());
                match (id, key, val) {
                    (Some(Some(id)), Some(Some(key)), Some(Some(val))) => Ok(Some(Delivered {
                        id: String::from_utf8_lossy(&id).into_owned(),
                        key,
                        val,
                    })),
                    _ => Err("unexpected reply to the fetch script".into()),
                }
            }
            Value::Nil | Value::Boolean(false) => Ok(None),
            other => Err(format!("unexpected reply to the fetch script: {other:?}")),
        }
    }

    /// Entries in the stream not yet acknowledged (`XLEN`).
    pub fn len(&mut self, spec: &StreamSpec) -> Result<usize, String> {
        self.call(spec, |c, _| redis::cmd("XLEN").arg(&spec.stream).query(c))
    }

    /// Drops every entry; returns how many there were.
    pub fn clear(&mut self, spec: &StreamSpec) -> Result<usize, String> {
        self.call(spec, |c, x| {
            x.clear
                .key(&spec.stream)
                .key(&spec.keys)
                .key(&spec.stats)
                .invoke(c)
        })
    }

    /// Up to `n` entries from the oldest on, delivered or not, not removed.
    pub fn peek(&mut self, spec: &StreamSpec, n: usize) -> Result<Vec<Item>, String> {
        let v: Value = self.call(spec, |c, _| {
            redis::cmd("XRANGE")
                .arg(&spec.stream)
                .arg("-")
                .arg("+")
                .arg("COUNT")
                .arg(n.max(1))
                .query(c)
        })?;
        let mut out = Vec::new();
        if let Value::Array(entries) = v {
            for e in entries.into_iter().take(n) {
                if let Some((k, v)) = entry_fields(e) {
                    out.push((k, v));
                }
            }
        }
        Ok(out)
    }

    /// Length, pending entries, consumers of the group, and the counters.
    pub fn figures(&mut self, spec: &StreamSpec) -> Result<Figures, String> {
        let (length, pending, groups, counters): (i64, Value, Value, HashMap<String, i64>) =
            self.call(spec, |c, _| {
                redis::pipe()
                    .cmd("XLEN")
                    .arg(&spec.stream)
                    .cmd("XPENDING")
                    .arg(&spec.stream)
                    .arg(&spec.group)
                    .cmd("XINFO")
                    .arg("GROUPS")
                    .arg(&spec.stream)
                    .cmd("HGETALL")
                    .arg(&spec.stats)
                    .query(c)
            })?;
        let pending = match pending {
            Value::Array(v) => v.first().and_then(int_of).unwrap_or(0),
            _ => 0,
        };
        let consumers = group_field(&groups, &spec.group, "consumers").unwrap_or(0);
        let counters = COUNTERS
            .iter()
            .map(|&n| (n.to_string(), counters.get(n).copied().unwrap_or(0)))
            .collect();
        Ok(Figures {
            length,
            pending,
            consumers,
            counters,
        })
    }

    /// At shutdown: acknowledges what the consumers whose names start with
    /// `prefix` (this instance's processes, all exited) still hold, and
    /// removes them from the group. Returns how many entries.
    pub fn release_consumers(&mut self, spec: &StreamSpec, prefix: &str) -> Result<usize, String> {
        let consumers: Value = self.call(spec, |c, _| {
            redis::cmd("XINFO")
                .arg("CONSUMERS")
                .arg(&spec.stream)
                .arg(&spec.group)
                .query(c)
        })?;
        let mut names = Vec::new();
        if let Value::Array(list) = consumers {
            for c in list {
                if let Some(name) = map_field(&c, "name").and_then(bytes_of) {
                    let name = String::from_utf8_lossy(&name).into_owned();
                    if name.starts_with(prefix) {
                        names.push(name);
                    }
                }
            }
        }
        let mut released = 0;
        for name in names {
            let ids: Value = self.call(spec, |c, _| {
                redis::cmd("XPENDING")
                    .arg(&spec.stream)
                    .arg(&spec.group)
                    .arg("-")
                    .arg("+")
                    .arg(10_000)
                    .arg(&name)
                    .query(c)
            })?;
            if let Value::Array(list) = ids {
                for p in list {
                    if let Value::Array(f) = p {
                        if let Some(id) = f.into_iter().next().and_then(bytes_of) {
                            self.ack(spec, &String::from_utf8_lossy(&id))?;
                            released += 1;
                        }
                    }
                }
            }
            let _: i64 = self.call(spec, |c, _| {
                redis::cmd("XGROUP")
                    .arg("DELCONSUMER")
                    .arg(&spec.stream)
                    .arg(&spec.group)
                    .arg(&name)
                    .query(c)
            })?;
        }
        Ok(released)
    }
}

fn create_group(c: &mut Connection, spec: &StreamSpec) -> RedisResult<()> {
    let r: RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&spec.stream)
        .arg(&spec.group)
        .arg("0")
        .arg("MKSTREAM")
        .query(c);
    match r {
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        other => other,
    }
}

fn bytes_of(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        Value::Int(n) => Some(n.to_string().into_bytes()),
        _ => None,
    }
}

fn int_of(v: &Value) -> Option<i64> {
    match v {
        Value::Int(n) => Some(*n),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
}

/// A field of a reply that is a flat name/value array (RESP2) or a map.
fn map_field(v: &Value, name: &str) -> Option<Value> {
    match v {
        Value::Array(items) => items
            .chunks(2)
            .find(|kv| kv.len() == 2 && kv_name(&kv[0]) == Some(name))
            .map(|kv| kv[1].clone()),
        Value::Map(pairs) => pairs
            .iter()
            .find(|(k, _)| kv_name(k) == Some(name))
            .map(|(_, v)| v.clone()),
        _ => None,
    }
}

fn kv_name(v: &Value) -> Option<&str> {
    match v {
        Value::BulkString(b) => std::str::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}

/// A field of the `XINFO GROUPS` entry of `group`.
fn group_field(groups: &Value, group: &str, field: &str) -> Option<i64> {
    let Value::Array(list) = groups else {
        return None;
    };
    list.iter()
        .find(|g| map_field(g, "name").and_then(bytes_of).as_deref() == Some(group.as_bytes()))
        .and_then(|g| map_field(g, field))
        .and_then(|v| int_of(&v))
}

/// Key and value of an `XRANGE` entry (`[id, [k, key, v, val]]`).
fn entry_fields(e: Value) -> Option<Item> {
    let Value::Array(mut parts) = e else {
        return None;
    };
    let Value::Array(fields) = parts.pop()? else {
        return None;
    };
    let (mut key, mut val) = (Vec::new(), Vec::new());
    let mut it = fields.into_iter();
    while let (Some(n), Some(v)) = (it.next(), it.next()) {
        match kv_name(&n) {
            Some("k") => key = bytes_of(v).unwrap_or_default(),
            Some("v") => val = bytes_of(v).unwrap_or_default(),
            _ => {}
        }
    }
    Some((key, val))
}
