//! Running claimsync as a service: Prometheus metrics and the client layer that counts API calls, the ops endpoint
//! (health, readiness, metrics) every replica serves, and leader election (only the leader writes). It observes and
//! gates the controllers in `sync`; it holds no replication rules of its own.

pub mod counting;
pub mod deadline;
pub mod leader;
pub mod metrics;
pub mod server;
