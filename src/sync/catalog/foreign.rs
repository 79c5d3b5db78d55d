//! A local CRD at a claim kind's name that claimsync does not own: left alone, and said once per cluster (a log line
//! and an Event). Reads and writes Events only.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, ListParams};
use kube::runtime::events::{Event, EventType};
use tracing::warn;

use crate::sync::context::Context;

/// A local CRD of a claim kind's name that claimsync does not own: left alone, said once in the log and an Event.
pub(super) async fn report_foreign(ctx: &Context, name: &str) {
    let message =
        format!("a local CRD {name} exists and is not claimsync's; it is left alone and its claims are not replicated");
    warn!(crd = %name, "{message}");
    let reference = ObjectReference {
        api_version: Some("apiextensions.k8s.io/v1".into()),
        kind: Some("CustomResourceDefinition".into()),
        name: Some(name.to_string()),
        ..ObjectReference::default()
    };
    let event = Event {
        type_: EventType::Warning,
        reason: "ForeignCRD".into(),
        note: Some(message),
        action: "ReplicateCatalog".into(),
        secondary: None,
    };
    // Said once per cluster, not once per start: a restart must write nothing that is already there.
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(ctx.local.clone(), "default");
    let said = events.list(&ListParams::default()).await.is_ok_and(|list| {
        list.items.iter().any(|e| {
            e.reason.as_deref() == Some("ForeignCRD")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
        })
    });
    if said {
        return;
    }
    if let Err(e) = ctx.recorder.publish(&event, &reference).await {
        warn!(crd = %name, error = %e, "could not publish an Event");
    }
}
