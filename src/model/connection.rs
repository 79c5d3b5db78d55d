//! What `claimsync connect` writes, decided from what it read: the control plane's rights for one app cluster
//! (rendered from deploy/control-plane-rbac.yaml, the one source of them), the claim groups the control plane
//! offers, the kubeconfig claimsync uses, and the chart's values from an MCP Connector `connector-values.yaml`.
//! Pure: no I/O.

use serde_json::{Map, Value, json};

use crate::model::naming::short_hash;

/// The control plane's rights for one app cluster, with `${...}` placeholders.
pub const RBAC_TEMPLATE: &str = include_str!("../../deploy/control-plane-rbac.yaml");
/// The label on everything `connect` made on the control plane: the app cluster's id it was made for.
pub const CONNECTED_CLUSTER: &str = "claimsync.dev/connected-cluster";
/// The Secret of the app cluster that holds the control plane's kubeconfig, unless the values name one.
pub const DEFAULT_SECRET: &str = "claimsync-control-plane";
pub const DEFAULT_SECRET_KEY: &str = "kubeconfig";

/// Something in the operator's input that `connect` cannot use, naming the input.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConnectProblem {
    #[error(
        "--claim-namespace {flag:?} and {key} {file:?} in {path} differ: give the same claim namespace in both, or \
         leave one out"
    )]
    ClaimNamespaces {
        flag: String,
        file: String,
        key: &'static str,
        path: String,
    },
    #[error("{path}: {problem}")]
    Values { path: String, problem: String },
    #[error("deploy/control-plane-rbac.yaml does not render: {0}")]
    Template(String),
}

/// The control plane's ServiceAccount of the app cluster `cluster_id`: `claimsync-` and the id as a DNS label
/// (lower case, `[a-z0-9-]`), with a hash of the id when it had to be changed or shortened.
pub fn account_name(cluster_id: &str) -> String {
    let cleaned: String = cluster_id
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' })
        .collect();
    let cleaned = cleaned.trim_matches('-').to_string();
    let fits = !cleaned.is_empty() && cleaned.len() <= 53 && cleaned == cluster_id;
    if fits {
        format!("claimsync-{cleaned}")
    } else {
        let kept: String = cleaned.chars().take(40).collect();
        let kept = kept.trim_end_matches('-');
        let hash = short_hash(cluster_id);
        if kept.is_empty() {
            format!("claimsync-{hash}")
        } else {
            format!("claimsync-{kept}-{hash}")
        }
    }
}

/// Renders the control plane's rights for one app cluster: the ServiceAccount `account` in the claim namespace,
/// its Role and RoleBinding there, its ClusterRole and ClusterRoleBinding, each labelled with the app cluster's id.
pub fn control_plane_objects(
    claim_namespace: &str,
    account: &str,
    groups: &[String],
    cluster_id: &str,
) -> Result<Vec<Value>, ConnectProblem> {
    let quoted: Vec<String> = groups.iter().map(|g| format!("{g:?}")).collect();
    // The comments say how to fill the placeholders by hand; they are not rendered.
    let body: Vec<&str> = RBAC_TEMPLATE
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect();
    let text = body
        .join("\n")
        .replace("${CLAIM_NAMESPACE}", claim_namespace)
        .replace("${SERVICE_ACCOUNT_NAMESPACE}", claim_namespace)
        .replace("${SERVICE_ACCOUNT}", account)
        .replace("\"${CLAIM_GROUP}\"", &quoted.join(", "));
    if let Some(at) = text.find("${") {
        let rest: String = text[at..].chars().take(40).collect();
        return Err(ConnectProblem::Template(format!("a placeholder is left: {rest}")));
    }
    let mut objects: Vec<Value> = serde_saphyr::from_multiple::<Value>(&text)
        .map_err(|e| ConnectProblem::Template(e.to_string()))?
        .into_iter()
        .filter(Value::is_object)
        .collect();
    for object in &mut objects {
        object["metadata"]["labels"] = json!({ CONNECTED_CLUSTER: label_value(cluster_id) });
    }
    Ok(objects)
}

/// A cluster id as a label value (63 characters of `[A-Za-z0-9._-]`, alphanumeric at both ends).
pub fn label_value(cluster_id: &str) -> String {
    let valid = cluster_id.len() <= 63
        && cluster_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && cluster_id.starts_with(|c: char| c.is_ascii_alphanumeric())
        && cluster_id.ends_with(|c: char| c.is_ascii_alphanumeric());
    if valid {
        cluster_id.to_string()
    } else {
        short_hash(cluster_id)
    }
}

/// The API groups of the XRDs that offer kinds claimsync replicates: claims (`spec.claimNames`) or namespaced XRs
/// (Crossplane v2's `spec.scope: Namespaced`, its default). XRDs being deleted offer nothing. Sorted, once each.
pub fn offered_groups(xrds: &[Value]) -> Vec<String> {
    let mut groups: Vec<String> = xrds
        .iter()
        .filter(|x| x["metadata"]["deletionTimestamp"].is_null())
        .filter(|x| {
            let claims = x["spec"]["claimNames"].is_object();
            let v2 = x["apiVersion"].as_str().is_some_and(|v| v.ends_with("/v2"));
            let namespaced = v2 && matches!(x["spec"]["scope"].as_str(), None | Some("Namespaced"));
            claims || namespaced
        })
        .filter_map(|x| x["spec"]["group"].as_str().map(str::to_string))
        .collect();
    groups.sort();
    groups.dedup();
    groups
}

/// Where the chart's values say the control plane's kubeconfig Secret is, and what `connect` does with the values.
#[derive(Debug, PartialEq)]
pub struct ChartValues {
    /// The values to install the chart with.
    pub values: Value,
    /// The kubeconfig Secret's name and key.
    pub secret: (String, String),
    /// What the operator should know: values not used, defaults taken.
    pub notes: Vec<String>,
}

/// The values to install with: the operator's file as it is (`path` names it in messages), with connect's own
/// credential in place of `upbound.token`, the kubeconfig Secret (the file's name, if it gives one), the claim
/// namespace, the cluster id when given, and the claim groups (`--claim-groups`, else the file's, else `offered`).
pub fn chart_values(
    file: Option<(&Value, &str)>,
    claim_namespace: &str,
    cluster_id_flag: Option<&str>,
    groups_flag: &[String],
    offered: &[String],
) -> Result<ChartValues, ConnectProblem> {
    let (mut values, path) = match file {
        Some((v, path)) if v.is_object() => (v.clone(), path.to_string()),
        Some((Value::Null, path)) => (json!({}), path.to_string()),
        Some((_, path)) => {
            return Err(ConnectProblem::Values {
                path: path.to_string(),
                problem: "is not a map of values".into(),
            });
        }
        None => (json!({}), "the values".to_string()),
    };
    let mut notes = Vec::new();
    let text = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_string);
    for (key, pointer) in [
        (
            "spaces.controlPlane.claimNamespace",
            "/spaces/controlPlane/claimNamespace",
        ),
        ("controlPlane.claimNamespace", "/controlPlane/claimNamespace"),
    ] {
        if let Some(given) = values.pointer(pointer).and_then(text)
            && given != claim_namespace
        {
            return Err(ConnectProblem::ClaimNamespaces {
                flag: claim_namespace.to_string(),
                file: given,
                key,
                path,
            });
        }
    }
    let in_spaces = values
        .pointer("/spaces/controlPlane/claimNamespace")
        .and_then(text)
        .is_some();
    if !in_spaces {
        object_at(&mut values, &["controlPlane"])?.insert("claimNamespace".into(), json!(claim_namespace));
    }
    if values.pointer("/upbound/token").and_then(text).is_some() {
        object_at(&mut values, &["upbound"])?.remove("token");
        notes.push(format!(
            "upbound.token in {path} is not used: connect made the control plane's credential itself (a token of a \
             ServiceAccount of this app cluster), which claimsync renews before it expires"
        ));
    }
    // The Secret: where the file names one, else connect's default, under controlPlane.
    let named = |pointer: &str| values.pointer(pointer).and_then(text);
    let (secret_path, name, key): (&[&str], String, String) = match named("/spaces/controlPlane/kubeconfigSecret/name")
    {
        Some(name) => (
            &["spaces", "controlPlane", "kubeconfigSecret"],
            name,
            named("/spaces/controlPlane/kubeconfigSecret/key").unwrap_or(DEFAULT_SECRET_KEY.into()),
        ),
        None => (
            &["controlPlane", "kubeconfigSecret"],
            named("/controlPlane/kubeconfigSecret/name").unwrap_or(DEFAULT_SECRET.into()),
            named("/controlPlane/kubeconfigSecret/key").unwrap_or(DEFAULT_SECRET_KEY.into()),
        ),
    };
    let secret = object_at(&mut values, secret_path)?;
    secret.insert("name".into(), json!(name));
    secret.insert("key".into(), json!(key));
    if let Some(id) = cluster_id_flag {
        values["clusterID"] = json!(id);
    }
    let from_file: Vec<String> = values["claimGroups"]
        .as_array()
        .map(|gs| gs.iter().filter_map(text).collect())
        .unwrap_or_default();
    let groups = if !groups_flag.is_empty() {
        groups_flag.to_vec()
    } else if !from_file.is_empty() {
        from_file
    } else {
        notes.push(format!(
            "claimGroups: {} (the groups of the XRDs that offer claims or namespaced XRs)",
            offered.join(", ")
        ));
        offered.to_vec()
    };
    values["claimGroups"] = json!(groups);
    Ok(ChartValues {
        values,
        secret: (name, key),
        notes,
    })
}

/// The map at `path` of `values`, made (as empty maps) where missing; a value there that is not a map is an error.
fn object_at<'a>(values: &'a mut Value, path: &[&str]) -> Result<&'a mut Map<String, Value>, ConnectProblem> {
    let mut at = values;
    let mut walked = Vec::new();
    for key in path {
        walked.push(*key);
        let map = at.as_object_mut().ok_or_else(|| ConnectProblem::Values {
            path: "the values".into(),
            problem: format!("{} is not a map", walked[..walked.len() - 1].join(".")),
        })?;
        at = map.entry(key.to_string()).or_insert_with(|| json!({}));
        if at.is_null() {
            *at = json!({});
        }
    }
    at.as_object_mut().ok_or_else(|| ConnectProblem::Values {
        path: "the values".into(),
        problem: format!("{} is not a map", path.join(".")),
    })
}

/// A kubeconfig with inline credentials only: the control plane's `server` and CA (base64 PEM, as a kubeconfig
/// holds it), and a bearer `token`; its context's namespace is the claim namespace.
pub fn token_kubeconfig(server: &str, ca_data: Option<&str>, token: &str, claim_namespace: &str) -> String {
    let mut cluster = json!({"server": server});
    if let Some(ca) = ca_data {
        cluster["certificate-authority-data"] = json!(ca);
    }
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "control-plane", "cluster": cluster}],
        "users": [{"name": "claimsync", "user": {"token": token}}],
        "contexts": [{"name": "claimsync", "context": {
            "cluster": "control-plane", "user": "claimsync", "namespace": claim_namespace}}],
        "current-context": "claimsync",
    });
    serde_json::to_string_pretty(&config).expect("a kubeconfig serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_names_are_dns_labels_one_per_cluster() {
        let uid = "0b1f6a1e-6f0e-4e3a-9a51-2c7c1d7b8e11";
        assert_eq!(account_name(uid), format!("claimsync-{uid}"));
        assert_eq!(account_name("east"), "claimsync-east");
        let odd = account_name("Team_A.East");
        assert!(odd.starts_with("claimsync-team-a-east-"), "{odd}");
        assert_ne!(account_name("Team_A.East"), account_name("team-a-east"));
        let long = account_name(&"x".repeat(80));
        assert!(long.len() <= 63, "{long}");
        assert!(account_name("___").starts_with("claimsync-"));
    }

    #[test]
    fn the_rbac_is_rendered_per_app_cluster_from_the_one_template() {
        let groups = vec!["k8s.starter.org".to_string(), "apps.starter.org".to_string()];
        let objects = control_plane_objects("team-claims", "claimsync-east", &groups, "east").unwrap();
        let kinds: Vec<&str> = objects.iter().map(|o| o["kind"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "ServiceAccount",
                "Role",
                "RoleBinding",
                "ClusterRole",
                "ClusterRoleBinding"
            ]
        );
        for object in &objects {
            assert_eq!(object["metadata"]["labels"][CONNECTED_CLUSTER], "east");
            let name = object["metadata"]["name"].as_str().unwrap();
            assert!(
                name.contains("claimsync-east"),
                "{name}: named after the app cluster's account"
            );
        }
        assert_eq!(
            objects[1]["rules"][0]["apiGroups"],
            json!(["k8s.starter.org", "apps.starter.org"])
        );
        let token_rule = &objects[1]["rules"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(token_rule["resources"], json!(["serviceaccounts/token"]));
        assert_eq!(token_rule["resourceNames"], json!(["claimsync-east"]));
        assert_eq!(objects[4]["subjects"][0]["namespace"], "team-claims");
    }

    #[test]
    fn offered_groups_are_those_of_claims_and_namespaced_xrs() {
        let xrds = vec![
            json!({"apiVersion": "apiextensions.crossplane.io/v1", "spec": {"group": "k8s.starter.org", "claimNames": {}}}),
            json!({"apiVersion": "apiextensions.crossplane.io/v1", "spec": {"group": "cluster-only.org"}}),
            json!({"apiVersion": "apiextensions.crossplane.io/v2", "spec": {"group": "apps.starter.org"}}),
            json!({"apiVersion": "apiextensions.crossplane.io/v2", "spec": {"group": "cl.org", "scope": "Cluster"}}),
            json!({"apiVersion": "apiextensions.crossplane.io/v2",
                   "spec": {"group": "legacy.org", "scope": "LegacyCluster", "claimNames": {}}}),
            json!({"apiVersion": "apiextensions.crossplane.io/v1", "metadata": {"deletionTimestamp": "x"},
                   "spec": {"group": "going.org", "claimNames": {}}}),
            json!({"apiVersion": "apiextensions.crossplane.io/v1", "spec": {"group": "k8s.starter.org", "claimNames": {}}}),
        ];
        assert_eq!(
            offered_groups(&xrds),
            ["apps.starter.org", "k8s.starter.org", "legacy.org"]
        );
    }

    fn connector_values() -> Value {
        json!({
            "upbound": {"account": "acme", "token": "secret-token"},
            "spaces": {"host": "spaces.example.org", "controlPlane": {
                "name": "ctp", "group": "default", "claimNamespace": "team-claims"}},
        })
    }

    #[test]
    fn connector_values_are_taken_as_they_are_with_connects_credential() {
        let offered = vec!["k8s.starter.org".to_string()];
        let file = connector_values();
        let got = chart_values(Some((&file, "cv.yaml")), "team-claims", None, &[], &offered).unwrap();
        assert!(got.values["upbound"].get("token").is_none(), "the token is not used");
        assert_eq!(got.values["upbound"]["account"], "acme");
        assert_eq!(got.values["spaces"]["controlPlane"]["claimNamespace"], "team-claims");
        assert!(
            got.values.pointer("/controlPlane/claimNamespace").is_none(),
            "given once, where the file has it"
        );
        assert_eq!(got.secret, (DEFAULT_SECRET.to_string(), "kubeconfig".to_string()));
        assert_eq!(got.values["controlPlane"]["kubeconfigSecret"]["name"], DEFAULT_SECRET);
        assert_eq!(got.values["claimGroups"], json!(["k8s.starter.org"]));
        assert!(
            got.notes
                .iter()
                .any(|n| n.contains("upbound.token in cv.yaml is not used")),
            "{:?}",
            got.notes
        );
    }

    #[test]
    fn the_values_secret_name_and_groups_win_and_claim_namespaces_must_agree() {
        let offered = vec!["k8s.starter.org".to_string()];
        let disconnected = json!({"spaces": {"controlPlane": {
            "claimNamespace": "team-claims", "kubeconfigSecret": {"name": "cp-kubeconfig"}}},
            "claimGroups": ["db.starter.org"]});
        let got = chart_values(
            Some((&disconnected, "v.yaml")),
            "team-claims",
            Some("east"),
            &[],
            &offered,
        )
        .unwrap();
        assert_eq!(got.secret, ("cp-kubeconfig".to_string(), "kubeconfig".to_string()));
        assert_eq!(
            got.values["spaces"]["controlPlane"]["kubeconfigSecret"]["key"],
            "kubeconfig"
        );
        assert!(got.values.pointer("/controlPlane/kubeconfigSecret").is_none());
        assert_eq!(got.values["claimGroups"], json!(["db.starter.org"]));
        assert_eq!(got.values["clusterID"], "east");
        let flag = vec!["x.org".to_string()];
        let got = chart_values(Some((&disconnected, "v.yaml")), "team-claims", None, &flag, &offered).unwrap();
        assert_eq!(got.values["claimGroups"], json!(["x.org"]));

        let wrong = chart_values(Some((&disconnected, "v.yaml")), "other-claims", None, &[], &offered);
        assert_eq!(
            wrong.unwrap_err(),
            ConnectProblem::ClaimNamespaces {
                flag: "other-claims".into(),
                file: "team-claims".into(),
                key: "spaces.controlPlane.claimNamespace",
                path: "v.yaml".into(),
            }
        );
        let none = chart_values(None, "team-claims", None, &[], &offered).unwrap();
        assert_eq!(none.values["controlPlane"]["claimNamespace"], "team-claims");
        let bad = chart_values(
            Some((&json!({"controlPlane": "x"}), "v.yaml")),
            "n",
            None,
            &[],
            &offered,
        );
        assert!(matches!(bad, Err(ConnectProblem::Values { .. })), "{bad:?}");
    }

    #[test]
    fn the_kubeconfig_carries_inline_credentials_only() {
        let text = token_kubeconfig("https://cp:6443", Some("Q0E="), "tok", "team-claims");
        let parsed: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed["clusters"][0]["cluster"]["certificate-authority-data"], "Q0E=");
        assert_eq!(parsed["users"][0]["user"], json!({"token": "tok"}));
        assert_eq!(parsed["contexts"][0]["context"]["namespace"], "team-claims");
    }
}

/// What a ServiceAccount token says of itself (its JWT claims, read without checking the signature: only to tell
/// whom it is for and when it expires).
#[derive(Debug, PartialEq, Eq)]
pub struct TokenClaims {
    /// `system:serviceaccount:<namespace>:<name>`.
    pub subject: String,
    /// Seconds since the epoch.
    pub expires: i64,
    pub issued: i64,
}

/// The claims of a JWT, or None if `token` is not one.
pub fn token_claims(token: &str) -> Option<TokenClaims> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Value = serde_json::from_slice(&raw).ok()?;
    Some(TokenClaims {
        subject: claims["sub"].as_str()?.to_string(),
        expires: claims["exp"].as_i64()?,
        issued: claims["iat"].as_i64().unwrap_or(0),
    })
}

/// The subject of the ServiceAccount `name` of `namespace` in a token.
pub fn account_subject(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// When a token should be renewed: `lead` seconds before it expires, but never later than two thirds into its life
/// (a lead longer than the life renews at two thirds).
pub fn renew_at(claims: &TokenClaims, lead: i64) -> i64 {
    let life = (claims.expires - claims.issued).max(0);
    (claims.expires - lead)
        .min(claims.issued + life * 2 / 3)
        .max(claims.issued)
}

#[cfg(test)]
mod token_tests {
    use super::*;
    use base64::Engine;

    fn jwt(claims: Value) -> String {
        let part = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!("{}.{}.sig", part(&json!({"alg": "RS256"})), part(&claims))
    }

    #[test]
    fn token_claims_are_read_and_renewal_comes_before_expiry() {
        let token =
            jwt(json!({"sub": "system:serviceaccount:team-claims:claimsync-east", "exp": 1_000_600, "iat": 1_000_000}));
        let claims = token_claims(&token).unwrap();
        assert_eq!(claims.subject, account_subject("team-claims", "claimsync-east"));
        assert_eq!((claims.issued, claims.expires), (1_000_000, 1_000_600));
        assert_eq!(
            renew_at(&claims, 60),
            1_000_400,
            "two thirds into a 600 s life, before the lead"
        );
        assert_eq!(
            renew_at(&claims, 570),
            1_000_030,
            "a lead of 570 s renews 30 s after issue"
        );
        assert_eq!(renew_at(&claims, 10_000), 1_000_000, "never before issue");
        assert_eq!(token_claims("not-a-jwt"), None);
        assert_eq!(token_claims("a.!!!.c"), None);
    }
}
