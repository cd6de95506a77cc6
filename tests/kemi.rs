//! KEMI exports through routing scripts in JavaScript (app_jsdt) and Lua
//! (app_lua): the same results as the C module, except the
//! `*_gete`/`*_getw` null modes, which ours honours and the C module
//! ignores.

mod common;

use std::time::Duration;

use common::{sipp_messages, Impl};

#[derive(Clone, Copy)]
enum Engine {
    JavaScript,
    Lua,
}

fn run(imp: Impl, engine: Engine) -> String {
    run_on(imp, engine, "")
}

/// `attr` is added to the queue's definition (`;redis=URL`).
fn run_on(imp: Impl, engine: Engine, attr: &str) -> String {
    let (module, engine_name, file) = match engine {
        Engine::JavaScript => ("app_jsdt", "jsdt", "mqueue.js"),
        Engine::Lua => ("app_lua", "lua", "mqueue.lua"),
    };
    let params = format!("modparam(\"mqueue\", \"mqueue\", \"name=q{attr}\")\n");
    let k = common::start_kemi(module, engine_name, file, &params, imp);
    assert_eq!(sipp_messages(k.port, 1, 10, &k.dir.0), 0, "{}", k.log());
    let lines = k.wait_marked("T|", 1, Duration::from_secs(10));
    assert_eq!(lines.len(), 1, "{imp:?}:\n{}", k.log());
    lines[0].clone()
}

#[test]
fn javascript_kemi_exports_match_the_c_module() {
    check(Engine::JavaScript);
}

#[test]
fn lua_kemi_exports_match_the_c_module() {
    check(Engine::Lua);
}

fn check(engine: Engine) {
    let ours = run(Impl::Rust, engine);
    let theirs = run(Impl::C, engine);
    let common_part = "get-before=null add=1 add2=1 add-unknown=-1 size=2 size-unknown=-1 fetch=1 \
         k=[k1]";
    assert!(ours.starts_with(common_part), "{ours}");
    assert!(theirs.starts_with(common_part), "{theirs}");
    let tail = "free=1 after-free=null fetch2=1[v2] fetch-empty=-2 size-empty=0 fetch-unknown=-1";
    assert!(ours.contains(tail), "{ours}");
    assert!(theirs.contains(tail), "{theirs}");
    // With an item both give it from all three getters.
    assert!(ours.contains("k=[k1][k1][k1] v=[v1][v1][v1]"), "{ours}");
    assert!(theirs.contains("k=[k1][k1][k1] v=[v1][v1][v1]"), "{theirs}");
    // Without one, ours honours the getter names; the C module gives null.
    assert!(ours.ends_with("null-modes=[][<null>]"), "{ours}");
    assert!(theirs.ends_with("null-modes=nullnull"), "{theirs}");
}

/// The same KEMI scripts on a queue on Redis Streams: the same results as
/// on a local queue.
#[test]
fn kemi_on_a_redis_queue_matches_a_local_queue() {
    let redis = common::redis::RedisServer::start();
    let attr = format!(";redis={}", redis.url());
    for engine in [Engine::JavaScript, Engine::Lua] {
        assert_eq!(run_on(Impl::Rust, engine, &attr), run(Impl::Rust, engine));
    }
}
