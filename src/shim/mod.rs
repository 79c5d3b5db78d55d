//! Reserved for the aggregated API (`claimsync.dev/v1alpha1`): TLS and front-proxy authentication, discovery,
//! tables, watch and OpenAPI for `claimkinds` and `claimsyncs`, answered from caches and the journal. It reads
//! what `sync` records and never writes to either cluster's claims.
