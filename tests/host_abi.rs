//! The build against the host ABI: every cfg in cfg/ passes `kamailio -c`
//! with the built module, and every symbol the module needs from the core
//! is one the kamailio binary defines. The DB API (srdb1's `db_bind_mod`)
//! is not among them: the module looks it up at run time (`dlsym`), so it
//! links no Kamailio library.

mod common;

use std::collections::HashSet;
use std::process::Command;

use common::{kamailio_bin, modules_dir, Impl, TempDir};

fn dynamic_symbols(path: &str, defined: bool) -> HashSet<String> {
    let flag = if defined {
        "--defined-only"
    } else {
        "--undefined-only"
    };
    let out = Command::new("nm")
        .args(["-D", flag, path])
        .output()
        .expect("run nm (package binutils)");
    assert!(out.status.success(), "nm failed on {path}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().last().map(str::to_string))
        .collect()
}

#[test]
fn undefined_symbols_are_provided_by_the_core() {
    let module = Impl::Rust.module_path();
    let provided = dynamic_symbols(&kamailio_bin(), true);
    let ldd = Command::new("ldd").arg(&module).output().expect("run ldd");
    let linked = String::from_utf8_lossy(&ldd.stdout).into_owned();
    assert!(
        !linked.contains("libsrdb1"),
        "the module links libsrdb1:\n{linked}"
    );
    let missing: Vec<_> = dynamic_symbols(&module, false)
        .into_iter()
        .filter(|s| !s.contains('@')) // versioned: libc, libgcc, ld.so
        .filter(|s| {
            !s.starts_with("__gmon_start__") && !s.starts_with("_ITM_") && !s.starts_with("__cxa_")
        })
        .filter(|s| !provided.contains(s))
        .collect();
    assert!(
        missing.is_empty(),
        "symbols no library provides: {missing:?}"
    );
}

#[test]
fn every_cfg_passes_kamailio_check() {
    let module = Impl::Rust.module_path();
    let dir = TempDir::new("cfgcheck");
    let root = env!("CARGO_MANIFEST_DIR");
    let mut checked = 0;
    for entry in std::fs::read_dir(format!("{root}/cfg")).expect("cfg/ exists") {
        let path = entry.expect("dir entry").path();
        if path.extension().is_none_or(|e| e != "cfg") {
            continue;
        }
        let out_cfg = dir.0.join(path.file_name().expect("file name"));
        let st = Command::new("bash")
            .arg(format!("{root}/scripts/render-cfg.sh"))
            .arg(&path)
            .arg(&out_cfg)
            .arg(&module)
            .arg("35990")
            .arg(&dir.0)
            .arg(modules_dir())
            .status()
            .expect("render cfg");
        assert!(st.success());
        let out = Command::new(kamailio_bin())
            .arg("-c")
            .arg("-f")
            .arg(&out_cfg)
            .output()
            .expect("kamailio -c");
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{} fails kamailio -c:\n{text}",
            path.display()
        );
        checked += 1;
    }
    assert!(checked > 0, "no cfg in cfg/");
}
