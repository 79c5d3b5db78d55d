//! claimsync's integration tests, against the real two-cluster env (e2e/env): one binary, so the env starts once
//! per run, or is reused when APP_KUBECONFIG and CONTROLPLANE_KUBECONFIG name a running one.
#![forbid(unsafe_code)]

mod claim_support;
mod helm_support;
mod instance;
mod platform_support;
mod shim_support;
mod support;

mod catalog;
mod claims;
mod cli;
mod connect;
mod install;
mod journal;
mod layout;
mod offline;
mod ops;
mod safety;
mod shim;
mod tenants;
mod trust;
mod xrs;

mod testenv_aggregation;
mod testenv_app_cluster;
mod testenv_audit;
mod testenv_control_plane;
mod testenv_garbage;
mod testenv_link;
mod testenv_outage;
mod testenv_second_app;
