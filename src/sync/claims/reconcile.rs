//! The entry of each reconcile of a claim: its queue wait measured, a deadline on the whole pass, a conflict read
//! as "look again", retries with backoff per claim, and the in-sync tracker told. The pass itself is the executor
//! carrying out the planner's steps (`executor.rs`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::ResourceExt;
use kube::api::DynamicObject;
use tracing::{Instrument, debug, info_span, warn};

use super::arrivals::arrival_key;
use super::executor;
use super::kind_context::KindContext;
use super::runner::Requeue;
use crate::error::Error;

/// How soon a claim that changed under a write is looked at again (its new version is on its way anyway).
const AFTER_CONFLICT: Duration = Duration::from_millis(500);

/// The longest one reconcile may take. A request into a link that blackholes hangs far longer than that (the
/// client's read timeout is kept long for watches); bounded here, the claim is retried and sees the link's state.
const RECONCILE_TIMEOUT: Duration = Duration::from_secs(20);

pub(super) async fn reconcile(claim: Arc<DynamicObject>, kctx: Arc<KindContext>) -> Result<Requeue, Error> {
    let namespace = claim.namespace().unwrap_or_default();
    if let Some(wait) = kctx
        .arrivals
        .take(&arrival_key(&namespace, &claim.name_any()), Instant::now())
    {
        kctx.ctx.metrics.waited(wait);
    }
    let key = kctx.key_of(&claim).to_string();
    let span = info_span!("claim", key = %key);
    let pass = executor::run(&kctx, &claim).instrument(span);
    let result = match tokio::time::timeout(RECONCILE_TIMEOUT, pass).await {
        Ok(result) => result,
        Err(_) => Err(Error::Timeout {
            object: key.clone(),
            after: RECONCILE_TIMEOUT,
            while_: "the control plane may be unreachable",
        }),
    };
    let result = match result {
        // The claim changed under a write: nothing was undone; look again at its new version.
        Err(e) if e.is_conflict() => {
            debug!(claim = %key, error = %e, "the claim changed meanwhile; looking again");
            Ok(Some(AFTER_CONFLICT))
        }
        other => other,
    };
    if result.is_ok() {
        kctx.ctx.succeeded(&key);
        kctx.ctx.sync.done(&key);
    }
    result
}

/// A failed reconcile is retried with its claim's backoff.
pub(super) fn error_policy(claim: &DynamicObject, error: &Error, kctx: &KindContext) -> Duration {
    let key = kctx.key_of(claim).to_string();
    let delay = kctx.ctx.next_retry(&key);
    warn!(claim = %key, error = %error, retry_in = ?delay, "reconcile failed");
    delay
}
