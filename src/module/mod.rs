//! Module glue: the export tables Kamailio reads (`tables`), the module's
//! life (`lifecycle`), the interfaces (script functions, variables, KEMI,
//! RPC, `bind_mq`), and the operations they share (`ops`), which match
//! once on each queue's backend (`registry::Backend`). Every `extern "C"`
//! entry is declared with [`crate::host_entry!`], which runs its body
//! inside [`crate::kamailio::guard::guard`].

mod bind;
mod durable;
mod kemi;
mod lifecycle;
pub mod ops;
mod params;
mod persist;
mod pvars;
pub mod registry;
mod remote;
mod rpc;
mod script;
mod stats;
mod table_load;
mod tables;
