//! The queue core: FIFO queues of (key, value) items whose storage comes from
//! a [`RawAlloc`] (Kamailio's shm in the module, the heap in unit tests) and
//! whose state sits behind a `lock_api` mutex ([`FutexMutex`] across
//! processes).
//!
//! Items are packed into large chunks ([`log`]), so an add costs a copy and
//! rarely an allocation; unique-key queues keep a hash index ([`index`]).

pub mod counters;
#[cfg(test)]
pub(crate) mod crash;
pub mod doorbell;
pub(crate) mod futex;
mod index;
pub mod lock;
mod log;
pub mod model;
pub mod param;
pub mod spill;
mod state;

pub use doorbell::Doorbell;
pub use lock::FutexMutex;
pub use state::{AddOutcome, Held, Limits, QueueState, Stats, Taken};

/// Memory for queue data: it must stay valid, at the same address, in every
/// process that uses the queue.
///
/// # Safety
/// `alloc` returns null or a block of at least `size` bytes aligned to 8,
/// which stays valid until passed to `free` of the same allocator.
pub unsafe trait RawAlloc: Default {
    /// Allocates `size` bytes, or returns null.
    fn alloc(&self, size: usize) -> *mut u8;
    /// Frees a block from `alloc`.
    ///
    /// # Safety
    /// `ptr` came from `alloc` of this allocator and is not used afterwards.
    unsafe fn free(&self, ptr: *mut u8);

    /// Allocates a small block that is freed, if ever, only with its queue
    /// (a queue's body): an allocator may pack many into one block, so
    /// that each costs no allocator overhead.
    fn alloc_lasting(&self, size: usize) -> *mut u8 {
        self.alloc(size)
    }

    /// Frees a block from `alloc_lasting` (an allocator that packs them
    /// may keep it).
    ///
    /// # Safety
    /// `ptr` came from `alloc_lasting` of this allocator and is not used
    /// afterwards.
    unsafe fn free_lasting(&self, ptr: *mut u8) {
        // SAFETY: the default `alloc_lasting` is `alloc`.
        unsafe { self.free(ptr) }
    }
}

/// The process heap, for unit tests and fuzzing.
#[derive(Default, Clone, Copy)]
pub struct HeapAlloc;

// SAFETY: malloc returns blocks aligned for any fundamental type (>= 8).
unsafe impl RawAlloc for HeapAlloc {
    fn alloc(&self, size: usize) -> *mut u8 {
        // SAFETY: malloc has no preconditions.
        unsafe { libc::malloc(size.max(1)) as *mut u8 }
    }
    unsafe fn free(&self, ptr: *mut u8) {
        // SAFETY: the caller passes a block from `alloc`, i.e. from malloc.
        unsafe { libc::free(ptr as *mut libc::c_void) }
    }
}

/// How an add treats a key already in the queue (`addmode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddMode {
    /// 0: always append.
    Append,
    /// 1: unique keys, the item already queued stays.
    KeepOldest,
    /// 2: unique keys, the old item goes and the new one is appended.
    KeepNewest,
}

impl AddMode {
    /// Maps the `addmode` number; other numbers behave as 0, like the C module.
    pub fn from_int(n: i32) -> AddMode {
        match n {
            1 => AddMode::KeepOldest,
            2 => AddMode::KeepNewest,
            _ => AddMode::Append,
        }
    }

    pub fn as_int(self) -> i32 {
        match self {
            AddMode::Append => 0,
            AddMode::KeepOldest => 1,
            AddMode::KeepNewest => 2,
        }
    }

    fn unique(self) -> bool {
        self != AddMode::Append
    }
}

/// A point between two stores of a mutation of shared queue state, where a
/// process may die: the compiler keeps each store on its side, so what is
/// in memory at a death is what the code says (docs/reliability.md). In
/// unit tests a forked child can be made to die here (`crash`).
#[inline(always)]
fn step() {
    std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
    #[cfg(test)]
    crash::point();
}

/// A queue as it lives in shared memory: its state under a cross-process lock.
pub type Queue<A> = lock_api::Mutex<FutexMutex, QueueState<A>>;

/// Types that may live in shared memory (pgrx's `PGRXSharedMemory`): every
/// pointer they hold points into shared memory, they own no memory of a
/// process's heap, and every process reaches their state through a
/// cross-process lock.
///
/// # Safety
/// Implement only for types that meet all three conditions.
pub unsafe trait ShmSafe {}

/// An allocator whose blocks are valid at the same address in every
/// process (Kamailio's shm).
///
/// # Safety
/// Implement only for allocators whose blocks every process maps at the
/// same address until they are freed.
pub unsafe trait SharedAlloc: RawAlloc {}

// SAFETY: a queue's items and index come from its allocator, shared by
// every process (`SharedAlloc`); its counters are plain integers, and its
// state sits behind the futex mutex, which works across processes
// (non-private futex on shared memory).
unsafe impl<A: SharedAlloc> ShmSafe for Queue<A> {}

/// A queue and the doorbell its waiting consumers sleep on, in one block.
pub struct WaitableQueue<A: RawAlloc> {
    pub queue: Queue<A>,
    pub bell: Doorbell,
}

// SAFETY: the queue is ShmSafe (above); the doorbell is two atomic words
// used only through atomic operations and shared futex calls.
unsafe impl<A: SharedAlloc> ShmSafe for WaitableQueue<A> {}

#[cfg(test)]
pub(crate) mod crash_tests;
#[cfg(test)]
mod tests;

/// 64 random bits from the kernel (hash seeds, salts, file names); from
/// the clock and the process id if it has none to give (it always has,
/// after boot).
pub fn random_u64() -> u64 {
    getrandom::u64().unwrap_or_else(|_| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        t ^ u64::from(std::process::id()).rotate_left(40)
    })
}

/// CLOCK_MONOTONIC in milliseconds: the same clock in every process of
/// the host (shared deadlines, retry windows).
pub fn monotonic_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec; CLOCK_MONOTONIC
    // always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}
