//! The two resources of `claimsync.dev/v1alpha1` as data: names, kinds, scope, short names, verbs and the labels
//! their objects carry. Discovery, OpenAPI, routes and tables read them from here; nothing here does I/O.

pub const GROUP: &str = "claimsync.dev";
pub const VERSION: &str = "v1alpha1";
pub const GROUP_VERSION: &str = "claimsync.dev/v1alpha1";
/// The name of the APIService that registers the group version with the app cluster's aggregator.
pub const API_SERVICE: &str = "v1alpha1.claimsync.dev";
/// What a client may do with either resource: they are read-only views.
pub const VERBS: [&str; 3] = ["get", "list", "watch"];

/// Label on every object served: the claim kind it is about (e.g. `KubernetesCluster`).
pub const KIND_LABEL: &str = "claimsync.dev/kind";
/// Label on every object served: the API group of that claim kind.
pub const GROUP_LABEL: &str = "claimsync.dev/group";
/// Label on claimsyncs: their phase, so `-l claimsync.dev/phase=Conflict` finds the claims that need a look.
pub const PHASE_LABEL: &str = "claimsync.dev/phase";
/// Annotation on claimsyncs: the qualified name (`<name>.<kind-lowercase>.<group>`) that always resolves to one.
pub const QUALIFIED_NAME_ANNOTATION: &str = "claimsync.dev/qualified-name";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    /// One per claim kind the control plane offers (cluster-scoped).
    ClaimKinds,
    /// One per claim, of every kind, named like the claim (namespaced).
    ClaimSyncs,
}

impl Resource {
    pub const ALL: [Resource; 2] = [Resource::ClaimKinds, Resource::ClaimSyncs];

    pub fn plural(self) -> &'static str {
        match self {
            Resource::ClaimKinds => "claimkinds",
            Resource::ClaimSyncs => "claimsyncs",
        }
    }

    pub fn singular(self) -> &'static str {
        match self {
            Resource::ClaimKinds => "claimkind",
            Resource::ClaimSyncs => "claimsync",
        }
    }

    pub fn kind(self) -> &'static str {
        match self {
            Resource::ClaimKinds => "ClaimKind",
            Resource::ClaimSyncs => "ClaimSync",
        }
    }

    pub fn list_kind(self) -> &'static str {
        match self {
            Resource::ClaimKinds => "ClaimKindList",
            Resource::ClaimSyncs => "ClaimSyncList",
        }
    }

    pub fn namespaced(self) -> bool {
        self == Resource::ClaimSyncs
    }

    /// Short names for kubectl; `cs` is taken by componentstatuses.
    pub fn short_names(self) -> &'static [&'static str] {
        match self {
            Resource::ClaimKinds => &["ckind"],
            Resource::ClaimSyncs => &["csync"],
        }
    }

    pub fn from_plural(plural: &str) -> Option<Resource> {
        Resource::ALL.into_iter().find(|r| r.plural() == plural)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plurals_round_trip_and_only_claimsyncs_are_namespaced() {
        for resource in Resource::ALL {
            assert_eq!(Resource::from_plural(resource.plural()), Some(resource));
            assert!(resource.list_kind().starts_with(resource.kind()));
        }
        assert_eq!(Resource::from_plural("claims"), None);
        assert!(Resource::ClaimSyncs.namespaced() && !Resource::ClaimKinds.namespaced());
    }
}
