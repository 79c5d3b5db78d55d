//! The rules of replication as pure functions over plain values: what a claim kind is, how a claim is named
//! remotely, who owns which field, what goes up and what comes down. No I/O here: nothing in `model` talks to an
//! API server, the journal or a clock; `sync` does, and calls these.

pub mod composite;
pub mod conditions;
pub mod connection;
pub mod downward;
pub mod fields;
pub mod identity;
pub mod kind;
pub mod lease;
pub mod link;
pub mod naming;
pub mod notes;
pub mod orphans;
pub mod pending;
pub mod phase;
pub mod plan;
pub mod restore;
pub mod secret;
pub mod upward;
pub mod vocabulary;
