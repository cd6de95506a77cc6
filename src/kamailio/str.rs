//! Kamailio's `str` (pointer + length), viewed as byte slices.

use crate::sys::str_;

/// The bytes of a Kamailio `str`; empty for a null pointer or bad length.
///
/// # Safety
/// `s.s` points to `s.len` readable bytes that outlive the returned slice.
pub unsafe fn as_bytes<'a>(s: &str_) -> &'a [u8] {
    if s.s.is_null() || s.len <= 0 {
        return &[];
    }
    // SAFETY: the caller guarantees s.s points to s.len readable bytes.
    unsafe { std::slice::from_raw_parts(s.s as *const u8, s.len as usize) }
}

/// A `str` that borrows `bytes`; the host must not write through it.
pub fn from_bytes(bytes: &[u8]) -> str_ {
    str_ {
        s: bytes.as_ptr() as *mut libc::c_char,
        len: bytes.len() as libc::c_int,
    }
}
