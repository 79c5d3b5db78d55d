//! The per-kind claim controllers and their lifecycle: one running controller per claim kind claimsync knows,
//! started, or replaced when the kind changes (a new storage version). A withdrawn kind keeps its controller so its
//! claims stay deletable. Which kinds exist is the catalog's decision, not this file's.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::model::kind::ClaimKind;
use crate::ops::metrics::KindStateLabels;
use crate::sync::claims;
use crate::sync::context::Context;

/// The running claim controllers, by CRD name, with whether each runs for a withdrawn kind.
#[derive(Default)]
pub struct Running {
    kinds: HashMap<String, (ClaimKind, bool, JoinHandle<()>)>,
}

impl Running {
    /// Runs the controller of `kind` (for a withdrawn kind, or an offered one), replacing one that differs.
    pub async fn ensure(&mut self, ctx: &Arc<Context>, kind: ClaimKind, withdrawn: bool) {
        if let Some((running, was_withdrawn, handle)) = self.kinds.get(&kind.crd_name) {
            if *running == kind && *was_withdrawn == withdrawn && !handle.is_finished() {
                return;
            }
            handle.abort();
        }
        let handle = claims::start(ctx.clone(), kind.clone(), withdrawn).await;
        self.kinds.insert(kind.crd_name.clone(), (kind, withdrawn, handle));
        let withdrawn = self.kinds.values().filter(|(_, withdrawn, _)| *withdrawn).count();
        for (state, count) in [("offered", self.kinds.len() - withdrawn), ("withdrawn", withdrawn)] {
            let labels = KindStateLabels { state: state.into() };
            ctx.metrics.claim_kinds.get_or_create(&labels).set(count as i64);
        }
    }

    /// The CRD names of every running controller.
    pub fn names(&self) -> Vec<String> {
        self.kinds.keys().cloned().collect()
    }

    /// The kind of a running controller.
    pub fn kind(&self, crd_name: &str) -> Option<ClaimKind> {
        self.kinds.get(crd_name).map(|(kind, _, _)| kind.clone())
    }
}

/// The controllers are tasks of their own: they stop with the catalog that owns them (when claimsync stops writing,
/// loses the lead, is disconnected, or reconnects with a rotated kubeconfig), not run on with a stale context.
impl Drop for Running {
    fn drop(&mut self) {
        for (_, _, handle) in self.kinds.values() {
            handle.abort();
        }
    }
}
