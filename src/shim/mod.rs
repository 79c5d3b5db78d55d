//! The aggregated API `claimsync.dev/v1alpha1`: `claimkinds` and `claimsyncs`, read-only, served over TLS by
//! every claimsync replica to the app cluster's aggregator, from watches of the app cluster and the journal, so
//! it answers before the first sync and while the control plane is unreachable. It reads what `sync` records
//! and never writes to either cluster's claims; it never imports `sync`.

mod auth;
mod authz;
mod body;
mod certs;
mod discovery;
mod facts;
mod index;
mod names;
mod negotiate;
mod objects;
mod openapi;
mod phase;
mod query;
pub mod resources;
mod routes;
mod scope;
mod selector;
mod serve;
mod serving;
mod status;
mod table;
mod tls;
mod trust;
mod watch;
