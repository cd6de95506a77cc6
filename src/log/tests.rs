//! The durable log on the heap, against a recording store: crash replays
//! at every step, damage, full disk, disk reuse, redelivery, group commit.

use std::collections::{BTreeMap, HashMap};

use super::format::{self, Kind, HEADER_LEN};
use super::storage::{Op, RecStorage};
use super::*;
use crate::queue::{AddMode, AddOutcome, HeapAlloc, Limits};

type Q = Durable<HeapAlloc>;

fn open(
    st: &mut RecStorage,
    mode: AddMode,
    limits: Limits,
    d: Durability,
    seg: usize,
) -> (Q, Recovered) {
    let q = Q::new(mode, limits, 7, d, seg);
    let rec = recover(st, mode, limits).expect("recovery opens");
    let copy = rec.clone();
    q.open(st, rec).expect("open");
    (q, copy)
}

/// An append queue without limits, the shape most tests use.
fn open_append(st: &mut RecStorage, d: Durability, seg: usize) -> (Q, Recovered) {
    open(st, AddMode::Append, Limits::default(), d, seg)
}

fn new_append(d: Durability, seg: usize) -> Q {
    Q::new(AddMode::Append, Limits::default(), 7, d, seg)
}

/// A start of a synced append queue on the files a crash or stop left.
fn restart(files: &BTreeMap<u64, Vec<u8>>, seg: usize) -> (Q, RecStorage, Recovered) {
    let mut st = RecStorage::with_files(files.clone());
    let (q, rec) = open_append(&mut st, Durability::Sync, seg);
    (q, st, rec)
}

/// The disk has room again: once the 50 ms before a failed segment
/// creation is retried have passed, adds succeed.
fn add_once_the_disk_has_room(q: &Q, st: &mut RecStorage, key: &[u8]) {
    st.full = false;
    std::thread::sleep(std::time::Duration::from_millis(60));
    assert_eq!(q.add(st, key, b"v").expect("add"), AddOutcome::Added);
}

fn keys(r: &Recovered) -> Vec<Vec<u8>> {
    r.items().map(|(_, k, _)| k.to_vec()).collect()
}

fn fetch(q: &Q, st: &mut RecStorage, held: &mut Option<u64>) -> Option<Vec<u8>> {
    let mut got = None;
    q.fetch(st, held, |k, _| {
        got = Some(k.to_vec());
        true
    })
    .expect("fetch");
    got
}

/// Every crash point of a recorded run, with the last write dropped, torn
/// at each 512-byte boundary, or only its tail kept: recovery opens, has
/// every item whose synced add returned and was not acknowledged, and
/// nothing that was not added.
#[test]
fn every_crash_point_keeps_synced_adds() {
    for seed in [1u64, 2, 3] {
        let mut st = RecStorage::default();
        let (q, _) = open_append(&mut st, Durability::Sync, 4096);
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut vals: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
        let mut returned: HashMap<Vec<u8>, usize> = HashMap::new();
        let mut removed: HashMap<Vec<u8>, usize> = HashMap::new();
        let mut held = None;
        let mut held_key: Option<Vec<u8>> = None;
        let mut waiting: Vec<Vec<u8>> = Vec::new();
        for i in 0..300 {
            let r = rng.u32(..100);
            if r < 60 {
                let key = format!("k{seed}-{i}").into_bytes();
                let val: Vec<u8> = (0..rng.usize(..900))
                    .map(|j| (j as u8) ^ (i as u8))
                    .collect();
                vals.insert(key.clone(), val.clone());
                assert_eq!(q.add(&mut st, &key, &val).expect("add"), AddOutcome::Added);
                returned.insert(key.clone(), st.ops.len());
                waiting.push(key);
            } else if r < 90 {
                let before = st.ops.len();
                if let Some(k) = held_key.take() {
                    removed.insert(k, before);
                }
                let got = fetch(&q, &mut st, &mut held);
                if let Some(k) = &got {
                    assert_eq!(k, &waiting.remove(0));
                }
                held_key = got;
            } else if r < 97 {
                if let Some(seq) = held.take() {
                    removed.insert(held_key.take().expect("held key"), st.ops.len());
                    q.ack(&mut st, seq);
                }
            } else {
                let before = st.ops.len();
                for k in waiting.drain(..) {
                    removed.insert(k, before);
                }
                q.clear(&mut st).expect("clear");
            }
        }
        let ops = st.ops.clone();
        let mut points = 0;
        for n in 0..=ops.len() {
            let mut variants = vec![None];
            if let Some(Op::Write(_, off, data)) = ops.get(n) {
                variants.push(Some((0, data.len())));
                let mut cut = 512 - off % 512;
                while cut < data.len() {
                    variants.push(Some((0, cut)));
                    variants.push(Some((cut, data.len() - cut)));
                    cut += 512;
                }
            }
            for torn in variants {
                points += 1;
                let image = RecStorage::crash_image(&ops, n, torn);
                let mut st2 = RecStorage::with_files(image);
                let rec =
                    recover(&mut st2, AddMode::Append, Limits::default()).expect("recovery opens");
                let mut seen = std::collections::HashSet::new();
                let items = rec.items_owned();
                for it in &items {
                    assert_eq!(
                        vals.get(&it.key),
                        Some(&it.val),
                        "an item that was not added (point {n})"
                    );
                    assert!(seen.insert(it.key.clone()), "item twice");
                }
                for w in items.windows(2) {
                    assert!(w[0].seq < w[1].seq, "order kept");
                }
                for (k, &at) in &returned {
                    // An acknowledgement written at step n is on disk in
                    // the torn variants.
                    let gone = removed
                        .get(k)
                        .is_some_and(|&r| r < n || (r == n && torn.is_some()));
                    if at <= n && !gone {
                        assert!(
                            seen.contains(k),
                            "seed {seed} point {n} {torn:?}: lost {}",
                            String::from_utf8_lossy(k)
                        );
                    }
                }
                // Opening writes a snapshot; reading it again gives the same.
                let want = keys(&rec);
                let q2 = new_append(Durability::Sync, 4096);
                q2.open(&mut st2, rec).expect("open after crash");
                let again = recover(&mut st2, AddMode::Append, Limits::default()).expect("reopen");
                assert_eq!(keys(&again), want);
            }
        }
        assert!(points > 500, "{points} crash points");
    }
}

#[test]
fn leased_items_come_back_first_and_counted() {
    let mut st = RecStorage::default();
    let (q, _) = open_append(&mut st, Durability::Within(10), 1 << 16);
    for i in 0..5u8 {
        q.add(&mut st, &[i], b"v").expect("add");
    }
    let mut a = None;
    let mut b = None;
    assert_eq!(fetch(&q, &mut st, &mut a), Some(vec![0]));
    assert_eq!(fetch(&q, &mut st, &mut b), Some(vec![1]));
    assert_eq!(fetch(&q, &mut st, &mut b), Some(vec![2])); // acks 1
    assert_eq!(q.lock().stats().leased, 2);
    // Kill: nothing synced matters here, the page cache keeps `current`.
    let (q2, mut st2, rec) = restart(&st.current, 1 << 16);
    assert_eq!(keys(&rec), vec![vec![0], vec![2], vec![3], vec![4]]);
    assert_eq!(rec.redelivered, 2);
    assert_eq!(q2.lock().stats().redelivered, 2);
    assert_eq!(q2.lock().queue.len(), 4);
    // A clean stop ends the leases.
    let mut h = None;
    fetch(&q2, &mut st2, &mut h);
    q2.release_all(&mut st2).expect("stop");
    let (_, _, rec) = restart(&st2.current, 1 << 16);
    assert_eq!(keys(&rec), vec![vec![2], vec![3], vec![4]]);
    assert_eq!(rec.redelivered, 0);
}

/// A stop after a process died holding the lock, or in the middle of a
/// sync, does not hang: it takes the lock over, syncs what was written and
/// leaves the leases to be delivered again.
#[test]
fn stop_takes_over_a_lock_a_dead_process_held() {
    let mut st = RecStorage::default();
    let (q, _) = open_append(&mut st, Durability::Within(10), 1 << 16);
    for i in 0..3u8 {
        q.add(&mut st, &[i], b"v").expect("add");
    }
    let mut h = None;
    assert_eq!(fetch(&q, &mut st, &mut h), Some(vec![0]));
    // The dead process: it holds the lock and had started a sync.
    let mut g = q.lock();
    g.syncing = true;
    std::mem::forget(g);
    // SAFETY: this thread is the only user of the queue left.
    let taken = unsafe { q.stop(&mut st, std::time::Duration::from_millis(50)) };
    assert!(taken.expect("stop syncs"));
    assert_eq!(q.lock().stats().leased, 1, "no acknowledgement written");
    let (_, mut st2, rec) = restart(&st.durable, 1 << 16);
    assert_eq!(keys(&rec), vec![vec![0], vec![1], vec![2]]);
    assert_eq!(rec.redelivered, 1);
    // A stop without a dead lock holder keeps the lease too: no process is
    // left to tell whether its item was finished, so it is delivered again.
    let (q, _) = open_append(&mut st2, Durability::Within(10), 1 << 16);
    let mut h = None;
    fetch(&q, &mut st2, &mut h);
    // SAFETY: as above.
    assert!(!unsafe { q.stop(&mut st2, std::time::Duration::from_millis(50)) }.expect("stop"));
    assert_eq!(q.lock().stats().leased, 1);
}

#[test]
fn drained_queue_keeps_one_segment() {
    let mut st = RecStorage::default();
    let (q, _) = open_append(&mut st, Durability::Within(10), 4096);
    for i in 0..2000u32 {
        q.add(&mut st, &i.to_le_bytes(), &[7u8; 100]).expect("add");
    }
    assert!(st.current.len() > 40, "{} segments", st.current.len());
    let mut h = None;
    while fetch(&q, &mut st, &mut h).is_some() {}
    assert_eq!(st.current.len(), 1);
    assert_eq!(q.lock().stats().segments, 1);
    // Half drained: the space of the fetched half is freed.
    for i in 0..2000u32 {
        q.add(&mut st, &i.to_le_bytes(), &[7u8; 100]).expect("add");
    }
    let full = st.current.len();
    for _ in 0..1000 {
        fetch(&q, &mut st, &mut h);
    }
    // Leases and acknowledgements take space too: about 1/5 of the adds'.
    assert!(
        st.current.len() * 4 < full * 3,
        "{} of {full}",
        st.current.len()
    );
}

#[test]
fn full_disk_fails_adds_and_keeps_everything() {
    let mut st = RecStorage::default();
    let (q, _) = open_append(&mut st, Durability::Sync, 4096);
    let mut added: Vec<Vec<u8>> = Vec::new();
    for i in 0..200u32 {
        q.add(&mut st, &i.to_le_bytes(), &[1u8; 64]).expect("add");
        added.push(i.to_le_bytes().to_vec());
    }
    st.full = true;
    let mut failed = 0;
    for i in 1000..1200u32 {
        match q.add(&mut st, &i.to_le_bytes(), &[1u8; 64]) {
            Ok(AddOutcome::Added) => added.push(i.to_le_bytes().to_vec()),
            Err(_) => failed += 1,
            Ok(o) => panic!("{o:?}"),
        }
    }
    assert!(added.len() > 200 && failed > 0);
    assert_eq!(q.lock().queue.len(), added.len());
    // Consumers go on, and their acknowledgements free whole segments.
    let files = st.current.len();
    let mut h = None;
    let half = added.len() / 2;
    for want in &added[..half] {
        assert_eq!(fetch(&q, &mut st, &mut h).as_ref(), Some(want));
    }
    assert!(st.current.len() < files, "nothing freed");
    add_once_the_disk_has_room(&q, &mut st, b"again");
    // After a crash: everything not fetched, the leased item and the new
    // one (acknowledgements the full disk kept out may bring back more).
    let (_, _, rec) = restart(&st.current, 4096);
    let got: std::collections::HashSet<Vec<u8>> = keys(&rec).into_iter().collect();
    for k in added[half - 1..].iter().chain([&b"again".to_vec()]) {
        assert!(got.contains(k), "lost {k:?}");
    }
}

fn one_segment_with(items: &[(&[u8], &[u8])]) -> Vec<u8> {
    sized_segment_with(items, 0)
}

/// A segment whose header says it was created with `pages` pages.
fn sized_segment_with(items: &[(&[u8], &[u8])], pages: u32) -> Vec<u8> {
    let mut v = format::encode_header(format::Header {
        flags: 0,
        segment: 3,
        salt: 11,
        pages,
    })
    .to_vec();
    for (i, (k, val)) in items.iter().enumerate() {
        format::push_record(&mut v, 11, Kind::Add, i as u64 + 1, k, val);
    }
    v
}

#[test]
fn damage_of_every_kind() {
    let items: Vec<(&[u8], &[u8])> = vec![(b"a", b"1"), (b"b", b"2"), (b"c", b"3"), (b"d", b"4")];
    let good = one_segment_with(&items);
    let rec_len = format::record_len(Kind::Add, 1, 1);
    // A bit flip in the second record: the others load.
    let mut flip = good.clone();
    flip[HEADER_LEN + rec_len + 9] ^= 1;
    // A torn tail, a truncated file, another version, garbage.
    let torn = good[..good.len() - 5].to_vec();
    let mut version = good.clone();
    version[8] = 9;
    // Created with 2 pages, cut at the first page: every record is
    // intact, the file is short all the same.
    let mut cut = sized_segment_with(&items, 2);
    cut.resize(4096, 0);
    // (file, keys loaded, whether an error is logged)
    type Case<'a> = (Vec<u8>, Vec<&'a [u8]>, bool);
    let cases: Vec<Case> = vec![
        (flip, vec![b"a", b"c", b"d"], true),
        (torn, vec![b"a", b"b", b"c"], true),
        (good[..10].to_vec(), vec![], true),
        (cut, vec![b"a", b"b", b"c", b"d"], true),
        (version, vec![], true),
        (
            b"hello world, not a log segment at all".to_vec(),
            vec![],
            true,
        ),
        (vec![0; 4096], vec![], false),
    ];
    for (file, want, error) in cases {
        let mut st = RecStorage::with_files(BTreeMap::from([(3, file)]));
        let (q, rec) = open_append(&mut st, Durability::Sync, 4096);
        assert_eq!(
            keys(&rec),
            want.iter().map(|k| k.to_vec()).collect::<Vec<_>>()
        );
        assert_eq!(!rec.errors.is_empty(), error, "{:?}", rec.errors);
        assert_eq!(st.set_aside.contains(&3), error);
        assert_eq!(q.lock().queue.len(), want.len());
        // The new snapshot holds what was loaded, the damaged file is gone.
        let (_, _, again) = restart(&st.durable, 4096);
        assert_eq!(keys(&again), keys(&rec));
        assert!(again.errors.is_empty());
    }
    // A directory or FIFO under a segment's name is set aside, unread.
    let mut st = RecStorage::default();
    st.odd.push(9);
    let (_, rec) = open_append(&mut st, Durability::Sync, 4096);
    assert_eq!(st.set_aside, vec![9]);
    assert!(rec.errors[0].contains("not a regular file"));
}

#[test]
fn unique_keys_and_limits_survive_a_restart() {
    let mut st = RecStorage::default();
    let limits = Limits {
        max_items: 3,
        max_bytes: 0,
    };
    let (q, _) = open(
        &mut st,
        AddMode::KeepNewest,
        limits,
        Durability::Within(5),
        4096,
    );
    for (k, v) in [
        ("a", "1"),
        ("b", "1"),
        ("a", "2"),
        ("c", "1"),
        ("d", "1"),
        ("c", "2"),
    ] {
        q.add(&mut st, k.as_bytes(), v.as_bytes()).expect("add");
    }
    let mut live = Vec::new();
    q.lock()
        .queue
        .peek(10, |k, v| live.push((k.to_vec(), v.to_vec())));
    let mut st2 = RecStorage::with_files(st.current.clone());
    let (q2, rec) = open(
        &mut st2,
        AddMode::KeepNewest,
        limits,
        Durability::Sync,
        4096,
    );
    let got: Vec<_> = rec
        .items()
        .map(|(_, k, v)| (k.to_vec(), v.to_vec()))
        .collect();
    assert_eq!(got, live);
    // The key index was rebuilt: a new "d" replaces the old one.
    q2.add(&mut st2, b"d", b"3").expect("add");
    assert_eq!(q2.lock().queue.len(), 3);
    let mut st3 = RecStorage::with_files(BTreeMap::new());
    let (q3, _) = open(
        &mut st3,
        AddMode::KeepOldest,
        limits,
        Durability::Sync,
        4096,
    );
    assert_eq!(
        q3.add(&mut st3, b"x", b"1").expect("add"),
        AddOutcome::Added
    );
    assert_eq!(
        q3.add(&mut st3, b"x", b"2").expect("add"),
        AddOutcome::Duplicate
    );
}

/// Adds from several threads share syncs (the futex and lock work alike
/// between threads and between processes).
#[test]
fn group_commit_shares_syncs() {
    use std::sync::{Arc, Mutex};
    #[derive(Clone)]
    struct Slow(Arc<Mutex<RecStorage>>);
    impl Storage for Slow {
        fn segments(&mut self) -> std::io::Result<Vec<storage::Found>> {
            self.0.lock().unwrap().segments()
        }
        fn read(&mut self, id: u64) -> std::io::Result<Vec<u8>> {
            self.0.lock().unwrap().read(id)
        }
        fn create(&mut self, id: u64, len: usize) -> std::io::Result<()> {
            self.0.lock().unwrap().create(id, len)
        }
        fn write(
            &mut self,
            id: u64,
            at: std::ops::Range<usize>,
            f: super::storage::Fill<'_>,
        ) -> std::io::Result<()> {
            let mut s = self.0.lock().unwrap();
            let slot = &mut s.current.get_mut(&id).unwrap()[at];
            f(slot);
            Ok(())
        }
        fn sync(&mut self, _id: u64) -> std::io::Result<()> {
            std::thread::sleep(std::time::Duration::from_micros(300));
            self.0.lock().unwrap().syncs += 1;
            Ok(())
        }
        fn remove(&mut self, id: u64) -> std::io::Result<()> {
            self.0.lock().unwrap().remove(id)
        }
        fn set_aside(&mut self, id: u64) -> std::io::Result<String> {
            self.0.lock().unwrap().set_aside(id)
        }
        fn name(&self, id: u64) -> String {
            format!("{id}")
        }
    }
    let st = Slow(Arc::new(Mutex::new(RecStorage::default())));
    let q = Arc::new(Q::new(
        AddMode::Append,
        Limits::default(),
        1,
        Durability::Sync,
        1 << 20,
    ));
    q.open(&mut st.clone(), Recovered::default()).unwrap();
    let start = st.0.lock().unwrap().syncs;
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let (q, mut st) = (Arc::clone(&q), st.clone());
            std::thread::spawn(move || {
                for i in 0..200u32 {
                    q.add(&mut st, &[t], &i.to_le_bytes()).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let syncs = st.0.lock().unwrap().syncs - start;
    assert_eq!(q.lock().queue.len(), 1600);
    assert!(syncs * 2 < 1600, "{syncs} syncs for 1600 adds");
}

/// No room for a snapshot at start (a full disk): the queue starts on its
/// segments as they are, consumers free them, adds resume.
#[test]
fn start_on_a_full_disk() {
    let mut st = RecStorage::default();
    let (q, _) = open_append(&mut st, Durability::Sync, 4096);
    for i in 0..300u32 {
        q.add(&mut st, &i.to_le_bytes(), &[2u8; 40]).expect("add");
    }
    let mut h = None;
    for _ in 0..10 {
        fetch(&q, &mut st, &mut h);
    }
    let mut st2 = RecStorage::with_files(st.current.clone());
    st2.full = true;
    let q2 = new_append(Durability::Sync, 4096);
    let rec = recover(&mut st2, AddMode::Append, Limits::default()).expect("recover");
    assert_eq!(rec.len(), 291);
    let notes = q2.open(&mut st2, rec).expect("opens on a full disk");
    assert!(notes[0].contains("starting on its"), "{notes:?}");
    assert_eq!(q2.lock().queue.len(), 291);
    assert!(q2.add(&mut st2, b"x", b"y").is_err());
    let files = st2.current.len();
    let mut h = None;
    let mut got = Vec::new();
    while let Some(k) = fetch(&q2, &mut st2, &mut h) {
        got.push(k);
    }
    assert_eq!(got.len(), 291);
    assert_eq!(got[0], 9u32.to_le_bytes().to_vec());
    assert!(st2.current.len() < files);
    add_once_the_disk_has_room(&q2, &mut st2, b"x");
    let (_, _, rec) = restart(&st2.current, 4096);
    assert_eq!(keys(&rec).last(), Some(&b"x".to_vec()));
}

/// A process that died inside a change of the queue (here an addmode 2
/// replacement, at each of its steps in turn): a peek repairs first, as a
/// fetch does, so it never shows both twins of a key.
#[test]
fn peek_repairs_after_a_death_inside_a_change() {
    use crate::queue::crash::{arm, DIED};
    use crate::queue::crash_tests::Shared;
    use crate::queue::RawAlloc;
    let dir = std::env::temp_dir().join(format!("mqueue-peek-repair-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let mut st = FileStorage::new(&dir, b"q");
    type SQ = Durable<Shared>;
    let p = Shared.alloc(std::mem::size_of::<SQ>()) as *mut SQ;
    assert!(!p.is_null());
    let (mode, limits) = (AddMode::KeepNewest, Limits::default());
    // SAFETY: a fresh block of the right size in the shared mapping, never
    // freed.
    let q = unsafe {
        p.write(SQ::new(mode, limits, 7, Durability::Within(10), 1 << 16));
        &*p
    };
    let rec = recover(&mut st, mode, limits).expect("recover");
    q.open(&mut st, rec).expect("open");
    q.add(&mut st, b"a", b"0").expect("add");
    q.add(&mut st, b"b", b"0").expect("add");
    let mut deaths = 0;
    for n in 1..200u64 {
        let val = format!("{n}");
        // SAFETY: the child runs the queue code on the shared mapping and
        // its own storage view, and leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork");
        if pid == 0 {
            let mut st = FileStorage::new(&dir, b"q");
            arm(n);
            let _ = q.add(&mut st, b"a", val.as_bytes());
            arm(0);
            // SAFETY: ends the child without the parent's destructors.
            unsafe { libc::_exit(0) };
        }
        let mut status = 0;
        // SAFETY: waits for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status), "child crashed: {status}");
        let died = libc::WEXITSTATUS(status) == DIED;
        // SAFETY: the child is gone.
        unsafe { q.force_unlock() };
        let mut keys = Vec::new();
        q.peek(&mut st, 10, |k, _| keys.push(k.to_vec()));
        keys.sort();
        assert_eq!(keys, [b"a".to_vec(), b"b".to_vec()], "death at step {n}");
        if !died {
            break;
        }
        deaths += 1;
    }
    assert!(deaths > 1, "the replacement has steps to die at");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A durable queue never added to takes no space: its first segment is
/// created by its first record. A clean start on a whole log copies
/// nothing.
#[test]
fn unused_queue_creates_no_segment() {
    let mut st = RecStorage::default();
    let (q, _) = open(
        &mut st,
        AddMode::Append,
        Limits::default(),
        Durability::Sync,
        1 << 16,
    );
    q.flush(&mut st).expect("flush");
    // SAFETY: this thread is the only user of the queue.
    unsafe { q.stop(&mut st, std::time::Duration::from_millis(50)) }.expect("stop");
    assert!(st.current.is_empty(), "{:?}", st.current.keys());
    q.add(&mut st, b"a", b"1").expect("add");
    assert_eq!(st.current.len(), 1);
    let mut st2 = RecStorage::with_files(st.current.clone());
    let (q2, rec) = open(
        &mut st2,
        AddMode::Append,
        Limits::default(),
        Durability::Sync,
        1 << 16,
    );
    assert_eq!(keys(&rec), vec![b"a".to_vec()]);
    assert!(
        st2.ops
            .iter()
            .all(|o| !matches!(o, Op::Create(..) | Op::Write(..))),
        "a whole log is used as it is"
    );
    q2.add(&mut st2, b"b", b"2").expect("add");
    let mut st3 = RecStorage::with_files(st2.current.clone());
    let (_, rec) = open(
        &mut st3,
        AddMode::Append,
        Limits::default(),
        Durability::Sync,
        1 << 16,
    );
    assert_eq!(keys(&rec), vec![b"a".to_vec(), b"b".to_vec()]);
}

/// A log used as it is at start is synced first: what the last run wrote
/// and did not sync (it died before its timer ran) survives a power cut
/// after the restart.
#[test]
fn a_log_used_as_it_is_is_synced_at_start() {
    let mut st = RecStorage::default();
    let (q, _) = open(
        &mut st,
        AddMode::Append,
        Limits::default(),
        Durability::Within(10),
        1 << 16,
    );
    q.add(&mut st, b"a", b"1").expect("add");
    // Killed before the timer synced: the page cache has the add, the
    // disk does not yet.
    let mut st2 = RecStorage::with_files(st.current.clone());
    st2.durable = st.durable.clone();
    let (_, rec) = open(
        &mut st2,
        AddMode::Append,
        Limits::default(),
        Durability::Within(10),
        1 << 16,
    );
    assert_eq!(keys(&rec), vec![b"a".to_vec()]);
    // Then a power cut: only what was synced is left.
    let mut st3 = RecStorage::with_files(st2.durable.clone());
    let (_, rec) = open(
        &mut st3,
        AddMode::Append,
        Limits::default(),
        Durability::Within(10),
        1 << 16,
    );
    assert_eq!(keys(&rec), vec![b"a".to_vec()]);
}

#[test]
fn a_segment_removed_from_outside_is_reported() {
    let mut st = RecStorage::default();
    let (q, _) = open_append(&mut st, Durability::Sync, 4096);
    for i in 0..200u32 {
        q.add(&mut st, &i.to_le_bytes(), &[7u8; 100]).expect("add");
    }
    let ids: Vec<u64> = st.current.keys().copied().collect();
    assert!(ids.len() >= 3, "{ids:?}");
    let mut files = st.current.clone();
    files.remove(&ids[1]);
    let (_, _, rec) = restart(&files, 4096);
    assert!(
        rec.errors.iter().any(|e| e.contains("missing")),
        "{:?}",
        rec.errors
    );
    assert!(rec.len() < 200);
    // Whole: no such error.
    let (_, _, rec) = restart(&st.current, 4096);
    assert!(rec.errors.is_empty(), "{:?}", rec.errors);
    assert_eq!(rec.len(), 200);
}

#[test]
fn a_cut_through_a_record_at_a_page_boundary_says_truncated() {
    let val = [5u8; 300];
    let items: Vec<(&[u8], &[u8])> = (0..40).map(|_| (&b"k"[..], &val[..])).collect();
    let mut seg = sized_segment_with(&items, 4);
    assert!(seg.len() > 4096 + 400, "{}", seg.len());
    seg.truncate(4096);
    let files = BTreeMap::from([(3u64, seg)]);
    let (_, _, rec) = restart(&files, 4096 * 4);
    let said = rec.errors.join("\n");
    assert!(said.contains("truncated to 4096 bytes"), "{said}");
    assert!(said.contains("may have been lost"), "{said}");
    assert!(!rec.is_empty() && rec.len() < 40, "{}", rec.len());
}
