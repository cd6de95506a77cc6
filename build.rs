//! Builds the module against one Kamailio: the binary (`KAMAILIO_BIN`) tells
//! the compile defines, the source tree (`KAMAILIO_SRC`) gives the headers.
//! A probe compiled with those defines must print the binary's version and
//! flags, so a wrong define set fails here and not at `loadmodule`.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn fail(msg: &str) -> ! {
    eprintln!("\nmqueue build: {msg}\n");
    std::process::exit(1);
}

/// The `version:` and `flags:` lines and the extra values of `kamailio -v`.
struct CoreInfo {
    full_version: String,
    flags: String,
    values: Vec<(String, String)>,
}

fn kamailio_bin() -> String {
    if let Ok(bin) = env::var("KAMAILIO_BIN") {
        return bin;
    }
    for candidate in ["/usr/sbin/kamailio", "/usr/local/sbin/kamailio"] {
        if Path::new(candidate).exists() {
            return candidate.to_string();
        }
    }
    fail("no Kamailio binary found: run `make deps` or set KAMAILIO_BIN=/path/to/kamailio");
}

fn read_core_info(bin: &str) -> CoreInfo {
    let out = Command::new(bin)
        .arg("-v")
        .output()
        .unwrap_or_else(|e| fail(&format!("cannot run `{bin} -v`: {e}")));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = |prefix: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .map(|l| l.trim().to_string())
            .unwrap_or_else(|| fail(&format!("`{bin} -v` printed no `{prefix}` line")))
    };
    let full_version = line("version:");
    let flags = line("flags:");
    let values = text
        .lines()
        .find(|l| l.starts_with("ADAPTIVE_WAIT_LOOPS") || l.starts_with("MAX_RECV_BUFFER_SIZE"))
        .map(|l| {
            l.split(',')
                .filter_map(|kv| {
                    let kv = kv.trim();
                    let (k, v) = kv.rsplit_once(' ')?;
                    (!k.contains(' ')).then(|| (k.to_string(), v.to_string()))
                })
                .collect()
        })
        .unwrap_or_default();
    CoreInfo {
        full_version,
        flags,
        values,
    }
}

/// Flags that the core's own memory headers define when they are
/// included (`#define DBG_QM_MALLOC` in `mem/q_malloc.h` of 6.x): `-v`
/// prints them (its file includes those headers first), but the string the
/// core compares with `module_flags` at `loadmodule` is made without them.
fn header_defined_flags(src: &Path) -> Vec<String> {
    let mut names = Vec::new();
    let Ok(dir) = std::fs::read_dir(src.join("src/core/mem")) else {
        return names;
    };
    for entry in dir.flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            if let (Some("#define"), Some(name), None) = (words.next(), words.next(), words.next())
            {
                if name.starts_with("DBG_") && name.ends_with("_MALLOC") {
                    names.push(name.to_string());
                }
            }
        }
    }
    names
}

/// The compile flags the core checks `module_flags` against.
fn checked_flags(info: &CoreInfo, header_defined: &[String]) -> String {
    info.flags
        .split(',')
        .map(str::trim)
        .filter(|f| !f.is_empty() && !header_defined.iter().any(|h| h == f))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `-D` defines that reproduce the core's compile flags and version string.
fn defines(info: &CoreInfo, header_defined: &[String]) -> Vec<(String, Option<String>)> {
    let mut defs: Vec<(String, Option<String>)> = Vec::new();
    for flag in info
        .flags
        .split(',')
        .map(str::trim)
        .filter(|f| !f.is_empty() && !header_defined.iter().any(|h| h == f))
    {
        match flag {
            "TLS_PTHREAD_MUTEX_SHARED" => defs.push(("KSR_PTHREAD_MUTEX_SHARED".into(), None)),
            f if f.contains('-') => {
                for part in f.split('-') {
                    defs.push((part.to_string(), None));
                }
            }
            f => defs.push((f.to_string(), None)),
        }
    }
    for (k, v) in &info.values {
        defs.push((k.clone(), Some(v.clone())));
    }
    // "kamailio 5.6.3 (x86_64/linux)"
    let (name, rest) = info
        .full_version
        .split_once(' ')
        .unwrap_or_else(|| fail("cannot parse the version line"));
    let (version, rest) = rest
        .split_once(" (")
        .unwrap_or_else(|| fail("cannot parse the version line"));
    let (arch, os) = rest
        .trim_end_matches(')')
        .split_once('/')
        .unwrap_or_else(|| fail("cannot parse the version line"));
    let quote = |s: &str| Some(format!("\"{s}\""));
    defs.push(("NAME".into(), quote(name)));
    defs.push(("VERSION".into(), quote(version)));
    defs.push(("ARCH".into(), quote(arch)));
    defs.push(("OS".into(), Some(os.to_string())));
    defs.push(("OS_QUOTED".into(), quote(os)));
    // Not shown by `-v`, needed by the lock and atomic headers.
    defs.push((format!("__CPU_{arch}"), None));
    // The OS define is lower case whatever the version line shows
    // (CMake builds print "Linux").
    defs.push((format!("__OS_{}", os.to_lowercase()), None));
    defs.push(("CC_GCC_LIKE_ASM".into(), None));
    defs.push(("MOD_NAME".into(), quote("mqueue")));
    defs
}

fn kamailio_src(manifest: &Path) -> PathBuf {
    let src = env::var("KAMAILIO_SRC")
        .map(PathBuf::from)
        .unwrap_or_else(|_| manifest.join("kamailio-headers/src"));
    if !src.join("src/core/sr_module.h").exists() {
        fail(&format!(
            "no Kamailio source tree at {}: run `make deps` (fetches the source of the \
             installed Kamailio) or set KAMAILIO_SRC to a Kamailio source tree",
            src.display()
        ));
    }
    src
}

/// Compiles and runs the probe; its output must equal the binary's `-v`.
fn check_probe(
    info: &CoreInfo,
    flags: &str,
    defs: &[(String, Option<String>)],
    inc: &[PathBuf],
    out: &Path,
) {
    let exe = out.join("kamailio-probe");
    let mut cmd = Command::new(env::var("CC").unwrap_or_else(|_| "cc".into()));
    for (k, v) in defs {
        cmd.arg(match v {
            Some(v) => format!("-D{k}={v}"),
            None => format!("-D{k}"),
        });
    }
    for dir in inc {
        cmd.arg("-I").arg(dir);
    }
    cmd.arg("kamailio-headers/probe.c").arg("-o").arg(&exe);
    let status = cmd
        .status()
        .unwrap_or_else(|e| fail(&format!("cannot run the C compiler for the probe: {e}")));
    if !status.success() {
        fail("the build probe did not compile with the defines derived from `kamailio -v`");
    }
    let printed = Command::new(&exe)
        .output()
        .unwrap_or_else(|e| fail(&format!("cannot run the build probe: {e}")));
    let printed = String::from_utf8_lossy(&printed.stdout).into_owned();
    let mut lines = printed.lines();
    let (ver, printed_flags) = (
        lines.next().unwrap_or("").trim(),
        lines.next().unwrap_or(""),
    );
    if ver != info.full_version || printed_flags != flags {
        fail(&format!(
            "the headers and defines do not match the Kamailio binary.\n  binary: {}\n          {flags}\n  \
             headers: {ver}\n           {printed_flags}\nPoint KAMAILIO_SRC at the source of the same \
             version as KAMAILIO_BIN (make deps fetches it for Debian's package).",
            info.full_version
        ));
    }
}

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out = PathBuf::from(env::var("OUT_DIR").expect("set by cargo"));
    for var in ["KAMAILIO_SRC", "KAMAILIO_BIN", "KAMAILIO_LIBDIR"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    if let Ok(bin) = env::var("KAMAILIO_BIN") {
        println!("cargo:rerun-if-changed={bin}");
    }
    for file in ["wrapper.h", "shim.h", "shim.c", "probe.c"] {
        println!("cargo:rerun-if-changed=kamailio-headers/{file}");
    }

    for (cfg, _) in ABI_CFGS {
        println!("cargo::rustc-check-cfg=cfg({cfg})");
    }
    if env::var_os("CARGO_FEATURE_HOST").is_none() {
        return; // the pure queue core needs nothing from Kamailio
    }
    let bin = kamailio_bin();
    let info = read_core_info(&bin);
    let src = kamailio_src(&manifest);
    let header_defined = header_defined_flags(&src);
    let flags = checked_flags(&info, &header_defined);
    let defs = defines(&info, &header_defined);
    let inc = vec![src.join("src"), manifest.join("kamailio-headers")];
    check_probe(&info, &flags, &defs, &inc, &out);
    emit_abi_cfgs(&info);

    let mut shim = cc::Build::new();
    shim.file("kamailio-headers/shim.c").warnings(false);
    for dir in &inc {
        shim.include(dir);
    }
    for (k, v) in &defs {
        shim.define(k, v.as_deref());
    }
    shim.compile("mqrs_shim");

    let mut clang_args: Vec<String> = inc.iter().map(|d| format!("-I{}", d.display())).collect();
    clang_args.extend(defs.iter().map(|(k, v)| match v {
        Some(v) => format!("-D{k}={v}"),
        None => format!("-D{k}"),
    }));
    let bindings = bindgen::Builder::default()
        .header("kamailio-headers/wrapper.h")
        .clang_args(&clang_args)
        .prepend_enum_name(false)
        .derive_default(true)
        .layout_tests(false)
        .allowlist_type("module_exports|cmd_export_t|param_export_t|pv_export_t|rpc_export_t")
        .allowlist_type("sr_kemi_t|sr_kemi_xval_t|rpc_t|gparam_t|pv_spec_t|pv_value_t")
        .allowlist_type("db_cap_t|db_func_t|db1_con_t|db_key_t|db_val_t|db1_res_t")
        .allowlist_type("counter_handle_t|destroy_function")
        .allowlist_var("runtime_dir|uid|gid")
        .allowlist_function("get_loaded_modules")
        .allowlist_function("mqrs_.*|pv_get_null|pv_get_strval|pv_get_sintval|pv_cache_get")
        .allowlist_function("pv_get_spec_value|pv_locate_name|fixup_spve_null|fixup_free_spve_null")
        .allowlist_function("sr_kemi_modules_add|faked_msg_init|faked_msg_next")
        .allowlist_function("shm_initialized|counter_register|register_timer|sr_kemi_xval_null")
        .allowlist_function("register_basic_timers|fork_basic_utimer")
        .allowlist_var("PVT_OTHER|PV_NAME_.*|PV_VAL_.*|SR_KEMIP_.*|ANY_ROUTE|PARAM_STR.*")
        .allowlist_var("PARAM_INT|PROC_.*|L_ERR|L_WARN|L_NOTICE|L_INFO|L_DBG|DB_.*|CNT_F_.*")
        .allowlist_var("MODULE_INTERFACE_VER|SR_KEMI_XVAL_.*|FPARAM_.*")
        .opaque_type("sip_msg")
        .generate()
        .unwrap_or_else(|e| {
            fail(&format!(
                "bindgen failed on kamailio-headers/wrapper.h: {e}"
            ))
        });
    bindings
        .write_to_file(out.join("bindings.rs"))
        .unwrap_or_else(|e| fail(&format!("cannot write the bindings: {e}")));

    // Strings the core compares byte for byte at loadmodule.
    let ident = format!(
        "pub const SER_FULL_VERSION: &[u8] = b\"{}\\0\";\npub const SER_COMPILE_FLAGS: &[u8] = b\"{}\\0\";\n",
        info.full_version.escape_default(),
        flags.escape_default()
    );
    std::fs::write(out.join("core_version.rs"), ident)
        .unwrap_or_else(|e| fail(&format!("cannot write core_version.rs: {e}")));

    locate_srdb1(&bin);
    // The core's symbols are resolved when Kamailio loads the module.
    println!("cargo:rustc-cdylib-link-arg=-Wl,--allow-shlib-undefined");
}

/// The machine's multiarch triplet (`x86_64-linux-gnu`, `aarch64-linux-gnu`),
/// under which Debian installs Kamailio's libraries; None off Debian.
fn multiarch() -> Option<String> {
    let out = Command::new("dpkg-architecture")
        .arg("-qDEB_HOST_MULTIARCH")
        .output()
        .ok()?;
    let triplet = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !triplet.is_empty()).then_some(triplet)
}

/// The DB API (`db_bind_mod`): Makefile builds (Debian's packages, 5.x,
/// 6.0) install it as `libsrdb1.so` in Kamailio's private library
/// directory; CMake builds (6.1) link it into the kamailio binary. The
/// module does not link it (no RUNPATH into Kamailio's directory): it finds
/// `db_bind_mod` at run time, in the process or in the library whose path
/// this puts in `MQUEUE_SRDB1` (empty when the binary has it).
fn locate_srdb1(bin: &str) {
    let prefix = Path::new(bin)
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("/usr"));
    let candidates: Vec<PathBuf> = match env::var("KAMAILIO_LIBDIR") {
        Ok(dir) => vec![PathBuf::from(dir)],
        Err(_) => multiarch()
            .map(|triplet| format!("lib/{triplet}/kamailio"))
            .into_iter()
            .chain(["lib64/kamailio".into(), "lib/kamailio".into()])
            .map(|d| prefix.join(d))
            .collect(),
    };
    let found = candidates.iter().find_map(|dir| {
        ["libsrdb1.so.1", "libsrdb1.so"]
            .iter()
            .map(|n| dir.join(n))
            .find(|p| p.exists())
    });
    let path = match found {
        Some(p) => p.display().to_string(),
        None if binary_exports(bin, "db_bind_mod") => String::new(),
        None => {
            let looked: Vec<String> = candidates.iter().map(|d| d.display().to_string()).collect();
            fail(&format!(
                "libsrdb1 not found (looked in {}) and {bin} does not export db_bind_mod: set \
                 KAMAILIO_LIBDIR to the directory that holds libsrdb1.so",
                looked.join(", ")
            ));
        }
    };
    println!("cargo:rustc-env=MQUEUE_SRDB1={path}");
}

/// Whether the binary's dynamic symbol table defines `symbol`.
fn binary_exports(bin: &str, symbol: &str) -> bool {
    let out = Command::new("nm")
        .args(["-D", "--defined-only", bin])
        .output()
        .unwrap_or_else(|e| fail(&format!("cannot run `nm -D {bin}` (package binutils): {e}")));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.split_whitespace().last() == Some(symbol))
}

/// One `cfg` per ABI family, from the version line, for the few code paths
/// that differ (the way ngx-rust turns the nginx version into cfgs):
/// - `kamailio_ge_5_7`: `pv_get_sintval` takes a `long` (and KEMI has
///   `SR_KEMIP_LONG`; its constants come from bindgen either way).
///
/// The other differences need no cfg: the shutdown order works through
/// `get_loaded_modules()` on every version, and srdb1's `db_bind_mod` is
/// found at run time (see [`locate_srdb1`]).
const ABI_CFGS: [(&str, (u32, u32)); 1] = [("kamailio_ge_5_7", (5, 7))];

fn emit_abi_cfgs(info: &CoreInfo) {
    let version = info
        .full_version
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| fail("cannot parse the version line"));
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    for (cfg, (maj, min)) in ABI_CFGS {
        if (major, minor) >= (maj, min) {
            println!("cargo::rustc-cfg={cfg}");
        }
    }
}
