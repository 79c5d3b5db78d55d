//! claimsync replicates Crossplane claims between an app cluster, where users work with plain `kubectl`, and a
//! remote control plane, where Crossplane provisions them. This crate is the controller; the journal it keeps is
//! the `claimsync-state` crate.
//!
//! Dependencies point one way: `cli` -> `sync`/`shim`/`ops` -> `model`; `model` imports nothing of the rest.
#![forbid(unsafe_code)]

pub mod cli;
pub mod context;
pub mod error;
pub mod model;
pub mod ops;
pub mod shim;
pub mod sync;
