//! How a local claim is named and traced on the control plane: the remote name (Upbound MCP Connector's scheme),
//! the origin labels claimsync writes, and whether a remote claim found at that name may be adopted.
//! Pure functions only; no API calls here.

use std::collections::BTreeMap;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::model::kind::KindFamily;
use crate::model::vocabulary::{
    MCP_CLUSTER, MCP_NAME, MCP_NAMESPACE, ORIGIN_CLUSTER, ORIGIN_CLUSTER_UID, ORIGIN_NAME, ORIGIN_NAMESPACE, ORIGIN_UID,
};

/// `claim-` + the first 16 hex characters of sha256(`<name>-x-<namespace>-x-<clusterID>`), as the MCP Connector
/// names claims, so that one cluster's claims never collide with another's in a shared claim namespace.
pub fn remote_claim_name(name: &str, namespace: &str, cluster_id: &str) -> String {
    remote_name(KindFamily::Claim, name, namespace, cluster_id)
}

/// The twin's name of an object of `family`: the MCP Connector's scheme, `claim-` for claims and `nxr-` for
/// namespaced composite resources, each + the first 16 hex characters of sha256(`<name>-x-<namespace>-x-<clusterID>`).
pub fn remote_name(family: KindFamily, name: &str, namespace: &str, cluster_id: &str) -> String {
    let digest = Sha256::digest(format!("{name}-x-{namespace}-x-{cluster_id}").as_bytes());
    let prefix = match family {
        KindFamily::Claim => "claim",
        KindFamily::NamespacedXr => "nxr",
    };
    format!("{prefix}-{}", &hex::encode(digest)[..16])
}

/// The labels that say which local claim a remote claim stands for, and which app cluster wrote it.
/// Ten hex digits of the SHA-256 of `text`: a short, stable stand-in for a value that cannot be used as it is.
pub fn short_hash(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))[..10].to_string()
}

pub fn origin_labels(
    cluster_id: &str,
    cluster_uid: &str,
    namespace: &str,
    name: &str,
    uid: &str,
) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        (ORIGIN_CLUSTER.to_string(), cluster_id.to_string()),
        (ORIGIN_CLUSTER_UID.to_string(), cluster_uid.to_string()),
        (ORIGIN_NAMESPACE.to_string(), namespace.to_string()),
        (ORIGIN_UID.to_string(), uid.to_string()),
    ]);
    // Label values stop at 63 characters; a longer name is still traced by the hash in the remote name.
    if name.len() <= 63 {
        labels.insert(ORIGIN_NAME.to_string(), name.to_string());
    }
    labels
}

/// Whether a remote claim found at this claim's remote name says it is this claim (claimsync's origin labels or
/// the MCP Connector's). Anything else is someone else's object and must never be touched.
pub fn is_twin(remote_labels: &Value, cluster_id: &str, namespace: &str, name: &str) -> bool {
    let label = |key: &str| remote_labels.get(key).and_then(Value::as_str);
    let name_matches = |key: &str| match label(key) {
        Some(n) => n == name,
        // Names over 63 characters carry no name label; the hash in the remote name covers them.
        None => name.len() > 63,
    };
    let ours = label(ORIGIN_CLUSTER) == Some(cluster_id)
        && label(ORIGIN_NAMESPACE) == Some(namespace)
        && name_matches(ORIGIN_NAME);
    let connectors =
        label(MCP_CLUSTER) == Some(cluster_id) && label(MCP_NAMESPACE) == Some(namespace) && name_matches(MCP_NAME);
    ours || connectors
}

/// The kube-system uid of another app cluster that wrote this twin, if its labels name one other than `cluster_uid`
/// (None: this app cluster wrote it, or a claimsync that did not record the uid, or the MCP Connector).
pub fn written_by_other(remote_labels: &Value, cluster_uid: &str) -> Option<String> {
    remote_labels
        .get(ORIGIN_CLUSTER_UID)
        .and_then(Value::as_str)
        .filter(|uid| !uid.is_empty() && *uid != cluster_uid)
        .map(str::to_string)
}

/// The local claim a remote claim was made for, from its origin labels: (namespace, name).
pub fn origin_of(remote_labels: &Value, cluster_id: &str) -> Option<(String, String)> {
    let label = |key: &str| remote_labels.get(key).and_then(Value::as_str).map(str::to_string);
    if label(ORIGIN_CLUSTER).as_deref() == Some(cluster_id) {
        return Some((label(ORIGIN_NAMESPACE)?, label(ORIGIN_NAME)?));
    }
    if label(MCP_CLUSTER).as_deref() == Some(cluster_id) {
        return Some((label(MCP_NAMESPACE)?, label(MCP_NAME)?));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn remote_name_matches_the_mcp_connector_documentation() {
        // The example in Upbound's MCP Connector docs.
        let name = remote_claim_name("my-bucket", "test", "00000000-0000-0000-0000-000000000000");
        assert_eq!(name, "claim-c603e518969b413e");
    }

    #[test]
    fn remote_names_differ_by_namespace_and_cluster() {
        let a = remote_claim_name("db", "team-a", "c1");
        assert_ne!(a, remote_claim_name("db", "team-b", "c1"));
        assert_ne!(a, remote_claim_name("db", "team-a", "c2"));
        assert_eq!(a, remote_claim_name("db", "team-a", "c1"));
    }

    #[test]
    fn twins_are_recognised_by_either_label_scheme() {
        let cases = [
            (
                json!({ORIGIN_CLUSTER: "c1", ORIGIN_NAMESPACE: "ns", ORIGIN_NAME: "db"}),
                true,
            ),
            (json!({MCP_CLUSTER: "c1", MCP_NAMESPACE: "ns", MCP_NAME: "db"}), true),
            (
                json!({ORIGIN_CLUSTER: "c2", ORIGIN_NAMESPACE: "ns", ORIGIN_NAME: "db"}),
                false,
            ),
            (
                json!({ORIGIN_CLUSTER: "c1", ORIGIN_NAMESPACE: "other", ORIGIN_NAME: "db"}),
                false,
            ),
            (
                json!({ORIGIN_CLUSTER: "c1", ORIGIN_NAMESPACE: "ns", ORIGIN_NAME: "x"}),
                false,
            ),
            (json!({MCP_CLUSTER: "c1", MCP_NAMESPACE: "ns"}), false),
            (json!({}), false),
            (json!(null), false),
        ];
        for (labels, want) in cases {
            assert_eq!(is_twin(&labels, "c1", "ns", "db"), want, "{labels}");
        }
    }

    #[test]
    fn origin_is_read_back_from_labels() {
        let labels = serde_json::to_value(origin_labels("c1", "k1", "ns", "db", "u")).unwrap();
        assert_eq!(origin_of(&labels, "c1"), Some(("ns".into(), "db".into())));
        assert_eq!(origin_of(&labels, "c2"), None);
        assert_eq!(written_by_other(&labels, "k1"), None);
        assert_eq!(written_by_other(&labels, "k2"), Some("k1".into()));
        assert_eq!(written_by_other(&serde_json::json!({}), "k2"), None);
    }
}
