//! The link to the control plane: probes it every few seconds and says when it is lost and when it is back, so
//! claims can show it at once instead of at their next reconcile. Reports only; reacting is catalog.rs's job.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;
use tracing::{info, warn};

use crate::context::Context;

const PROBE_EVERY: Duration = Duration::from_secs(3);
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// A change of the control plane's reachability.
#[derive(Debug, PartialEq)]
pub enum Link {
    Lost(String),
    Restored,
}

/// What a probe result means, given whether the link was up: a change to report, if any.
pub fn transition(was_up: bool, probe: Result<(), String>) -> Option<Link> {
    match (was_up, probe) {
        (true, Err(reason)) => Some(Link::Lost(reason)),
        (false, Ok(())) => Some(Link::Restored),
        _ => None,
    }
}

/// Probes the control plane until the receiver is gone. It starts up: `run` checked it at start.
pub async fn watch(ctx: Arc<Context>, changes: UnboundedSender<Link>) {
    let mut up = true;
    loop {
        tokio::time::sleep(PROBE_EVERY).await;
        let probe = match tokio::time::timeout(PROBE_TIMEOUT, ctx.remote.apiserver_version()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {}s", PROBE_TIMEOUT.as_secs())),
        };
        if let Some(change) = transition(up, probe) {
            match &change {
                Link::Lost(reason) => {
                    warn!(%reason, "the control plane is unreachable; claims keep their last known status")
                }
                Link::Restored => info!("the control plane is reachable again; resyncing every claim"),
            }
            up = matches!(change, Link::Restored);
            if changes.send(change).is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_only_changes() {
        let cases = [
            (true, Ok(()), None),
            (true, Err("refused".to_string()), Some(Link::Lost("refused".into()))),
            (false, Err("refused".to_string()), None),
            (false, Ok(()), Some(Link::Restored)),
        ];
        for (was_up, probe, want) in cases {
            assert_eq!(transition(was_up, probe), want);
        }
    }
}
