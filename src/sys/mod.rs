//! Raw bindings to the Kamailio core (bindgen) and the C shim. Nothing else.
#![allow(
    non_upper_case_globals,
    non_camel_case_types,
    non_snake_case,
    dead_code
)]
#![allow(clippy::all, clippy::undocumented_unsafe_blocks)]

include!(concat!(env!("OUT_DIR"), "/bindings.rs"));

/// `SER_FULL_VERSION` and `SER_COMPILE_FLAGS` of the target core, as
/// NUL-terminated bytes (checked by the build probe).
pub mod core_version {
    include!(concat!(env!("OUT_DIR"), "/core_version.rs"));
}

/// `PARAM_USE_FUNC` (`1U<<(8*sizeof(int)-1)`), which bindgen cannot evaluate.
pub const PARAM_USE_FUNC: u32 = 1 << 31;

/// `gparam_t` is a macro for `fparam_t` in `mod_fix.h`.
pub type gparam_t = fparam;

/// `RET_ARRAY` of the anonymous enum in `rpc.h` (RPC reply is an array).
pub const RET_ARRAY: u32 = 1;
