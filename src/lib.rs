//! Kamailio's `mqueue` module in Rust: named in-memory queues in shared
//! memory, shared by every Kamailio process.
//!
//! Layers, from the host outward (see `../shared/design.md`):
//! - [`sys`]: bindgen output and the C shim declarations;
//! - [`kamailio`]: safe wrappers over the host (shm, logging, PVs, RPC, ...);
//! - [`queue`]: the queue core, generic over allocator and lock;
//! - [`module`]: export tables and `extern "C"` entry points.
//!
//! The host layers are compiled out of unit-test builds (they need the
//! Kamailio core to link) and when the `host` feature is off (fuzzing).

pub mod log;
pub mod queue;

/// Queues on Redis Streams (no Kamailio dependency): the `redis` feature,
/// which the `host` feature turns on.
#[cfg(feature = "redis")]
pub mod stream;

#[cfg(all(feature = "host", not(test)))]
pub mod sys;

#[cfg(all(feature = "host", not(test)))]
pub mod kamailio;

#[cfg(all(feature = "host", not(test)))]
pub mod module;
