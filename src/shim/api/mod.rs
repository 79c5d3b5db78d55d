//! The API `claimsync.dev/v1alpha1` as data and documents: the resources, the objects served and their names,
//! Tables, discovery, OpenAPI and the Status of an API error. Pure functions; no I/O, no HTTP.

pub mod api_error;
pub mod discovery;
pub mod names;
pub mod objects;
pub mod openapi;
pub mod resources;
pub mod table;
