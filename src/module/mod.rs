//! Module glue: the export tables Kamailio reads, and thin `extern "C"`
//! entry points into safe code. Every entry is declared with
//! [`crate::host_entry!`], which runs its body inside
//! [`crate::kamailio::guard::guard`].

pub mod api;
mod exports;
mod kemi;
mod params;
mod persist;
mod pvars;
pub mod registry;
mod remote;
mod rpc;
mod script;
mod stats;
