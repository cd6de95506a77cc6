//! Crash consistency, proven step by step: a forked child runs one
//! operation on a queue in a shared mapping and dies (`_exit`, as SIGKILL)
//! at its n-th step, for every n until the operation completes; the parent
//! then takes the lock as the next holder would, and must find the queue
//! as before or as after the operation, whole (counts, key index, chunk
//! list) and working on.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use super::crash::{arm, DIED};
use super::model::Model;
use super::*;

/// A bump allocator over one shared anonymous mapping, so that parent and
/// child see the same queue; `free` poisons the block, so that a repair
/// reading freed memory fails loudly.
#[derive(Default, Clone, Copy)]
pub(crate) struct Shared;

const ARENA: usize = 1 << 30;

fn arena() -> *mut u8 {
    static BASE: OnceLock<usize> = OnceLock::new();
    *BASE.get_or_init(|| {
        // SAFETY: a fresh shared anonymous mapping; pages are reserved on
        // first touch only.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                ARENA,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        // SAFETY: the first word is the bump offset; blocks start after it.
        unsafe { (*(p as *const AtomicUsize)).store(8, Ordering::Relaxed) };
        p as usize
    }) as *mut u8
}

// SAFETY: blocks are 8-aligned (8-byte size header, sizes rounded to 8),
// disjoint, and never reused.
unsafe impl RawAlloc for Shared {
    fn alloc(&self, size: usize) -> *mut u8 {
        let base = arena();
        // SAFETY: the first word of the mapping is the bump offset.
        let top = unsafe { &*(base as *const AtomicUsize) };
        let need = 8 + ((size + 7) & !7);
        let off = top.fetch_add(need, Ordering::Relaxed);
        if off + need > ARENA {
            return std::ptr::null_mut();
        }
        // SAFETY: [off, off + need) is ours, inside the mapping.
        unsafe {
            (base.add(off) as *mut u64).write(size as u64);
            base.add(off + 8)
        }
    }
    unsafe fn free(&self, ptr: *mut u8) {
        // SAFETY: ptr came from alloc: its size is in the word before it.
        unsafe {
            let size = (ptr.sub(8) as *const u64).read() as usize;
            std::ptr::write_bytes(ptr, 0xDD, size);
        }
    }
}

type SharedQueue = Queue<Shared>;

#[derive(Clone)]
enum Op {
    Add(Vec<u8>, Vec<u8>),
    /// A durable queue's add: the item tagged with a sequence number.
    AddTagged(Vec<u8>, Vec<u8>, u64),
    Fetch,
    FetchIf,
    /// A fetch read in place, then its release.
    FetchHeld,
    Clear,
}

impl std::fmt::Debug for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Op::Add(k, v) => write!(f, "add({}, {} bytes)", String::from_utf8_lossy(k), v.len()),
            Op::AddTagged(k, v, seq) => write!(
                f,
                "add({}, {} bytes, seq {seq})",
                String::from_utf8_lossy(k),
                v.len()
            ),
            Op::Fetch => write!(f, "fetch"),
            Op::FetchIf => write!(f, "fetch_if"),
            Op::FetchHeld => write!(f, "fetch held, release"),
            Op::Clear => write!(f, "clear"),
        }
    }
}

fn apply(q: &mut QueueState<Shared>, op: &Op) {
    match op {
        Op::Add(k, v) => {
            q.add(k, v);
        }
        Op::AddTagged(k, v, seq) => {
            q.add_seq(k, v, *seq, |_| {});
        }
        Op::Fetch => {
            q.fetch_seq(|_, _, _| {});
        }
        Op::FetchIf => {
            q.fetch_if(|_, _| true);
        }
        Op::FetchHeld => {
            if let crate::queue::Taken::Held(h) = q.fetch_or_hold(0, |_, _| {}) {
                q.release(h);
            }
        }
        Op::Clear => {
            q.clear();
        }
    }
}

type Items = Vec<(Vec<u8>, Vec<u8>)>;

fn items(q: &QueueState<Shared>) -> Items {
    let mut out = Vec::new();
    q.peek(usize::MAX, |k, v| out.push((k.to_vec(), v.to_vec())));
    out
}

fn fresh_queue(mode: AddMode, limits: Limits, setup: &[Op]) -> &'static SharedQueue {
    let p = Shared.alloc(std::mem::size_of::<SharedQueue>()) as *mut SharedQueue;
    assert!(!p.is_null());
    // SAFETY: a fresh block of the right size, never freed.
    unsafe {
        p.write(Queue::new(QueueState::new(mode, limits, 7)));
        let q = &*p;
        for op in setup {
            apply(&mut q.lock(), op);
        }
        q
    }
}

/// Runs `op` in a child that dies at step `n` (0: never); true when it
/// died there.
fn run_child(q: &'static SharedQueue, op: &Op, n: u64) -> bool {
    // SAFETY: the child only runs the queue code on the shared mapping and
    // leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        arm(n);
        apply(&mut q.lock(), op);
        arm(0);
        // SAFETY: ends the child without running the parent's destructors.
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    // SAFETY: waits for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(libc::WIFEXITED(status), "child crashed: status {status}");
    match libc::WEXITSTATUS(status) {
        0 => false,
        DIED => true,
        s => panic!("child exit {s}"),
    }
}

/// The next holder: takes a lock a dead process left held (as the
/// shutdown save does) and repairs what the dead process left.
fn take_over(
    q: &'static SharedQueue,
) -> lock_api::MutexGuard<'static, FutexMutex, QueueState<Shared>> {
    if q.is_locked() {
        // SAFETY: the only process that held it is dead.
        unsafe { q.force_unlock() };
    }
    let mut g = q.lock();
    if g.interrupted() {
        g.repair();
    }
    g
}

/// Every step of `op` on a queue made by `setup`: the next holder finds
/// the items before or after it, a consistent state, and a queue that
/// goes on as the model says. Returns the number of steps.
fn every_step(mode: AddMode, limits: Limits, setup: &[Op], op: Op) -> u64 {
    let q = fresh_queue(mode, limits, setup);
    let before = items(&q.lock());
    assert!(!run_child(q, &op, 0));
    let after = items(&take_over(q));
    assert_ne!(before, after, "{op:?} changes nothing: a useless case");
    let mut n = 1;
    loop {
        let q = fresh_queue(mode, limits, setup);
        let died = run_child(q, &op, n);
        let mut g = take_over(q);
        let seen = items(&g);
        assert!(
            seen == before || seen == after,
            "{op:?} died at step {n}: {} items, before {}, after {}",
            seen.len(),
            before.len(),
            after.len()
        );
        g.check_consistent();
        check_tags(&g);
        go_on(&mut g, mode, limits, seen);
        if !died {
            return n;
        }
        n += 1;
    }
}

/// Adds and fetches on the repaired queue match the model.
fn go_on(q: &mut QueueState<Shared>, mode: AddMode, limits: Limits, seen: Items) {
    let mut m = Model {
        items: seen.into(),
        mode: mode.as_int(),
        max: limits.max_items,
    };
    for i in 0..40u32 {
        let k = format!("k{}", i % 9).into_bytes();
        let v = vec![b'n'; (i * 37 % 200) as usize];
        q.add(&k, &v);
        if limits.max_bytes == 0 {
            m.add(&k, &v);
        }
        q.check_consistent();
    }
    if limits.max_bytes == 0 {
        assert_eq!(items(q), Vec::from(m.items.clone()));
    }
    let n = q.len();
    for _ in 0..n {
        assert!(q.fetch_with(|_, _| {}));
    }
    assert!(q.is_empty());
    q.check_consistent();
}

/// Every tagged item still carries its own sequence number (the value of
/// a tagged test item starts with `T` and the number).
fn check_tags(q: &QueueState<Shared>) {
    q.peek_seq(usize::MAX, |_, v, seq| {
        if v.first() == Some(&b'T') {
            assert_eq!(seq.to_le_bytes(), v[1..9], "a tagged item lost its number");
        } else {
            assert_eq!(seq, 0, "an untagged item got a number");
        }
    });
}

/// A tagged add: the value is `T`, the sequence number, then padding.
fn add_tagged(k: &str, v: usize, seq: u64) -> Op {
    let mut val = vec![b'T'];
    val.extend_from_slice(&seq.to_le_bytes());
    val.resize(v.max(9), b'v');
    Op::AddTagged(k.as_bytes().to_vec(), val, seq)
}

#[test]
fn tagged_items_evicted_replaced_compacted_and_fetched() {
    let lim = Limits {
        max_items: 3,
        max_bytes: 0,
    };
    let setup: Vec<Op> = (0..3)
        .map(|i| add_tagged(&format!("k{i}"), 30, i + 1))
        .collect();
    every_step(AddMode::Append, lim, &setup, add_tagged("new", 30, 9));
    every_step(AddMode::KeepNewest, NONE, &setup, add_tagged("k1", 40, 9));
    // Dead tagged entries in front are skipped by their footprint.
    let mut dead_front = setup.clone();
    dead_front.push(add_tagged("k0", 20, 7));
    every_step(AddMode::KeepNewest, NONE, &dead_front, Op::Fetch);
    every_step(AddMode::KeepNewest, NONE, &dead_front, Op::FetchHeld);
    // Mixed with untagged items, replacements until a compaction.
    let mut setup: Vec<Op> = (0..5)
        .map(|i| add_tagged(&format!("k{i}"), 1000, i + 1))
        .collect();
    setup.extend((0..15).map(|i| add_tagged(&format!("k{}", i % 5), 1000, i + 10)));
    setup.push(add("plain", 10));
    let q = fresh_queue(AddMode::KeepNewest, NONE, &setup);
    let op = add_tagged("k0", 1000, 99);
    apply(&mut q.lock(), &op);
    assert_eq!(q.lock().dead_bytes(), 0, "the case must compact");
    every_step(AddMode::KeepNewest, NONE, &setup, op);
}

fn add(k: &str, v: usize) -> Op {
    Op::Add(k.as_bytes().to_vec(), vec![b'v'; v])
}

const NONE: Limits = Limits {
    max_items: 0,
    max_bytes: 0,
};

#[test]
fn append_first_item_and_new_chunk() {
    every_step(AddMode::Append, NONE, &[], add("a", 1));
    every_step(AddMode::Append, NONE, &[add("a", 1)], add("b", 100));
}

#[test]
fn size_limit_eviction() {
    let lim = Limits {
        max_items: 3,
        max_bytes: 0,
    };
    let setup: Vec<Op> = (0..3).map(|i| add(&format!("k{i}"), 30)).collect();
    every_step(AddMode::Append, lim, &setup, add("new", 30));
}

#[test]
fn byte_limit_evicts_several() {
    let lim = Limits {
        max_items: 0,
        max_bytes: 1000,
    };
    let setup: Vec<Op> = (0..8).map(|i| add(&format!("k{i}"), 90)).collect();
    every_step(AddMode::Append, lim, &setup, add("big", 600));
}

#[test]
fn keep_newest_replacement() {
    let setup = [add("a", 5), add("b", 5), add("c", 5)];
    every_step(AddMode::KeepNewest, NONE, &setup, add("b", 7));
}

#[test]
fn keep_newest_compaction() {
    let mut setup: Vec<Op> = (0..5).map(|i| add(&format!("k{i}"), 1000)).collect();
    setup.extend((0..15).map(|i| add(&format!("k{}", i % 5), 1000)));
    let q = fresh_queue(AddMode::KeepNewest, NONE, &setup);
    let dead = q.lock().dead_bytes();
    let op = add("k0", 1000);
    apply(&mut q.lock(), &op);
    assert!(
        dead > 0 && q.lock().dead_bytes() == 0,
        "the case must compact"
    );
    let steps = every_step(AddMode::KeepNewest, NONE, &setup, op);
    assert!(steps > 20, "{steps}");
}

#[test]
fn index_growth() {
    let setup: Vec<Op> = (0..8).map(|i| add(&format!("k{i}"), 3)).collect();
    every_step(AddMode::KeepNewest, NONE, &setup, add("k8", 3));
    every_step(AddMode::KeepOldest, NONE, &setup, add("k8", 3));
}

#[test]
fn fetches() {
    // The head chunk is used up: the fetch frees it.
    let setup = [add("a", 1), add("b", 100), Op::Fetch];
    every_step(AddMode::Append, NONE, &setup, Op::Fetch);
    // The last item: the storage is reset.
    every_step(AddMode::KeepOldest, NONE, &[add("a", 1)], Op::Fetch);
    // Dead entries in front are skipped.
    let setup = [add("a", 1), add("b", 1), add("a", 2)];
    every_step(AddMode::KeepNewest, NONE, &setup, Op::Fetch);
    every_step(AddMode::KeepNewest, NONE, &setup, Op::FetchIf);
    // Read in place and released: the pinned chunk waits on the held
    // list (the last item resets the storage), then is retired.
    every_step(AddMode::Append, NONE, &[add("a", 1)], Op::FetchHeld);
    let setup = [add("a", 1), add("b", 100), Op::Fetch];
    every_step(AddMode::Append, NONE, &setup, Op::FetchHeld);
}

#[test]
fn clear() {
    let setup: Vec<Op> = (0..50).map(|i| add(&format!("k{i}"), 200)).collect();
    every_step(AddMode::KeepNewest, NONE, &setup, Op::Clear);
}
