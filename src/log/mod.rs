//! Durable queues: a queue core in shared memory whose every change is
//! also appended to a crash-safe log of segment files, so that the items
//! survive the death of every Kamailio process (the log is in the page
//! cache) and, once synced, an OS crash or power cut.
//!
//! Layers: the file format ([`format`]), where files live ([`storage`],
//! a trait a test can record and crash), recovery at start ([`recover`]),
//! and the shared state with group commit ([`writer`]). Nothing here knows
//! Kamailio; the state is generic over allocator and lock as
//! [`crate::queue`] is.

pub mod format;
pub mod recover;
pub mod storage;
pub mod writer;

pub use recover::{recover, Item, Recovered};
pub use storage::{FileStorage, RecStorage, Storage};
pub use writer::{Durability, Durable, LogStats, SEGMENT_SIZE};

#[cfg(test)]
mod tests;
