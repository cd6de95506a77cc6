//! Test harness: real Kamailio processes with the module under test, each
//! in its own temp dir with its own loopback port and ctl socket, killed
//! (with its whole process group) when the handle drops.

#![allow(dead_code)]

pub mod db;
pub mod redis;

use std::fs;
use std::io::Read;
use std::net::UdpSocket;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Calls `check` every 50 ms until it gives a value, which is returned, or
/// until `timeout` has passed (None). The one way tests wait on state they
/// observe: no fixed sleeps.
pub fn wait_until<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The machine's multiarch triplet (`x86_64-linux-gnu`, ...), under which
/// Debian installs Kamailio's modules.
pub fn multiarch() -> &'static str {
    static TRIPLET: OnceLock<String> = OnceLock::new();
    TRIPLET.get_or_init(|| {
        let out = Command::new("dpkg-architecture")
            .arg("-qDEB_HOST_MULTIARCH")
            .output()
            .expect("run dpkg-architecture: run `make deps` (package dpkg-dev)");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    })
}

/// The Kamailio under test: Debian's by default; `make test` points
/// `MQUEUE_KAMAILIO_BIN` and `MQUEUE_KAMAILIO_MODULES` at each version it
/// built.
pub fn kamailio_bin() -> String {
    std::env::var("MQUEUE_KAMAILIO_BIN").unwrap_or_else(|_| "/usr/sbin/kamailio".into())
}

/// The module directory of the Kamailio under test.
pub fn modules_dir() -> String {
    std::env::var("MQUEUE_KAMAILIO_MODULES")
        .unwrap_or_else(|_| format!("/usr/lib/{}/kamailio/modules", multiarch()))
}

/// The C mqueue of the Kamailio under test: the oracle.
pub fn c_module() -> String {
    format!("{}/mqueue.so", modules_dir())
}

/// The version of the Kamailio under test, as (major, minor, patch).
pub fn host_version() -> (u32, u32, u32) {
    let out = Command::new(kamailio_bin())
        .arg("-v")
        .output()
        .expect("run kamailio -v: run `make deps`");
    let text = String::from_utf8_lossy(&out.stdout);
    let v = text
        .lines()
        .find_map(|l| l.strip_prefix("version: kamailio "))
        .and_then(|l| l.split_whitespace().next())
        .expect("kamailio -v prints its version");
    let mut n = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (
        n.next().unwrap_or(0),
        n.next().unwrap_or(0),
        n.next().unwrap_or(0),
    )
}

/// Which mqueue implementation a Kamailio loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Impl {
    Rust,
    C,
    /// Ours built with the test-only `panic-inject` feature
    /// (`build/mqueue-panic.so`, made by `make test`).
    RustPanic,
}

pub const BOTH: [Impl; 2] = [Impl::Rust, Impl::C];

impl Impl {
    pub fn module_path(self) -> String {
        match self {
            Impl::Rust => {
                let p = std::env::var("MQUEUE_MODULE")
                    .unwrap_or_else(|_| format!("{}/build/mqueue.so", env!("CARGO_MANIFEST_DIR")));
                assert!(
                    Path::new(&p).exists(),
                    "module {p} not built: run `make test` (or `make build`)"
                );
                p
            }
            Impl::RustPanic => {
                let p = std::env::var("MQUEUE_PANIC_MODULE").unwrap_or_else(|_| {
                    format!("{}/build/mqueue-panic.so", env!("CARGO_MANIFEST_DIR"))
                });
                assert!(
                    Path::new(&p).exists(),
                    "module {p} not built: run `make test` (it builds the panic-inject variant)"
                );
                p
            }
            Impl::C => {
                let c = c_module();
                assert!(
                    Path::new(&c).exists(),
                    "the C mqueue module {c} is missing: run `make deps` (package kamailio)"
                );
                c
            }
        }
    }
}

/// How many ports a server (sipp, redis-server, a sentinel, the fault
/// proxy) is started on before its start counts as failed: a port free
/// when [`free_port`] chose it may be taken by another process before the
/// server binds it (the range is within Linux's ephemeral ports), more
/// often while other test binaries run beside this one.
pub const PORT_ATTEMPTS: usize = 5;

/// A port in this project's test range (35100-36999), free now for both
/// UDP (Kamailio's SIP listener) and TCP (HTTP, PostgreSQL, Redis).
pub fn free_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 35100 + (std::process::id() % 190) as u16 * 10;
    for _ in 0..1900 {
        let off = NEXT.fetch_add(1, Ordering::Relaxed) % 1900;
        let port = 35100 + ((base - 35100 + off) % 1900);
        if UdpSocket::bind(("127.0.0.1", port)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
        {
            return port;
        }
    }
    panic!("no free port in 35100-36999");
}

/// A fresh directory of its own (made by `tempfile`), removed on drop
/// unless `MQUEUE_KEEP_TMP` is set.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("mqueue-test-{tag}-"))
            .tempdir()
            .expect("create temp dir");
        TempDir(dir.keep())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("MQUEUE_KEEP_TMP").is_none() {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

/// What a test puts into a generated kamailio.cfg.
pub struct Cfg<'a> {
    /// Global parameters, e.g. "children=2".
    pub globals: &'a str,
    /// Extra modules to load before mqueue (file names in [`modules_dir`]).
    pub modules: &'a [&'a str],
    /// Extra modules to load after mqueue.
    pub late_modules: &'a [&'a str],
    /// modparam lines and routes.
    pub body: &'a str,
}

impl Default for Cfg<'_> {
    fn default() -> Self {
        Cfg {
            globals: "children=1",
            modules: &[],
            late_modules: &[],
            body: "",
        }
    }
}

/// Starts our module with `body` run by rtimer processes: `children` SIP
/// workers, `while` loops of up to `max_while_loops` rounds.
pub fn start_timers(body: &str, children: usize, max_while_loops: u64) -> Kamailio {
    let globals = format!("children={children}\nmax_while_loops={max_while_loops}");
    let cfg = Cfg {
        globals: &globals,
        modules: &["rtimer.so"],
        body,
        ..Cfg::default()
    };
    Kamailio::start(&cfg, Impl::Rust)
}

/// Starts `body` with JSON-RPC served over HTTP on a port of its own (for
/// [`jsonrpc`] and [`http`]), `modules` loaded too and `args` on the command
/// line; returns the instance and its HTTP port.
pub fn start_http_rpc(body: &str, modules: &[&str], imp: Impl, args: &[&str]) -> (Kamailio, u16) {
    let body = format!(
        "{body}modparam(\"jsonrpcs\", \"transport\", 1)\n\
         event_route[xhttp:request] {{ jsonrpc_dispatch(); }}\n"
    );
    let modules: Vec<&str> = modules
        .iter()
        .copied()
        .chain(["xhttp.so", "jsonrpcs.so"])
        .collect();
    for attempt in 1..=PORT_ATTEMPTS {
        let port = free_port();
        let globals = format!("children=1\nlisten=tcp:127.0.0.1:{port}\ntcp_accept_no_cl=yes");
        let cfg = Cfg {
            globals: &globals,
            modules: &modules,
            body: &body,
            ..Cfg::default()
        };
        if attempt == PORT_ATTEMPTS {
            return (Kamailio::spawn(&cfg, imp, args).wait_ready(), port);
        }
        if let Ok(k) = Kamailio::try_start(&cfg, imp, args) {
            return (k, port);
        }
    }
    unreachable!("the last attempt returns or panics")
}

/// Starts `params` (modparam lines) with the KEMI routing script
/// `tests/kemi/<file>`, run by `module` (`app_lua`, `app_jsdt`) as
/// `cfgengine` `engine`.
pub fn start_kemi(module: &str, engine: &str, file: &str, params: &str, imp: Impl) -> Kamailio {
    let script = format!("{}/tests/kemi/{file}", env!("CARGO_MANIFEST_DIR"));
    let body =
        format!("{params}modparam(\"{module}\", \"load\", \"{script}\")\ncfgengine \"{engine}\"\n");
    let module = format!("{module}.so");
    let cfg = Cfg {
        modules: &[&module],
        body: &body,
        ..Cfg::default()
    };
    Kamailio::start(&cfg, imp)
}

pub fn render_cfg(cfg: &Cfg, imp: Impl, port: u16, dir: &Path) -> String {
    let mut text = format!(
        "#!KAMAILIO\ndebug=2\nlog_stderror=yes\nmemdbg=5\nmemlog=5\ndisable_core_dump=yes\nexit_timeout=4\n\
         auto_aliases=no\nlisten=udp:127.0.0.1:{port}\n{}\nmpath=\"{}/\"\n\
         loadmodule \"ctl.so\"\nloadmodule \"pv.so\"\nloadmodule \"xlog.so\"\nloadmodule \"sl.so\"\n",
        cfg.globals,
        modules_dir()
    );
    for m in cfg.modules {
        text.push_str(&format!("loadmodule \"{m}\"\n"));
    }
    text.push_str(&format!("loadmodule \"{}\"\n", imp.module_path()));
    for m in cfg.late_modules {
        text.push_str(&format!("loadmodule \"{m}\"\n"));
    }
    text.push_str(&format!(
        "modparam(\"ctl\", \"binrpc\", \"unix:{}/ctl.sock\")\n",
        dir.display()
    ));
    text.push_str(cfg.body);
    if !cfg.body.contains("request_route") && !cfg.body.contains("cfgengine") {
        text.push_str("\nrequest_route { sl_send_reply(\"200\", \"OK\"); exit; }\n");
    }
    text
}

pub struct Kamailio {
    pub imp: Impl,
    pub port: u16,
    pub dir: TempDir,
    child: Option<Child>,
}

/// No core dumps, a process group of its own (killed whole on drop), and
/// SIGKILL when the test thread that started it dies, so that a test
/// process killed half-way leaves no Kamailio behind.
fn no_core_and_own_group(cmd: &mut Command) {
    // SAFETY: pre_exec runs in the forked child before exec; setrlimit,
    // setpgid and prctl are async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &lim);
            libc::setpgid(0, 0);
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

impl Kamailio {
    fn spawn(cfg: &Cfg, imp: Impl, extra_args: &[&str]) -> Kamailio {
        let dir = TempDir::new(match imp {
            Impl::Rust | Impl::RustPanic => "rs",
            Impl::C => "c",
        });
        let port = free_port();
        let cfg_path = dir.0.join("kamailio.cfg");
        fs::write(&cfg_path, render_cfg(cfg, imp, port, &dir.0)).expect("write cfg");
        Self::spawn_in(dir, imp, port, extra_args)
    }

    fn spawn_in(dir: TempDir, imp: Impl, port: u16, extra_args: &[&str]) -> Kamailio {
        let cfg_path = dir.0.join("kamailio.cfg");
        // Each run appends to the log, so a restarted instance keeps both.
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.0.join("kamailio.log"))
            .expect("log file");
        let mut cmd = Command::new(kamailio_bin());
        cmd.args(["-DD", "-E", "-f"])
            .arg(&cfg_path)
            .arg("-w")
            .arg(&dir.0)
            .arg("-Y")
            .arg(&dir.0)
            .args(extra_args)
            .current_dir(&dir.0)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log);
        no_core_and_own_group(&mut cmd);
        let child = cmd.spawn().expect("start kamailio: run `make deps`");
        Kamailio {
            imp,
            port,
            dir,
            child: Some(child),
        }
    }

    /// Starts Kamailio and waits until it answers RPC.
    pub fn start(cfg: &Cfg, imp: Impl) -> Kamailio {
        Self::start_with(cfg, imp, &[])
    }

    pub fn start_with(cfg: &Cfg, imp: Impl, extra_args: &[&str]) -> Kamailio {
        for _ in 1..PORT_ATTEMPTS {
            if let Ok(k) = Self::try_start(cfg, imp, extra_args) {
                return k;
            }
        }
        Self::spawn(cfg, imp, extra_args).wait_ready()
    }

    /// Starts Kamailio and waits until it answers RPC; Err(log) when it
    /// exited because a port of its configuration was taken (by another
    /// process, after [`free_port`] chose it), for the caller to start it
    /// again on other ports. Any other failure panics.
    pub fn try_start(cfg: &Cfg, imp: Impl, extra_args: &[&str]) -> Result<Kamailio, String> {
        let mut k = Self::spawn(cfg, imp, extra_args);
        match k.ready() {
            Ok(()) => Ok(k),
            Err(status) => {
                let log = k.log();
                if !log.contains("Address already in use") {
                    panic!("kamailio ({imp:?}) exited at start ({status}):\n{log}");
                }
                eprintln!("kamailio ({imp:?}): a port was taken at start: trying other ports");
                Err(log)
            }
        }
    }

    /// Stops this instance and starts it again with the same configuration,
    /// directory (runtime files, log) and port.
    pub fn restart(mut self) -> Kamailio {
        self.stop();
        let imp = self.imp;
        let port = self.port;
        let dir = std::mem::replace(&mut self.dir, TempDir(PathBuf::new()));
        Self::spawn_in(dir, imp, port, &[]).wait_ready()
    }

    fn wait_ready(mut self) -> Kamailio {
        if let Err(status) = self.ready() {
            panic!(
                "kamailio ({:?}) exited at start ({status}):\n{}",
                self.imp,
                self.log()
            );
        }
        self
    }

    /// Waits until it answers RPC: Err(exit status) when it exited first;
    /// panics when it did neither within 20 s.
    fn ready(&mut self) -> Result<(), std::process::ExitStatus> {
        let ready = wait_until(Duration::from_secs(20), || {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Some(Err(status));
            }
            (self.dir.0.join("ctl.sock").exists() && self.rpc(&["core.uptime"]).is_ok())
                .then_some(Ok(()))
        });
        ready.unwrap_or_else(|| panic!("kamailio ({:?}) not ready:\n{}", self.imp, self.log()))
    }

    /// Starts Kamailio expecting it to refuse the configuration; returns
    /// the exit status (None when killed by a signal) and the log.
    pub fn start_expect_failure(cfg: &Cfg, imp: Impl) -> (Option<i32>, String) {
        Self::start_expect_failure_with(cfg, imp, &[])
    }

    /// [`Kamailio::start_expect_failure`] with more command-line arguments.
    pub fn start_expect_failure_with(cfg: &Cfg, imp: Impl, args: &[&str]) -> (Option<i32>, String) {
        let mut k = Self::spawn(cfg, imp, args);
        let mut child = k.child.take().expect("child");
        match wait_until(Duration::from_secs(20), || child.try_wait().ok().flatten()) {
            Some(status) => (status.code(), k.log()),
            None => {
                kill_group(&mut child);
                panic!("kamailio ({imp:?}) did not refuse to start:\n{}", k.log());
            }
        }
    }

    /// Starts Kamailio and tells what happened, for recording what an
    /// oracle does where versions differ: "running" once it answers RPC
    /// (then stopped), or how it exited.
    pub fn start_outcome(cfg: &Cfg, imp: Impl) -> String {
        let mut k = Self::spawn(cfg, imp, &[]);
        let outcome = wait_until(Duration::from_secs(20), || {
            if let Some(Ok(Some(status))) = k.child.as_mut().map(|c| c.try_wait()) {
                k.child = None;
                return Some(match status.code() {
                    Some(code) => format!("exited with code {code}"),
                    None => "killed by a signal (crash)".to_string(),
                });
            }
            (k.dir.0.join("ctl.sock").exists() && k.rpc(&["core.uptime"]).is_ok())
                .then(|| "running".to_string())
        });
        let outcome =
            outcome.unwrap_or_else(|| panic!("kamailio ({imp:?}) neither started nor exited"));
        k.stop();
        outcome
    }

    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = fs::File::open(self.dir.0.join("kamailio.log")) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Lines the script logged with the given marker, marker stripped.
    pub fn marked(&self, marker: &str) -> Vec<String> {
        self.log()
            .lines()
            .filter_map(|l| {
                l.split_once(marker)
                    .map(|(_, rest)| rest.trim_end().to_string())
            })
            .collect()
    }

    /// Waits until `n` lines carry the marker (or the timeout passes).
    pub fn wait_marked(&self, marker: &str, n: usize, timeout: Duration) -> Vec<String> {
        wait_until(timeout, || {
            let lines = self.marked(marker);
            (lines.len() >= n).then_some(lines)
        })
        .unwrap_or_else(|| self.marked(marker))
    }

    /// `kamcmd` against this instance: Ok(stdout) or Err(stdout + stderr).
    pub fn rpc(&self, args: &[&str]) -> Result<String, String> {
        let sock = format!("unix:{}/ctl.sock", self.dir.0.display());
        let out = Command::new("kamcmd")
            .arg("-s")
            .arg(&sock)
            .args(args)
            .output()
            .expect("run kamcmd: run `make deps` (package kamailio)");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if out.status.success() && !stdout.starts_with("error:") {
            Ok(stdout)
        } else {
            Err(format!("{stdout}{stderr}").trim().to_string())
        }
    }

    /// Kills the whole instance at once (SIGKILL to every process), as a
    /// crash or a power cut would.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(&mut child);
        }
    }

    /// Waits up to `timeout` for Kamailio to exit on its own (after a
    /// child died, say): true when it did. The instance is not stopped.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let Some(child) = self.child.as_mut() else {
            return true;
        };
        if wait_until(timeout, || child.try_wait().ok().flatten()).is_none() {
            return false;
        }
        if let Some(mut child) = self.child.take() {
            kill_group(&mut child);
        }
        true
    }

    /// The pids of the processes whose `core.psx` description contains
    /// `what` (e.g. "timer=a1").
    pub fn pids_of(&self, what: &str) -> Vec<i32> {
        let out = self.rpc(&["core.psx"]).unwrap_or_default();
        let mut pids = Vec::new();
        let mut pid: Option<i32> = None;
        for line in out.lines() {
            let line = line.trim();
            if let Some(p) = line.strip_prefix("PID:") {
                pid = p.trim().parse().ok();
            } else if line.starts_with("DSC:") && line.contains(what) {
                pids.extend(pid);
            }
        }
        pids
    }

    /// Stops Kamailio gracefully (SIGTERM) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill on our own child's pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            if wait_until(Duration::from_secs(15), || child.try_wait().ok().flatten()).is_some() {
                kill_group(&mut child);
                return;
            }
            eprintln!(
                "kamailio ({:?}) in {} did not stop within 15 s: killed",
                self.imp,
                self.dir.0.display()
            );
            kill_group(&mut child);
        }
    }
}

fn kill_group(child: &mut Child) {
    // SAFETY: signals the process group the child leads (setpgid in spawn).
    unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(&mut child);
        }
    }
}

/// Sends `count` SIP MESSAGE requests with sipp at `rate` per second and
/// returns sipp's exit status (0: every request got its 200).
pub fn sipp_messages(port: u16, count: usize, rate: usize, dir: &Path) -> i32 {
    // A local port free when chosen may be taken by another test process
    // before sipp binds it: sipp then exits with 254 (-2, "fatal error
    // binding a socket") before it sends anything, and runs again on
    // another port.
    for _ in 0..PORT_ATTEMPTS {
        let code = sipp_messages_from(free_port(), port, count, rate, dir);
        if code != 254 {
            return code;
        }
        eprintln!("sipp could not bind its local port: trying another");
    }
    254
}

fn sipp_messages_from(local: u16, port: u16, count: usize, rate: usize, dir: &Path) -> i32 {
    let scenario = format!("{}/tests/sipp/message.xml", env!("CARGO_MANIFEST_DIR"));
    // sipp's global timeout: the run's length plus a margin.
    let timeout = format!("{}s", count / rate.max(1) + 60);
    let mut cmd = Command::new("sipp");
    cmd.arg(format!("127.0.0.1:{port}"))
        .args([
            "-sf",
            &scenario,
            "-m",
            &count.to_string(),
            "-r",
            &rate.to_string(),
        ])
        .args(["-i", "127.0.0.1", "-p", &local.to_string()])
        .args([
            "-nostdin",
            "-trace_err",
            "-timeout",
            &timeout,
            "-timeout_error",
        ])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let status = cmd
        .status()
        .expect("run sipp: run `make deps` (package sip-tester)");
    status.code().unwrap_or(-1)
}

/// An HTTP response: status and body.
pub struct HttpReply {
    pub status: u16,
    pub body: String,
}

/// One HTTP request to 127.0.0.1:`port` (a JSON body for POST); Err when
/// no response came within 10 s (connection refused or closed).
pub fn http(port: u16, method: &str, path: &str, body: &str) -> Result<HttpReply, String> {
    http_within(port, method, path, body, Duration::from_secs(10))
}

/// [`http`] for a host that may take long to answer: Err when no whole
/// response came within `timeout`.
fn http_within(
    port: u16,
    method: &str,
    path: &str,
    body: &str,
    timeout: Duration,
) -> Result<HttpReply, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .into();
    let url = format!("http://127.0.0.1:{port}{path}");
    let sent = match method {
        "GET" => agent.get(&url).call(),
        "POST" => agent
            .post(&url)
            .header("Content-Type", "application/json")
            .send(body),
        _ => panic!("http: method {method} not supported here"),
    };
    let mut resp = sent.map_err(|e| format!("HTTP {method} {url}: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_string()
        .map_err(|e| format!("HTTP {method} {url}: reading the body: {e}"))?;
    Ok(HttpReply { status, body })
}

/// A JSON-RPC call over HTTP (`jsonrpcs` on `/RPC`): the parsed reply.
pub fn jsonrpc(port: u16, request: &str) -> Result<serde_json::Value, String> {
    jsonrpc_within(port, request, Duration::from_secs(10))
}

/// [`jsonrpc`] with a reply that may take up to `timeout` to build.
pub fn jsonrpc_within(
    port: u16,
    request: &str,
    timeout: Duration,
) -> Result<serde_json::Value, String> {
    let reply = http_within(port, "POST", "/RPC", request, timeout)?;
    serde_json::from_str(&reply.body).map_err(|e| {
        format!(
            "JSON-RPC reply (HTTP {}): {e}: {}",
            reply.status, reply.body
        )
    })
}

/// A `name: value` field of a kamcmd struct reply.
pub fn field(reply: &str, name: &str) -> String {
    let tag = format!("\t{name}: ");
    let start = reply
        .find(&tag)
        .unwrap_or_else(|| panic!("no {name} in {reply}"))
        + tag.len();
    let rest = &reply[start..];
    let end = rest
        .find("\n\t")
        .or_else(|| rest.rfind("\n}"))
        .unwrap_or(rest.len());
    rest[..end].to_string()
}

impl Kamailio {
    /// `mqueue.fetch` until the queue is empty: (key, value) pairs.
    pub fn drain(&self, queue: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        while let Ok(reply) = self.rpc(&["mqueue.fetch", queue]) {
            out.push((field(&reply, "key"), field(&reply, "val")));
            assert!(out.len() < 10_000, "queue {queue} does not drain");
        }
        out
    }

    /// `mqueue.get_size` of a queue.
    pub fn queue_size(&self, queue: &str) -> usize {
        let r = self.rpc(&["mqueue.get_size", queue]).expect("get_size");
        field(&r, "size").parse().expect("size is a number")
    }

    /// A figure of `core.shmmem` (`used`, `real_used`, ...), in bytes.
    pub fn shm(&self, name: &str) -> i64 {
        let r = self.rpc(&["core.shmmem"]).expect("core.shmmem");
        field(&r, name).trim().parse().expect("a number of bytes")
    }

    /// One counter of `mqueue.stats <queue>` (our module only).
    pub fn stat(&self, queue: &str, name: &str) -> i64 {
        let r = self.rpc(&["mqueue.stats", queue]).expect("mqueue.stats");
        field(&r, name).parse().expect("counter is a number")
    }
}
