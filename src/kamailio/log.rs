//! Logging through Kamailio's logger (`LM_ERR` and friends, via the shim),
//! with the module name as prefix.

use crate::sys;

#[derive(Clone, Copy)]
pub enum Level {
    Err,
    Warn,
    Notice,
    Info,
    Debug,
}

impl Level {
    fn raw(self) -> libc::c_int {
        match self {
            Level::Err => sys::L_ERR as libc::c_int,
            Level::Warn => sys::L_WARN as libc::c_int,
            Level::Notice => sys::L_NOTICE as libc::c_int,
            Level::Info => sys::L_INFO as libc::c_int,
            Level::Debug => sys::L_DBG as libc::c_int,
        }
    }
}

/// True when Kamailio would print a message at this level.
pub fn enabled(level: Level) -> bool {
    // SAFETY: reads the core's debug level; no pointers involved.
    unsafe { sys::mqrs_log_enabled(level.raw()) != 0 }
}

/// Logs one line (the text may hold any bytes; the length bounds it).
pub fn log(level: Level, text: &str) {
    let len = text.len().min(i32::MAX as usize) as libc::c_int;
    // SAFETY: text points to len valid bytes for the duration of the call.
    unsafe { sys::mqrs_log(level.raw(), text.as_ptr() as *const libc::c_char, len) };
}

/// Most bytes of a queue name or key that a log line shows.
pub const SHOWN_MAX: usize = 256;

/// A queue name or key (any bytes, from script input too) as a log line
/// shows it: lossy UTF-8, cut to [`SHOWN_MAX`] bytes with its full length
/// after it, so no input can make a log line long.
pub fn shown(bytes: &[u8]) -> String {
    if bytes.len() <= SHOWN_MAX {
        return String::from_utf8_lossy(bytes).into_owned();
    }
    // Cut before a UTF-8 character the limit would split (continuation
    // bytes are 0b10xxxxxx; a character has at most 3 of them).
    let mut cut = SHOWN_MAX;
    while cut > SHOWN_MAX - 3 && bytes[cut] & 0xC0 == 0x80 {
        cut -= 1;
    }
    format!(
        "{}... ({} bytes)",
        String::from_utf8_lossy(&bytes[..cut]),
        bytes.len()
    )
}

/// `LM_ERR`-like: `kerr!("mqueue not found: {}", name)`.
#[macro_export]
macro_rules! kerr {
    ($($arg:tt)*) => { $crate::kamailio::log::log($crate::kamailio::log::Level::Err, &format!($($arg)*)) };
}

#[macro_export]
macro_rules! kwarn {
    ($($arg:tt)*) => { $crate::kamailio::log::log($crate::kamailio::log::Level::Warn, &format!($($arg)*)) };
}

#[macro_export]
macro_rules! kinfo {
    ($($arg:tt)*) => { $crate::kamailio::log::log($crate::kamailio::log::Level::Info, &format!($($arg)*)) };
}

#[macro_export]
macro_rules! kdbg {
    ($($arg:tt)*) => {
        if $crate::kamailio::log::enabled($crate::kamailio::log::Level::Debug) {
            $crate::kamailio::log::log($crate::kamailio::log::Level::Debug, &format!($($arg)*))
        }
    };
}
