//! The link to the control plane: probes it every few seconds, turns probe results into a declared state through
//! the hysteresis of model/link.rs, and publishes each change (a watch channel the claim controllers follow, the
//! log, an Event). Reports only; the controllers decide what a change means for each claim.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::model::link::{Down, Hysteresis, LinkState, Probe};
use crate::sync::context::Context;

const PROBE_EVERY: Duration = Duration::from_secs(3);
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// One probe of the control plane: can claimsync reach it, with credentials it accepts?
pub async fn probe(remote: &Client) -> Probe {
    match tokio::time::timeout(PROBE_TIMEOUT, remote.apiserver_version()).await {
        Ok(Ok(_)) => Probe::Ok,
        Ok(Err(kube::Error::Api(status))) if status.code == 401 => Probe::Failed {
            why: Down::CredentialsRejected,
            reason: format!(
                "the control plane rejected claimsync's credentials (401): {}",
                status.message
            ),
        },
        Ok(Err(e)) => Probe::Failed {
            why: Down::Unreachable,
            reason: e.to_string(),
        },
        Err(_) => Probe::Failed {
            why: Down::Unreachable,
            reason: format!("no answer within {}s", PROBE_TIMEOUT.as_secs()),
        },
    }
}

/// Probes the control plane for as long as claimsync runs, starting from `link`'s current state.
pub async fn watch(ctx: Arc<Context>, link: watch::Sender<LinkState>) {
    let started = Instant::now();
    let mut hysteresis = Hysteresis::new(link.borrow().clone());
    loop {
        tokio::time::sleep(PROBE_EVERY).await;
        let result = probe(&ctx.remote).await;
        let now_ms = started.elapsed().as_millis() as u64;
        let Some(state) = hysteresis.observe(now_ms, result) else {
            continue;
        };
        announce(&ctx, &state).await;
        ctx.metrics.link_up.set(i64::from(state.is_up()));
        if link.send(state).is_err() {
            return;
        }
    }
}

/// Says a change of the link in the log and as an Event on claimsync itself.
pub async fn announce(ctx: &Context, state: &LinkState) {
    let (type_, reason, note) = match state {
        LinkState::Up => {
            info!("the control plane is reachable again; claims are replicated again");
            (
                EventType::Normal,
                "ControlPlaneReachable",
                "the control plane is reachable again".to_string(),
            )
        }
        LinkState::Down { why, reason } => {
            warn!(%reason, "the control plane cannot be used; claims keep their last known status and local changes wait");
            let event_reason = match why {
                Down::Unreachable => "ControlPlaneUnreachable",
                Down::CredentialsRejected => "ControlPlaneCredentialsRejected",
            };
            (
                EventType::Warning,
                event_reason,
                format!(
                    "claimsync is degraded, not stopped: {reason}; claims keep their last known status and local changes wait"
                ),
            )
        }
    };
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(crate::model::notes::bounded_note(&note)),
        action: "ProbeControlPlane".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &ctx.reporting_object).await {
        warn!(error = %e, "could not publish an Event about the link");
    }
}

/// What claimsync's own Events are about: its Pod when it runs in one, else its identity record.
pub fn reporting_object(own_namespace: &str) -> ObjectReference {
    match std::env::var("POD_NAME") {
        Ok(pod) if !pod.is_empty() => ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(pod),
            namespace: Some(own_namespace.to_string()),
            ..ObjectReference::default()
        },
        _ => ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("ConfigMap".into()),
            name: Some(crate::model::vocabulary::IDENTITY_CONFIGMAP.into()),
            namespace: Some(own_namespace.to_string()),
            ..ObjectReference::default()
        },
    }
}
