//! Queue core against a simple model (VecDeque), on the process heap.

use super::*;

type State = QueueState<HeapAlloc>;

fn fetch(q: &mut State) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut out = None;
    q.fetch_with(|k, v| out = Some((k.to_vec(), v.to_vec())));
    out
}

use super::model::Model;

#[test]
fn fifo_order() {
    let mut q = State::new(AddMode::Append, Limits::default(), 1);
    for i in 0..10_000u32 {
        assert_eq!(
            q.add(format!("k{i}").as_bytes(), &i.to_le_bytes()),
            AddOutcome::Added
        );
    }
    assert_eq!(q.len(), 10_000);
    for i in 0..10_000u32 {
        assert_eq!(
            fetch(&mut q),
            Some((format!("k{i}").into_bytes(), i.to_le_bytes().to_vec()))
        );
    }
    assert_eq!(fetch(&mut q), None);
    assert_eq!(q.stats().added, 10_000);
    assert_eq!(q.stats().fetched, 10_000);
}

#[test]
fn size_limit_evicts_oldest() {
    let limits = Limits {
        max_items: 3,
        max_bytes: 0,
    };
    let mut q = State::new(AddMode::Append, limits, 1);
    for k in ["a", "b", "c", "d", "e"] {
        q.add(k.as_bytes(), b"v");
    }
    assert_eq!(q.len(), 3);
    assert_eq!(fetch(&mut q).unwrap().0, b"c");
    assert_eq!(q.stats().evicted, 2);
}

#[test]
fn keep_oldest_rejects_duplicates_until_fetched() {
    let mut q = State::new(AddMode::KeepOldest, Limits::default(), 1);
    assert_eq!(q.add(b"k", b"1"), AddOutcome::Added);
    assert_eq!(q.add(b"k", b"2"), AddOutcome::Duplicate);
    assert_eq!(fetch(&mut q), Some((b"k".to_vec(), b"1".to_vec())));
    assert_eq!(q.add(b"k", b"3"), AddOutcome::Added);
    assert_eq!(q.stats().rejected, 1);
}

#[test]
fn keep_newest_moves_key_to_tail() {
    let mut q = State::new(AddMode::KeepNewest, Limits::default(), 1);
    q.add(b"a", b"1");
    q.add(b"b", b"1");
    q.add(b"a", b"2");
    assert_eq!(q.len(), 2);
    assert_eq!(fetch(&mut q), Some((b"b".to_vec(), b"1".to_vec())));
    assert_eq!(fetch(&mut q), Some((b"a".to_vec(), b"2".to_vec())));
    assert_eq!(q.stats().replaced, 1);
}

#[test]
fn replacements_do_not_grow_memory() {
    let mut q = State::new(AddMode::KeepNewest, Limits::default(), 1);
    for i in 0..200_000u32 {
        q.add(format!("k{}", i % 10).as_bytes(), &[7u8; 100]);
    }
    assert_eq!(q.len(), 10);
    assert!(q.stats().shm_bytes < 64 * 1024, "{:?}", q.stats());
}

#[test]
fn byte_limit_evicts_and_rejects_oversized() {
    let limits = Limits {
        max_items: 0,
        max_bytes: 1000,
    };
    let mut q = State::new(AddMode::Append, limits, 1);
    for i in 0..100u8 {
        q.add(&[i], &[0u8; 100]);
    }
    assert!(q.stats().item_bytes <= 1000);
    assert_eq!(q.add(b"big", &[0u8; 2000]), AddOutcome::TooLarge);
}

#[test]
fn empty_keys_and_values_round_trip() {
    let mut q = State::new(AddMode::KeepNewest, Limits::default(), 1);
    q.add(b"", b"");
    q.add(b"", b"x");
    assert_eq!(fetch(&mut q), Some((vec![], b"x".to_vec())));
}

#[test]
fn clear_and_memory_return() {
    let mut q = State::new(AddMode::KeepOldest, Limits::default(), 1);
    for i in 0..50_000u32 {
        q.add(&i.to_le_bytes(), &[1u8; 64]);
    }
    let big = q.stats().shm_bytes;
    assert_eq!(q.clear(), 50_000);
    assert!(q.stats().shm_bytes < big / 10);
    assert_eq!(q.add(&1u32.to_le_bytes(), b"again"), AddOutcome::Added);
}

#[test]
fn large_values_get_their_own_chunk() {
    let mut q = State::new(AddMode::Append, Limits::default(), 1);
    let big = vec![0xAB; 1 << 20];
    q.add(b"a", b"small");
    q.add(b"b", &big);
    q.add(b"c", b"small");
    assert_eq!(fetch(&mut q).unwrap().0, b"a");
    assert_eq!(fetch(&mut q).unwrap().1, big);
    assert_eq!(fetch(&mut q).unwrap().0, b"c");
}

#[test]
fn random_operations_match_the_model() {
    for mode in 0..3 {
        for max in [0usize, 1, 7, 100] {
            let limits = Limits {
                max_items: max,
                max_bytes: 0,
            };
            let mut q = State::new(AddMode::from_int(mode), limits, 42);
            let mut m = Model {
                mode,
                max,
                ..Model::default()
            };
            let mut rng = fastrand::Rng::with_seed(mode as u64 * 31 + max as u64);
            for step in 0..20_000 {
                let r = rng.u64(..);
                if r.is_multiple_of(3) {
                    assert_eq!(fetch(&mut q), m.items.pop_front(), "step {step}");
                } else {
                    let k = format!("k{}", r % 50).into_bytes();
                    let v = vec![b'v'; (r % 300) as usize];
                    q.add(&k, &v);
                    m.add(&k, &v);
                }
                assert_eq!(q.len(), m.items.len(), "step {step}");
            }
            let mut peeked = Vec::new();
            q.peek(usize::MAX, |k, v| peeked.push((k.to_vec(), v.to_vec())));
            assert_eq!(peeked, m.items.iter().cloned().collect::<Vec<_>>());
        }
    }
}

#[test]
fn fetch_if_removes_only_what_the_caller_took() {
    let mut q = State::new(AddMode::Append, Limits::default(), 1);
    assert_eq!(q.fetch_if(|_, _| true), None);
    q.add(b"a", b"1");
    q.add(b"b", b"2");
    assert_eq!(q.fetch_if(|k, _| k == b"x"), Some(false));
    assert_eq!(q.len(), 2);
    assert_eq!(q.fetch_if(|k, v| k == b"a" && v == b"1"), Some(true));
    assert_eq!(q.len(), 1);
    assert_eq!(q.stats().fetched, 1);
    assert_eq!(fetch(&mut q).unwrap().0, b"b");
}

thread_local! {
    static ALLOCS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The heap, counting allocations (per test thread).
#[derive(Default, Clone, Copy)]
struct CountingAlloc;

// SAFETY: forwards to HeapAlloc.
unsafe impl RawAlloc for CountingAlloc {
    fn alloc(&self, size: usize) -> *mut u8 {
        ALLOCS.with(|n| n.set(n.get() + 1));
        HeapAlloc.alloc(size)
    }
    unsafe fn free(&self, ptr: *mut u8) {
        // SAFETY: ptr came from HeapAlloc.alloc.
        unsafe { HeapAlloc.free(ptr) }
    }
}

#[test]
fn a_queue_cycling_between_empty_and_a_few_items_stops_allocating() {
    for mode in [AddMode::Append, AddMode::KeepOldest, AddMode::KeepNewest] {
        cycles_without_allocating(mode);
    }
}

/// Unique-key queues too: their key index outlives a drain as the spare
/// chunks do.
fn cycles_without_allocating(mode: AddMode) {
    let mut q = QueueState::<CountingAlloc>::new(mode, Limits::default(), 1);
    let start = q.stats().shm_bytes;
    let val = [7u8; 300];
    let cycle = |q: &mut QueueState<CountingAlloc>, n: u32| {
        for i in 0..n {
            assert_eq!(q.add(&i.to_le_bytes(), &val), AddOutcome::Added);
        }
        while q.fetch_with(|_, _| {}) {}
    };
    for round in 0..20 {
        cycle(&mut q, 1 + round % 4);
    }
    let before = ALLOCS.with(|n| n.get());
    for round in 0..1000 {
        cycle(&mut q, 1 + round % 4);
        if round % 100 == 0 {
            q.age(); // a timer tick while the queue is busy keeps the spare
        }
    }
    assert_eq!(
        ALLOCS.with(|n| n.get()) - before,
        0,
        "allocations in steady state"
    );
    // Idle: two ticks give the spare back.
    q.age();
    q.age();
    assert!(
        q.stats().shm_bytes - start <= 512,
        "{} bytes held once idle",
        q.stats().shm_bytes - start
    );
}

#[test]
fn items_read_in_place_keep_their_bytes_through_adds_fetches_and_clears() {
    let mut q = State::new(AddMode::KeepNewest, Limits::default(), 1);
    let start = q.stats().shm_bytes;
    // A large item in place, then traffic, replacements (compaction),
    // and clears around it.
    let mut taken = Vec::new();
    for n in 1..=3u8 {
        q.clear();
        let big = vec![n; 4000];
        assert_eq!(q.add(&[n], &big), AddOutcome::Added);
        assert_eq!(q.add(b"small", b"x"), AddOutcome::Added);
        match q.fetch_or_hold(1024, |_, _| panic!("a large item is not copied")) {
            Taken::Held(h) => taken.push((n, h)),
            _ => panic!("no item"),
        }
        for round in 0..200u32 {
            let key = (round % 7).to_le_bytes();
            q.add(&key, &[round as u8; 3000]);
            q.add(&key, &[round as u8; 100]);
            if round % 3 == 0 {
                q.fetch_with(|_, _| {});
            }
            if round % 50 == 0 {
                q.clear();
            }
        }
        for (m, h) in &taken {
            // SAFETY: not released yet.
            let (k, v) = unsafe { h.item() };
            assert_eq!(k, [*m]);
            assert!(
                v.len() == 4000 && v.iter().all(|b| b == m),
                "item {m} damaged"
            );
        }
    }
    q.clear();
    for (_, h) in taken {
        q.release(h);
    }
    q.age();
    q.age();
    assert!(
        q.stats().shm_bytes - start <= 512,
        "{}",
        q.stats().shm_bytes
    );
}

#[test]
fn a_never_used_queue_is_its_head_only() {
    let mut q = QueueState::<CountingAlloc>::new(AddMode::KeepOldest, Limits::default(), 1);
    let before = ALLOCS.with(|n| n.get());
    assert!(!q.fetch_with(|_, _| {}));
    assert_eq!(q.clear(), 0);
    q.age();
    q.count_failure();
    assert!(q.refuse(b"k", b"v").is_none());
    assert_eq!(
        ALLOCS.with(|n| n.get()),
        before,
        "no allocation before the first add"
    );
    assert_eq!(
        q.stats(),
        Stats {
            failed: 1,
            ..Stats::default()
        }
    );
    assert!(std::mem::size_of::<crate::queue::WaitableQueue<CountingAlloc>>() <= 128);
    // The first add allocates the body; the counters kept before stay.
    assert_eq!(q.add(b"k", b"v"), AddOutcome::Added);
    assert!(ALLOCS.with(|n| n.get()) > before);
    let s = q.stats();
    assert_eq!((s.size, s.added, s.failed), (1, 1, 1));
    q.check_consistent();
}

#[test]
fn a_drained_queue_of_big_items_reuses_its_chunks_and_gives_them_back_once_idle() {
    let mut q = QueueState::<CountingAlloc>::new(AddMode::Append, Limits::default(), 1);
    let start = q.stats().shm_bytes;
    let val = vec![5u8; 16 * 1024];
    let fill = |q: &mut QueueState<CountingAlloc>| {
        for i in 0..100u32 {
            assert_eq!(q.add(&i.to_le_bytes(), &val), AddOutcome::Added);
        }
    };
    fill(&mut q);
    let full = q.stats().shm_bytes;
    while q.fetch_with(|_, v| assert_eq!(v.len(), val.len())) {}
    // The drain kept the chunks: a refill allocates nothing and the queue
    // holds no more than when it was full.
    let before = ALLOCS.with(|n| n.get());
    fill(&mut q);
    assert_eq!(ALLOCS.with(|n| n.get()) - before, 0, "refill allocated");
    assert!(q.stats().shm_bytes <= full);
    while q.fetch_with(|_, _| {}) {}
    q.age();
    q.age();
    assert!(
        q.stats().shm_bytes - start <= 512,
        "{} bytes held once idle",
        q.stats().shm_bytes - start
    );
}
