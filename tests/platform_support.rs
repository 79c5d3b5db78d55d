//! Replicated kinds of a test's own: an XRD (with a Composition that composes one Record, or one ConfigMap for a
//! namespaced XR kind) in a group no other test uses, offered on the control plane and awaited in the app cluster,
//! so a test may withdraw or break its kind without touching anyone else's.

use std::time::Duration;

use claimsync::model::kind::KindFamily;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::support::{self, wait_for};

pub(crate) fn xrd_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("apiextensions.crossplane.io", "v1", "CompositeResourceDefinition"),
        "compositeresourcedefinitions",
    )
}

/// The v2 XRD API (Crossplane v2 only): namespaced XR kinds.
pub(crate) fn xrd_v2_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("apiextensions.crossplane.io", "v2", "CompositeResourceDefinition"),
        "compositeresourcedefinitions",
    )
}

pub(crate) fn composition_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("apiextensions.crossplane.io", "v1", "Composition"),
        "compositions",
    )
}

/// A version's schema: an object whose `spec` has `properties` and the `extra` ones.
fn spec_schema(mut properties: Value, extra: Value) -> Value {
    if let (Some(p), Some(e)) = (properties.as_object_mut(), extra.as_object()) {
        p.extend(e.clone());
    }
    json!({"openAPIV3Schema": {"type": "object", "properties": {
        "spec": {"type": "object", "properties": properties}}}})
}

/// An XRD offering claim kind `kind` in `group`, with `spec.size` and optionally more spec properties and a
/// second served (not referenceable) version.
pub(crate) fn xrd(group: &str, kind: &str, extra: Value, second_version: bool) -> Value {
    let lower = kind.to_lowercase();
    let schema = spec_schema(json!({"size": {"type": "integer"}}), extra);
    let mut versions = vec![json!({"name": "v1alpha1", "served": true, "referenceable": true, "schema": schema})];
    if second_version {
        versions.push(json!({"name": "v1beta1", "served": true, "referenceable": false, "schema": schema}));
    }
    json!({
        "apiVersion": "apiextensions.crossplane.io/v1", "kind": "CompositeResourceDefinition",
        "metadata": {"name": format!("x{lower}s.{group}")},
        "spec": {
            "group": group,
            "names": {"kind": format!("X{kind}"), "plural": format!("x{lower}s")},
            "claimNames": {"kind": kind, "plural": format!("{lower}s")},
            "defaultCompositionRef": {"name": format!("x{lower}s.{group}")},
            "versions": versions,
        }
    })
}

/// A Composition that composes one Record, which names the claim's namespace.
pub(crate) fn composition(group: &str, kind: &str) -> Value {
    let lower = kind.to_lowercase();
    // A Record (e2e/platform/records.yaml; named by Crossplane): cheap to make and to delete, unlike a Namespace,
    // whose deletion walks every resource type of the control plane.
    pipeline_composition(
        &format!("x{lower}s.{group}"),
        json!({"apiVersion": format!("{group}/v1alpha1"), "kind": format!("X{kind}")}),
        json!([{
            "name": "record",
            "base": {"apiVersion": "starter.org/v1alpha1", "kind": "Record", "data": {"made-for": "test"}},
            "patches": [{"fromFieldPath": "spec.claimRef.namespace", "toFieldPath": "data.claim-namespace"}]
        }]),
    )
}

/// A Composition `name` for the composite type `type_ref`: one pipeline step, the env's own function (e2e/function),
/// composing `resources` (its input's templates).
fn pipeline_composition(name: &str, type_ref: Value, resources: Value) -> Value {
    json!({
        "apiVersion": "apiextensions.crossplane.io/v1", "kind": "Composition",
        "metadata": {"name": name},
        "spec": {
            "compositeTypeRef": type_ref,
            "mode": "Pipeline",
            "pipeline": [{
                "step": "compose",
                "functionRef": {"name": "claimsync-env"},
                "input": {"apiVersion": "function.claimsync.dev/v1alpha1", "kind": "Resources", "resources": resources}
            }]
        }
    })
}

pub(crate) async fn apply(client: &Client, resource: &ApiResource, object: &Value) {
    let name = object["metadata"]["name"].as_str().unwrap();
    Api::<DynamicObject>::all_with(client.clone(), resource)
        .patch(
            name,
            &PatchParams::apply("claimsync-test").force(),
            &Patch::Apply(object),
        )
        .await
        .unwrap_or_else(|e| panic!("apply {name}: {e}"));
}

pub(crate) async fn local_crd(client: &Client, name: &str) -> Result<Value, String> {
    let crd = Api::<CustomResourceDefinition>::all(client.clone())
        .get(name)
        .await
        .map_err(|e| e.to_string())?;
    Ok(serde_json::to_value(crd).unwrap())
}

/// Crossplane's finalizer on claims.
const CROSSPLANE_CLAIM_FINALIZER: &str = "finalizer.apiextensions.crossplane.io";

/// Waits until Crossplane has removed the claim CRD `crd_name` of the withdrawn XRD `xrd_name` (after deleting its
/// claims). Crossplane requeues a deleting XRD with a per-item backoff that doubles while it waits for the claims to
/// go (past two minutes once, on a loaded CI machine); a change to the XRD puts it back in the queue at once, so the
/// wait touches it every two seconds.
///
/// Crossplane 1.20 also has a race of its own here: it deletes the XRs and their CRD while the claims are still
/// being deleted, and a claim its claim controller had not finalized before the XR CRD went keeps its finalizer for
/// ever (the controller cannot read the XR any more; seen in CI, and by hand with a paused claim). The wait then
/// does what an operator does: removes Crossplane's finalizer from such a claim, and says so.
pub(crate) async fn wait_claim_crd_gone(control_plane: &Client, crd_name: &str, xrd_name: &str) {
    let remote_crds = Api::<CustomResourceDefinition>::all(control_plane.clone());
    let xrds = Api::<DynamicObject>::all_with(control_plane.clone(), &xrd_resource());
    let mut round = 0;
    wait_for(
        "Crossplane to remove the withdrawn claim CRD",
        Duration::from_secs(180),
        || {
            round += 1;
            let (remote_crds, xrds) = (&remote_crds, &xrds);
            async move {
                let Some(claim_crd) = remote_crds.get_opt(crd_name).await.map_err(|e| e.to_string())? else {
                    return Ok(());
                };
                let resource = crd_resource(&claim_crd);
                let claims = Api::<DynamicObject>::all_with(control_plane.clone(), &resource);
                let left = claims.list(&Default::default()).await.map_err(|e| e.to_string())?.items;
                let xr_kind_gone = remote_crds
                    .get_opt(xrd_name)
                    .await
                    .map_err(|e| e.to_string())?
                    .is_none();
                if xr_kind_gone {
                    for claim in left.iter().filter(|c| is_wedged(c)) {
                        let (ns, name) = (claim.namespace().unwrap_or_default(), claim.name_any());
                        eprintln!(
                            "Crossplane left claim {ns}/{name} deleting after removing its XR kind {xrd_name}: \
                             removing its finalizer {CROSSPLANE_CLAIM_FINALIZER}"
                        );
                        let finalizers: Vec<&String> = claim
                            .finalizers()
                            .iter()
                            .filter(|f| *f != CROSSPLANE_CLAIM_FINALIZER)
                            .collect();
                        let patch = json!({"metadata": {"finalizers": finalizers,
                                                        "resourceVersion": claim.resource_version()}});
                        let _ = Api::<DynamicObject>::namespaced_with(control_plane.clone(), &ns, &resource)
                            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                            .await;
                    }
                }
                let state = format!(
                    "still there; XR CRD {xrd_name} {}; claims left: {:?}",
                    if xr_kind_gone { "gone" } else { "still there" },
                    left.iter()
                        .map(|c| format!(
                            "{}/{} deleting={} finalizers={:?}",
                            c.namespace().unwrap_or_default(),
                            c.name_any(),
                            c.metadata.deletion_timestamp.is_some(),
                            c.finalizers()
                        ))
                        .collect::<Vec<_>>()
                );
                if round % 10 == 0 {
                    let nudge = json!({"metadata": {"annotations": {"claimsync.dev/test-nudge": round.to_string()}}});
                    let _ = xrds
                        .patch(xrd_name, &PatchParams::default(), &Patch::Merge(&nudge))
                        .await;
                }
                Err(state)
            }
        },
    )
    .await;
}

/// A claim Crossplane was deleting that still holds Crossplane's finalizer.
fn is_wedged(claim: &DynamicObject) -> bool {
    claim.metadata.deletion_timestamp.is_some() && claim.finalizers().iter().any(|f| f == CROSSPLANE_CLAIM_FINALIZER)
}

/// The resource of a claim CRD, at its storage version.
fn crd_resource(crd: &CustomResourceDefinition) -> ApiResource {
    let version = crd
        .spec
        .versions
        .iter()
        .find(|v| v.storage)
        .map(|v| v.name.clone())
        .unwrap_or_default();
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(&crd.spec.group, &version, &crd.spec.names.kind),
        &crd.spec.names.plural,
    )
}

/// A v2 XRD (Crossplane v2 only) defining namespaced XR kind `kind` in `group`, with `spec.size` and `extra` spec
/// properties: app teams create the XR itself.
pub(crate) fn namespaced_xrd(group: &str, kind: &str, extra: Value) -> Value {
    let lower = kind.to_lowercase();
    let schema = spec_schema(
        json!({"size": {"type": "integer"},
            "writeConnectionSecretToRef": {"type": "object", "properties": {"name": {"type": "string"}}}}),
        extra,
    );
    json!({
        "apiVersion": "apiextensions.crossplane.io/v2", "kind": "CompositeResourceDefinition",
        "metadata": {"name": format!("{lower}s.{group}")},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"kind": kind, "plural": format!("{lower}s")},
            "defaultCompositionRef": {"name": format!("{lower}s.{group}")},
            "versions": [{"name": "v1alpha1", "served": true, "referenceable": true, "schema": schema}],
        }
    })
}

/// A Composition for a namespaced XR kind: one ConfigMap in the XR's namespace (a namespaced XR composes only
/// namespaced objects), named by Crossplane, and a connection Secret named by `spec.writeConnectionSecretToRef`.
pub(crate) fn xr_composition(group: &str, kind: &str) -> Value {
    let lower = kind.to_lowercase();
    pipeline_composition(
        &format!("{lower}s.{group}"),
        json!({"apiVersion": format!("{group}/v1alpha1"), "kind": kind}),
        json!([{
            "name": "settings",
            "base": {"apiVersion": "v1", "kind": "ConfigMap", "data": {"made-for": "test"}},
            "patches": [{"fromFieldPath": "spec.size", "toFieldPath": "data.size", "format": "%s"}]
        }, {
            "name": "connection",
            "base": {"apiVersion": "v1", "kind": "Secret", "stringData": {"made-for": "test"}},
            "patches": [{"fromFieldPath": "spec.writeConnectionSecretToRef.name", "toFieldPath": "metadata.name"}]
        }]),
    )
}

/// A replicated kind of one test: `<Kind>` in group `<unique>.test.starter.org`, at version v1alpha1; a claim kind
/// of a legacy XRD, or (Crossplane v2) a namespaced XR kind of a v2 XRD.
pub(crate) struct TestKind {
    pub group: String,
    pub kind: String,
    pub crd_name: String,
    pub resource: ApiResource,
    pub family: KindFamily,
}

impl TestKind {
    /// Offers `kind` (with `extra` spec properties) on the control plane, in a group of its own.
    pub(crate) async fn offer(control_plane: &Client, prefix: &str, kind: &str, extra: Value) -> TestKind {
        let group = format!("{}.test.starter.org", support::unique(prefix));
        Self::offer_in(control_plane, &group, kind, extra).await
    }

    /// Offers `kind` (with `extra` spec properties) in `group` on the control plane.
    pub(crate) async fn offer_in(control_plane: &Client, group: &str, kind: &str, extra: Value) -> TestKind {
        let group = group.to_string();
        apply(control_plane, &composition_resource(), &composition(&group, kind)).await;
        apply(control_plane, &xrd_resource(), &xrd(&group, kind, extra, false)).await;
        Self::named(group, kind, KindFamily::Claim)
    }

    /// The kind `kind` of `family` in `group`, at v1alpha1, as its XRD names it.
    fn named(group: String, kind: &str, family: KindFamily) -> TestKind {
        let lower = kind.to_lowercase();
        TestKind {
            crd_name: format!("{lower}s.{group}"),
            resource: ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk(&group, "v1alpha1", kind),
                &format!("{lower}s"),
            ),
            kind: kind.to_string(),
            group,
            family,
        }
    }

    /// Offers `kind` of `family`: a claim kind, or a namespaced XR kind (Crossplane v2 only).
    pub(crate) async fn offer_of(
        family: KindFamily,
        control_plane: &Client,
        prefix: &str,
        kind: &str,
        extra: Value,
    ) -> TestKind {
        match family {
            KindFamily::Claim => Self::offer(control_plane, prefix, kind, extra).await,
            KindFamily::NamespacedXr => Self::offer_xr(control_plane, prefix, kind, extra).await,
        }
    }

    /// Offers namespaced XR kind `kind` (with `extra` spec properties) on the control plane, in a group of its own.
    pub(crate) async fn offer_xr(control_plane: &Client, prefix: &str, kind: &str, extra: Value) -> TestKind {
        let group = format!("{}.test.starter.org", support::unique(prefix));
        apply(control_plane, &composition_resource(), &xr_composition(&group, kind)).await;
        apply(control_plane, &xrd_v2_resource(), &namespaced_xrd(&group, kind, extra)).await;
        Self::named(group, kind, KindFamily::NamespacedXr)
    }

    /// The twin's name of this kind's object `namespace/name` from the app cluster `cluster_id`.
    pub(crate) fn remote_name(&self, name: &str, namespace: &str, cluster_id: &str) -> String {
        claimsync::model::naming::remote_name(self.family, name, namespace, cluster_id)
    }

    /// Waits until the kind's CRD is established in the app cluster; returns it.
    pub(crate) async fn wait_local(&self, app: &Client) -> Value {
        wait_for(
            &format!("claim kind {} to be established in the app cluster", self.kind),
            Duration::from_secs(90),
            || async {
                let crd = local_crd(app, &self.crd_name).await?;
                let established = crd["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Established" && c["status"] == "True");
                established.then_some(crd).ok_or_else(|| "not established".to_string())
            },
        )
        .await
    }

    /// Withdraws the kind: deletes its XRD on the control plane.
    pub(crate) async fn withdraw(&self, control_plane: &Client) {
        Api::<DynamicObject>::all_with(control_plane.clone(), &xrd_resource())
            .delete(&self.xrd_name(), &DeleteParams::default())
            .await
            .unwrap();
    }

    /// The name of the kind's XRD (that of its XR kind's CRD too).
    pub(crate) fn xrd_name(&self) -> String {
        match self.family {
            KindFamily::Claim => format!("x{}s.{}", self.kind.to_lowercase(), self.group),
            KindFamily::NamespacedXr => self.crd_name.clone(),
        }
    }

    /// A claim of this kind, `namespace/name`, with the spec every test kind accepts (`size: 1`).
    pub(crate) fn claim(&self, namespace: &str, name: &str) -> DynamicObject {
        let mut claim = DynamicObject::new(name, &self.resource).within(namespace);
        claim.data = json!({"spec": {"size": 1}});
        claim
    }

    /// The local claims of this kind in `namespace`.
    pub(crate) fn claims(&self, client: &Client, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(client.clone(), namespace, &self.resource)
    }

    /// The kind's composite resources on the control plane (a namespaced XR kind's twins are its composites).
    pub(crate) fn composites(&self, control_plane: &Client) -> Api<DynamicObject> {
        if self.family == KindFamily::NamespacedXr {
            return Api::all_with(control_plane.clone(), &self.resource);
        }
        let lower = self.kind.to_lowercase();
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(&self.group, "v1alpha1", &format!("X{}", self.kind)),
            &format!("x{lower}s"),
        );
        Api::all_with(control_plane.clone(), &resource)
    }

    /// The local CRD of this kind, if any.
    pub(crate) async fn local_crd(&self, app: &Client) -> Option<CustomResourceDefinition> {
        Api::<CustomResourceDefinition>::all(app.clone())
            .get_opt(&self.crd_name)
            .await
            .unwrap()
    }
}

/// A test's kind is withdrawn when the test ends, passing or failing, so that no XRD of a finished test keeps the
/// control plane's Crossplane busy for the tests after it.
impl Drop for TestKind {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&crate::support::env().control_plane_kubeconfig)
            .args(["delete", "xrd", &self.xrd_name(), "--wait=false", "--ignore-not-found"])
            .output();
    }
}
