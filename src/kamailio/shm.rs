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

    fn alloc_lasting(&self, size: usize) -> *mut u8 {
        lasting::alloc(size)
    }

    unsafe fn free_lasting(&self, _ptr: *mut u8) {
        // Kept: queue bodies live as long as the server.
    }
}

/// Blocks that live as long as the server (queue bodies, allocated at a
/// queue's first add in any process), packed into shared slabs: each
/// costs its size, not the allocator's overhead of about 100 bytes per
/// block. Slabs start small and double (128 bytes to 16 KB), so that a
/// config with one queue keeps no more than a few hundred bytes. Lock-free, so that a process dying in the middle stops nobody:
/// it leaks at most the slab it allocated or the block it took.
mod lasting {
    use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering::AcqRel, Ordering::Acquire};

    use super::{ShmAlloc, ShmSafe};
    use crate::queue::RawAlloc;

    /// Bytes of the first slab after its header; each next one doubles.
    const FIRST_SLAB: usize = 128;
    /// Bytes of the largest slab after its header.
    const SLAB_BYTES: usize = 16 * 1024 - 16;
    /// Larger blocks get a block of their own.
    const MAX_BLOCK: usize = SLAB_BYTES / 8;

    #[repr(C)]
    struct Slab {
        /// Bytes handed out (may run past `bytes`: the slab is full).
        used: AtomicUsize,
        /// Bytes after the header.
        bytes: usize,
    }

    /// The slab blocks are taken from, in shm.
    struct Root {
        current: AtomicPtr<Slab>,
    }

    // SAFETY: one atomic pointer into shm, used only atomically.
    unsafe impl ShmSafe for Root {}

    /// Set once in the main process before the fork (first queue
    /// definition), so every process finds the same root.
    static ROOT: AtomicPtr<Root> = AtomicPtr::new(std::ptr::null_mut());

    /// Creates the root (main process, before the fork); false without shm.
    pub fn init() -> bool {
        if !ROOT.load(Acquire).is_null() {
            return true;
        }
        match super::shm_box(Root {
            current: AtomicPtr::new(std::ptr::null_mut()),
        }) {
            Some(r) => {
                ROOT.store(r, std::sync::atomic::Ordering::Release);
                true
            }
            None => false,
        }
    }

    pub fn alloc(size: usize) -> *mut u8 {
        let size = size.next_multiple_of(8);
        let root = ROOT.load(Acquire);
        if size > MAX_BLOCK || root.is_null() {
            return ShmAlloc.alloc(size);
        }
        // SAFETY: the root is an shm block set before the fork and never
        // freed.
        let current = unsafe { &(*root).current };
        loop {
            let slab = current.load(Acquire);
            let mut bytes = FIRST_SLAB;
            if !slab.is_null() {
                // SAFETY: a slab published in the root is never freed.
                let (off, cap) = unsafe { ((*slab).used.fetch_add(size, AcqRel), (*slab).bytes) };
                if off + size <= cap {
                    // SAFETY: [off, off + size) is inside the slab's
                    // bytes and handed out once (fetch_add).
                    return unsafe { (slab.add(1) as *mut u8).add(off) };
                }
                bytes = (cap * 2).min(SLAB_BYTES);
            }
            let bytes = if size > bytes { SLAB_BYTES } else { bytes };
            let fresh = ShmAlloc.alloc(std::mem::size_of::<Slab>() + bytes) as *mut Slab;
            if fresh.is_null() {
                return std::ptr::null_mut();
            }
            // SAFETY: a fresh block large enough for the header; the first
            // `size` bytes after it are ours.
            unsafe {
                fresh.write(Slab {
                    used: AtomicUsize::new(size),
                    bytes,
                })
            };
            if current
                .compare_exchange(slab, fresh, AcqRel, Acquire)
                .is_ok()
            {
                // SAFETY: as above.
                return unsafe { fresh.add(1) as *mut u8 };
            }
            // Another process published a slab first: use that one.
            // SAFETY: never published, ours alone.
            unsafe { ShmAlloc.free(fresh as *mut u8) };
        }
    }
}

/// Prepares the packing of queue bodies (main process, before the fork);
/// false without shm.
pub fn init_lasting() -> bool {
    lasting::init()
}

// SAFETY: shm is mapped before the fork at the same address in every
// process, and a block stays valid in all of them until shm_free.
unsafe impl SharedAlloc for ShmAlloc {}

/// Alignment Kamailio's shm allocators guarantee.
const SHM_ALIGN: usize = 8;

/// Places `value` in a new shm block; None when shm is exhausted.
pub fn shm_box<T: ShmSafe>(value: T) -> Option<*mut T> {
    let p = shm_slots::<T>(1)?;
    // SAFETY: p is a fresh block of size_of::<T>() bytes, aligned for T
    // (checked by shm_slots).
    unsafe { p.write(value) };
    Some(p)
}

/// An shm block for `n` values of `T`, not initialised; None when shm is
/// exhausted. The caller writes each slot before it reads it.
pub fn shm_slots<T: ShmSafe>(n: usize) -> Option<*mut T> {
    const { assert!(std::mem::align_of::<T>() <= SHM_ALIGN) };
    let size = std::mem::size_of::<T>().checked_mul(n)?;
    let p = ShmAlloc.alloc(size) as *mut T;
    if p.is_null() {
        return None;
    }
    if !(p as usize).is_multiple_of(std::mem::align_of::<T>()) {
        // SAFETY: p came from shm_malloc just above.
        unsafe { ShmAlloc.free(p as *mut u8) };
        crate::kerr!("shm_malloc returned a block not aligned for the queue state");
        return None;
    }
    Some(p)
}

/// Whether Kamailio's shared memory is set up yet.
pub fn initialized() -> bool {
    // SAFETY: reads a core flag.
    unsafe { sys::shm_initialized() != 0 }
}
