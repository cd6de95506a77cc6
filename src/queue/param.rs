//! Parser of the `mqueue` module parameter:
//! `name=q;size=100;addmode=1;dbmode=0;maxbytes=1048576`, and for a queue
//! on Redis Streams `redis=redis://host:port;group=kamailio;claim_ms=30000`.
//!
//! Like Kamailio's `parse_params`: attributes separated by `;` (one trailing
//! `;` allowed), white space around names and values ignored, values may be
//! quoted with `"` or `'`, names matched without regard to case.
//!
//! Numbers are read as the C module reads them (Kamailio's `str2sint`, whose
//! result it does not check): an optional sign, then digits up to the first
//! other character (`10abc` is 10, `0x10` is 0, an empty value is 0), and a
//! value beyond the `int` range stops at `INT_MAX`/`INT_MIN`. A size below 0
//! means no limit, an addmode other than 1 or 2 means 0, a dbmode other
//! than 1 to 3 means no persistence. So every definition the C module
//! starts with starts here, with the same meaning; where that meaning is
//! not what the text says, [`QueueSpec::warnings`] says how it was read.

/// One queue definition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueSpec {
    pub name: Vec<u8>,
    pub size: i64,
    pub addmode: i64,
    pub dbmode: i64,
    pub maxbytes: i64,
    /// `redis=URL`: the queue lives in a Redis Stream.
    pub redis: Option<String>,
    /// `group=NAME` (Redis queues): the consumer group.
    pub group: Option<String>,
    /// `claim_ms=N` (Redis queues): how long an entry delivered to a
    /// consumer stays pending before another consumer may take it.
    pub claim_ms: Option<i64>,
    /// `max_deliveries=N` (Redis queues): an entry delivered N times goes
    /// to the dead letters instead of an N+1th delivery.
    pub max_deliveries: Option<i64>,
    /// `consumer_idle_ms=N` (Redis queues): consumers holding nothing and
    /// idle this long leave the group.
    pub consumer_idle_ms: Option<i64>,
    /// `replicas=N` (Redis queues): an add is acknowledged once N replicas
    /// have it.
    pub replicas: Option<i64>,
    /// `durable=sync|N`: the queue is kept in a crash-safe log.
    pub durable: Option<crate::log::Durability>,
    /// Values read differently from how they are written (see the module
    /// doc), for a warning at start.
    pub warnings: Vec<String>,
}

/// Reads a number as Kamailio's `str2sint` does: the value and whether the
/// whole text was a plain decimal `int`.
pub fn lenient_int(v: &[u8]) -> (i64, bool) {
    let (neg, digits) = match v.first() {
        Some(b'-') => (true, &v[1..]),
        Some(b'+') => (false, &v[1..]),
        _ => (false, v),
    };
    let mut n: i64 = 0;
    for &c in digits {
        if !c.is_ascii_digit() {
            return (if neg { -n } else { n }, false);
        }
        n = n * 10 + i64::from(c - b'0');
        let limit = if neg { 1 << 31 } else { (1 << 31) - 1 };
        if n > limit {
            return (if neg { -limit } else { limit }, false);
        }
    }
    (if neg { -n } else { n }, !digits.is_empty())
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &s[start..end]
}

fn unquote(v: &[u8]) -> Result<&[u8], String> {
    match v.first() {
        Some(&q @ (b'"' | b'\'')) => {
            if v.len() >= 2 && v[v.len() - 1] == q {
                Ok(&v[1..v.len() - 1])
            } else {
                Err(format!(
                    "unterminated quote in value {}",
                    String::from_utf8_lossy(v)
                ))
            }
        }
        _ => Ok(v),
    }
}

/// A number of our own attribute (`maxbytes`, unknown to the C module):
/// anything but a plain non-negative number is refused.
fn number(attr: &str, v: &[u8]) -> Result<i64, String> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .filter(|n| *n >= 0)
        .ok_or_else(|| {
            format!(
                "attribute {attr}: not a non-negative number: {}",
                String::from_utf8_lossy(v)
            )
        })
}

/// A text attribute of our own: UTF-8, not empty.
fn text(attr: &str, v: &[u8]) -> Result<String, String> {
    match std::str::from_utf8(v) {
        Ok(t) if !t.is_empty() => Ok(t.to_string()),
        _ => Err(format!("attribute {attr}: empty or not UTF-8")),
    }
}

/// A number of a C module attribute, read as the C module reads it; a
/// warning when the text says something else.
fn c_number(attr: &str, v: &[u8], warnings: &mut Vec<String>) -> i64 {
    let (n, plain) = lenient_int(v);
    if !plain {
        warnings.push(format!(
            "{attr}={} is read as {n}, as the C module reads it",
            String::from_utf8_lossy(v)
        ));
    }
    n
}

/// `durable=sync` or `durable=N` (milliseconds, 1 to 60000).
fn durability(v: &[u8]) -> Result<crate::log::Durability, String> {
    if v.eq_ignore_ascii_case(b"sync") {
        return Ok(crate::log::Durability::Sync);
    }
    match std::str::from_utf8(v)
        .ok()
        .and_then(|t| t.parse::<u32>().ok())
    {
        Some(n @ 1..=60_000) => Ok(crate::log::Durability::Within(n)),
        _ => Err(format!(
            "attribute durable: sync or a number of milliseconds from 1 to 60000, not {}",
            String::from_utf8_lossy(v)
        )),
    }
}

/// Splits on `;` outside quotes.
fn split_attrs(s: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut quote: Option<u8> = None;
    let mut start = 0;
    for (i, &c) in s.iter().enumerate() {
        match (quote, c) {
            (None, b'"' | b'\'') => quote = Some(c),
            (Some(q), _) if c == q => quote = None,
            (None, b';') => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// Parses one `mqueue` parameter value.
pub fn parse_queue_spec(input: &[u8]) -> Result<QueueSpec, String> {
    let mut s = trim(input);
    if let Some(rest) = s.strip_suffix(b";") {
        s = rest;
    }
    let mut spec = QueueSpec::default();
    let mut have_name = false;
    for attr in split_attrs(s) {
        let attr = trim(attr);
        if attr.is_empty() {
            return Err("empty attribute".into());
        }
        let (name, value) = match attr.iter().position(|&c| c == b'=') {
            Some(eq) => (trim(&attr[..eq]), unquote(trim(&attr[eq + 1..]))?),
            None => (attr, &b""[..]),
        };
        let lname = String::from_utf8_lossy(name).to_ascii_lowercase();
        match lname.as_str() {
            "name" => {
                spec.name = value.to_vec();
                have_name = true;
            }
            "size" => spec.size = c_number("size", value, &mut spec.warnings),
            "addmode" => spec.addmode = c_number("addmode", value, &mut spec.warnings),
            "dbmode" => spec.dbmode = c_number("dbmode", value, &mut spec.warnings),
            "maxbytes" => spec.maxbytes = number("maxbytes", value)?,
            "redis" => spec.redis = Some(text("redis", value)?),
            "group" => spec.group = Some(text("group", value)?),
            "claim_ms" => spec.claim_ms = Some(number("claim_ms", value)?),
            "max_deliveries" => spec.max_deliveries = Some(number("max_deliveries", value)?),
            "replicas" => spec.replicas = Some(number("replicas", value)?),
            "consumer_idle_ms" => spec.consumer_idle_ms = Some(number("consumer_idle_ms", value)?),
            "durable" => spec.durable = Some(durability(value)?),
            _ => {
                return Err(format!(
                    "unknown attribute: {}",
                    String::from_utf8_lossy(name)
                ))
            }
        }
    }
    if !have_name || spec.name.is_empty() {
        return Err("queue name not defined".into());
    }
    if spec.durable.is_some() && spec.redis.is_some() {
        return Err("durable and redis cannot be used together".into());
    }
    if spec.durable.is_some() && (1..=3).contains(&spec.dbmode) {
        return Err(
            "durable and dbmode cannot be used together (a durable queue keeps its items itself)"
                .into(),
        );
    }
    if spec.redis.is_none()
        && (spec.group.is_some()
            || spec.claim_ms.is_some()
            || spec.max_deliveries.is_some()
            || spec.consumer_idle_ms.is_some()
            || spec.replicas.is_some())
    {
        return Err(
            "group, claim_ms, max_deliveries, consumer_idle_ms and replicas apply only to a queue with redis=URL"
                .into(),
        );
    }
    spec.warnings
        .extend(meanings(spec.size, spec.addmode, spec.dbmode));
    Ok(spec)
}

/// Warnings for values whose meaning is not their number: a negative size
/// (no limit), an addmode other than 0 to 2 (0), a dbmode other than 0 to 3
/// (no persistence).
pub fn meanings(size: i64, addmode: i64, dbmode: i64) -> Vec<String> {
    let mut w = Vec::new();
    if size < 0 {
        w.push(format!("size {size} means no limit"));
    }
    if !(0..=2).contains(&addmode) {
        w.push(format!(
            "addmode {addmode} means 0 (every item is appended)"
        ));
    }
    if !(0..=3).contains(&dbmode) {
        w.push(format!("dbmode {dbmode} means no persistence"));
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_definition() {
        let s = parse_queue_spec(b"name=q1; size = 10;ADDMODE=2;dbmode=1;maxbytes=4096;").unwrap();
        assert_eq!(s.name, b"q1");
        assert_eq!((s.size, s.addmode, s.dbmode, s.maxbytes), (10, 2, 1, 4096));
    }

    #[test]
    fn quoted_name_keeps_semicolon() {
        let s = parse_queue_spec(b"name=\"a;b\";size=1").unwrap();
        assert_eq!(s.name, b"a;b");
    }

    #[test]
    fn errors_name_the_problem() {
        assert!(parse_queue_spec(b"size=10").unwrap_err().contains("name"));
        assert!(parse_queue_spec(b"name=").unwrap_err().contains("name"));
        assert!(parse_queue_spec(b"name=q;colour=red")
            .unwrap_err()
            .contains("colour"));
        assert!(parse_queue_spec(b"name=q;maxbytes=1k")
            .unwrap_err()
            .contains("maxbytes"));
        assert!(parse_queue_spec(b"name=\"q").is_err());
    }

    #[test]
    fn redis_attributes() {
        let s =
            parse_queue_spec(b"name=q;redis='redis://:p;w@127.0.0.1:6379/2';group=g;claim_ms=500")
                .unwrap();
        assert_eq!(s.redis.as_deref(), Some("redis://:p;w@127.0.0.1:6379/2"));
        assert_eq!((s.group.as_deref(), s.claim_ms), (Some("g"), Some(500)));
        let s = parse_queue_spec(
            b"name=q;redis=redis://h:1;max_deliveries=3;replicas=1;consumer_idle_ms=60000",
        )
        .unwrap();
        assert_eq!(
            (s.max_deliveries, s.replicas, s.consumer_idle_ms),
            (Some(3), Some(1), Some(60000))
        );
        for attr in [
            "group=g",
            "max_deliveries=3",
            "replicas=1",
            "consumer_idle_ms=1",
        ] {
            let spec = format!("name=q;{attr}");
            assert!(parse_queue_spec(spec.as_bytes())
                .unwrap_err()
                .contains("redis"));
        }
        assert!(parse_queue_spec(b"name=q;redis=redis://h:1;replicas=-1").is_err());
        assert!(parse_queue_spec(b"name=q;redis=")
            .unwrap_err()
            .contains("redis"));
        assert!(parse_queue_spec(b"name=q;redis=redis://x;claim_ms=-1").is_err());
    }

    #[test]
    fn numbers_read_as_the_c_module_reads_them() {
        for (text, n, plain) in [
            (&b"10"[..], 10, true),
            (b"+7", 7, true),
            (b"-1", -1, true),
            (b"", 0, false),
            (b"10abc", 10, false),
            (b"0x10", 0, false),
            (b"ten", 0, false),
            (b"-", 0, false),
            (b"2147483647", i32::MAX as i64, true),
            (b"2147483648", i32::MAX as i64, false),
            (b"99999999999999999999", i32::MAX as i64, false),
            (b"-2147483648", i32::MIN as i64, true),
            (b"-99999999999", i32::MIN as i64, false),
        ] {
            assert_eq!(
                lenient_int(text),
                (n, plain),
                "{}",
                String::from_utf8_lossy(text)
            );
        }
        let s = parse_queue_spec(b"name=q;size=10abc;addmode=9;dbmode=").unwrap();
        assert_eq!((s.size, s.addmode, s.dbmode), (10, 9, 0));
        assert_eq!(s.warnings.len(), 3, "{:?}", s.warnings);
        assert!(parse_queue_spec(b"name=q;size=5")
            .unwrap()
            .warnings
            .is_empty());
    }
}
