//! Reserved for running claimsync as a service: metrics, health and readiness endpoints, and leader election.
//! It observes and gates the controllers in `sync`; it holds no replication rules of its own.
