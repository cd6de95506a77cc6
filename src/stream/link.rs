//! One connection to a Redis server, under one deadline per call.
//!
//! The redis crate's sync connection bounds each socket read, not a call: a
//! reply trickled a byte at a time, or push frames before it, keep it
//! waiting for ever, and bytes left over from a doubled reply are read as
//! the answer to the next request. So the socket is ours: commands are
//! packed by the crate, the reply bytes are read here into a buffer until
//! one whole RESP frame is there ([`frame_len`], boundaries only) and that
//! frame is decoded by the crate's parser. Every read and write waits only
//! for what is left of the call's deadline, and a connection that may be
//! out of step (timeout or error mid-reply, a frame that does not parse,
//! bytes nobody asked for) is dropped by the caller.

use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Instant;

use redis::Value;
use rustls::ClientConfig;

use super::tls::{Sock, Transport};

/// Where and how to connect: a server, or the master the sentinels name,
/// with an optional password and database, over TLS or not.
#[derive(Clone, Debug)]
pub struct Target {
    pub endpoint: Endpoint,
    /// `rediss://`: TLS to the server (and to the sentinels).
    pub tls: bool,
    pub username: Option<String>,
    pub password: Option<String>,
    pub db: i64,
}

#[derive(Clone, Debug)]
pub enum Endpoint {
    Direct(String, u16),
    /// Asked of each sentinel in turn at every connect.
    Sentinel {
        sentinels: Vec<(String, u16)>,
        master: String,
    },
    /// Seed nodes of a Redis Cluster, tried in turn; the node that holds
    /// a queue's slot is then learnt from `MOVED` replies.
    Cluster(Vec<(String, u16)>),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Direct(h, p) => write!(f, "{h}:{p}"),
            Endpoint::Sentinel { master, .. } => write!(f, "sentinel:{master}"),
            Endpoint::Cluster(seeds) => {
                let seeds: Vec<String> = seeds.iter().map(|(h, p)| format!("{h}:{p}")).collect();
                write!(f, "cluster:{}", seeds.join(","))
            }
        }
    }
}

/// Why an exchange failed.
#[derive(Debug)]
pub enum Failure {
    /// The deadline passed (connecting, writing or reading).
    Timeout,
    /// No connection could be made (refused, unreachable, name unknown).
    Unreachable(String),
    /// The connection broke or a reply made no sense: out of step.
    Broken(String),
    /// The server refused the handshake (password, database).
    Rejected(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Timeout => f.write_str("Redis did not answer in time"),
            Failure::Unreachable(e) => write!(f, "cannot connect to Redis ({e})"),
            Failure::Broken(e) => write!(f, "connection to Redis broken ({e})"),
            Failure::Rejected(e) => write!(f, "Redis refused the connection ({e})"),
        }
    }
}

/// Bytes a reply may take at most (a bound on the buffer, not on values
/// the queue keeps: 512 MB is Redis's own bulk string limit).
const MAX_REPLY: usize = 512 << 20;

pub struct Link {
    t: Transport,
    buf: Vec<u8>,
    /// The request being sent (kept for its capacity).
    req: Vec<u8>,
    /// The number of the last call, echoed back by the server after its
    /// replies (see [`Link::exchange`]).
    seq: u64,
    /// Every command sent goes after an `ASKING` (a cluster node asked
    /// for a slot it is importing, after an `ASK` redirection).
    pub asking: bool,
}

/// The TLS setup of a `rediss://` target (see [`super::tls`]).
pub type Tls = Option<Arc<ClientConfig>>;

pub(super) fn left(deadline: Instant) -> Result<std::time::Duration, Failure> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(Failure::Timeout)
    } else {
        Ok(left)
    }
}

pub(super) fn io_failure(e: std::io::Error) -> Failure {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => Failure::Timeout,
        _ => Failure::Broken(e.to_string()),
    }
}

impl Link {
    /// Connects (with TLS for a `rediss://` target, set up as `tls` says)
    /// and, with a password or a database, authenticates and selects it,
    /// all before `deadline`.
    pub fn open(t: &Target, tls: &Tls, deadline: Instant) -> Result<Link, Failure> {
        let tls = match (t.tls, tls) {
            (false, _) => None,
            (true, Some(c)) => Some(c),
            (true, None) => return Err(Failure::Rejected("TLS is not set up".into())),
        };
        let mut link = match &t.endpoint {
            Endpoint::Direct(h, p) => Link::connect(h, *p, tls, deadline)?,
            Endpoint::Sentinel { sentinels, master } => {
                let (h, p) = ask_sentinels(sentinels, master, tls, deadline)?;
                Link::connect(&h, p, tls, deadline)?
            }
            Endpoint::Cluster(seeds) => first_seed(seeds, tls, deadline)?,
        };
        let mut hello = redis::pipe();
        if let Some(pw) = &t.password {
            let auth = hello.cmd("AUTH");
            if let Some(user) = &t.username {
                auth.arg(user);
            }
            auth.arg(pw);
        }
        if t.db != 0 {
            hello.cmd("SELECT").arg(t.db);
        }
        let n = usize::from(t.password.is_some()) + usize::from(t.db != 0);
        if n > 0 {
            for v in link.exchange_unchecked(&hello.get_packed_pipeline(), n, deadline)? {
                if let Value::ServerError(e) = v {
                    return Err(Failure::Rejected(redis::RedisError::from(e).to_string()));
                }
            }
        }
        Ok(link)
    }

    /// A TCP connection, with the TLS handshake if `tls`.
    fn connect(
        host: &str,
        port: u16,
        tls: Option<&Arc<ClientConfig>>,
        deadline: Instant,
    ) -> Result<Link, Failure> {
        let addrs = (host, port)
            .to_socket_addrs()
            .map_err(|e| Failure::Unreachable(e.to_string()))?;
        let mut last = Failure::Unreachable("no address".into());
        let mut sock = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, left(deadline)?) {
                Ok(s) => {
                    sock = Some(s);
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => last = Failure::Timeout,
                Err(e) => last = Failure::Unreachable(e.to_string()),
            }
        }
        let sock = sock.ok_or(last)?;
        sock.set_nodelay(true).map_err(io_failure)?;
        let t = match tls {
            None => Transport::Plain(Sock::new(sock)),
            Some(config) => Transport::tls(Sock::new(sock), config, host, deadline)?,
        };
        Ok(Link {
            t,
            buf: Vec::with_capacity(512),
            req: Vec::with_capacity(512),
            seq: 0,
            asking: false,
        })
    }

    /// True when the server closed the connection (idle timeout, `CLIENT
    /// KILL`, a middlebox) or sent bytes nobody asked for: a request sent
    /// on it would fail or read a stale reply.
    pub fn is_stale(&mut self) -> bool {
        self.t.is_stale()
    }

    /// Sends `packed` (one or more commands) and reads `replies` replies,
    /// push frames skipped, before `deadline`. A server error is a reply
    /// (`Value::ServerError`), the connection stays in step.
    ///
    /// An `ECHO` of the call's number goes in the same write, after the
    /// commands, and its answer must follow their replies: a reply that
    /// comes late (a server or middlebox that sends one twice, after the
    /// idle check before the request) would otherwise be read as this
    /// call's answer, and every answer after it as the one before; it
    /// shows as a wrong echo, and the call fails as out of step. No round
    /// trip is added. A server that refuses `ECHO` (an ACL without
    /// `@connection`), or refuses it as it refused the call's last command
    /// (`NOAUTH`), answers in step all the same, unchecked.
    pub fn exchange(
        &mut self,
        packed: &[u8],
        replies: usize,
        deadline: Instant,
    ) -> Result<Vec<Value>, Failure> {
        let mut req = std::mem::take(&mut self.req);
        req.clear();
        let asking = self.asking;
        let sent = if asking {
            // An `ASKING` before each command (a request is RESP too: its
            // commands are found by [`frame_len`]); their replies are left
            // out below.
            let mut rest = packed;
            while let Some(n) = frame_len(rest).map_err(Failure::Broken)?.filter(|&n| n > 0) {
                req.extend_from_slice(b"*1\r\n$6\r\nASKING\r\n");
                req.extend_from_slice(&rest[..n]);
                rest = &rest[n..];
            }
            2 * replies
        } else {
            req.extend_from_slice(packed);
            replies
        };
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        // Written in place: no allocation per call.
        let digits = seq.checked_ilog10().unwrap_or(0) + 1;
        let _ = write!(req, "*2\r\n$4\r\nECHO\r\n${digits}\r\n{seq}\r\n");
        let result = self.exchange_unchecked(&req, sent + 1, deadline);
        self.req = req;
        let mut out = result?;
        match out.pop() {
            Some(Value::BulkString(b))
                if std::str::from_utf8(&b).ok().and_then(|t| t.parse().ok()) == Some(seq) => {}
            // Refused as a command of its own (ACL, renamed), or refused
            // as the call's last command was (NOAUTH, BUSY): in step.
            Some(Value::ServerError(e)) if echo_refused(&e, out.last()) => {}
            other => {
                return Err(Failure::Broken(format!(
                    "reply out of step (the echo of call {seq} expected, {other:?} read)"
                )))
            }
        }
        if asking {
            out = out.into_iter().skip(1).step_by(2).collect();
        }
        Ok(out)
    }

    /// [`Link::exchange`] without the echo: for the handshake and the
    /// sentinels (which know no `ECHO`), on connections just opened.
    fn exchange_unchecked(
        &mut self,
        packed: &[u8],
        replies: usize,
        deadline: Instant,
    ) -> Result<Vec<Value>, Failure> {
        self.t.write_all(packed, deadline)?;
        let mut out = Vec::with_capacity(replies);
        while out.len() < replies {
            match self.read_frame(deadline)? {
                Value::Push { .. } => {}
                v => out.push(v),
            }
        }
        Ok(out)
    }

    /// One whole frame, decoded; the bytes after it stay buffered (and
    /// make the link stale for the caller if nobody asked for them).
    fn read_frame(&mut self, deadline: Instant) -> Result<Value, Failure> {
        loop {
            if let Some(n) = frame_len(&self.buf).map_err(Failure::Broken)? {
                let v = redis::parse_redis_value(&self.buf[..n])
                    .map_err(|e| Failure::Broken(format!("malformed reply: {e}")))?;
                self.buf.drain(..n);
                return Ok(v);
            }
            if self.buf.len() > MAX_REPLY {
                return Err(Failure::Broken("reply too large".into()));
            }
            let mut chunk = [0u8; 4096];
            match self.t.read(&mut chunk, deadline)? {
                0 => return Err(Failure::Broken("connection closed by Redis".into())),
                n => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Bytes read past the last reply: the link is out of step.
    pub fn has_leftover(&self) -> bool {
        !self.buf.is_empty()
    }
}

/// An error in the echo's place that is the echo's own answer: `ECHO`
/// named (unknown or not permitted), or the error the call's last command
/// got too (a server refusing every command).
fn echo_refused(e: &redis::ServerError, last: Option<&Value>) -> bool {
    e.details()
        .is_some_and(|d| d.to_ascii_lowercase().contains("echo"))
        || matches!(last, Some(Value::ServerError(l)) if l.code() == e.code())
}

/// The master's address, from the first sentinel that knows it, all
/// before `deadline`.
fn ask_sentinels(
    sentinels: &[(String, u16)],
    master: &str,
    tls: Option<&Arc<ClientConfig>>,
    deadline: Instant,
) -> Result<(String, u16), Failure> {
    let mut ask = redis::cmd("SENTINEL");
    ask.arg("get-master-addr-by-name").arg(master);
    let packed = ask.get_packed_command();
    let mut last = Failure::Unreachable(format!("no sentinel knows master {master}"));
    for (host, port) in sentinels {
        let reply = Link::connect(host, *port, tls, deadline)
            .and_then(|mut l| l.exchange_unchecked(&packed, 1, deadline));
        match reply.map(|mut r| r.pop()) {
            Ok(Some(v @ Value::Array(_))) => {
                if let Ok((h, p)) = redis::from_redis_value::<(String, u16)>(v) {
                    return Ok((h, p));
                }
            }
            Ok(_) => {}
            Err(Failure::Timeout) => return Err(Failure::Timeout),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// A connection to the first seed node that accepts one, before
/// `deadline`.
fn first_seed(
    seeds: &[(String, u16)],
    tls: Option<&Arc<ClientConfig>>,
    deadline: Instant,
) -> Result<Link, Failure> {
    let mut last = Failure::Unreachable("no seed node".into());
    for (host, port) in seeds {
        match Link::connect(host, *port, tls, deadline) {
            Ok(l) => return Ok(l),
            Err(Failure::Timeout) => return Err(Failure::Timeout),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Nesting a reply may have (Redis's own replies nest a few levels).
const MAX_DEPTH: usize = 32;

/// The length of the first whole RESP2/RESP3 frame in `buf`, None while
/// it is incomplete; Err for bytes that are no RESP. Only the boundaries:
/// decoding is the redis crate's.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, String> {
    frame_end(buf, 0, 0)
}

fn frame_end(buf: &[u8], at: usize, depth: usize) -> Result<Option<usize>, String> {
    if depth > MAX_DEPTH {
        return Err("reply nested too deep".into());
    }
    let Some(&kind) = buf.get(at) else {
        return Ok(None);
    };
    let Some(rel) = buf[at..].windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let (head, next) = (&buf[at + 1..at + rel], at + rel + 2);
    let count = || -> Result<i64, String> {
        std::str::from_utf8(head)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                format!(
                    "malformed length in reply: {:?}",
                    String::from_utf8_lossy(head)
                )
            })
    };
    match kind {
        b'+' | b'-' | b':' | b'_' | b'#' | b',' | b'(' => Ok(Some(next)),
        b'$' | b'!' | b'=' => {
            let n = count()?;
            if n < 0 {
                return Ok(Some(next));
            }
            if n as usize > MAX_REPLY {
                return Err("reply too large".into());
            }
            let end = next + n as usize + 2;
            Ok((buf.len() >= end).then_some(end))
        }
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let n = count()?;
            if n < 0 {
                return Ok(Some(next));
            }
            let items = if matches!(kind, b'%' | b'|') {
                2 * n
            } else {
                n
            };
            let mut pos = next;
            for _ in 0..items {
                match frame_end(buf, pos, depth + 1)? {
                    Some(end) => pos = end,
                    None => return Ok(None),
                }
            }
            // An attribute map comes before the value it describes.
            if kind == b'|' {
                return frame_end(buf, pos, depth + 1);
            }
            Ok(Some(pos))
        }
        other => Err(format!("malformed reply (type byte {other:#04x})")),
    }
}

#[cfg(test)]
mod tests {
    use super::frame_len;

    #[test]
    fn frames_are_found_whole_and_only_whole() {
        let frames: [&[u8]; 9] = [
            b"+OK\r\n",
            b"-NOSCRIPT No matching script\r\n",
            b":42\r\n",
            b"$5\r\nhello\r\n",
            b"$-1\r\n",
            b"*3\r\n$2\r\nid\r\n$1\r\nk\r\n$0\r\n\r\n",
            b"*2\r\n*1\r\n:1\r\n*0\r\n",
            b"%1\r\n+a\r\n:1\r\n",
            b">2\r\n$7\r\nmessage\r\n$3\r\nabc\r\n",
        ];
        for f in frames {
            assert_eq!(frame_len(f), Ok(Some(f.len())), "{f:?}");
            for cut in 0..f.len() {
                assert_eq!(frame_len(&f[..cut]), Ok(None), "{f:?} cut at {cut}");
            }
            let mut doubled = f.to_vec();
            doubled.extend_from_slice(f);
            assert_eq!(frame_len(&doubled), Ok(Some(f.len())));
            assert!(redis::parse_redis_value(f).is_ok());
        }
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(frame_len(b"?what\r\n").is_err());
        assert!(frame_len(b"$x\r\n").is_err());
        let deep = "*1\r\n".repeat(100);
        assert!(frame_len(deep.as_bytes()).is_err());
    }

    #[test]
    fn an_attribute_belongs_to_the_value_after_it() {
        let f = b"|1\r\n+ttl\r\n:3\r\n$1\r\nx\r\n";
        assert_eq!(frame_len(f), Ok(Some(f.len())));
        assert_eq!(frame_len(&f[..f.len() - 1]), Ok(None));
    }
}
