//! claimsync replicates Crossplane claims between an app cluster, where users work with plain `kubectl`, and a
//! remote control plane, where Crossplane provisions them. This crate is the controller; the journal it keeps is
//! the `claimsync-state` crate.
#![forbid(unsafe_code)]

pub mod catalog;
pub mod claims;
pub mod cli;
pub mod conditions;
pub mod context;
pub mod downward;
pub mod error;
pub mod events;
pub mod fields;
pub mod link;
pub mod naming;
pub mod run;
pub mod secrets;
pub mod upward;
