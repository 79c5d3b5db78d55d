//! The serving certificate: generated (`generated`, pure PEM) or given, kept in a Secret and loaded into the TLS
//! slot (`keeper`), and the APIService that must trust its CA (`api_service`). Touches only that Secret and that
//! APIService.

pub mod api_service;
pub mod generated;
pub mod keeper;
