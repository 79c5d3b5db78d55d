//! Discovery documents of `claimsync.dev`: the aggregated `APIGroupDiscoveryList` (v2, what the aggregator asks
//! for at `/apis`), the legacy `APIGroupList`, `APIGroup` and the `APIResourceList` it falls back to. Static data
//! from `resources`; pure functions.

use serde_json::{Value, json};

use super::resources::{GROUP, GROUP_VERSION, Resource, VERBS, VERSION};

/// The Content-Type of an aggregated discovery answer; the aggregator reads `g`, `v` and `as` from it.
pub fn aggregated_content_type(version: &str) -> String {
    format!("application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList")
}

/// `/apis` as `apidiscovery.k8s.io/<version>` (`v2` or `v2beta1`, the same shape).
pub fn aggregated(version: &str) -> Value {
    let resources: Vec<Value> = Resource::ALL
        .into_iter()
        .map(|r| {
            json!({
                "resource": r.plural(),
                "responseKind": {"group": GROUP, "version": VERSION, "kind": r.kind()},
                "scope": if r.namespaced() { "Namespaced" } else { "Cluster" },
                "singularResource": r.singular(),
                "verbs": VERBS,
                "shortNames": r.short_names(),
            })
        })
        .collect();
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": format!("apidiscovery.k8s.io/{version}"),
        "metadata": {},
        "items": [{
            "metadata": {"name": GROUP},
            "versions": [{"version": VERSION, "resources": resources, "freshness": "Current"}],
        }],
    })
}

fn group() -> Value {
    let version = json!({"groupVersion": GROUP_VERSION, "version": VERSION});
    json!({"name": GROUP, "versions": [version], "preferredVersion": version})
}

/// `/apis` without aggregated discovery.
pub fn group_list() -> Value {
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [group()]})
}

/// `/apis/claimsync.dev`.
pub fn api_group() -> Value {
    let mut group = group();
    group["kind"] = json!("APIGroup");
    group["apiVersion"] = json!("v1");
    group
}

/// `/apis/claimsync.dev/v1alpha1`: the legacy discovery the aggregator falls back to and checks availability with.
pub fn resource_list() -> Value {
    let resources: Vec<Value> = Resource::ALL
        .into_iter()
        .map(|r| {
            json!({
                "name": r.plural(),
                "singularName": r.singular(),
                "namespaced": r.namespaced(),
                "kind": r.kind(),
                "verbs": VERBS,
                "shortNames": r.short_names(),
            })
        })
        .collect();
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": GROUP_VERSION, "resources": resources})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregated_discovery_names_both_resources() {
        let doc = aggregated("v2");
        assert_eq!(doc["apiVersion"], "apidiscovery.k8s.io/v2");
        let resources = &doc["items"][0]["versions"][0]["resources"];
        assert_eq!(resources[0]["resource"], "claimkinds");
        assert_eq!(resources[0]["scope"], "Cluster");
        assert_eq!(resources[1]["resource"], "claimsyncs");
        assert_eq!(resources[1]["scope"], "Namespaced");
        assert_eq!(resources[1]["responseKind"]["kind"], "ClaimSync");
        assert_eq!(resources[1]["verbs"], json!(["get", "list", "watch"]));
        assert_eq!(aggregated("v2beta1")["apiVersion"], "apidiscovery.k8s.io/v2beta1");
        assert_eq!(
            aggregated_content_type("v2"),
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
        );
    }

    #[test]
    fn legacy_discovery() {
        assert_eq!(
            group_list()["groups"][0]["preferredVersion"]["groupVersion"],
            GROUP_VERSION
        );
        assert_eq!(api_group()["kind"], "APIGroup");
        let list = resource_list();
        assert_eq!(list["groupVersion"], "claimsync.dev/v1alpha1");
        assert_eq!(list["resources"][1]["namespaced"], true);
        assert_eq!(list["resources"][0]["shortNames"], json!(["ckind"]));
    }
}
