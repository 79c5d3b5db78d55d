//! Answering a request: `handler` takes it from authentication to the response, `reads` answers get, list and
//! the start of a watch from the index, `watch` streams a watch's events. Writes to no cluster.

pub mod handler;
pub mod reads;
pub mod watch;
