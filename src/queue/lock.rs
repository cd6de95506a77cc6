//! A cross-process mutex on a futex word: it works wherever the word lives in
//! memory shared by the processes (Kamailio's shm is a shared mapping), and
//! gives `lock_api` RAII guards, so no return path can leave it held.

use std::sync::atomic::{AtomicU32, Ordering};

use super::futex;

const UNLOCKED: u32 = 0;
const LOCKED: u32 = 1;
/// Locked, and at least one process may sleep on the word.
const CONTENDED: u32 = 2;
const SPINS: u32 = 100;

/// Drepper's three-state futex mutex, with shared (non-private) futexes.
pub struct FutexMutex {
    state: AtomicU32,
}

impl FutexMutex {
    #[cold]
    fn lock_contended(&self) {
        for _ in 0..SPINS {
            if self.state.load(Ordering::Relaxed) == UNLOCKED
                && self
                    .state
                    .compare_exchange_weak(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return;
            }
            std::hint::spin_loop();
        }
        while self.state.swap(CONTENDED, Ordering::Acquire) != UNLOCKED {
            futex::wait(&self.state, CONTENDED, None);
        }
    }
}

// SAFETY: the state machine gives mutual exclusion: only the caller whose
// CAS or swap saw UNLOCKED owns the lock; unlock stores UNLOCKED with Release
// and wakes a sleeper when the word said CONTENDED.
unsafe impl lock_api::RawMutex for FutexMutex {
    #[allow(clippy::declare_interior_mutable_const)]
    const INIT: Self = FutexMutex {
        state: AtomicU32::new(UNLOCKED),
    };
    type GuardMarker = lock_api::GuardNoSend;

    fn lock(&self) {
        if self
            .state
            .compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.lock_contended();
        }
    }

    fn try_lock(&self) -> bool {
        self.state
            .compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    unsafe fn unlock(&self) {
        if self.state.swap(UNLOCKED, Ordering::Release) == CONTENDED {
            futex::wake(&self.state, 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn excludes_threads() {
        let m = Arc::new(lock_api::Mutex::<FutexMutex, u64>::new(0));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let m = Arc::clone(&m);
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        *m.lock() += 1;
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(*m.lock(), 80_000);
    }
}
