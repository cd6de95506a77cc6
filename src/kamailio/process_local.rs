//! State private to one Kamailio process (the item it fetched last, its
//! failure streaks). Each process runs the script in one thread, so a
//! static with a one-instruction busy flag is enough, and it avoids the
//! `__tls_get_addr` call a `thread_local!` costs in a dlopen-ed library.
//! Should a module ever call in from a second thread, the flag makes it
//! wait its turn rather than alias the state.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, Ordering};

pub struct ProcessLocal<T> {
    busy: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: `with` hands out the value to one caller at a time (the busy flag
// is taken with Acquire and released with Release).
unsafe impl<T: Send> Sync for ProcessLocal<T> {}

impl<T> ProcessLocal<T> {
    pub const fn new(value: T) -> Self {
        ProcessLocal {
            busy: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    /// Runs `f` with exclusive access to the value. `f` must not call
    /// `with` on the same cell (it would wait forever); no caller does.
    #[inline(always)]
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        while self.busy.swap(true, Ordering::Acquire) {
            std::hint::spin_loop();
        }
        struct Release<'a>(&'a AtomicBool);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        let _release = Release(&self.busy);
        // SAFETY: the busy flag is ours until `_release` drops, so no other
        // reference to the value exists.
        f(unsafe { &mut *self.value.get() })
    }
}
