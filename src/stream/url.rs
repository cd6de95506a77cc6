//! The `redis=` URL of a queue: `redis://[user:password@]host:port[/db]`
//! (parsed by the redis crate), `redis://[user:password@]host:port,host:port[...]`
//! (seed nodes of a Redis Cluster, tried in turn) or
//! `redis+sentinel://[user:password@]host:port[,host:port...]/MASTER[/db]`
//! (the master asked of the sentinels; the credentials are the master's);
//! `rediss://` and `rediss+sentinel://`, the same over TLS.

use super::link::{Endpoint, Target};

/// The password in a URL, masked for logs.
pub fn masked(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_string(),
    }
}

/// The target a URL names; Err says why (without the password).
pub fn target(url: &str) -> Result<Target, String> {
    let (tls, url) = match url.strip_prefix("rediss") {
        Some(rest) => (true, format!("redis{rest}")),
        None => (false, url.to_string()),
    };
    let mut t = plain_target(&url)?;
    t.tls = tls;
    Ok(t)
}

fn plain_target(url: &str) -> Result<Target, String> {
    if let Some(rest) = url.strip_prefix("redis+sentinel://") {
        return sentinel_target(rest);
    }
    let Some(rest) = url.strip_prefix("redis://") else {
        return Err(
            "the URL must start with redis://, rediss://, redis+sentinel:// or rediss+sentinel://"
                .into(),
        );
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let (creds, hosts) = match authority.rfind('@') {
        Some(at) => (&authority[..=at], &authority[at + 1..]),
        None => ("", authority),
    };
    if hosts.contains(',') {
        let seeds = host_list(hosts, "node")?;
        let first = hosts.split(',').next().unwrap_or_default();
        let path = &rest[authority.len()..];
        let mut t = plain_target(&format!("redis://{creds}{first}{path}"))?;
        t.endpoint = Endpoint::Cluster(seeds);
        return Ok(t);
    }
    let info: redis::ConnectionInfo = redis::IntoConnectionInfo::into_connection_info(url)
        .map_err(|e| format!("malformed URL ({e})"))?;
    let redis::ConnectionAddr::Tcp(host, port) = info.addr().clone() else {
        return Err("not a TCP address".into());
    };
    let settings = info.redis_settings();
    Ok(Target {
        endpoint: Endpoint::Direct(host, port),
        tls: false,
        username: settings.username().map(str::to_string),
        password: settings.password().map(str::to_string),
        db: settings.db(),
    })
}

fn sentinel_target(rest: &str) -> Result<Target, String> {
    let (creds, rest) = match rest.rfind('@') {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    let (username, password) = match creds {
        None => (None, None),
        Some(c) => {
            let (u, p) = c.split_once(':').unwrap_or(("", c));
            let decode = |s: &str| {
                percent_decode(s).ok_or_else(|| "malformed URL (bad %-escape)".to_string())
            };
            (
                (!u.is_empty()).then(|| decode(u)).transpose()?,
                (!p.is_empty()).then(|| decode(p)).transpose()?,
            )
        }
    };
    let (hosts, path) = rest
        .split_once('/')
        .ok_or("malformed URL (no /MASTER_NAME after the sentinels)")?;
    let sentinels = host_list(hosts, "sentinel")?;
    let (master, db) = match path.split_once('/') {
        Some((m, db)) => (
            m,
            db.parse()
                .map_err(|_| format!("malformed URL (db {db:?})"))?,
        ),
        None => (path, 0),
    };
    if master.is_empty() {
        return Err("malformed URL (no MASTER_NAME)".into());
    }
    Ok(Target {
        endpoint: Endpoint::Sentinel {
            sentinels,
            master: master.to_string(),
        },
        tls: false,
        username,
        password,
        db,
    })
}

/// `host:port[,host:port...]`; `what` names a host in messages.
fn host_list(hosts: &str, what: &str) -> Result<Vec<(String, u16)>, String> {
    let mut out = Vec::new();
    for h in hosts.split(',') {
        let (host, port) = h
            .rsplit_once(':')
            .ok_or_else(|| format!("malformed URL ({what} {h:?} without :port)"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| format!("malformed URL ({what} port {port:?})"))?;
        if host.is_empty() {
            return Err(format!("malformed URL (a {what} without a host)"));
        }
        out.push((host.to_string(), port));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls() {
        let t = target("redis://u:p%40ss@10.0.0.1:7000,10.0.0.2:7001").unwrap();
        assert_eq!(t.password.as_deref(), Some("p@ss"));
        assert_eq!((t.username.as_deref(), t.db), (Some("u"), 0));
        match t.endpoint {
            Endpoint::Cluster(seeds) => assert_eq!(
                seeds,
                [
                    ("10.0.0.1".to_string(), 7000),
                    ("10.0.0.2".to_string(), 7001)
                ]
            ),
            other => panic!("not a cluster target: {other:?}"),
        }
        for bad in ["redis://h:1,h", "redis://h:1,:2", "redis://h:1,h:x"] {
            assert!(target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sentinel_urls() {
        let t = target("redis+sentinel://:p%40ss@10.0.0.1:26379,10.0.0.2:26380/mq/3").unwrap();
        assert_eq!(t.password.as_deref(), Some("p@ss"));
        assert_eq!(t.username, None);
        assert_eq!(t.db, 3);
        match t.endpoint {
            Endpoint::Sentinel { sentinels, master } => {
                assert_eq!(master, "mq");
                assert_eq!(
                    sentinels,
                    [
                        ("10.0.0.1".to_string(), 26379),
                        ("10.0.0.2".to_string(), 26380)
                    ]
                );
            }
            other => panic!("not a sentinel target: {other:?}"),
        }
        let t = target("redis+sentinel://u:pw@h:1/m").unwrap();
        assert_eq!((t.username.as_deref(), t.db), (Some("u"), 0));
        for bad in [
            "redis+sentinel://h:1",
            "redis+sentinel://h/m",
            "redis+sentinel://h:x/m",
            "redis+sentinel://h:1/",
            "redis+sentinel://h:1/m/x",
            "redisss://h:1",
        ] {
            assert!(target(bad).is_err(), "{bad}");
        }
        let t = target("rediss+sentinel://h:1/m").unwrap();
        assert!(t.tls && matches!(t.endpoint, Endpoint::Sentinel { .. }));
        let t = target("rediss://:pw@h:6380/1").unwrap();
        assert!(t.tls && matches!(&t.endpoint, Endpoint::Direct(h, 6380) if h == "h"));
        assert!(!target("redis://h:1").unwrap().tls);
        assert_eq!(masked("redis://:pw@h:1,h:2"), "redis://***@h:1,h:2");
        assert_eq!(
            masked("redis+sentinel://:pw@h:1/m"),
            "redis+sentinel://***@h:1/m"
        );
    }
}
