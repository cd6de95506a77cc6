//! Kamailio's shared memory as a [`RawAlloc`] for the queue core.

use crate::queue::{RawAlloc, SharedAlloc, ShmSafe};
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

// SAFETY: shm is mapped before the fork at the same address in every
// process, and a block stays valid in all of them until shm_free.
unsafe impl SharedAlloc for ShmAlloc {}

/// Alignment Kamailio's shm allocators guarantee.
const SHM_ALIGN: usize = 8;

/// Places `value` in a new shm block; None when shm is exhausted.
pub fn shm_box<T: ShmSafe>(value: T) -> Option<*mut T> {
    const { assert!(std::mem::align_of::<T>() <= SHM_ALIGN) };
    let p = ShmAlloc.alloc(std::mem::size_of::<T>()) as *mut T;
    if p.is_null() {
        return None;
    }
    if !(p as usize).is_multiple_of(std::mem::align_of::<T>()) {
        // SAFETY: p came from shm_malloc just above.
        unsafe { ShmAlloc.free(p as *mut u8) };
        crate::kerr!("shm_malloc returned a block not aligned for the queue state");
        return None;
    }
    // SAFETY: p is a fresh block of size_of::<T>() bytes, aligned for T
    // (checked above).
    unsafe { p.write(value) };
    Some(p)
}

/// Whether Kamailio's shared memory is set up yet.
pub fn initialized() -> bool {
    // SAFETY: reads a core flag.
    unsafe { sys::shm_initialized() != 0 }
}
