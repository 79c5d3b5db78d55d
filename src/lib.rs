//! claimsync replicates Crossplane claims between an app cluster, where users work with plain `kubectl`, and a
//! remote control plane, where Crossplane provisions them. This crate is the controller; the journal it keeps is
//! the `claimsync-state` crate.
//!
//! Dependencies point one way: `cli` -> `sync`, `shim`, `ops`; `sync` -> `ops` (metrics, leadership); all of them ->
//! `model` and `error`. `model` and `error` import nothing of the rest, and no two modules import each other at
//! any level (the shared `Context` of the reconcilers lives in `sync`).
#![forbid(unsafe_code)]

pub mod cli;
pub mod error;
pub mod model;
pub mod ops;
pub mod shim;
pub mod sync;
