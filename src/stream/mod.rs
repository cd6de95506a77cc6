//! Queues on Redis Streams, shared by every Kamailio instance configured
//! with the same URL: the stream `mqueue:{<name>}` read through a consumer
//! group, one consumer per instance and process. Each operation is one
//! round trip (a Lua script, see [`scripts`]).
//!
//! Connections are process-local and opened on first use, so never before
//! the fork. Every call, connecting and script loading included, ends
//! within one deadline (`redis_timeout`, see [`link`]); a connection that
//! may be out of step is dropped, one the server closed while idle is
//! reopened before the request is sent. After a call timed out or could
//! not connect, this process fails its calls on that server at once,
//! without touching the network, for the back-off time; then it tries
//! again. On a Redis Cluster, a queue's calls go to the node that holds
//! its slot, learnt from `MOVED` (see [`Session::call_within`]). Nothing
//! here depends on Kamailio.

mod link;
mod scripts;
mod tls;
mod url;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use redis::{Cmd, FromRedisValue, Value};

use crate::queue::AddMode;
use link::{Failure, Link, Target, Tls};
pub use tls::{client_config, SYSTEM_CA};

/// One Redis queue as configured.
pub struct StreamSpec {
    /// The URL as written (for messages, without the password).
    pub shown_url: String,
    /// The server and database, as the key of this process's connections.
    pub server: String,
    target: Target,
    pub stream: String,
    keys: String,
    stats: String,
    /// The dead letters: entries delivered `max_deliveries` times.
    pub dead: String,
    /// The stream's name in the previous release, moved at start.
    old_stream: String,
    pub group: String,
    pub mode: AddMode,
    pub max_items: usize,
    pub claim_ms: u64,
    /// `max_deliveries` attribute: 0, no limit.
    pub max_deliveries: u64,
    /// `consumer_idle_ms` attribute: consumers that hold nothing and were
    /// idle this long leave the group.
    pub consumer_idle_ms: u64,
    /// `replicas` attribute: an add is acknowledged once this many
    /// replicas have it (`WAIT`); 0, once the server has it.
    pub replicas: u64,
}

/// Default `group` attribute.
pub const DEFAULT_GROUP: &str = "kamailio";
/// Default `claim_ms` attribute.
pub const DEFAULT_CLAIM_MS: u64 = 30_000;
/// Default `consumer_idle_ms` attribute (an hour).
pub const DEFAULT_CONSUMER_IDLE_MS: u64 = 3_600_000;

impl StreamSpec {
    /// The key of this queue's node in [`Session::routes`].
    fn route(&self) -> String {
        format!("{}|{}", self.server, self.stream)
    }

    /// Checks the URL (see [`url`]).
    pub fn new(
        queue: &[u8],
        url: &str,
        group: &str,
        mode: AddMode,
        max_items: usize,
        claim_ms: u64,
    ) -> Result<StreamSpec, String> {
        let shown_url = url::masked(url);
        let target = url::target(url).map_err(|e| format!("redis={shown_url}: {e}"))?;
        if group.is_empty() {
            return Err("group must not be empty".into());
        }
        // The name goes into Redis key names as it is.
        let name = std::str::from_utf8(queue)
            .map_err(|_| "a queue on redis needs a UTF-8 name".to_string())?;
        let tls = if target.tls { "tls:" } else { "" };
        let server = format!("{tls}{}/{}", target.endpoint, target.db);
        Ok(StreamSpec {
            shown_url,
            server,
            target,
            stream: format!("mqueue:{{{name}}}"),
            keys: format!("mqueue:{{{name}}}:keys"),
            stats: format!("mqueue:{{{name}}}:stats"),
            dead: format!("mqueue:{{{name}}}:dead"),
            old_stream: format!("mqueue:{name}"),
            group: group.to_string(),
            mode,
            max_items,
            claim_ms,
            max_deliveries: 0,
            consumer_idle_ms: DEFAULT_CONSUMER_IDLE_MS,
            replicas: 0,
        })
    }

    /// A `rediss://` queue.
    pub fn tls(&self) -> bool {
        self.target.tls
    }
}

/// A queued item: key and value.
pub type Item = (Vec<u8>, Vec<u8>);
/// The fetch script's reply: id, key and value of the entry delivered;
/// the id of the newest entry when there was none; nothing after an
/// acknowledgement.
type Entry = Vec<Vec<u8>>;

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
pub const COUNTERS: [&str; 8] = crate::queue::counters::STORAGE_NAMES;

/// The figures `mqueue.stats` shows for a Redis queue.
#[derive(Debug, Default)]
pub struct Figures {
    pub length: i64,
    pub pending: i64,
    pub consumers: i64,
    /// Never negative: a counter damaged from outside reads as 0.
    pub counters: Vec<(String, u64)>,
    /// What was wrong with damaged counters, for the caller to log.
    pub warnings: Vec<String>,
}

/// A Lua script: its body (sent with EVAL when the server does not know
/// it) and its SHA1 (EVALSHA).
struct Lua {
    body: &'static str,
    sha: String,
}

impl Lua {
    fn new(body: &'static str) -> Lua {
        Lua {
            body,
            sha: redis::Script::new(body).get_hash().to_string(),
        }
    }
}

/// The consumer name (unique per instance and process) and the scripts.
struct Ctx {
    consumer: String,
    add: Lua,
    fetch: Lua,
    clear: Lua,
    requeue: Lua,
    hand_back: Lua,
    drop_consumer: Lua,
}

/// How much sooner than a call's deadline a blocking read asks Redis to
/// end: Redis ends a block in its event loop, up to 1/`hz` late (100 ms at
/// the default `hz 10`), plus the round trip.
const BLOCK_MARGIN: Duration = Duration::from_millis(150);
/// The shortest block worth a call.
const BLOCK_MIN: Duration = Duration::from_millis(10);

/// Outages shared by the processes of an instance: once one process found
/// a server down (a call timed out or could not connect), the others fail
/// their calls on it at once too, and when the back-off ends one process
/// tries the server while the others keep failing fast. So an outage
/// blocks one worker per back-off, not every worker.
pub trait Gate: Send + Sync {
    /// Whether a call to `server` may go out now; true also makes this
    /// process the one that tries it, for at most `probe_ms`.
    fn may_call(&self, server: &str, probe_ms: u64) -> bool;
    /// `server` is down for the next `for_ms` milliseconds.
    fn down(&self, server: &str, for_ms: u64);
    /// `server` answered.
    fn up(&self, server: &str);
    /// Milliseconds left before `server` may be tried (0: now).
    fn wait_ms(&self, server: &str) -> u64;
}

/// This process's connections, one per Redis server, and what every call
/// needs besides its connection.
pub struct Session {
    timeout: Duration,
    backoff: Duration,
    /// Keyed by [`Session::link_key`].
    links: HashMap<String, Link>,
    /// Cluster nodes that answered `MOVED` for a queue's slot, by
    /// [`StreamSpec::route`].
    routes: HashMap<String, (String, u16)>,
    /// Servers whose last call timed out or could not connect, with the
    /// end of their back-off.
    down_until: HashMap<String, Instant>,
    /// Streams on which a fetch or acknowledgement of this process failed
    /// since its last successful fetch.
    unsure: std::collections::HashSet<String>,
    /// Per stream, the newest entry's id when a fetch found nothing to
    /// deliver: a wait looks for entries after it.
    newest: HashMap<String, String>,
    /// The TLS setup of `rediss://` servers.
    tls: Tls,
    /// Outages shared with the instance's other processes.
    gate: Option<&'static dyn Gate>,
    ctx: Ctx,
}

/// Why a call failed.
enum CallError {
    /// No (whole, sensible) answer: the connection was dropped.
    Link(Failure),
    /// Redis answered with an error; the connection is in step.
    Reply(redis::RedisError),
    /// Failing fast: the server failed a call less than the back-off ago.
    BackingOff,
}

impl From<Failure> for CallError {
    fn from(f: Failure) -> Self {
        CallError::Link(f)
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Link(e) => e.fmt(f),
            CallError::Reply(e) => e.fmt(f),
            CallError::BackingOff => f.write_str(
                "Redis timed out or refused a connection less than redis_backoff ago (failing fast)",
            ),
        }
    }
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

type CallResult<T> = Result<T, CallError>;

/// A reply as `T`; an error reply is a `Reply` error, a reply of another
/// shape means the link is out of step.
fn decode<T: FromRedisValue>(v: Value) -> CallResult<T> {
    match v {
        Value::ServerError(e) => Err(CallError::Reply(e.into())),
        v => redis::from_redis_value(v)
            .map_err(|e| CallError::Link(Failure::Broken(format!("unexpected reply: {e}")))),
    }
}

/// One command, one reply.
fn query<T: FromRedisValue>(link: &mut Link, cmd: &Cmd, deadline: Instant) -> CallResult<T> {
    let mut replies = link.exchange(&cmd.get_packed_command(), 1, deadline)?;
    decode(replies.pop().unwrap_or(Value::Nil))
}

/// The arguments of the add script (see [`scripts::ADD`]).
fn add_args<'a>(spec: &'a StreamSpec, key: &'a [u8], val: &'a [u8]) -> impl Fn(&mut Cmd) + 'a {
    move |c: &mut Cmd| {
        c.arg(spec.mode.as_int())
            .arg(spec.max_items)
            .arg(key)
            .arg(val);
    }
}

/// The arguments of the fetch script (see [`scripts::FETCH`]): `what` is
/// `fetch` or `ack`, `unsure` `1` after a failed call.
fn fetch_args<'a>(
    spec: &'a StreamSpec,
    consumer: &'a str,
    held: Option<&'a str>,
    what: &'a str,
    unsure: &'a str,
) -> impl Fn(&mut Cmd) + 'a {
    move |c: &mut Cmd| {
        c.arg(&spec.group)
            .arg(consumer)
            .arg(held.unwrap_or(""))
            .arg(spec.mode.as_int())
            .arg(spec.claim_ms)
            .arg(what)
            .arg(spec.max_deliveries)
            .arg(unsure);
    }
}

/// `EVALSHA sha` or `EVAL body` (`verb`, `s`) with `keys` and the
/// arguments `args` adds.
fn script_cmd(verb: &str, s: &str, keys: &[&str], args: &dyn Fn(&mut Cmd)) -> Cmd {
    let mut c = redis::cmd(verb);
    c.arg(s).arg(keys.len()).arg(keys);
    args(&mut c);
    c
}

/// Runs `script` by its SHA1, and with its body if the server does not
/// know it (a new or restarted server), in the same deadline.
fn eval<T: FromRedisValue>(
    link: &mut Link,
    script: &Lua,
    keys: &[&str],
    args: &dyn Fn(&mut Cmd),
    deadline: Instant,
) -> CallResult<T> {
    let evalsha = script_cmd("EVALSHA", &script.sha, keys, args);
    match query(link, &evalsha, deadline) {
        Err(CallError::Reply(e)) if e.code() == Some("NOSCRIPT") => {
            query(link, &script_cmd("EVAL", script.body, keys, args), deadline)
        }
        other => other,
    }
}

/// [`eval`] with `WAIT replicas ms` pipelined after it, in one round trip:
/// the script's reply and how many replicas acknowledged the write. WAIT
/// gets three quarters of what is left of the deadline, so that Redis
/// answers before it.
fn eval_and_wait<T: FromRedisValue>(
    link: &mut Link,
    script: &Lua,
    keys: &[&str],
    args: &dyn Fn(&mut Cmd),
    replicas: u64,
    deadline: Instant,
) -> CallResult<(T, i64)> {
    let wait_ms = deadline
        .saturating_duration_since(Instant::now())
        .as_millis()
        * 3
        / 4;
    if wait_ms == 0 {
        return Err(CallError::Link(Failure::Timeout));
    }
    for (verb, s) in [("EVALSHA", script.sha.as_str()), ("EVAL", script.body)] {
        let mut p = redis::pipe();
        p.add_command(script_cmd(verb, s, keys, args))
            .cmd("WAIT")
            .arg(replicas)
            .arg(wait_ms as u64);
        let mut replies = link
            .exchange(&p.get_packed_pipeline(), 2, deadline)?
            .into_iter();
        let (reply, waited) = (
            replies.next().unwrap_or(Value::Nil),
            replies.next().unwrap_or(Value::Nil),
        );
        let acked: i64 = decode(waited)?;
        match reply {
            Value::ServerError(e) if verb == "EVALSHA" && e.code() == "NOSCRIPT" => continue,
            reply => return Ok((decode(reply)?, acked)),
        }
    }
    Err(CallError::Link(Failure::Broken("script not loaded".into())))
}

fn create_group(link: &mut Link, spec: &StreamSpec, deadline: Instant) -> CallResult<()> {
    let mut c = redis::cmd("XGROUP");
    c.arg("CREATE")
        .arg(&spec.stream)
        .arg(&spec.group)
        .arg("0")
        .arg("MKSTREAM");
    match query::<()>(link, &c, deadline) {
        Err(CallError::Reply(e)) if e.code() == Some("BUSYGROUP") => Ok(()),
        other => other,
    }
}

impl Session {
    /// A session for consumer `consumer` (unique per instance and
    /// process) whose calls end within `timeout`, and fail fast for
    /// `backoff` after one timed out or could not connect.
    pub fn new(consumer: String, timeout: Duration, backoff: Duration) -> Session {
        Session {
            timeout,
            backoff,
            links: HashMap::new(),
            routes: HashMap::new(),
            down_until: HashMap::new(),
            unsure: std::collections::HashSet::new(),
            newest: HashMap::new(),
            tls: None,
            gate: None,
            ctx: Ctx {
                consumer,
                add: Lua::new(scripts::ADD),
                fetch: Lua::new(scripts::FETCH),
                clear: Lua::new(scripts::CLEAR),
                requeue: Lua::new(scripts::REQUEUE),
                hand_back: Lua::new(scripts::HAND_BACK),
                drop_consumer: Lua::new(scripts::DROP_CONSUMER),
            },
        }
    }

    /// Shares outages with the instance's other processes (see [`Gate`]).
    pub fn with_gate(mut self, gate: Option<&'static dyn Gate>) -> Session {
        self.gate = gate;
        self
    }

    /// The TLS setup for `rediss://` servers (see [`client_config`]).
    pub fn with_tls(mut self, tls: Option<std::sync::Arc<rustls::ClientConfig>>) -> Session {
        self.tls = tls;
        self
    }

    /// Runs `f` (one or more round trips) on the connection to the spec's
    /// server, all within one deadline. A link found closed or dirty is
    /// reopened before anything is sent; a link that failed is dropped; a
    /// missing consumer group (a new or restarted server) is created and
    /// `f` tried again.
    fn call<T>(
        &mut self,
        spec: &StreamSpec,
        f: impl FnMut(&mut Link, &Ctx, Instant) -> CallResult<T>,
    ) -> Result<T, String> {
        self.call_with(spec, true, f)
    }

    /// [`Session::call`]; a timeout starts a back-off only when
    /// `timeout_is_outage` (not for a blocking read, which a server with a
    /// low `hz` ends late: its connection is dropped, that is all).
    fn call_with<T>(
        &mut self,
        spec: &StreamSpec,
        timeout_is_outage: bool,
        mut f: impl FnMut(&mut Link, &Ctx, Instant) -> CallResult<T>,
    ) -> Result<T, String> {
        let now = Instant::now();
        if self.down_until.get(&spec.server).is_some_and(|&t| now < t) {
            return Err(CallError::BackingOff.to_string());
        }
        let probe_ms = self.timeout.as_millis() as u64 + 100;
        if self
            .gate
            .is_some_and(|g| !g.may_call(&spec.server, probe_ms))
        {
            return Err(CallError::BackingOff.to_string());
        }
        let deadline = now + self.timeout;
        let result = self.call_within(spec, deadline, &mut f);
        match &result {
            Err(CallError::Link(Failure::Timeout)) if !timeout_is_outage => {}
            Err(CallError::Link(Failure::Timeout | Failure::Unreachable(_))) => {
                self.down_until
                    .insert(spec.server.clone(), Instant::now() + self.backoff);
                if let Some(g) = self.gate {
                    g.down(&spec.server, self.backoff.as_millis() as u64);
                }
            }
            _ => {
                if !self.down_until.is_empty() {
                    self.down_until.remove(&spec.server);
                }
                if let Some(g) = self.gate {
                    g.up(&spec.server);
                }
            }
        }
        result.map_err(|e| e.to_string())
    }

    /// Where the spec's calls go: the cluster node `MOVED` named for its
    /// slot, else the URL's server (or seed nodes).
    fn link_key(&self, spec: &StreamSpec) -> (String, Option<(String, u16)>) {
        match self.routes.get(&spec.route()) {
            Some((h, p)) => (format!("{}>{h}:{p}", spec.server), Some((h.clone(), *p))),
            None => (spec.server.clone(), None),
        }
    }

    /// Drops the spec's connection: the next call connects again.
    fn drop_link(&mut self, spec: &StreamSpec) {
        let (key, _) = self.link_key(spec);
        self.links.remove(&key);
    }

    /// Runs `f` on the spec's node, following cluster redirections within
    /// the deadline: `MOVED` (the slot's node is remembered and `f` sent
    /// there), `ASK` (`f` sent once to the named node, each command after
    /// an `ASKING`) and `TRYAGAIN` (a slot being migrated: `f` again
    /// shortly, while the deadline allows). At most [`MAX_REDIRECTS`]
    /// redirections per call.
    fn call_within<T>(
        &mut self,
        spec: &StreamSpec,
        deadline: Instant,
        f: &mut impl FnMut(&mut Link, &Ctx, Instant) -> CallResult<T>,
    ) -> CallResult<T> {
        let mut ask: Option<(String, u16)> = None;
        let mut redirects = 0;
        loop {
            let (key, node) = match &ask {
                Some((h, p)) => (format!("{}>{h}:{p}", spec.server), Some((h.clone(), *p))),
                None => self.link_key(spec),
            };
            let result = self.call_on(spec, &key, node, ask.is_some(), deadline, f);
            let Err(CallError::Reply(e)) = &result else {
                if matches!(result, Err(CallError::Link(_))) {
                    // A node gone (failed over, or the slot's owner
                    // changed): ask the seeds again next time.
                    self.routes.remove(&spec.route());
                }
                return result;
            };
            match (e.code(), redirect_node(e)) {
                (Some("MOVED"), Some(node)) if redirects < MAX_REDIRECTS => {
                    self.routes.insert(spec.route(), node);
                    ask = None;
                }
                (Some("ASK"), Some(node)) if redirects < MAX_REDIRECTS && ask.is_none() => {
                    ask = Some(node);
                }
                // Not a redirection: bounded by the deadline alone.
                // Sent again to the same node (after an `ASK`, the
                // importing one: keys the scripts name that do not exist
                // yet make it answer TRYAGAIN until the slot is its own).
                (Some("TRYAGAIN"), _)
                    if deadline.saturating_duration_since(Instant::now()) > TRYAGAIN_PAUSE =>
                {
                    std::thread::sleep(TRYAGAIN_PAUSE);
                    continue;
                }
                _ => return result,
            }
            redirects += 1;
        }
    }

    /// Runs `f` on the connection `key` (to `node`, or to the URL's
    /// server when None). A link found closed or dirty is reopened before
    /// anything is sent; a link that failed is dropped; a missing consumer
    /// group (a new or restarted server) is created and `f` tried again.
    fn call_on<T>(
        &mut self,
        spec: &StreamSpec,
        key: &str,
        node: Option<(String, u16)>,
        asking: bool,
        deadline: Instant,
        f: &mut impl FnMut(&mut Link, &Ctx, Instant) -> CallResult<T>,
    ) -> CallResult<T> {
        if self.links.get_mut(key).is_some_and(Link::is_stale) {
            self.links.remove(key);
        }
        if !self.links.contains_key(key) {
            let link = Link::open(&node_target(&spec.target, node), &self.tls, deadline)?;
            self.links.insert(key.to_string(), link);
        }
        let Some(link) = self.links.get_mut(key) else {
            return Err(CallError::Link(Failure::Broken("no connection".into())));
        };
        link.asking = asking;
        let mut result = f(link, &self.ctx, deadline);
        if let Err(CallError::Reply(e)) = &result {
            if e.code() == Some("NOGROUP") {
                result =
                    create_group(link, spec, deadline).and_then(|()| f(link, &self.ctx, deadline));
            }
        }
        link.asking = false;
        // A demoted master (READONLY) or one cut off from its own master
        // (MASTERDOWN): the next call connects again, so that a host name
        // or address that follows the master is looked up anew.
        let demoted = matches!(&result, Err(CallError::Reply(e))
            if matches!(e.code(), Some("READONLY" | "MASTERDOWN")));
        if matches!(result, Err(CallError::Link(_))) || demoted || link.has_leftover() {
            self.links.remove(key);
        }
        result
    }

    /// Checks the server at start, on a connection of its own that is
    /// closed again, within one deadline: reachable, the password
    /// accepted, the queue's keys of the previous release (`mqueue:<name>`)
    /// moved to their new names (not on a cluster, where they live in
    /// other slots), every key of the queue of the right type (or absent),
    /// the consumer group there. Ok(true) when old keys were moved.
    pub fn check(&self, spec: &StreamSpec) -> Result<bool, CheckError> {
        let deadline = Instant::now() + self.timeout;
        let fail = |e: CallError| match e {
            CallError::Link(Failure::Rejected(m)) => CheckError::Refused(m),
            // A replica (or a master still loading) may become the master.
            CallError::Reply(e)
                if matches!(
                    e.code(),
                    Some("READONLY" | "MASTERDOWN" | "LOADING" | "TRYAGAIN" | "CLUSTERDOWN")
                ) =>
            {
                CheckError::Unreachable(e.to_string())
            }
            CallError::Reply(e) => CheckError::Refused(e.to_string()),
            other => CheckError::Unreachable(other.to_string()),
        };
        // On a cluster, the node that holds the queue's slot, as `MOVED`
        // or `ASK` name it.
        let mut node = None;
        let mut asking = false;
        for _ in 0..MAX_REDIRECTS {
            let mut link = Link::open(
                &node_target(&spec.target, node.clone()),
                &self.tls,
                deadline,
            )
            .map_err(|e| fail(e.into()))?;
            link.asking = asking;
            match Self::check_on(&mut link, spec, deadline) {
                Err(CallError::Reply(e)) if matches!(e.code(), Some("MOVED" | "ASK")) => {
                    let Some(to) = redirect_node(&e) else {
                        return Err(fail(CallError::Reply(e)));
                    };
                    asking = e.code() == Some("ASK");
                    node = Some(to);
                }
                other => return other.map_err(fail),
            }
        }
        Err(CheckError::Unreachable(
            "too many cluster redirections".into(),
        ))
    }

    /// [`Session::check`] on one node.
    fn check_on(link: &mut Link, spec: &StreamSpec, deadline: Instant) -> CallResult<bool> {
        let mut c = redis::cmd("INFO");
        c.arg("cluster");
        let info: String = query(link, &c, deadline)?;
        let mut moved = false;
        if !info.contains("cluster_enabled:1") {
            let old = [
                spec.old_stream.clone(),
                format!("{}:keys", spec.old_stream),
                format!("{}:stats", spec.old_stream),
            ];
            let keys = [
                old[0].as_str(),
                &old[1],
                &old[2],
                &spec.stream,
                &spec.keys,
                &spec.stats,
            ];
            let n: i64 = eval(link, &Lua::new(scripts::MOVE_OLD), &keys, &|_| {}, deadline)?;
            moved = n == 1;
        }
        for (key, want) in [
            (&spec.stream, "stream"),
            (&spec.keys, "hash"),
            (&spec.stats, "hash"),
            (&spec.dead, "stream"),
        ] {
            let mut c = redis::cmd("TYPE");
            c.arg(key);
            let kind: String = query(link, &c, deadline)?;
            if kind != want && kind != "none" {
                return Err(CallError::Link(Failure::Rejected(format!(
                    "key {key} holds a {kind}, not a {want}"
                ))));
            }
        }
        create_group(link, spec, deadline)?;
        Ok(moved)
    }

    /// Adds an entry, acknowledged by the server when this returns Ok.
    pub fn add(&mut self, spec: &StreamSpec, key: &[u8], val: &[u8]) -> Result<Added, String> {
        let args = add_args(spec, key, val);
        let keys = [spec.stream.as_str(), &spec.keys, &spec.stats];
        let r: i64 = if spec.replicas == 0 {
            self.call(spec, |l, x, d| eval(l, &x.add, &keys, &args, d))?
        } else {
            let (r, acked) = self.call(spec, |l, x, d| {
                eval_and_wait(l, &x.add, &keys, &args, spec.replicas, d)
            })?;
            if acked < spec.replicas as i64 {
                // Maybe no longer the master: the next call connects (and
                // asks the sentinels) again.
                self.drop_link(spec);
                return Err(format!(
                    "only {acked} of {} replicas have the entry within redis_timeout",
                    spec.replicas
                ));
            }
            r
        };
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
        let keys = [spec.stream.as_str(), &spec.keys, &spec.stats, &spec.dead];
        // Only a failed call can have left entries delivered to this
        // consumer that it never saw: the script looks for them then.
        let unsure = if self.unsure.contains(&spec.stream) {
            "1"
        } else {
            "0"
        };
        let r: Result<Option<Entry>, String> = self.call(spec, |l, x, d| {
            let args = fetch_args(spec, &x.consumer, held, what, unsure);
            // The script's `false` arrives as nil.
            eval(l, &x.fetch, &keys, &args, d)
        });
        match &r {
            Err(_) => {
                self.unsure.insert(spec.stream.clone());
            }
            Ok(_) if unsure == "1" && what == "fetch" => {
                self.unsure.remove(&spec.stream);
            }
            Ok(_) => {}
        }
        let mut parts = r?.unwrap_or_default().into_iter();
        match (parts.next(), parts.next(), parts.next()) {
            (Some(id), Some(key), Some(val)) => Ok(Some(Delivered {
                id: String::from_utf8_lossy(&id).into_owned(),
                key,
                val,
            })),
            (Some(newest), None, None) => {
                let newest = String::from_utf8_lossy(&newest).into_owned();
                self.newest.insert(spec.stream.clone(), newest);
                Ok(None)
            }
            _ => Ok(None),
        }
    }

    /// True while calls on the spec's server fail fast (see [`Session`]).
    pub fn backing_off(&self, spec: &StreamSpec) -> bool {
        self.down_until
            .get(&spec.server)
            .is_some_and(|&t| Instant::now() < t)
            || self.gate.is_some_and(|g| g.wait_ms(&spec.server) > 0)
    }

    /// Waits, at most until `until`, for an entry newer than the newest
    /// one the last empty fetch saw (`XREAD BLOCK`, within one call's
    /// deadline less [`BLOCK_MARGIN`], so that Redis answers first),
    /// without taking it: the next fetch does. While the server is backing
    /// off, sleeps until the back-off ends instead. With a `redis_timeout`
    /// too short to block in, an error: the caller pauses and fetches.
    pub fn wait(&mut self, spec: &StreamSpec, until: Instant) -> Result<(), String> {
        let now = Instant::now();
        let shared = self.gate.map_or(0, |g| g.wait_ms(&spec.server));
        let end = self
            .down_until
            .get(&spec.server)
            .copied()
            .filter(|&end| now < end)
            .or((shared > 0).then(|| now + Duration::from_millis(shared)));
        if let Some(end) = end {
            std::thread::sleep(end.min(until).saturating_duration_since(now));
            return Ok(());
        }
        let Some(after) = self.newest.get(&spec.stream).cloned() else {
            return Err("no empty fetch to wait after".into());
        };
        if self.timeout < BLOCK_MARGIN + BLOCK_MIN {
            return Err("redis_timeout too short for a blocking read".into());
        }
        let _: Value = self.call_with(spec, false, |l, _, d| {
            let left = d
                .saturating_duration_since(Instant::now())
                .saturating_sub(BLOCK_MARGIN);
            let block = left.min(until.saturating_duration_since(Instant::now()));
            let mut c = redis::cmd("XREAD");
            c.arg("COUNT")
                .arg(1)
                .arg("BLOCK")
                .arg(block.as_millis().max(1) as u64)
                .arg("STREAMS")
                .arg(&spec.stream)
                .arg(&after);
            query(l, &c, d)
        })?;
        Ok(())
    }

    /// Hands back `id`, delivered by the last fetch but not taken (an RPC
    /// reply could not hold it): the next fetch of any instance takes it
    /// first, and the delivery is not counted.
    pub fn hand_back(&mut self, spec: &StreamSpec, id: &str) -> Result<(), String> {
        let keys = [spec.stream.as_str()];
        let args = |c: &mut Cmd| {
            c.arg(&spec.group)
                .arg(RELEASED)
                .arg(id)
                .arg(RELEASED_IDLE_MS);
        };
        let _: i64 = self.call(spec, |l, x, d| eval(l, &x.hand_back, &keys, &args, d))?;
        Ok(())
    }

    /// Entries in the stream not yet acknowledged (`XLEN`).
    pub fn len(&mut self, spec: &StreamSpec) -> Result<usize, String> {
        let mut c = redis::cmd("XLEN");
        c.arg(&spec.stream);
        self.call(spec, |l, _, d| query(l, &c, d))
    }

    /// Drops every entry; returns how many there were.
    pub fn clear(&mut self, spec: &StreamSpec) -> Result<usize, String> {
        let keys = [spec.stream.as_str(), &spec.keys, &spec.stats];
        self.call(spec, |l, x, d| eval(l, &x.clear, &keys, &|_| {}, d))
    }

    /// Up to `n` entries from the oldest on, delivered or not, not removed.
    pub fn peek(&mut self, spec: &StreamSpec, n: usize) -> Result<Vec<Item>, String> {
        self.range(spec, &spec.stream, n)
    }

    /// Up to `n` dead letters from the oldest on, not removed.
    pub fn dead_list(&mut self, spec: &StreamSpec, n: usize) -> Result<Vec<Item>, String> {
        self.range(spec, &spec.dead, n)
    }

    /// Key and value of up to `n` entries of stream `key` of the spec's
    /// server, from the oldest on (`XRANGE`).
    fn range(&mut self, spec: &StreamSpec, key: &str, n: usize) -> Result<Vec<Item>, String> {
        let mut c = redis::cmd("XRANGE");
        c.arg(key).arg("-").arg("+").arg("COUNT").arg(n.max(1));
        let reply: redis::streams::StreamRangeReply = self.call(spec, |l, _, d| query(l, &c, d))?;
        Ok(reply
            .ids
            .into_iter()
            .take(n)
            .map(|e| {
                let field = |name: &str| e.get::<Vec<u8>>(name).unwrap_or_default();
                (field("k"), field("v"))
            })
            .collect())
    }

    /// Puts up to `n` of the oldest dead letters back on the queue; how
    /// many.
    pub fn dead_requeue(&mut self, spec: &StreamSpec, n: usize) -> Result<usize, String> {
        let keys = [spec.stream.as_str(), &spec.keys, &spec.stats, &spec.dead];
        let args = |c: &mut Cmd| {
            c.arg(n).arg(spec.mode.as_int());
        };
        self.call(spec, |l, x, d| eval(l, &x.requeue, &keys, &args, d))
    }

    /// Removes from the group the consumers that hold nothing and have
    /// been idle for `consumer_idle_ms` (processes of instances that were
    /// killed or stopped long ago). Returns how many.
    pub fn prune_consumers(&mut self, spec: &StreamSpec) -> Result<usize, String> {
        let mut removed = 0;
        for gone in self
            .consumers(spec)?
            .iter()
            .filter(|c| c.pending == 0 && c.idle as u64 >= spec.consumer_idle_ms)
        {
            if self.remove_consumer(spec, &gone.name)? {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The consumers of the group (`XINFO CONSUMERS`).
    fn consumers(
        &mut self,
        spec: &StreamSpec,
    ) -> Result<Vec<redis::streams::StreamInfoConsumer>, String> {
        let mut c = redis::cmd("XINFO");
        c.arg("CONSUMERS").arg(&spec.stream).arg(&spec.group);
        let reply: redis::streams::StreamInfoConsumersReply =
            self.call(spec, |l, _, d| query(l, &c, d))?;
        Ok(reply.consumers)
    }

    /// Removes consumer `name` from the group if it holds nothing (see
    /// [`scripts::DROP_CONSUMER`]); true when removed.
    fn remove_consumer(&mut self, spec: &StreamSpec, name: &str) -> Result<bool, String> {
        let keys = [spec.stream.as_str()];
        let args = |c: &mut Cmd| {
            c.arg(&spec.group).arg(name);
        };
        let r: i64 = self.call(spec, |l, x, d| eval(l, &x.drop_consumer, &keys, &args, d))?;
        Ok(r == 1)
    }

    /// Length, pending entries, consumers of the group, and the counters.
    pub fn figures(&mut self, spec: &StreamSpec) -> Result<Figures, String> {
        let mut p = redis::pipe();
        p.cmd("XLEN")
            .arg(&spec.stream)
            .cmd("XPENDING")
            .arg(&spec.stream)
            .arg(&spec.group)
            .cmd("XINFO")
            .arg("GROUPS")
            .arg(&spec.stream)
            .cmd("HGETALL")
            .arg(&spec.stats);
        let packed = p.get_packed_pipeline();
        let (length, pending, groups, raw) = self.call(spec, |l, _, d| {
            let mut r = l.exchange(&packed, 4, d)?.into_iter();
            let mut next = || r.next().unwrap_or(Value::Nil);
            let length: i64 = decode(next())?;
            let pending: redis::streams::StreamPendingReply = decode(next())?;
            let groups: redis::streams::StreamInfoGroupsReply = decode(next())?;
            let raw: HashMap<String, String> = decode(next())?;
            Ok((length, pending, groups, raw))
        })?;
        let consumers = groups
            .groups
            .iter()
            .find(|g| g.name == spec.group)
            .map_or(0, |g| g.consumers as i64);
        let (counters, warnings) = counters_of(&spec.stats, &raw);
        Ok(Figures {
            length,
            pending: pending.count() as i64,
            consumers,
            counters,
            warnings,
        })
    }

    /// At shutdown (every process of this instance exited): what the
    /// consumers whose names start with `prefix` still hold goes to the
    /// consumer [`RELEASED`] with an idle time past any `claim_ms`, so the
    /// next fetch of any instance takes it (first, in order); then those
    /// consumers leave the group. Nothing is acknowledged: an entry a
    /// script saw last is delivered again. Returns how many entries.
    pub fn release_consumers(&mut self, spec: &StreamSpec, prefix: &str) -> Result<usize, String> {
        let mut released = 0;
        for name in self
            .consumers(spec)?
            .into_iter()
            .map(|c| c.name)
            .filter(|n| n.starts_with(prefix))
        {
            // 1000 at a time; bounded, should a server keep them pending.
            for _ in 0..1000 {
                let mut c = redis::cmd("XPENDING");
                c.arg(&spec.stream)
                    .arg(&spec.group)
                    .arg("-")
                    .arg("+")
                    .arg(1000)
                    .arg(&name);
                let pending: redis::streams::StreamPendingCountReply =
                    self.call(spec, |l, _, d| query(l, &c, d))?;
                let ids: Vec<String> = pending.ids.into_iter().map(|p| p.id).collect();
                if ids.is_empty() {
                    break;
                }
                let mut c = redis::cmd("XCLAIM");
                c.arg(&spec.stream)
                    .arg(&spec.group)
                    .arg(RELEASED)
                    .arg(0)
                    .arg(&ids)
                    .arg("IDLE")
                    .arg(RELEASED_IDLE_MS)
                    .arg("JUSTID");
                let _: Value = self.call(spec, |l, _, d| query(l, &c, d))?;
                released += ids.len();
            }
            self.remove_consumer(spec, &name)?;
        }
        Ok(released)
    }
}

/// The counters from `HGETALL`, in [`COUNTERS`] order; a value damaged
/// from outside (not a number, negative) reads as 0, with a warning.
fn counters_of(key: &str, raw: &HashMap<String, String>) -> (Vec<(String, u64)>, Vec<String>) {
    let mut warnings = Vec::new();
    let counters = COUNTERS
        .iter()
        .map(|&n| {
            let v = match raw.get(n).map(|v| v.parse::<i64>()) {
                None => 0,
                Some(Ok(v)) if v >= 0 => v as u64,
                Some(_) => {
                    warnings.push(format!(
                        "counter {n} in {key} is {:?}, not a count: read as 0",
                        raw.get(n).map(String::as_str).unwrap_or_default()
                    ));
                    0
                }
            };
            (n.to_string(), v)
        })
        .collect();
    (counters, warnings)
}

/// Redirections (`MOVED`, `ASK`) one call follows at most.
const MAX_REDIRECTS: usize = 8;
/// The pause before a command answered `TRYAGAIN` is sent again.
const TRYAGAIN_PAUSE: Duration = Duration::from_millis(10);

/// The node a `MOVED` or `ASK` reply (`MOVED <slot> <host>:<port>`) names.
fn redirect_node(e: &redis::RedisError) -> Option<(String, u16)> {
    let (host, port) = e
        .detail()?
        .split_ascii_whitespace()
        .nth(1)?
        .rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host.to_string(), port.parse().ok()?)).filter(|(h, _)| !h.is_empty())
}

/// `t`, or the cluster node `node` with `t`'s credentials.
fn node_target(t: &Target, node: Option<(String, u16)>) -> Target {
    match node {
        None => t.clone(),
        Some((h, p)) => Target {
            endpoint: link::Endpoint::Direct(h, p),
            ..t.clone()
        },
    }
}

/// The consumer that holds what stopped instances handed back, for the
/// next fetch of any instance to take over.
pub const RELEASED: &str = "released";
/// The idle time handed-back entries get: past any `claim_ms` (about 34
/// years), so they are taken over at once.
const RELEASED_IDLE_MS: u64 = 1 << 40;

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(url: &str) -> Result<StreamSpec, String> {
        StreamSpec::new(b"cdr", url, DEFAULT_GROUP, AddMode::Append, 0, 1000)
    }

    /// The arguments of a command, as the server receives them.
    fn args_of(c: &Cmd) -> Vec<String> {
        c.args_iter()
            .map(|a| match a {
                redis::Arg::Simple(b) => String::from_utf8_lossy(b).into_owned(),
                _ => "<cursor>".to_string(),
            })
            .collect()
    }

    #[test]
    fn script_arguments_follow_the_scripts_order() {
        let s = StreamSpec::new(
            b"cdr",
            "redis://127.0.0.1",
            "g1",
            AddMode::KeepNewest,
            5,
            2500,
        )
        .expect("spec");
        let keys = [s.stream.as_str(), &s.keys, &s.stats];
        let add = script_cmd("EVALSHA", "abc", &keys, &add_args(&s, b"k1", b"v\x00\xff"));
        let want = ["EVALSHA", "abc", "3", "mqueue:{cdr}", "mqueue:{cdr}:keys"];
        assert_eq!(args_of(&add)[..5], want);
        assert_eq!(
            args_of(&add)[5..],
            ["mqueue:{cdr}:stats", "2", "5", "k1", "v\0\u{fffd}"]
        );
        let keys = [s.stream.as_str(), &s.keys, &s.stats, &s.dead];
        let fetch = script_cmd(
            "EVAL",
            "body",
            &keys,
            &fetch_args(&s, "h:1", Some("1-2"), "ack", "1"),
        );
        assert_eq!(
            args_of(&fetch)[2..],
            [
                "4",
                "mqueue:{cdr}",
                "mqueue:{cdr}:keys",
                "mqueue:{cdr}:stats",
                "mqueue:{cdr}:dead",
                "g1",
                "h:1",
                "1-2",
                "2",
                "2500",
                "ack",
                "0",
                "1"
            ]
        );
        let none = script_cmd(
            "EVAL",
            "body",
            &keys,
            &fetch_args(&s, "h:1", None, "fetch", "0"),
        );
        assert_eq!(args_of(&none)[9], "");
    }

    #[test]
    fn urls_give_target_keys_and_a_masked_form() {
        let s = spec("redis://user:s3cret@10.0.0.5:6380/2").expect("spec");
        assert_eq!(s.shown_url, "redis://***@10.0.0.5:6380/2");
        assert_eq!(s.target.db, 2);
        assert!(matches!(&s.target.endpoint, link::Endpoint::Direct(h, 6380) if h == "10.0.0.5"));
        assert_eq!(s.target.username.as_deref(), Some("user"));
        assert_eq!(s.target.password.as_deref(), Some("s3cret"));
        assert_eq!(s.server, "10.0.0.5:6380/2");
        assert_eq!(
            (s.stream.as_str(), s.keys.as_str(), s.stats.as_str()),
            ("mqueue:{cdr}", "mqueue:{cdr}:keys", "mqueue:{cdr}:stats")
        );
        let s = spec("redis://127.0.0.1:6379").expect("spec");
        assert_eq!((s.target.password, s.target.db), (None, 0));
    }

    #[test]
    fn bad_urls_are_refused_without_the_password() {
        for url in [
            "http://h:1",
            "redis://:pw@h:notaport",
            "redis+unix:///tmp/s",
        ] {
            let e = spec(url).err().expect(url);
            assert!(!e.contains("pw"), "{e}");
        }
        assert!(StreamSpec::new(&[0xff], "redis://h:1", "g", AddMode::Append, 0, 1).is_err());
    }

    #[test]
    fn redirections_name_their_node() {
        let node = |reply: &[u8]| match redis::parse_redis_value(reply) {
            Ok(Value::ServerError(e)) => redirect_node(&e.into()),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            node(b"-MOVED 3999 127.0.0.1:6381\r\n"),
            Some(("127.0.0.1".to_string(), 6381))
        );
        assert_eq!(
            node(b"-ASK 1 [::1]:7000\r\n"),
            Some(("::1".to_string(), 7000))
        );
        assert_eq!(node(b"-MOVED 1 :7000\r\n"), None);
        assert_eq!(node(b"-ERR no\r\n"), None);
    }

    #[test]
    fn damaged_counters_read_as_zero_with_a_warning() {
        let raw: HashMap<String, String> = [("added", "5"), ("fetched", "-40"), ("evicted", "x")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (c, w) = counters_of("mqueue:q:stats", &raw);
        let get = |n: &str| c.iter().find(|(k, _)| k == n).map(|(_, v)| *v);
        assert_eq!(
            (get("added"), get("fetched"), get("evicted"), get("cleared")),
            (Some(5), Some(0), Some(0), Some(0))
        );
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("fetched") && w[0].contains("-40"), "{w:?}");
    }
}
