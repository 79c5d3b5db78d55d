//! claimsync replicates Crossplane claims between an app cluster, where users work with plain `kubectl`, and a
//! remote control plane, where Crossplane provisions them. This crate is the controller; the journal it keeps is
//! the `claimsync-state` crate.
#![forbid(unsafe_code)]

pub mod cli;
