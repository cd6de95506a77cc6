//! Waiting for items without polling: a futex word beside each queue in
//! shared memory. A waiting process sleeps in the kernel; an add that
//! finds a waiter bumps the word and wakes one sleeper.
//!
//! Why no item is missed: a waiter counts itself in `waiters`, reads `seq`,
//! then tries to take an item, and sleeps only while `seq` still holds what
//! it read. An add publishes its item (under the queue lock) before it
//! reads `waiters`; if it sees none, the waiter's count came later, so its
//! take finds the item; if it sees one, it bumps `seq` and wakes, so the
//! sleep either does not start or ends. (All sequentially consistent.)
//!
//! A waiter killed while waiting leaves its count behind: later adds then
//! make one futex call each that finds nobody to wake, and nothing else
//! changes (Kamailio stops the whole instance when a child dies anyway).

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::time::{Duration, Instant};

use super::futex;

/// The longest single sleep: a safety net (one wake-up per second per idle
/// waiter), not the wake-up path.
const SLICE: Duration = Duration::from_secs(1);

/// The futex word and the number of waiters of one queue.
pub struct Doorbell {
    seq: AtomicU32,
    waiters: AtomicU32,
}

impl Default for Doorbell {
    fn default() -> Self {
        Self::new()
    }
}

/// Counts a waiter for as long as it lives (a panic uncounts it too).
struct Counted<'a>(&'a AtomicU32);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}

impl Doorbell {
    pub const fn new() -> Doorbell {
        Doorbell {
            seq: AtomicU32::new(0),
            waiters: AtomicU32::new(0),
        }
    }

    /// Called after an item was published and the queue lock released:
    /// wakes one waiter, if any (one load when nobody waits).
    #[inline]
    pub fn ring(&self) {
        if self.waiters.load(SeqCst) != 0 {
            self.ring_waiter();
        }
    }

    #[cold]
    fn ring_waiter(&self) {
        self.seq.fetch_add(1, SeqCst);
        futex::wake(&self.seq, 1);
    }

    /// Calls `take` until it returns an item, sleeping between calls until
    /// an add rings; None once `timeout` passed with nothing.
    pub fn wait_for<T>(&self, timeout: Duration, mut take: impl FnMut() -> Option<T>) -> Option<T> {
        let deadline = Instant::now().checked_add(timeout);
        self.waiters.fetch_add(1, SeqCst);
        let _counted = Counted(&self.waiters);
        loop {
            let seen = self.seq.load(SeqCst);
            if let Some(item) = take() {
                return Some(item);
            }
            let sleep = match deadline {
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return None;
                    }
                    (d - now).min(SLICE)
                }
                None => SLICE,
            };
            futex::wait(&self.seq, seen, Some(sleep));
        }
    }

    /// Processes counted as waiting (a killed waiter stays counted).
    pub fn waiters(&self) -> u32 {
        self.waiters.load(SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::{Arc, Mutex};

    /// A queue of numbers with a doorbell, as the module pairs them.
    #[derive(Default)]
    struct Q {
        items: Mutex<Vec<u32>>,
        bell: Doorbell,
    }

    impl Q {
        fn add(&self, n: u32) {
            self.items.lock().unwrap().push(n);
            self.bell.ring();
        }
        fn take(&self) -> Option<u32> {
            self.items.lock().unwrap().pop()
        }
    }

    #[test]
    fn times_out_when_nothing_comes() {
        let q = Q::default();
        let t0 = Instant::now();
        assert_eq!(
            q.bell.wait_for(Duration::from_millis(30), || q.take()),
            None
        );
        assert!(t0.elapsed() >= Duration::from_millis(30));
        assert_eq!(q.bell.waiters(), 0);
    }

    #[test]
    fn an_item_already_there_is_taken_at_once() {
        let q = Q::default();
        q.add(7);
        assert_eq!(
            q.bell.wait_for(Duration::from_secs(60), || q.take()),
            Some(7)
        );
    }

    #[test]
    fn waiters_share_every_item_once() {
        const ITEMS: u32 = 20_000;
        let q = Arc::new(Q::default());
        let taken = Arc::new(Mutex::new(Vec::new()));
        let done = Arc::new(AtomicUsize::new(0));
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let (q, taken, done) = (q.clone(), taken.clone(), done.clone());
                std::thread::spawn(move || {
                    while done.load(SeqCst) < ITEMS as usize {
                        if let Some(n) = q.bell.wait_for(Duration::from_millis(200), || q.take()) {
                            taken.lock().unwrap().push(n);
                            done.fetch_add(1, SeqCst);
                        }
                    }
                })
            })
            .collect();
        for n in 0..ITEMS {
            q.add(n);
        }
        for w in waiters {
            w.join().unwrap();
        }
        let mut all = taken.lock().unwrap().clone();
        all.sort_unstable();
        assert_eq!(all, (0..ITEMS).collect::<Vec<_>>());
        assert_eq!(q.bell.waiters(), 0);
    }

    #[test]
    fn a_sleeping_waiter_wakes_on_add_well_before_its_slice() {
        let q = Arc::new(Q::default());
        let q2 = q.clone();
        let waiter = std::thread::spawn(move || {
            q2.bell
                .wait_for(Duration::from_secs(3600), || q2.take())
                .map(|n| (n, Instant::now()))
        });
        while q.bell.waiters() == 0 {
            std::thread::yield_now();
        }
        let added = Instant::now();
        q.add(5);
        let (n, woke) = waiter.join().unwrap().unwrap();
        assert_eq!(n, 5);
        // The safety net would wake it after a whole slice.
        assert!(woke - added < SLICE / 2, "woken by the slice, not the add");
    }

    #[test]
    fn a_waiter_killed_while_sleeping_leaves_adds_and_waits_working() {
        // The doorbell in a shared anonymous mapping, as in Kamailio's shm.
        let size = std::mem::size_of::<Doorbell>();
        // SAFETY: a fresh anonymous shared mapping, checked below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        let bell_ptr = p as *mut Doorbell;
        // SAFETY: the mapping is large enough and page-aligned.
        unsafe { bell_ptr.write(Doorbell::new()) };
        // SAFETY: initialised just above; unmapped at the end of the test.
        let bell = unsafe { &*bell_ptr };
        // SAFETY: the child only waits on the shared word and exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            bell.wait_for(Duration::from_secs(3600), || None::<()>);
            // SAFETY: leaves the child without running the test harness.
            unsafe { libc::_exit(0) };
        }
        while bell.waiters() == 0 {
            std::thread::yield_now();
        }
        // SAFETY: our own child.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        assert_eq!(bell.waiters(), 1, "the dead waiter stays counted");
        // Adds still ring, and a new waiter is woken by one.
        let flag = Arc::new(AtomicU32::new(0));
        let f2 = flag.clone();
        let bell_addr = bell_ptr as usize;
        let waiter = std::thread::spawn(move || {
            // SAFETY: the mapping outlives this thread (joined below).
            let bell = unsafe { &*(bell_addr as *const Doorbell) };
            bell.wait_for(Duration::from_secs(3600), || {
                (f2.load(SeqCst) == 1).then_some(())
            })
        });
        while bell.waiters() < 2 {
            std::thread::yield_now();
        }
        flag.store(1, SeqCst);
        bell.ring();
        assert_eq!(waiter.join().unwrap(), Some(()));
        assert_eq!(bell.waiters(), 1);
        // SAFETY: nothing uses the mapping any more.
        unsafe { libc::munmap(p, size) };
    }
}
