//! Safe wrappers over the Kamailio host: strings, logging, shared memory,
//! entry guards, fixed-up parameters, pseudo-variables, RPC and KEMI values.
//! `unsafe` lives here and in the module's entry files, each block with the
//! reason it is sound.

pub mod core;
pub mod counters;
pub mod db;
pub mod fixup;
pub mod guard;
pub mod host_cell;
pub mod kemi;
pub mod log;
pub mod process_local;
pub mod pv;
pub mod rpc;
pub mod shm;
pub mod str;
