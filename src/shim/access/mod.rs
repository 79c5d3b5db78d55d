//! Who may ask: the front proxy's identity (`front_proxy`), kept current from the app cluster's request-header
//! configuration (`trust`), and RBAC's decision for each request (`review`). Decides; never answers a request.

pub mod front_proxy;
pub mod review;
pub mod trust;
