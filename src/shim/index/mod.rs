//! What is served now: the in-memory `store` every answer reads, the `facts` it is projected from, and the
//! `source` that fills them from app-cluster watches and the journal. Never reads a request, never writes.

pub mod facts;
pub mod source;
pub mod store;
