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

/// An entry of a table the core reads up to its terminator: an entry whose
/// name is null.
pub trait TableEntry: Sized {
    const END: Self;
}

/// Declares a [`HostCell`] array of [`TableEntry`] values that ends with
/// the terminator the core reads up to, appended here:
/// `host_table! { static CMDS: [sys::cmd_export_t] = [a, b]; }` is a
/// three-entry table.
#[macro_export]
macro_rules! host_table {
    ($(#[$meta:meta])* $vis:vis static $name:ident: [$ty:ty] = [$($entry:expr),* $(,)?];) => {
        $(#[$meta])*
        $vis static $name: $crate::kamailio::host_cell::HostCell<
            [$ty; <[()]>::len(&[$($crate::host_table!(@unit $entry)),*]) + 1],
        > = $crate::kamailio::host_cell::HostCell::new([
            $($entry,)*
            <$ty as $crate::kamailio::host_cell::TableEntry>::END,
        ]);
    };
    (@unit $entry:expr) => {
        ()
    };
}

/// The export tables' entry types: all-zero (null name, no function) ends
/// each of them.
macro_rules! zero_terminated {
    ($($ty:ty),*) => {
        $(
            impl TableEntry for $ty {
                // SAFETY: a plain C struct of integers, raw pointers and
                // `Option`s of function pointers: all-zero is a valid value
                // (0, null, None), the one the core stops at.
                const END: Self = unsafe { std::mem::zeroed() };
            }
        )*
    };
}

zero_terminated!(
    crate::sys::cmd_export_t,
    crate::sys::param_export_t,
    crate::sys::rpc_export_t,
    crate::sys::pv_export_t,
    crate::sys::sr_kemi_t
);
