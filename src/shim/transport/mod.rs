//! The HTTP transport: TLS with a reloadable certificate (`tls`), the `listener`, response `body`s, and content
//! negotiation (`negotiate`). Knows nothing of claimsync.dev's objects; imports no other room of the shim.

pub mod body;
pub mod listener;
pub mod negotiate;
pub mod tls;
