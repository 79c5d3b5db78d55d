//! Which paths this server answers and what each one is: health, discovery, OpenAPI, or a resource (with its
//! namespace and name), and the attributes a request is authorized with. Pure functions.

use crate::shim::api::resources::{GROUP, GROUP_VERSION, Resource};

#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// `/healthz`, `/livez`, `/readyz`: answered without authentication.
    Health,
    Apis,
    Group,
    GroupVersion,
    OpenApiRoot,
    OpenApiGroupVersion,
    Resource {
        resource: Resource,
        namespace: Option<String>,
        name: Option<String>,
    },
    NotFound,
}

pub fn route(path: &str) -> Route {
    let path = path.trim_end_matches('/');
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let resource = |plural: &str, namespace: Option<&str>, name: Option<&str>| match Resource::from_plural(plural) {
        // A namespaced resource is read by name only inside a namespace; a cluster one never inside one.
        Some(r) if r.namespaced() || namespace.is_none() => {
            if r.namespaced() && namespace.is_none() && name.is_some() {
                return Route::NotFound;
            }
            Route::Resource {
                resource: r,
                namespace: namespace.map(str::to_string),
                name: name.map(str::to_string),
            }
        }
        _ => Route::NotFound,
    };
    let gv: Vec<&str> = GROUP_VERSION.split('/').collect();
    match segments.as_slice() {
        ["healthz" | "livez" | "readyz"] => Route::Health,
        ["apis"] => Route::Apis,
        ["apis", g] if *g == GROUP => Route::Group,
        ["apis", g, v] if [*g, *v] == gv[..] => Route::GroupVersion,
        ["openapi", "v3"] => Route::OpenApiRoot,
        ["openapi", "v3", "apis", g, v] if [*g, *v] == gv[..] => Route::OpenApiGroupVersion,
        ["apis", g, v, rest @ ..] if [*g, *v] == gv[..] => match rest {
            [plural] => resource(plural, None, None),
            [plural, name] if !name.is_empty() => resource(plural, None, Some(name)),
            ["namespaces", ns, plural] if !ns.is_empty() => resource(plural, Some(ns), None),
            ["namespaces", ns, plural, name] if !ns.is_empty() && !name.is_empty() => {
                resource(plural, Some(ns), Some(name))
            }
            _ => Route::NotFound,
        },
        _ => Route::NotFound,
    }
}

/// What a request asks to do, for a SubjectAccessReview.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Attributes {
    Resource {
        verb: &'static str,
        resource: Resource,
        namespace: Option<String>,
        name: Option<String>,
    },
    NonResource {
        path: String,
    },
}

impl Attributes {
    /// The attributes of a resource request: `get` by name, else `watch` or `list` (with the name a
    /// `metadata.name=` field selector asks for, as the API server does).
    pub fn of_resource(
        resource: Resource,
        namespace: Option<&str>,
        name: Option<&str>,
        watch: bool,
        selected_name: Option<&str>,
    ) -> Attributes {
        let verb = match (name, watch) {
            (Some(_), _) => "get",
            (None, true) => "watch",
            (None, false) => "list",
        };
        Attributes::Resource {
            verb,
            resource,
            namespace: namespace.map(str::to_string),
            name: name.or(selected_name).map(str::to_string),
        }
    }

    /// How a Forbidden answer says what was asked.
    pub fn describe(&self) -> String {
        match self {
            Attributes::Resource {
                verb,
                resource,
                namespace,
                ..
            } => {
                let scope = match namespace {
                    Some(ns) => format!(" in the namespace {ns:?}"),
                    None if resource.namespaced() => " at the cluster scope".to_string(),
                    None => String::new(),
                };
                format!("{verb} resource {:?} in API group {GROUP:?}{scope}", resource.plural())
            }
            Attributes::NonResource { path } => format!("get path {path:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(resource: Resource, namespace: Option<&str>, name: Option<&str>) -> Route {
        Route::Resource {
            resource,
            namespace: namespace.map(str::to_string),
            name: name.map(str::to_string),
        }
    }

    #[test]
    fn paths() {
        let cases = [
            ("/healthz", Route::Health),
            ("/readyz", Route::Health),
            ("/apis", Route::Apis),
            ("/apis/", Route::Apis),
            ("/apis/claimsync.dev", Route::Group),
            ("/apis/claimsync.dev/v1alpha1", Route::GroupVersion),
            ("/apis/claimsync.dev/v1", Route::NotFound),
            ("/apis/other.dev/v1alpha1", Route::NotFound),
            ("/openapi/v3", Route::OpenApiRoot),
            ("/openapi/v3/apis/claimsync.dev/v1alpha1", Route::OpenApiGroupVersion),
            ("/openapi/v2", Route::NotFound),
            (
                "/apis/claimsync.dev/v1alpha1/claimkinds",
                res(Resource::ClaimKinds, None, None),
            ),
            (
                "/apis/claimsync.dev/v1alpha1/claimkinds/dbs.g.org",
                res(Resource::ClaimKinds, None, Some("dbs.g.org")),
            ),
            (
                "/apis/claimsync.dev/v1alpha1/claimsyncs",
                res(Resource::ClaimSyncs, None, None),
            ),
            ("/apis/claimsync.dev/v1alpha1/claimsyncs/db", Route::NotFound),
            (
                "/apis/claimsync.dev/v1alpha1/namespaces/a/claimsyncs",
                res(Resource::ClaimSyncs, Some("a"), None),
            ),
            (
                "/apis/claimsync.dev/v1alpha1/namespaces/a/claimsyncs/db.kubernetescluster.k8s.starter.org",
                res(
                    Resource::ClaimSyncs,
                    Some("a"),
                    Some("db.kubernetescluster.k8s.starter.org"),
                ),
            ),
            ("/apis/claimsync.dev/v1alpha1/namespaces/a/claimkinds", Route::NotFound),
            (
                "/apis/claimsync.dev/v1alpha1/namespaces/a/claimsyncs/db/status",
                Route::NotFound,
            ),
            ("/apis/claimsync.dev/v1alpha1/namespaces//claimsyncs", Route::NotFound),
            ("/apis/claimsync.dev/v1alpha1/widgets", Route::NotFound),
            ("/api/v1", Route::NotFound),
            ("/", Route::NotFound),
        ];
        for (path, want) in cases {
            assert_eq!(route(path), want, "{path}");
        }
    }

    #[test]
    fn attributes_follow_the_api_servers_verbs() {
        let cases = [
            (Some("db"), false, None, "get", Some("db")),
            (None, false, None, "list", None),
            (None, true, None, "watch", None),
            (None, true, Some("db"), "watch", Some("db")),
            (None, false, Some("db"), "list", Some("db")),
        ];
        for (name, watch, selected, verb, want_name) in cases {
            let attributes = Attributes::of_resource(Resource::ClaimSyncs, Some("a"), name, watch, selected);
            assert_eq!(
                attributes,
                Attributes::Resource {
                    verb,
                    resource: Resource::ClaimSyncs,
                    namespace: Some("a".into()),
                    name: want_name.map(str::to_string)
                }
            );
        }
        let all = Attributes::of_resource(Resource::ClaimSyncs, None, None, false, None);
        assert_eq!(
            all.describe(),
            r#"list resource "claimsyncs" in API group "claimsync.dev" at the cluster scope"#
        );
    }
}
