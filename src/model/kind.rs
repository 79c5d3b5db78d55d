//! What a claim kind is: which CRDs of the control plane are claim CRDs, the identical CRD the app cluster gets
//! (plus a REPLICATED column), and the kind and version claimsync syncs. Pure functions over CRD JSON; the
//! catalog controller (sync/catalog/) does the I/O.

use serde_json::{Value, json};

use crate::model::fields::is_subset;
use crate::model::vocabulary::{MANAGED_BY, XRD_ANNOTATION};

/// Which family of replicated objects a kind belongs to; each has its own rules (`model::plan::Family`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KindFamily {
    /// A claim of a legacy XRD (Crossplane v1, or `apiextensions.crossplane.io/v1` on v2).
    #[default]
    Claim,
    /// A namespaced composite resource of a Crossplane v2 XRD (`scope: Namespaced`).
    NamespacedXr,
}

impl KindFamily {
    /// How the family is named where a user reads it (the shim, the README).
    pub fn as_str(self) -> &'static str {
        match self {
            KindFamily::Claim => "Claim",
            KindFamily::NamespacedXr => "NamespacedXR",
        }
    }
}

/// One kind offered by the control plane that claimsync replicates (a claim kind, or a namespaced XR kind), at the
/// version claimsync reads and writes it.
#[derive(Clone, Debug, PartialEq)]
pub struct ClaimKind {
    pub family: KindFamily,
    pub crd_name: String,
    pub group: String,
    /// The storage version, which both identical CRDs share.
    pub version: String,
    pub kind: String,
    pub plural: String,
}

impl ClaimKind {
    /// `<group>/<version>`.
    pub fn api_version(&self) -> String {
        format!("{}/{}", self.group, self.version)
    }
}

/// Whether a CRD is one claimsync replicates: a claim CRD or a namespaced XR CRD (see [`family_of`]).
pub fn is_claim_crd(crd: &Value) -> bool {
    family_of(crd).is_some()
}

/// The family of a CRD that Crossplane generated for an XRD and claimsync replicates: namespaced, controlled by a
/// CompositeResourceDefinition, and in the `claim` category (a claim kind) or the `composite` one (a v2 namespaced
/// XR kind; Crossplane v1's XRs are all cluster-scoped). Any other CRD in those categories (anyone with CRD rights
/// can make one) is not a kind of the platform and is never copied down.
pub fn family_of(crd: &Value) -> Option<KindFamily> {
    if crd["spec"]["scope"] != "Namespaced" || owning_xrd(crd).is_none() {
        return None;
    }
    if in_category(crd, "claim") {
        Some(KindFamily::Claim)
    } else if in_category(crd, "composite") {
        Some(KindFamily::NamespacedXr)
    } else {
        None
    }
}

/// Whether a CRD is a Crossplane v2 cluster-scoped XR kind (`scope: Cluster`): its machinery is under
/// `spec.crossplane`, as for namespaced XRs, but it has no namespace to map into the claim namespace, so it is not
/// replicated; the shim lists it so that a user can see why. A legacy cluster-scoped XR (behind a claim) is not one.
pub fn is_cluster_xr_crd(crd: &Value) -> bool {
    crd["spec"]["scope"] == "Cluster"
        && owning_xrd(crd).is_some()
        && in_category(crd, "composite")
        && crd["spec"]["versions"].as_array().is_some_and(|versions| {
            versions
                .iter()
                .any(|v| v["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["crossplane"].is_object())
        })
}

/// The family of claimsync's own copy of a kind's CRD in the app cluster (what the journal's catalog keeps too): it
/// names its XRD in an annotation instead of an owner reference, so its scope and category say the family. Never
/// used to decide what to copy: that is [`family_of`], on the control plane's CRDs.
fn copied_family(crd: &Value) -> Option<KindFamily> {
    let ours = crd["metadata"]["labels"][MANAGED_BY] == "claimsync"
        && crd["metadata"]["annotations"][XRD_ANNOTATION].is_string()
        && crd["spec"]["scope"] == "Namespaced";
    if !ours {
        None
    } else if in_category(crd, "claim") {
        Some(KindFamily::Claim)
    } else if in_category(crd, "composite") {
        Some(KindFamily::NamespacedXr)
    } else {
        None
    }
}

/// Why a cluster-scoped XR kind is not replicated: said on its `claimkinds` entry.
pub const CLUSTER_XR_NOT_REPLICATED: &str = "a cluster-scoped composite resource (a Crossplane v2 XRD with scope \
    Cluster) has no namespace to map into the claim namespace, so it is not replicated; create it on the control \
    plane, or ask the platform team for a namespaced kind";

fn in_category(crd: &Value, category: &str) -> bool {
    crd["spec"]["names"]["categories"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c == category))
}

/// The name of the XRD that controls a CRD, from its controller owner reference.
pub fn owning_xrd(crd: &Value) -> Option<&str> {
    crd["metadata"]["ownerReferences"].as_array()?.iter().find(|o| {
        o["kind"] == "CompositeResourceDefinition"
            && o["apiVersion"]
                .as_str()
                .is_some_and(|v| v.starts_with("apiextensions.crossplane.io/"))
            && o["controller"] == true
    })?["name"]
        .as_str()
}

/// Whether a claim kind's API group may be replicated: every group when `allowed` is empty (no `--claim-groups`),
/// else a group named exactly or matching a `*.suffix` entry.
pub fn group_allowed(group: &str, allowed: &[String]) -> bool {
    allowed.is_empty()
        || allowed.iter().any(|entry| match entry.strip_prefix("*.") {
            Some(suffix) => group.len() > suffix.len() && group.ends_with(&format!(".{suffix}")),
            None => entry == group,
        })
}

/// The local CRD for a remote claim CRD: the same spec, claimsync's label, the name of the XRD that controls the
/// remote one (an annotation), a REPLICATED column in every version.
pub fn local_crd(remote: &Value) -> Value {
    let mut spec = remote["spec"].clone();
    // A conversion webhook lives in the control plane and cannot be called from the app cluster.
    if spec["conversion"]["strategy"] != "None" {
        spec["conversion"] = json!({"strategy": "None"});
    }
    if let Some(versions) = spec["versions"].as_array_mut() {
        for version in versions {
            let mut columns = version["additionalPrinterColumns"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            columns.retain(|c| c["name"] != "REPLICATED");
            let column = json!({
                "name": "REPLICATED", "type": "string",
                "jsonPath": ".status.conditions[?(@.type=='Replicated')].status",
            });
            let at = columns.iter().position(|c| c["name"] == "AGE").unwrap_or(columns.len());
            columns.insert(at, column);
            version["additionalPrinterColumns"] = Value::Array(columns);
        }
    }
    let mut metadata = json!({"name": remote["metadata"]["name"], "labels": {MANAGED_BY: "claimsync"}});
    if let Some(xrd) = owning_xrd(remote) {
        metadata["annotations"] = json!({XRD_ANNOTATION: xrd});
    }
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": metadata,
        "spec": spec,
    })
}

/// The kind as claimsync syncs it: at the storage version, which both identical CRDs share.
pub fn claim_kind(crd: &Value) -> Option<ClaimKind> {
    let spec = &crd["spec"];
    let versions = spec["versions"].as_array()?;
    let version = versions
        .iter()
        .find(|v| v["storage"] == true)
        .or_else(|| versions.first())?;
    let group = spec["group"].as_str()?;
    let version = version["name"].as_str()?;
    let kind = spec["names"]["kind"].as_str()?;
    let plural = spec["names"]["plural"].as_str()?;
    Some(ClaimKind {
        family: family_of(crd).or_else(|| copied_family(crd)).unwrap_or_default(),
        crd_name: crd["metadata"]["name"].as_str()?.to_string(),
        group: group.to_string(),
        version: version.to_string(),
        kind: kind.to_string(),
        plural: plural.to_string(),
    })
}

pub fn served_versions(crd: &Value) -> Vec<String> {
    crd["spec"]["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["served"] == true)
        .filter_map(|v| v["name"].as_str().map(str::to_string))
        .collect()
}

/// Whether a local CRD already is what claimsync would apply.
pub fn is_current(existing: &Value, desired: &Value) -> bool {
    existing["metadata"]["labels"][MANAGED_BY] == "claimsync"
        && existing["metadata"]["annotations"][XRD_ANNOTATION] == desired["metadata"]["annotations"][XRD_ANNOTATION]
        && is_subset(&desired["spec"], &existing["spec"])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote() -> Value {
        json!({
            "metadata": {"name": "kubernetesclusters.k8s.starter.org", "resourceVersion": "5",
                         "ownerReferences": [{"apiVersion": "apiextensions.crossplane.io/v1",
                                              "kind": "CompositeResourceDefinition",
                                              "name": "xkubernetesclusters.k8s.starter.org", "controller": true}]},
            "spec": {
                "group": "k8s.starter.org", "scope": "Namespaced",
                "names": {"kind": "KubernetesCluster", "plural": "kubernetesclusters", "categories": ["claim"]},
                "conversion": {"strategy": "None"},
                "versions": [
                    {"name": "v1alpha1", "served": true, "storage": false,
                     "additionalPrinterColumns": [{"name": "SYNCED", "type": "string", "jsonPath": ".x"},
                                                  {"name": "AGE", "type": "date", "jsonPath": ".metadata.creationTimestamp"}]},
                    {"name": "v1beta1", "served": true, "storage": true}
                ]
            }
        })
    }

    #[test]
    fn recognises_claim_crds_that_an_xrd_controls() {
        assert!(is_claim_crd(&remote()));
        assert_eq!(owning_xrd(&remote()), Some("xkubernetesclusters.k8s.starter.org"));
        let edits: [(&str, Value); 5] = [
            ("/spec/names/categories", json!(["managed"])),
            ("/spec/scope", json!("Cluster")),
            ("/metadata/ownerReferences", json!([])),
            ("/metadata/ownerReferences/0/controller", json!(false)),
            ("/metadata/ownerReferences/0/apiVersion", json!("example.org/v1")),
        ];
        for (path, value) in edits {
            let mut crd = remote();
            *crd.pointer_mut(path).unwrap() = value;
            assert!(!is_claim_crd(&crd), "{path}");
        }
    }

    #[test]
    fn namespaced_xr_crds_replicate_and_cluster_scoped_v2_ones_are_only_named() {
        assert_eq!(family_of(&remote()), Some(KindFamily::Claim));
        let mut xr = remote();
        xr["spec"]["names"]["categories"] = json!(["composite"]);
        assert_eq!(family_of(&xr), Some(KindFamily::NamespacedXr));
        assert_eq!(claim_kind(&xr).map(|k| k.family), Some(KindFamily::NamespacedXr));
        assert!(
            !is_cluster_xr_crd(&xr),
            "a namespaced XR kind is replicated, not only named"
        );
        // claimsync's local copy (no owner reference, the XRD in an annotation), as the journal keeps it, is of the
        // same family: a restart, offline or with the kind withdrawn, runs it by the XR rules.
        let copy = local_crd(&xr);
        assert_eq!(family_of(&copy), None, "a copy decides nothing about what to replicate");
        assert_eq!(claim_kind(&copy).map(|k| k.family), Some(KindFamily::NamespacedXr));
        assert_eq!(
            claim_kind(&local_crd(&remote())).map(|k| k.family),
            Some(KindFamily::Claim)
        );
        xr["spec"]["scope"] = json!("Cluster");
        assert_eq!(family_of(&xr), None, "a cluster-scoped XR has no namespace to map");
        assert!(
            !is_cluster_xr_crd(&xr),
            "a legacy XR (behind claims) has no spec.crossplane"
        );
        xr["spec"]["versions"][0]["schema"] =
            json!({"openAPIV3Schema": {"properties": {"spec": {"properties": {"crossplane": {"type": "object"}}}}}});
        assert!(is_cluster_xr_crd(&xr));
    }

    #[test]
    fn claim_groups_allow_exact_names_and_suffixes() {
        let allowed = vec!["k8s.starter.org".to_string(), "*.platform.example".to_string()];
        let cases = [
            ("k8s.starter.org", true),
            ("db.starter.org", false),
            ("db.platform.example", true),
            ("platform.example", false),
            ("evilplatform.example", false),
        ];
        for (group, want) in cases {
            assert_eq!(group_allowed(group, &allowed), want, "{group}");
        }
        assert!(group_allowed("anything.org", &[]));
    }

    #[test]
    fn local_crd_is_the_remote_spec_with_a_replicated_column() {
        let local = local_crd(&remote());
        assert_eq!(
            local["metadata"],
            json!({"name": "kubernetesclusters.k8s.starter.org", "labels": {MANAGED_BY: "claimsync"},
                   "annotations": {XRD_ANNOTATION: "xkubernetesclusters.k8s.starter.org"}})
        );
        assert!(is_current(&local, &local));
        let mut before = local.clone();
        before["metadata"].as_object_mut().unwrap().remove("annotations");
        assert!(
            !is_current(&before, &local),
            "a CRD made before the annotation existed gets it"
        );
        let columns: Vec<&str> = local["spec"]["versions"][0]["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(columns, ["SYNCED", "REPLICATED", "AGE"]);
        assert_eq!(
            local["spec"]["versions"][1]["additionalPrinterColumns"][0]["name"],
            "REPLICATED"
        );
        // Applying it twice changes nothing.
        let mut again = remote();
        again["spec"] = local["spec"].clone();
        assert_eq!(local_crd(&again)["spec"], local["spec"]);
    }

    #[test]
    fn kind_uses_the_storage_version() {
        let kind = claim_kind(&remote()).unwrap();
        assert_eq!(kind.api_version(), "k8s.starter.org/v1beta1");
        assert_eq!(kind.plural, "kubernetesclusters");
        assert_eq!(served_versions(&remote()), ["v1alpha1", "v1beta1"]);
    }

    #[test]
    fn webhook_conversion_is_not_replicated() {
        let mut crd = remote();
        crd["spec"]["conversion"] = json!({"strategy": "Webhook", "webhook": {"clientConfig": {}}});
        assert_eq!(local_crd(&crd)["spec"]["conversion"], json!({"strategy": "None"}));
    }
}
