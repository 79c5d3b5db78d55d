//! The per-kind claim controllers and their lifecycle: one running controller per offered claim kind, started,
//! replaced when the kind changes, restarted together, or stopped when the kind is withdrawn. Which kinds exist is
//! the catalog's decision, not this file's.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::context::Context;
use crate::model::kind::ClaimKind;
use crate::sync::claims;

/// The running claim controllers, by CRD name.
#[derive(Default)]
pub struct Running {
    kinds: HashMap<String, (ClaimKind, JoinHandle<()>)>,
}

impl Running {
    pub async fn ensure(&mut self, ctx: &Arc<Context>, kind: ClaimKind) {
        if let Some((running, handle)) = self.kinds.get(&kind.crd_name) {
            if *running == kind && !handle.is_finished() {
                return;
            }
            handle.abort();
        }
        let handle = claims::start(ctx.clone(), kind.clone()).await;
        self.kinds.insert(kind.crd_name.clone(), (kind, handle));
    }

    pub fn kinds(&self) -> Vec<ClaimKind> {
        self.kinds.values().map(|(kind, _)| kind.clone()).collect()
    }

    pub async fn restart_all(&mut self, ctx: &Arc<Context>) {
        for kind in self.kinds() {
            if let Some((_, handle)) = self.kinds.remove(&kind.crd_name) {
                handle.abort();
            }
            self.ensure(ctx, kind).await;
        }
    }

    pub fn stop(&mut self, crd_name: &str) -> Option<ClaimKind> {
        let (kind, handle) = self.kinds.remove(crd_name)?;
        handle.abort();
        Some(kind)
    }
}
