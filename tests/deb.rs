//! The Debian packages, installed, upgraded under, removed and purged as an
//! operator would (tests/deb/lifecycle.sh), then lintian:
//! - Debian 12's (`make deb`), on this machine in a private mount namespace
//!   with overlays over /usr, /etc and /var, so the machine is never
//!   touched; with Debian's Kamailio (the package depends on that exact
//!   version);
//! - Debian 13's (`make deb DEBIAN=13`), built and run inside a throwaway
//!   overlay of the Debian 13 root (scripts/debian13-root.sh), which stays
//!   as it was, as does the machine.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{free_port, Impl, TempDir};

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}: run `make deps`"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
    (
        sha256(&format!("{}/mqueue.so", common::modules_dir())),
        mqueue_diversions,
        ours,
    )
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
    check_name(&name, "+kamailio5.");
    let theirs = kamailio_deb();
    let before = host_state();
    assert!(
        !before.2,
        "kamailio-mqueue-rs is installed on this machine: the test would not prove anything"
    );

    let work = TempDir::new("deb");
    let result = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "bash"])
        .env("MQUEUE_LIFECYCLE_OVERLAY", "1")
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
    check_steps(&log);
    let lint = Command::new("lintian")
        .args(["--display-info", "--pedantic"])
        .arg(&deb)
        .output()
        .expect("run lintian (make deps installs it)");
    check_lintian(&name, &String::from_utf8_lossy(&lint.stdout));
}

/// What the Debian 13 root holds: its dpkg database, and whether kamailio
/// or ours left files in it.
fn root_state(root: &Path) -> (String, bool, bool) {
    (
        sha256(&root.join("var/lib/dpkg/status").to_string_lossy()),
        root.join("etc/kamailio").exists(),
        root.join("usr/share/doc/kamailio-mqueue-rs").exists(),
    )
}

#[test]
fn debian13_package_installs_survives_upgrades_and_removes_cleanly() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = run(
        Command::new("bash")
            .arg(format!("{root}/scripts/deb-debian13.sh"))
            .current_dir(root),
        "scripts/deb-debian13.sh (make deb DEBIAN=13)",
    );
    let deb = Path::new(root).join(out.lines().last().expect("deb path").trim());
    let name = deb.file_name().unwrap().to_string_lossy().into_owned();
    check_name(&name, "+kamailio6.0.");
    let d13 = PathBuf::from(
        run(
            Command::new("bash").arg(format!("{root}/scripts/debian13-root.sh")),
            "scripts/debian13-root.sh",
        )
        .lines()
        .last()
        .expect("root path")
        .trim(),
    );
    // The kamailio package ours depends on, from the root's download cache.
    let archives = d13.join("var/cache/apt/archives");
    let theirs = std::fs::read_dir(&archives)
        .expect("the Debian 13 root's apt archives")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("kamailio_") && n.ends_with(".deb"))
        .expect("kamailio .deb in the Debian 13 root: remove the root to rebuild it");
    assert!(
        !d13.join("usr/sbin/kamailio").exists(),
        "kamailio is installed in the Debian 13 root: apt install would not pull it in"
    );
    let root_before = root_state(&d13);
    let before = host_state();

    let work = TempDir::new("deb13");
    let in_root = |overlay: &str, cmd: &[&str]| {
        Command::new("bash")
            .arg(format!("{root}/scripts/debian13-root.sh"))
            .arg("run")
            .arg(work.0.join(overlay))
            .args([
                "--bind",
                &format!("{root}/build"),
                "--bind",
                &format!("{root}/tests/deb"),
            ])
            .arg("--")
            .args(cmd)
            .output()
            .expect("run scripts/debian13-root.sh")
    };
    let result = in_root(
        "lifecycle",
        &[
            "bash",
            &format!("{root}/tests/deb/lifecycle.sh"),
            &deb.to_string_lossy(),
            &format!("/var/cache/apt/archives/{theirs}"),
            "/tmp/lifecycle",
            &free_port().to_string(),
        ],
    );
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    assert_eq!(host_state(), before, "the host changed:\n{log}");
    assert_eq!(
        root_state(&d13),
        root_before,
        "the Debian 13 root changed:\n{log}"
    );
    assert!(result.status.success(), "package lifecycle failed:\n{log}");
    check_steps(&log);
    // Debian 13's lintian, in the root.
    let lint = in_root(
        "lintian",
        &[
            "lintian",
            "--display-info",
            "--pedantic",
            &deb.to_string_lossy(),
        ],
    );
    check_lintian(&name, &String::from_utf8_lossy(&lint.stdout));
}

fn check_name(name: &str, kamailio: &str) {
    let arch = run(
        Command::new("dpkg").arg("--print-architecture"),
        "dpkg --print-architecture",
    );
    assert!(
        name.starts_with("kamailio-mqueue-rs_0.")
            && name.contains(kamailio)
            && name.ends_with(&format!("_{}.deb", arch.trim())),
        "{name}"
    );
}

fn check_steps(log: &str) {
    for step in 1..=4 {
        assert!(
            log.contains(&format!("STEP {step} ok")),
            "step {step}:\n{log}"
        );
    }
}

/// lintian: no error, no warning; the informational tags we accept.
fn check_lintian(name: &str, text: &str) {
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
