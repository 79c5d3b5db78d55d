//! What a request asks: its `route` (path), its `query` parameters with their label and field `selector`s, and
//! the `scope` of served objects it sees. Pure functions; answering is `answer`'s.

pub mod query;
pub mod route;
pub mod scope;
pub mod selector;
