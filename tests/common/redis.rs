//! A real `redis-server` for the Redis Streams tests: its own loopback port
//! and directory, append-only file with `appendfsync always`, stopped (and
//! restartable on the same data) by the test, killed on drop; replicas, a
//! sentinel and a misbehaving proxy in front of it. Commands go through the
//! redis crate.
//!
//! Which server: `MQUEUE_REDIS_SERVER` unset (or `host`) runs this
//! machine's `redis-server`; `redis8` Debian 13's Redis 8.0 and `valkey`
//! its Valkey 8.1 (`valkey-server`), each inside the Debian 13 root
//! (`scripts/debian13-root.sh run`, loopback shared). Sentinels and
//! `redis-cli` are this machine's.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, wait_until, TempDir, PORT_ATTEMPTS};

pub struct RedisServer {
    pub port: u16,
    dir: TempDir,
    password: Option<String>,
    /// A replica of the server on this port.
    replica_of: Option<u16>,
    /// A Redis Cluster node (`--cluster-enabled yes`).
    cluster_node: bool,
    /// A cluster node's bus port.
    bus_port: u16,
    child: Option<Child>,
    /// The overlay of the Debian 13 root the server runs in, if it does.
    root_work: TempDir,
}

/// The command that runs the server `MQUEUE_REDIS_SERVER` names (see the
/// module's comment), with `dir` (its data) visible at the same path.
pub fn server_command(dir: &Path, root_work: &Path) -> Command {
    let kind = std::env::var("MQUEUE_REDIS_SERVER").unwrap_or_default();
    let bin = match kind.as_str() {
        "" | "host" => return Command::new("redis-server"),
        "redis8" => "redis-server",
        "valkey" => "valkey-server",
        other => panic!("MQUEUE_REDIS_SERVER={other}: not host, redis8 or valkey"),
    };
    let mut c = Command::new("bash");
    c.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/debian13-root.sh"
    ))
    .arg("run")
    .arg(root_work)
    .arg("--bind")
    .arg(dir)
    .args(["--", bin]);
    c
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::start_with(None)
    }

    /// With `requirepass`.
    pub fn start_with(password: Option<&str>) -> RedisServer {
        Self::launch_new(password, None, false)
    }

    /// A node of a Redis Cluster, not yet part of one (see [`RedisCluster`]).
    pub fn start_cluster_node() -> RedisServer {
        Self::launch_new(None, None, true)
    }

    /// A replica of the server on `master`, once its link is up.
    pub fn start_replica_of(master: u16) -> RedisServer {
        let r = Self::launch_new(None, Some(master), false);
        let linked = wait_until(Duration::from_secs(20), || {
            r.cli(&["INFO", "replication"])
                .contains("master_link_status:up")
                .then_some(())
        });
        assert!(linked.is_some(), "the replica does not connect");
        r
    }

    /// A new server on ports of its own. A port free when chosen may be
    /// taken by another test process before the server binds it; the
    /// server then exits, and it is started again on other ports.
    fn launch_new(
        password: Option<&str>,
        replica_of: Option<u16>,
        cluster_node: bool,
    ) -> RedisServer {
        let mut r = RedisServer {
            port: 0,
            dir: TempDir::new("redis"),
            password: password.map(str::to_string),
            replica_of,
            cluster_node,
            bus_port: 0,
            child: None,
            root_work: TempDir::new("redis-root"),
        };
        for attempt in 1..=PORT_ATTEMPTS {
            r.port = free_port();
            if cluster_node {
                r.bus_port = free_port();
            }
            match r.launch() {
                Ok(()) => return r,
                Err(why) if attempt < PORT_ATTEMPTS => {
                    eprintln!("redis-server on port {}: {why}; trying other ports", r.port);
                    r.dir = TempDir::new("redis");
                }
                Err(why) => panic!("redis-server on port {}: {why}", r.port),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    pub fn url(&self) -> String {
        match &self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// Starts the server on its port and directory (again).
    pub fn resume(&mut self) {
        if let Err(why) = self.launch() {
            panic!("redis-server on port {}: {why}", self.port);
        }
    }

    /// Starts the server and waits until it answers: Err with why not
    /// (it exited, its log's last lines; or it stayed silent).
    fn launch(&mut self) -> Result<(), String> {
        let mut cmd = server_command(&self.dir.0, &self.root_work.0);
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(&self.dir.0)
            .arg("--pidfile")
            .arg(self.dir.0.join("server.pid"))
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .args(["--daemonize", "no", "--protected-mode", "no"])
            .arg("--logfile")
            .arg(self.dir.0.join("redis.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(p) = &self.password {
            cmd.args(["--requirepass", p]);
        }
        if self.cluster_node {
            cmd.args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "5000",
            ]);
            // The bus port from the test range too (by default the port
            // plus 10000, which another process may hold).
            cmd.args(["--cluster-port", &self.bus_port.to_string()]);
        }
        if let Some(m) = self.replica_of {
            cmd.args(["--replicaof", "127.0.0.1", &m.to_string()]);
        }
        let child = cmd
            .spawn()
            .expect("run redis-server: run `make deps` (package redis-server)");
        self.child = Some(child);
        let up = wait_until(Duration::from_secs(10), || {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                return Some(Err(format!("exited ({status})")));
            }
            answers_from(self.port, self.password.as_deref(), &self.dir.0).then_some(Ok(()))
        });
        if let Err(why) = up.unwrap_or_else(|| Err("does not answer within 10 s".into())) {
            // Silent but running: killed (the server the pid file names
            // too, inside the Debian 13 root).
            if let Some(Ok(None)) = self.child.as_mut().map(|c| c.try_wait()) {
                self.signal(libc::SIGKILL);
            }
            if let Some(mut c) = self.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
            let log = std::fs::read_to_string(self.dir.0.join("redis.log")).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(5)..];
            return Err(format!("{why}; its log ends: {tail:?}"));
        }
        let want = match std::env::var("MQUEUE_REDIS_SERVER").as_deref() {
            Ok("redis8") => "redis_version:8.",
            Ok("valkey") => "valkey_version:8.1",
            _ => "redis_version:",
        };
        let info = self.cli(&["INFO", "server"]);
        assert!(
            info.contains(want),
            "not the server asked for ({want}):\n{info}"
        );
        Ok(())
    }

    /// Stops the server (SIGTERM: it finishes its append-only file).
    pub fn pause(&mut self) {
        self.signal(libc::SIGTERM);
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing answers.
    pub fn freeze(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Lets a frozen server go on (SIGCONT).
    pub fn thaw(&self) {
        self.signal(libc::SIGCONT);
    }

    /// Signals the server: the process its pid file names (in the Debian
    /// 13 root, a descendant of our child), else our child.
    fn signal(&self, sig: i32) {
        let Some(c) = &self.child else {
            return;
        };
        let pid = std::fs::read_to_string(self.dir.0.join("server.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
            .unwrap_or(c.id() as i32);
        // SAFETY: signals the server this test started.
        unsafe { libc::kill(pid, sig) };
    }

    /// A command against this server (see [`query_text`]).
    pub fn cli(&self, args: &[&str]) -> String {
        query_text(self.port, self.password.as_deref(), args)
    }
}

/// Three masters of a Redis Cluster on loopback (`redis-cli --cluster
/// create`, no replicas), each with its own port and directory.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..3).map(|_| RedisServer::start_cluster_node()).collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli: run `make deps` (package redis-tools)");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let c = RedisCluster { nodes };
        let formed = wait_until(Duration::from_secs(30), || {
            c.nodes
                .iter()
                .all(|n| {
                    n.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok")
                        && n.cli(&["CLUSTER", "NODES"])
                            .lines()
                            .filter(|l| l.contains("master") && l.contains("connected"))
                            .count()
                            == 3
                })
                .then_some(())
        });
        assert!(formed.is_some(), "the cluster does not form");
        c
    }

    /// `redis://` with every node as a seed.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis://{}", seeds.join(","))
    }

    /// The slot of `key` (`CLUSTER KEYSLOT`).
    pub fn slot(&self, key: &str) -> u16 {
        self.nodes[0]
            .cli(&["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .expect("a slot")
    }

    /// The node id of node `i`.
    pub fn id(&self, i: usize) -> String {
        self.nodes[i].cli(&["CLUSTER", "MYID"]).trim().to_string()
    }

    /// Which node holds `slot`, as node `i` sees it (`CLUSTER NODES`).
    pub fn owner(&self, slot: u16, i: usize) -> usize {
        let nodes = self.nodes[i].cli(&["CLUSTER", "NODES"]);
        for l in nodes.lines() {
            let f: Vec<&str> = l.split_whitespace().collect();
            let holds = f.iter().skip(8).any(|r| {
                let (a, b) = r.split_once('-').unwrap_or((r, r));
                match (a.parse::<u16>(), b.parse::<u16>()) {
                    (Ok(a), Ok(b)) => (a..=b).contains(&slot),
                    _ => false,
                }
            });
            if holds {
                let port = f[1].split(['@', ':']).nth(1).expect("host:port@bus");
                return self
                    .nodes
                    .iter()
                    .position(|n| n.port.to_string() == port)
                    .expect("a node of ours");
            }
        }
        panic!("no node holds slot {slot}:\n{nodes}");
    }

    /// A counter of `INFO` section `section` on node `i` (`name:count=N`
    /// or `name:calls=N`), 0 when absent.
    pub fn info_count(&self, i: usize, section: &str, name: &str) -> u64 {
        let info = self.nodes[i].cli(&["INFO", section]);
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .and_then(|rest| {
                rest.split(',')
                    .next()
                    .and_then(|kv| kv.split_once('='))
                    .and_then(|(_, v)| v.parse().ok())
            })
            .unwrap_or(0)
    }
}

/// The port of master `name` as the sentinel on `port` names it now.
pub fn master_port_on(port: u16, name: &str) -> Option<u16> {
    query_text(port, None, &["SENTINEL", "get-master-addr-by-name", name])
        .lines()
        .nth(1)
        .and_then(|p| p.trim().parse().ok())
}

/// Runs `cmd` with no input and its output dropped.
pub fn spawn_quiet(mut cmd: Command) -> Child {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run redis-server: run `make deps` (package redis-server)")
}

/// Waits up to `timeout` until `ready` holds (Some(true)) or `child` exits
/// (Some(false)); None when neither happened.
pub fn ready_or_exited(
    child: &mut Child,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
) -> Option<bool> {
    wait_until(timeout, || {
        if let Ok(Some(_)) = child.try_wait() {
            return Some(false);
        }
        ready().then_some(true)
    })
}

/// Whether the server on `port` answers and works in `dir`: ours, not
/// another test process's server that took the port first.
pub fn answers_from(port: u16, password: Option<&str>, dir: &Path) -> bool {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let config = query_text(port, password, &["CONFIG", "GET", "dir"]);
    config.lines().nth(1) == dir.to_str()
}

/// A command against the Redis server on `port`, through the redis crate:
/// the reply one value a line, nested replies flattened, as `redis-cli`
/// prints it when piped; "" when the server does not answer.
pub fn query_text(port: u16, password: Option<&str>, args: &[&str]) -> String {
    let url = match password {
        Some(p) => format!("redis://:{p}@127.0.0.1:{port}"),
        None => format!("redis://127.0.0.1:{port}"),
    };
    let Some((name, rest)) = args.split_first() else {
        return String::new();
    };
    let Ok(client) = redis::Client::open(url) else {
        return String::new();
    };
    let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_secs(2)) else {
        return String::new();
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    match redis::cmd(name).arg(rest).query::<redis::Value>(&mut conn) {
        Ok(v) => {
            let mut out = String::new();
            flatten(&v, &mut out);
            out
        }
        Err(e) => format!("(error) {e}\n"),
    }
}

fn flatten(v: &redis::Value, out: &mut String) {
    use redis::Value;
    match v {
        Value::Nil => out.push('\n'),
        Value::Int(n) => out.push_str(&format!("{n}\n")),
        Value::BulkString(b) => {
            out.push_str(&String::from_utf8_lossy(b));
            out.push('\n');
        }
        Value::SimpleString(s) => {
            out.push_str(s);
            out.push('\n');
        }
        Value::Okay => out.push_str("OK\n"),
        Value::Array(items) | Value::Set(items) => items.iter().for_each(|x| flatten(x, out)),
        Value::Map(pairs) => pairs.iter().for_each(|(k, x)| {
            flatten(k, out);
            flatten(x, out);
        }),
        other => out.push_str(&format!("{other:?}\n")),
    }
}

/// Kills the server whose `--pidfile` is `pidfile` (in the Debian 13
/// root, a descendant of the child the test started), if it wrote one.
pub fn kill_by_pidfile(pidfile: &Path) {
    if let Some(pid) = std::fs::read_to_string(pidfile)
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok())
    {
        // SAFETY: signals the server this test started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.signal(libc::SIGKILL);
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `tests/redis_fault_proxy.py` in front of a real server: a Redis that
/// answers slowly, trickles, sends push frames, malformed or doubled
/// replies, as [`FaultProxy::set`] says.
pub struct FaultProxy {
    pub port: u16,
    mode_file: std::path::PathBuf,
    _dir: TempDir,
    child: Child,
}

impl FaultProxy {
    pub fn start(upstream: u16) -> FaultProxy {
        use std::io::BufRead;
        let dir = TempDir::new("proxy");
        let mode_file = dir.0.join("mode");
        std::fs::write(&mode_file, "pass").expect("mode file");
        let script = format!("{}/tests/redis_fault_proxy.py", env!("CARGO_MANIFEST_DIR"));
        // A port free when chosen may be taken by another test process
        // before the proxy binds it: the proxy then exits at once, and
        // starts again on another port.
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            let mut child = Command::new("python3")
                .arg(&script)
                .arg(port.to_string())
                .arg(upstream.to_string())
                .arg(&mode_file)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("run python3: run `make deps` (package python3)");
            let mut ready = String::new();
            if let Some(out) = child.stdout.take() {
                let _ = std::io::BufReader::new(out).read_line(&mut ready);
            }
            if ready.trim() == "ready" {
                return FaultProxy {
                    port,
                    mode_file,
                    _dir: dir,
                    child,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
            eprintln!("the fault proxy did not start on port {port}: trying another");
        }
        panic!("the fault proxy did not start (see its error above)");
    }

    /// The mode for the next requests: `pass`, `slow MS`, `trickle MS`,
    /// `push MS`, `malformed`, `double`, `late MS`, `latedouble MS`.
    pub fn set(&self, mode: &str) {
        let tmp = self.mode_file.with_extension("new");
        std::fs::write(&tmp, mode).expect("mode file");
        std::fs::rename(&tmp, &self.mode_file).expect("mode file");
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Redis Sentinel (`redis-server --sentinel`) watching master `name` on
/// `master` (quorum 1, `down-after-milliseconds` as given), killed on drop.
pub struct Sentinel {
    pub port: u16,
    _dir: TempDir,
    child: Child,
}

impl Sentinel {
    pub fn start(master: u16, name: &str, down_after_ms: u64) -> Sentinel {
        let dir = TempDir::new("sentinel");
        let conf = dir.0.join("sentinel.conf");
        // A port free when chosen may be taken by another test process
        // before the sentinel binds it: it then exits, and starts again on
        // another port.
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {dir}\n\
                     sentinel monitor {name} 127.0.0.1 {master} 1\n\
                     sentinel down-after-milliseconds {name} {down_after_ms}\n\
                     sentinel failover-timeout {name} 10000\n\
                     sentinel parallel-syncs {name} 2\n",
                    dir = dir.0.display()
                ),
            )
            .expect("sentinel.conf");
            let mut cmd = Command::new("redis-server");
            cmd.arg(&conf).arg("--sentinel");
            let mut child = spawn_quiet(cmd);
            match ready_or_exited(&mut child, Duration::from_secs(20), || {
                master_port_on(port, name) == Some(master)
            }) {
                Some(true) => {
                    return Sentinel {
                        port,
                        _dir: dir,
                        child,
                    }
                }
                Some(false) => {
                    eprintln!("the sentinel exited at start on port {port}: trying another")
                }
                None => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("the sentinel does not watch the master");
                }
            }
        }
        panic!("the sentinel does not start");
    }

    /// The port of the master the sentinel names now.
    pub fn master_port(&self, name: &str) -> Option<u16> {
        master_port_on(self.port, name)
    }

    pub fn cli(&self, args: &[&str]) -> String {
        query_text(self.port, None, args)
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
