//! The words claimsync writes into both clusters: its field managers, finalizer, labels, annotations, condition
//! type and Secret type, and the keys of Crossplane and the MCP Connector it reads. Constants only; whoever
//! needs one of these names imports it from here.

/// Field manager of everything claimsync writes to the control plane (and of the local CRDs it replicates).
pub const MANAGER_UP: &str = "claimsync";
/// Field manager of what claimsync writes into the app cluster (Crossplane-owned spec fields, status, Secrets).
pub const MANAGER_DOWN: &str = "claimsync-down";

/// Held by every local claim that has (or may have) a remote twin: a pending remote delete.
pub const FINALIZER: &str = "claimsync.dev/remote-claim";
/// Annotation on a local claim: `Orphan` leaves the remote claim in place when the local one is deleted.
pub const DELETION_POLICY: &str = "claimsync.dev/deletion-policy";
/// Label on what claimsync made in the app cluster (claim CRDs, connection Secrets): value `claimsync`.
pub const MANAGED_BY: &str = "claimsync.dev/managed-by";
/// Annotation on a local claim CRD: the XRD that controls its remote twin. The owner reference itself cannot be
/// copied (the XRD does not exist locally, so the garbage collector would delete the CRD).
pub const XRD_ANNOTATION: &str = "claimsync.dev/xrd";
/// Prefix of every label and annotation that belongs to claimsync itself and is never replicated.
pub const OWN_PREFIX: &str = "claimsync.dev/";

/// Label keys claimsync writes on remote claims to trace them back to their local twin.
pub const ORIGIN_CLUSTER: &str = "claimsync.dev/origin-cluster";
pub const ORIGIN_NAMESPACE: &str = "claimsync.dev/origin-namespace";
pub const ORIGIN_NAME: &str = "claimsync.dev/origin-name";
pub const ORIGIN_UID: &str = "claimsync.dev/origin-uid";
/// The uid of the `kube-system` namespace of the app cluster that wrote a twin: it tells two app clusters apart
/// even when both were given the same cluster id.
pub const ORIGIN_CLUSTER_UID: &str = "claimsync.dev/origin-cluster-uid";
/// Annotation on a local claim (set by `claimsync restore --adopt-from-cluster-uid`): the twin it may adopt was
/// written by the app cluster of that kube-system uid (this one, before it was rebuilt).
pub const ADOPT_FROM: &str = "claimsync.dev/adopt-from-cluster-uid";
/// The same facts as Upbound's MCP Connector records them, so its claims are recognised and adopted.
pub const MCP_CLUSTER: &str = "mcp-connector.upbound.io/app-cluster";
pub const MCP_NAMESPACE: &str = "mcp-connector.upbound.io/app-namespace";
pub const MCP_NAME: &str = "mcp-connector.upbound.io/app-resource-name";

/// claimsync's own condition type on local claims.
pub const REPLICATED: &str = "Replicated";

/// kubectl's record of a client-side apply; never replicated.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// Crossplane's external-name annotation: the user's if set locally, else Crossplane's.
pub const EXTERNAL_NAME: &str = "crossplane.io/external-name";
/// Crossplane's pause annotation: the user's; pausing locally pauses remotely.
pub const PAUSED: &str = "crossplane.io/paused";
/// Annotation claimsync puts on a local claim beside its finalizer: which claimsync (by its own namespace in the
/// app cluster) replicates it, so that only that one ever releases the claim.
pub const REPLICATED_BY: &str = "claimsync.dev/replicated-by";
/// Annotation on a twin: the name of the connection Secret the local claim asked for (the twin's own Secret is
/// named after the twin).
pub const LOCAL_SECRET_NAME: &str = "claimsync.dev/local-secret-name";
/// Name of the ConfigMap, in claimsync's namespace, that records the cluster id every twin is named after.
pub const IDENTITY_CONFIGMAP: &str = "claimsync-identity";
/// The type Crossplane gives connection Secrets.
pub const CONNECTION_SECRET_TYPE: &str = "connection.crossplane.io/v1alpha1";

/// Spec fields Crossplane writes on a claim; `resourceRef` is always Crossplane's, the others only when the user
/// left them unset (then claimsync copies Crossplane's choice down and owns it locally).
pub const CROSSPLANE_SPEC_FIELDS: [&str; 4] = [
    "resourceRef",
    "compositionRef",
    "compositionRevisionRef",
    "compositionRevisionSelector",
];
