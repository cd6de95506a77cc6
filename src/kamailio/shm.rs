//! Kamailio's shared memory as a [`RawAlloc`] for the queue core.

use crate::queue::RawAlloc;
use crate::sys;

/// `shm_malloc` / `shm_free`: mapped before the fork at the same address in
/// every process, so pointers into it are valid in all of them.
#[derive(Default, Clone, Copy)]
pub struct ShmAlloc;

// SAFETY: Kamailio's shm allocators return blocks aligned to at least 8
// bytes, valid in every process until shm_free.
unsafe impl RawAlloc for ShmAlloc {
    fn alloc(&self, size: usize) -> *mut u8 {
        // SAFETY: shm_malloc has no preconditions once shm is initialised,
        // which Kamailio does before it reads module parameters.
        unsafe { sys::mqrs_shm_malloc(size) as *mut u8 }
    }

    unsafe fn free(&self, ptr: *mut u8) {
        // SAFETY: the caller passes a block from shm_malloc, freed once.
        unsafe { sys::mqrs_shm_free(ptr as *mut libc::c_void) }
    }
}

/// Places `value` in a new shm block; None when shm is exhausted.
pub fn shm_box<T>(value: T) -> Option<*mut T> {
    let p = ShmAlloc.alloc(std::mem::size_of::<T>()) as *mut T;
    if p.is_null() {
        return None;
    }
    // SAFETY: p is a fresh block of size_of::<T>() bytes, aligned to 8, which
    // is enough for every T placed in shm by this module.
    unsafe { p.write(value) };
    Some(p)
}

/// Whether Kamailio's shared memory is set up yet.
pub fn initialized() -> bool {
    // SAFETY: reads a core flag.
    unsafe { sys::shm_initialized() != 0 }
}
