//! The per-kind claim controllers and their lifecycle: one running controller per claim kind claimsync knows,
//! started, or replaced when the kind changes (a new storage version). A withdrawn kind keeps its controller so its
//! claims stay deletable. Which kinds exist is the catalog's decision, not this file's.

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
}
