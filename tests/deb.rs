//! The Debian package (`make deb`): installed, upgraded under, removed and
//! purged as an operator would, inside a private mount namespace with
//! overlays over /usr, /etc and /var (tests/deb/lifecycle.sh), so the
//! machine is never touched; then lintian. Runs with Debian's Kamailio
//! (the package depends on that exact version).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{free_port, Impl, TempDir};

const HOST_MODULE: &str = "/usr/lib/x86_64-linux-gnu/kamailio/modules/mqueue.so";

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}: run `make deps`"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what} failed:\n{text}");
    text
}

fn sha256(path: &str) -> String {
    run(Command::new("sha256sum").arg(path), "sha256sum")
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// What the host looks like: the C module, diversions, our package.
fn host_state() -> (String, String, bool) {
    let diversions = run(
        Command::new("dpkg-divert").arg("--list"),
        "dpkg-divert --list",
    );
    let ours = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "kamailio-mqueue-rs"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("installed"))
        .unwrap_or(false);
    let mqueue_diversions = diversions
        .lines()
        .filter(|l| l.contains("mqueue"))
        .collect::<Vec<_>>()
        .join("\n");
    (sha256(HOST_MODULE), mqueue_diversions, ours)
}

/// Debian's kamailio package of the installed version, from apt (kept in
/// target/apt-cache between runs).
fn kamailio_deb() -> PathBuf {
    let version = run(
        Command::new("dpkg-query").args(["-W", "-f=${Version}", "kamailio"]),
        "dpkg-query kamailio",
    );
    let cache = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/apt-cache");
    std::fs::create_dir_all(&cache).expect("apt cache dir");
    let find = || {
        std::fs::read_dir(&cache)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("kamailio_"))
            })
    };
    if find().is_none() {
        run(
            Command::new("apt-get")
                .args(["download", &format!("kamailio={version}")])
                .current_dir(&cache),
            "apt-get download kamailio (needs `apt-get update`, run by `make deps`)",
        );
    }
    find().expect("kamailio .deb downloaded")
}

#[test]
fn debian_package_installs_survives_upgrades_and_removes_cleanly() {
    let module = Impl::Rust.module_path();
    let root = env!("CARGO_MANIFEST_DIR");
    let out = run(
        Command::new("bash")
            .arg(format!("{root}/scripts/deb.sh"))
            .arg(&module)
            .current_dir(root),
        "scripts/deb.sh",
    );
    let deb = Path::new(root).join(out.lines().last().expect("deb path").trim());
    let name = deb.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("kamailio-mqueue-rs_0.")
            && name.contains("+kamailio5.")
            && name.ends_with("_amd64.deb"),
        "{name}"
    );
    let theirs = kamailio_deb();
    let before = host_state();
    assert!(
        !before.2,
        "kamailio-mqueue-rs is installed on this machine: the test would not prove anything"
    );

    let work = TempDir::new("deb");
    let result = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "bash"])
        .arg(format!("{root}/tests/deb/lifecycle.sh"))
        .arg(&deb)
        .arg(&theirs)
        .arg(&work.0)
        .arg(free_port().to_string())
        .output()
        .expect("run unshare (util-linux)");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    // The machine is untouched whatever happened inside.
    assert_eq!(host_state(), before, "the host changed:\n{log}");
    assert!(result.status.success(), "package lifecycle failed:\n{log}");
    for step in 1..=4 {
        assert!(
            log.contains(&format!("STEP {step} ok")),
            "step {step}:\n{log}"
        );
    }

    // lintian: no error, no warning; the informational tags we accept.
    let lint = Command::new("lintian")
        .args(["--display-info", "--pedantic"])
        .arg(&deb)
        .output()
        .expect("run lintian (make deps installs it)");
    let text = String::from_utf8_lossy(&lint.stdout).into_owned();
    let accepted = [
        "example-interpreter-not-absolute",
        "example-unusual-interpreter",
        "hardening-no-fortify-functions",
    ];
    let tags: Vec<&str> = text
        .lines()
        .filter(|l| l.len() > 3 && l.as_bytes()[1] == b':' && l.as_bytes()[2] == b' ')
        .collect();
    for line in &tags {
        let tag = line.split_whitespace().nth(2).unwrap_or_default();
        assert!(
            !line.starts_with("E:") && !line.starts_with("W:"),
            "lintian: {line}"
        );
        assert!(
            accepted.contains(&tag),
            "lintian tag not accepted yet: {line}"
        );
    }
    eprintln!("lintian on {name}: {tags:?}");
}
