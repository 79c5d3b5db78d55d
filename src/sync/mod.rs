//! The controllers that move claims between the two clusters: the catalog (claim kinds down) and the supervisor
//! of per-kind claim controllers, the claim reconciler (spec up; status, Secrets and Crossplane's fields down),
//! remote Events mirrored down, the link probe, and the renewal of the control plane credential. The rules they follow are in `model`.

pub mod caches;
pub mod catalog;
pub mod claims;
pub mod context;
pub mod credential;
pub mod events;
pub mod identity;
pub mod link;
pub mod namespaces;
pub mod offer;
pub mod store;
pub mod supervisor;
