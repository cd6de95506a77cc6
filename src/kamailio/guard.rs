//! The guard every `extern "C"` entry runs its body in: a panic becomes a
//! logged error and the host's error value, never an abort of the worker.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;

static HOOK: Once = Once::new();

/// Routes panic messages to Kamailio's log (stderr is gone once Kamailio
/// daemonizes). Installed at `mod_register`.
pub fn install_panic_hook() {
    HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let loc = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            let msg = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            crate::kerr!("internal error (panic caught){loc}: {msg}");
        }));
    });
}

/// Runs `f`; on a panic returns `on_panic` (the hook has logged it).
#[inline(always)]
pub fn guard<R>(entry: &str, on_panic: R, f: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => {
            failed(entry);
            on_panic
        }
    }
}

#[cold]
#[inline(never)]
fn failed(entry: &str) {
    crate::kerr!("{entry}: failed after an internal error; the call returns an error");
}

/// Declares an `extern "C"` entry whose body runs inside [`guard`], so that
/// no entry the host calls can miss it (pgrx's `#[pg_guard]`, as a macro):
///
/// ```ignore
/// host_entry! {
///     /// `mq_size(queue)`.
///     pub fn w_mq_size(msg: *mut sys::sip_msg, q: *mut c_char) -> c_int, "mq_size", -1 => {
///         ...
///     }
/// }
/// ```
///
/// The label names the entry in the log; the value after it is what the
/// host gets when the body panics.
#[macro_export]
macro_rules! host_entry {
    ($(#[$attr:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)?,
     $label:expr, $on_panic:expr => $body:block) => {
        $(#[$attr])*
        $vis unsafe extern "C" fn $name($($arg: $ty),*) $(-> $ret)? {
            $crate::kamailio::guard::guard($label, $on_panic, || $body)
        }
    };
}
