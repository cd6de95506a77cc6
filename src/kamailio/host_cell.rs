//! Statics the host reads by address (export tables, version strings).

use std::cell::UnsafeCell;

/// A value that Kamailio reads (and may write) through a pointer obtained
/// with `dlsym` or from an export table. Interior mutability keeps it in
/// writable memory.
#[repr(transparent)]
pub struct HostCell<T>(UnsafeCell<T>);

// SAFETY: the host touches these values only in the main process while it
// loads and initialises modules, before any other thread or process exists;
// the module itself never reads them through this cell.
unsafe impl<T> Sync for HostCell<T> {}

impl<T> HostCell<T> {
    pub const fn new(value: T) -> Self {
        HostCell(UnsafeCell::new(value))
    }

    pub const fn get(&self) -> *mut T {
        self.0.get()
    }
}
