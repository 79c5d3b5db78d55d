//! `claimsync connect`: joins the app cluster to a control plane in one command, run by an operator with admin
//! rights on both. On the control plane: the claim namespace, a ServiceAccount of this app cluster with the rights of
//! deploy/control-plane-rbac.yaml, a token for it; in the app cluster: the kubeconfig Secret claimsync reads, the
//! record of which control plane it is joined to, and the chart (helm upgrade --install). What to write is decided in
//! `model::connection`; this file reads, checks and writes.

use std::path::{Path, PathBuf};

use clap::Args;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, ServiceAccount};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams};
use kube::config::Kubeconfig;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use super::args::{AppArgs, kube_system_uid, kube_system_uid_of};
use super::clients::{app_client, reachable};
use crate::error::{Error, KubeContext, Side};
use crate::model::connection::{
    CONNECTED_CLUSTER, account_name, account_subject, chart_values, control_plane_objects, label_value, offered_groups,
    renew_at, token_claims, token_kubeconfig,
};
use crate::model::vocabulary::{IDENTITY_CONFIGMAP, MANAGED_BY};
use crate::ops::counting::counted_client;
use crate::ops::metrics::Metrics;

/// The field manager of what connect writes.
const MANAGER: &str = "claimsync-connect";
/// Keys of the identity ConfigMap connect records: the control plane this app cluster is joined to.
pub const CONTROL_PLANE_SERVER: &str = "controlPlaneServer";
pub const CONTROL_PLANE_UID: &str = "controlPlaneUID";
/// An annotation on the app cluster's ServiceAccount: the kube-system uid of the app cluster it was made for.
const APP_CLUSTER_UID: &str = "claimsync.dev/app-cluster-uid";

#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// The app cluster (the usual kubeconfig flags) and the release's namespace there (`--namespace`).
    #[command(flatten)]
    pub app: AppArgs,
    /// A kubeconfig with admin rights on the control plane. Used by connect only: claimsync gets a credential of its
    /// own (a token of a ServiceAccount made for this app cluster), at the server address and CA this one uses.
    #[arg(long)]
    pub control_plane_kubeconfig: PathBuf,
    /// The control plane's namespace for this app cluster's claims (made if missing; app clusters may share one).
    #[arg(long)]
    pub claim_namespace: String,
    /// A values file for the chart, e.g. the MCP Connector's connector-values.yaml as it is.
    #[arg(short = 'f', long = "values")]
    pub values: Option<PathBuf>,
    /// The API groups of the claims to replicate (comma-separated); default: the values' claimGroups, else the
    /// groups of the XRDs that offer claims or namespaced XRs.
    #[arg(long, value_delimiter = ',')]
    pub claim_groups: Vec<String>,
    /// This app cluster's id (default: the values' clusterID, else the uid of its kube-system namespace).
    #[arg(long)]
    pub cluster_id: Option<String>,
    /// The helm release.
    #[arg(long, default_value = "claimsync")]
    pub release: String,
    /// The chart to install (a directory or a chart reference helm understands).
    #[arg(long, default_value = "deploy/helm/claimsync")]
    pub chart: String,
    /// How long the control plane credential is valid; claimsync renews it before it expires (at least 600, the
    /// API server's minimum).
    #[arg(long, default_value_t = 86_400)]
    pub credential_seconds: i64,
    /// Where the values connect installs with are written (default: beside the temporary files of this machine).
    #[arg(long)]
    pub values_out: Option<PathBuf>,
    /// Print every object connect would write, and the helm command; write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// What happened to one object.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Created,
    Changed,
    Unchanged,
    WouldWrite,
}

/// The report connect prints: each object and what happened to it.
#[derive(Default)]
struct Report(Vec<(String, Outcome)>);

impl Report {
    fn add(&mut self, what: impl Into<String>, outcome: Outcome) {
        let what = what.into();
        println!(
            "{what}: {}",
            match outcome {
                Outcome::Created => "created",
                Outcome::Changed => "updated",
                Outcome::Unchanged => "unchanged",
                Outcome::WouldWrite => "would be written (dry run)",
            }
        );
        self.0.push((what, outcome));
    }

    fn changed_nothing(&self) -> bool {
        self.0.iter().all(|(_, o)| *o == Outcome::Unchanged)
    }
}

pub async fn connect(args: ConnectArgs) -> Result<(), Error> {
    let metrics = std::sync::Arc::new(Metrics::new());
    let local = app_client(&args.app, &metrics).await?;
    reachable(&local, Side::App).await?;
    let admin_kubeconfig = Kubeconfig::read_from(&args.control_plane_kubeconfig).map_err(|e| Error::Load {
        setting: format!("--control-plane-kubeconfig {}", args.control_plane_kubeconfig.display()),
        action: "read",
        source: e.into(),
    })?;
    let (server, ca_data) = server_and_ca(&admin_kubeconfig, &args.control_plane_kubeconfig)?;
    let admin_config = kube::Config::from_custom_kubeconfig(admin_kubeconfig, &Default::default())
        .await
        .map_err(|e| Error::Load {
            setting: format!("--control-plane-kubeconfig {}", args.control_plane_kubeconfig.display()),
            action: "use",
            source: e.into(),
        })?;
    let remote = counted_client(admin_config, "controlplane", metrics).map_err(|e| Error::Load {
        setting: "the control plane's client".into(),
        action: "build",
        source: e.into(),
    })?;
    reachable(&remote, Side::ControlPlane).await?;

    let values_path = args.values.as_ref().map(|p| p.display().to_string());
    let file = match &args.values {
        Some(path) => Some(read_values(path)?),
        None => None,
    };
    let release_ns = args.app.own_namespace();
    let app_uid = kube_system_uid(&local).await?;
    let cluster_id = args
        .cluster_id
        .clone()
        .or_else(|| file.as_ref().and_then(|v| v["clusterID"].as_str()).map(str::to_string))
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| app_uid.clone());
    // Refusals first, before anything is written: the operator's rights (what every other check reads needs them).
    check_rights(&remote, &args.claim_namespace).await?;
    let control_plane_uid = kube_system_uid_of(&remote, Side::ControlPlane).await?;
    check_joined_elsewhere(
        &local,
        &release_ns,
        &server,
        &control_plane_uid,
        &cluster_id,
        &args.claim_namespace,
    )
    .await?;
    let xrds = list_xrds(&remote, &server).await?;
    let account = account_name(&cluster_id);
    check_account_owner(&remote, &args.claim_namespace, &account, &cluster_id, &app_uid).await?;

    let offered = offered_groups(&xrds);
    let values = chart_values(
        file.as_ref().zip(values_path.as_deref()),
        &args.claim_namespace,
        args.cluster_id.as_deref(),
        &args.claim_groups,
        &offered,
    )
    .map_err(|e| Error::Setting {
        setting: "claimsync connect".into(),
        problem: e.to_string(),
    })?;
    for note in &values.notes {
        println!("note: {note}");
    }
    let groups: Vec<String> = values.values["claimGroups"]
        .as_array()
        .map(|gs| gs.iter().filter_map(|g| g.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    if groups.is_empty() {
        return Err(Error::Setting {
            setting: "claim groups".into(),
            problem: format!(
                "none: the control plane at {server} offers no claims or namespaced XRs yet, and neither \
                 --claim-groups nor the values' claimGroups names any"
            ),
        });
    }
    let objects =
        control_plane_objects(&args.claim_namespace, &account, &groups, &cluster_id).map_err(|e| Error::Setting {
            setting: "deploy/control-plane-rbac.yaml".into(),
            problem: e.to_string(),
        })?;

    let mut report = Report::default();
    // The control plane's part.
    ensure_namespace(
        &remote,
        Side::ControlPlane,
        &args.claim_namespace,
        args.dry_run,
        &mut report,
    )
    .await?;
    for mut object in objects {
        if object["kind"] == "ServiceAccount" {
            object["metadata"]["annotations"] = json!({ APP_CLUSTER_UID: app_uid });
        }
        apply(&remote, Side::ControlPlane, object, args.dry_run, &mut report).await?;
    }
    // The credential: the Secret's token is kept while it is this account's and good for a third of its life.
    let (secret_name, secret_key) = values.secret.clone();
    let secrets = Api::<Secret>::namespaced(local.clone(), &release_ns);
    ensure_namespace(&local, Side::App, &release_ns, args.dry_run, &mut report).await?;
    let current = if args.dry_run {
        None
    } else {
        secrets
            .get_opt(&secret_name)
            .await
            .context(Side::App, "get", format!("Secret {release_ns}/{secret_name}"))?
    };
    let kept = current
        .as_ref()
        .and_then(|s| usable_kubeconfig(s, &secret_key, &server, &args.claim_namespace, &account));
    let kubeconfig = match kept {
        Some(text) => text,
        None if args.dry_run => token_kubeconfig(&server, ca_data.as_deref(), "<a new token>", &args.claim_namespace),
        None => {
            let token = request_token(&remote, &args.claim_namespace, &account, args.credential_seconds).await?;
            token_kubeconfig(&server, ca_data.as_deref(), &token, &args.claim_namespace)
        }
    };
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": secret_name, "namespace": release_ns,
                     "labels": {MANAGED_BY: "claimsync", CONNECTED_CLUSTER: label_value(&cluster_id)}},
        "type": "Opaque",
        "stringData": {secret_key.clone(): kubeconfig},
    });
    if args.dry_run {
        let mut shown = secret.clone();
        shown["stringData"][&secret_key] = json!("<a kubeconfig: the control plane's server and CA, a new token>");
        print_object(&shown);
        report.add(
            format!("Secret {release_ns}/{secret_name} (app cluster)"),
            Outcome::WouldWrite,
        );
    } else {
        let unchanged = current.as_ref().is_some_and(|s| {
            decoded(s, &secret_key).as_deref() == secret["stringData"][&secret_key].as_str()
                && s.labels().get(CONNECTED_CLUSTER).map(String::as_str) == Some(label_value(&cluster_id).as_str())
        });
        if unchanged {
            report.add(
                format!("Secret {release_ns}/{secret_name} (app cluster)"),
                Outcome::Unchanged,
            );
        } else {
            apply(&local, Side::App, secret, false, &mut report).await?;
        }
    }
    // The record of which control plane this app cluster is joined to, beside the cluster id.
    let identity = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": IDENTITY_CONFIGMAP, "namespace": release_ns, "labels": {MANAGED_BY: "claimsync"}},
        "data": {"clusterID": cluster_id, "claimNamespace": args.claim_namespace,
                 CONTROL_PLANE_SERVER: server, CONTROL_PLANE_UID: control_plane_uid},
    });
    apply(&local, Side::App, identity, args.dry_run, &mut report).await?;

    // The chart.
    let values_file = args
        .values_out
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("claimsync-connect-{}.json", args.release)));
    let helm_args = helm_install_args(&args, &release_ns, &values_file);
    if args.dry_run {
        println!(
            "---\n# the chart's values\n{}",
            serde_json::to_string_pretty(&values.values).unwrap_or_default()
        );
        println!("would run: helm {}", shell_words(&helm_args));
    } else {
        std::fs::write(
            &values_file,
            serde_json::to_vec_pretty(&values.values).unwrap_or_default(),
        )
        .map_err(|e| Error::Load {
            setting: format!("--values-out {}", values_file.display()),
            action: "write",
            source: e.into(),
        })?;
        install_chart(&args, &release_ns, &values.values, &helm_args, &mut report)?;
    }
    if report.changed_nothing() {
        println!("nothing changed: this app cluster was connected already as asked");
    } else if !args.dry_run {
        println!(
            "connected: app cluster {cluster_id} replicates claims of {} into {} of {server}",
            groups.join(", "),
            args.claim_namespace
        );
    }
    Ok(())
}

/// The values file as JSON; its path names it in errors.
fn read_values(path: &Path) -> Result<Value, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Load {
        setting: format!("--values {}", path.display()),
        action: "read",
        source: e.into(),
    })?;
    serde_saphyr::from_str::<Value>(&text).map_err(|e| Error::Load {
        setting: format!("--values {}", path.display()),
        action: "parse (YAML)",
        source: e.into(),
    })
}

/// The server of the kubeconfig's current context, and its CA as a kubeconfig holds it (base64 PEM), read from the
/// file it names if it names one.
fn server_and_ca(kubeconfig: &Kubeconfig, path: &Path) -> Result<(String, Option<String>), Error> {
    use base64::Engine;
    let setting = || format!("--control-plane-kubeconfig {}", path.display());
    let context_name = kubeconfig.current_context.clone().unwrap_or_default();
    let cluster_name = kubeconfig
        .contexts
        .iter()
        .find(|c| c.name == context_name)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone())
        .ok_or_else(|| Error::Setting {
            setting: setting(),
            problem: format!("its current context {context_name:?} is not among its contexts"),
        })?;
    let cluster = kubeconfig
        .clusters
        .iter()
        .find(|c| c.name == cluster_name)
        .and_then(|c| c.cluster.as_ref())
        .ok_or_else(|| Error::Setting {
            setting: setting(),
            problem: format!("its cluster {cluster_name:?} is not among its clusters"),
        })?;
    let server = cluster.server.clone().ok_or_else(|| Error::Setting {
        setting: setting(),
        problem: format!("cluster {cluster_name:?} has no server"),
    })?;
    let ca = match (&cluster.certificate_authority_data, &cluster.certificate_authority) {
        (Some(data), _) => Some(data.clone()),
        (None, Some(file)) => {
            let pem = std::fs::read(file).map_err(|e| Error::Load {
                setting: format!("{} (certificate-authority {file})", setting()),
                action: "read",
                source: e.into(),
            })?;
            Some(base64::engine::general_purpose::STANDARD.encode(pem))
        }
        (None, None) => None,
    };
    Ok((server, ca))
}

/// An app cluster joined to another control plane (recorded by an earlier connect), or recorded with another
/// cluster id, is refused.
async fn check_joined_elsewhere(
    local: &Client,
    release_ns: &str,
    server: &str,
    control_plane_uid: &str,
    cluster_id: &str,
    claim_namespace: &str,
) -> Result<(), Error> {
    let record = Api::<ConfigMap>::namespaced(local.clone(), release_ns)
        .get_opt(IDENTITY_CONFIGMAP)
        .await
        .context(Side::App, "get", format!("ConfigMap {release_ns}/{IDENTITY_CONFIGMAP}"))?;
    let data = record.and_then(|cm| cm.data).unwrap_or_default();
    let object = format!("ConfigMap {release_ns}/{IDENTITY_CONFIGMAP} of the app cluster");
    if let Some(uid) = data
        .get(CONTROL_PLANE_UID)
        .filter(|uid| uid.as_str() != control_plane_uid)
    {
        let other = data.get(CONTROL_PLANE_SERVER).cloned().unwrap_or_default();
        return Err(Error::Refused {
            why: format!(
                "this app cluster is connected to another control plane already: {other} (kube-system uid {uid}), \
                 recorded in {object}; this one is {server} (kube-system uid {control_plane_uid}). One app cluster \
                 replicates to one control plane: run `claimsync disconnect --control-plane-kubeconfig <the other's>` \
                 first"
            ),
        });
    }
    if let Some(recorded) = data.get("claimNamespace").filter(|ns| ns.as_str() != claim_namespace) {
        return Err(Error::Refused {
            why: format!(
                "--claim-namespace {claim_namespace:?} differs from {recorded:?}, recorded in {object}: this app \
                 cluster's twins live there, and another namespace would give every claim a second twin (a second \
                 copy of its infrastructure). Give --claim-namespace {recorded}"
            ),
        });
    }
    if let Some(recorded) = data.get("clusterID").filter(|id| id.as_str() != cluster_id) {
        return Err(Error::Refused {
            why: format!(
                "cluster id {cluster_id:?} differs from {recorded:?}, recorded in {object}: every twin is named after \
                 the recorded one. Give --cluster-id {recorded} (or the values' clusterID)"
            ),
        });
    }
    Ok(())
}

/// The control plane's XRDs (as v2 where served, else v1); none served means no Crossplane.
async fn list_xrds(remote: &Client, server: &str) -> Result<Vec<Value>, Error> {
    for version in ["v2", "v1"] {
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("apiextensions.crossplane.io", version, "CompositeResourceDefinition"),
            "compositeresourcedefinitions",
        );
        let listed = Api::<DynamicObject>::all_with(remote.clone(), &resource)
            .list(&ListParams::default())
            .await;
        match listed {
            Ok(list) => {
                return Ok(list
                    .items
                    .into_iter()
                    .map(|x| serde_json::to_value(x).unwrap_or(Value::Null))
                    .collect());
            }
            Err(kube::Error::Api(status)) if status.code == 404 => continue,
            Err(e) => {
                return Err(Error::Kube {
                    side: Side::ControlPlane,
                    action: "list",
                    object: "compositeresourcedefinitions".into(),
                    source: Box::new(e),
                });
            }
        }
    }
    Err(Error::Refused {
        why: format!(
            "the control plane at {server} has no Crossplane: it serves no CompositeResourceDefinitions \
             (apiextensions.crossplane.io); install Crossplane there first, or check --control-plane-kubeconfig"
        ),
    })
}

/// A right connect needs: verb, API group, resource, namespace (none: cluster-wide), subresource.
type Need<'a> = (&'a str, &'a str, &'a str, Option<&'a str>, Option<&'a str>);

/// Checks the operator's rights for everything connect writes on the control plane; the first one missing is named.
async fn check_rights(remote: &Client, claim_namespace: &str) -> Result<(), Error> {
    let needed: [Need; 8] = [
        ("create", "", "namespaces", None, None),
        ("create", "", "serviceaccounts", Some(claim_namespace), None),
        ("patch", "", "serviceaccounts", Some(claim_namespace), None),
        ("create", "", "serviceaccounts", Some(claim_namespace), Some("token")),
        (
            "patch",
            "rbac.authorization.k8s.io",
            "roles",
            Some(claim_namespace),
            None,
        ),
        (
            "patch",
            "rbac.authorization.k8s.io",
            "rolebindings",
            Some(claim_namespace),
            None,
        ),
        ("patch", "rbac.authorization.k8s.io", "clusterroles", None, None),
        ("patch", "rbac.authorization.k8s.io", "clusterrolebindings", None, None),
    ];
    let reviews = Api::<SelfSubjectAccessReview>::all(remote.clone());
    for (verb, group, resource, namespace, subresource) in needed {
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(verb.into()),
                    group: Some(group.into()),
                    resource: Some(resource.into()),
                    namespace: namespace.map(str::to_string),
                    subresource: subresource.map(str::to_string),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = reviews.create(&PostParams::default(), &review).await.context(
            Side::ControlPlane,
            "create",
            "a SelfSubjectAccessReview",
        )?;
        if !answer.status.is_some_and(|s| s.allowed) {
            let what = match subresource {
                Some(sub) => format!("{resource}/{sub}"),
                None => resource.to_string(),
            };
            let group = if group.is_empty() {
                "core".to_string()
            } else {
                group.to_string()
            };
            let scope = namespace.map_or("cluster-wide".to_string(), |ns| format!("in namespace {ns}"));
            return Err(Error::Refused {
                why: format!(
                    "--control-plane-kubeconfig may not {verb} {what} ({group} API group) {scope} on the control \
                     plane: connect needs admin rights there to make this app cluster's account and its rights"
                ),
            });
        }
    }
    Ok(())
}

/// A ServiceAccount of this cluster id made for another app cluster (another kube-system uid) means two app
/// clusters share a cluster id in one claim namespace: their twins would collide.
async fn check_account_owner(
    remote: &Client,
    claim_namespace: &str,
    account: &str,
    cluster_id: &str,
    app_uid: &str,
) -> Result<(), Error> {
    let existing = Api::<ServiceAccount>::namespaced(remote.clone(), claim_namespace)
        .get_opt(account)
        .await
        .context(
            Side::ControlPlane,
            "get",
            format!("ServiceAccount {claim_namespace}/{account}"),
        )?;
    let made_for = existing
        .as_ref()
        .and_then(|sa| sa.annotations().get(APP_CLUSTER_UID).cloned());
    match made_for {
        Some(uid) if uid != app_uid => Err(Error::Refused {
            why: format!(
                "claim namespace {claim_namespace} is used by another app cluster with cluster id {cluster_id:?} \
                 (kube-system uid {uid}; this one's is {app_uid}): both would write the same twins. Give this app \
                 cluster another --cluster-id (or the values' clusterID)"
            ),
        }),
        _ => Ok(()),
    }
}

async fn ensure_namespace(
    client: &Client,
    side: Side,
    name: &str,
    dry_run: bool,
    report: &mut Report,
) -> Result<(), Error> {
    let namespaces = Api::<Namespace>::all(client.clone());
    let exists = namespaces
        .get_opt(name)
        .await
        .context(side, "get namespace", name)?
        .is_some();
    let what = format!("Namespace {name} ({side})");
    if exists {
        report.add(what, Outcome::Unchanged);
    } else if dry_run {
        print_object(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}));
        report.add(what, Outcome::WouldWrite);
    } else {
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).expect("a namespace");
        match namespaces.create(&PostParams::default(), &ns).await {
            Ok(_) => report.add(what, Outcome::Created),
            Err(kube::Error::Api(status)) if status.code == 409 => report.add(what, Outcome::Unchanged),
            Err(e) => return Err(e).context(side, "create namespace", name),
        }
    }
    Ok(())
}

/// Server-side applies `object` (as connect's field manager), reporting whether it was created, changed or not;
/// a dry run prints it instead.
async fn apply(client: &Client, side: Side, object: Value, dry_run: bool, report: &mut Report) -> Result<(), Error> {
    let kind = object["kind"].as_str().unwrap_or_default().to_string();
    let name = object["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let namespace = object["metadata"]["namespace"].as_str().map(str::to_string);
    let what = match &namespace {
        Some(ns) => format!("{kind} {ns}/{name} ({side})"),
        None => format!("{kind} {name} ({side})"),
    };
    if dry_run {
        print_object(&object);
        report.add(what, Outcome::WouldWrite);
        return Ok(());
    }
    let (group, version) = match object["apiVersion"].as_str().unwrap_or_default().split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (
            String::new(),
            object["apiVersion"].as_str().unwrap_or_default().to_string(),
        ),
    };
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(&group, &version, &kind));
    let api: Api<DynamicObject> = match &namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    let before = api
        .get_opt(&name)
        .await
        .context(side, "get", what.clone())?
        .and_then(|o| o.resource_version());
    let after = api
        .patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&object))
        .await
        .context(side, "apply", what.clone())?
        .resource_version();
    let outcome = match before {
        None => Outcome::Created,
        Some(rv) if Some(&rv) == after.as_ref() => Outcome::Unchanged,
        Some(_) => Outcome::Changed,
    };
    report.add(what, outcome);
    Ok(())
}

fn print_object(object: &Value) {
    println!("---\n{}", serde_json::to_string_pretty(object).unwrap_or_default());
}

/// The text under `key` of a Secret.
fn decoded(secret: &Secret, key: &str) -> Option<String> {
    let raw = secret.data.as_ref()?.get(key)?;
    String::from_utf8(raw.0.clone()).ok()
}

/// The Secret's kubeconfig, if it still serves: the same server, a token of `account` that is not yet due for renewal.
fn usable_kubeconfig(secret: &Secret, key: &str, server: &str, claim_namespace: &str, account: &str) -> Option<String> {
    let text = decoded(secret, key)?;
    let kubeconfig: Value = serde_saphyr::from_str(&text).ok()?;
    let same_server = kubeconfig["clusters"]
        .as_array()?
        .iter()
        .any(|c| c["cluster"]["server"] == server);
    let token = kubeconfig["users"]
        .as_array()?
        .iter()
        .find_map(|u| u["user"]["token"].as_str())?;
    let claims = token_claims(token)?;
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    let fresh = now < renew_at(&claims, 0);
    (same_server && claims.subject == account_subject(claim_namespace, account) && fresh).then_some(text)
}

/// A new token for the app cluster's ServiceAccount, valid for `seconds`.
async fn request_token(remote: &Client, claim_namespace: &str, account: &str, seconds: i64) -> Result<String, Error> {
    let request = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(seconds.max(600)),
            audiences: vec![],
            ..Default::default()
        },
        ..Default::default()
    };
    let answer: TokenRequest = Api::<ServiceAccount>::namespaced(remote.clone(), claim_namespace)
        .create_subresource("token", account, &PostParams::default(), &request)
        .await
        .context(
            Side::ControlPlane,
            "request a token for",
            format!("ServiceAccount {claim_namespace}/{account}"),
        )?;
    answer.status.map(|s| s.token).ok_or_else(|| Error::Object {
        object: format!("the TokenRequest of ServiceAccount {claim_namespace}/{account}"),
        problem: "answered without a token".into(),
    })
}

fn helm_install_args(args: &ConnectArgs, release_ns: &str, values_file: &Path) -> Vec<String> {
    let mut helm = vec![
        "upgrade".to_string(),
        "--install".into(),
        args.release.clone(),
        args.chart.clone(),
        "--namespace".into(),
        release_ns.to_string(),
        "--create-namespace".into(),
        "--values".into(),
        values_file.display().to_string(),
    ];
    if let Some(kubeconfig) = &args.app.app_kubeconfig {
        helm.push("--kubeconfig".into());
        helm.push(kubeconfig.display().to_string());
    }
    helm
}

fn shell_words(words: &[String]) -> String {
    words
        .iter()
        .map(|w| {
            if w.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,@".contains(c)) {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Installs or upgrades the chart with helm, unless the release has these values already (then nothing is run);
/// without helm on PATH, prints the command.
fn install_chart(
    args: &ConnectArgs,
    release_ns: &str,
    values: &Value,
    helm_args: &[String],
    report: &mut Report,
) -> Result<(), Error> {
    let what = format!("helm release {release_ns}/{}", args.release);
    let Some(helm) = on_path("helm") else {
        println!(
            "helm is not on PATH; install the chart with:\n  helm {}",
            shell_words(helm_args)
        );
        return Ok(());
    };
    let mut kubeconfig = Vec::new();
    if let Some(path) = &args.app.app_kubeconfig {
        kubeconfig = vec!["--kubeconfig".to_string(), path.display().to_string()];
    }
    let current = std::process::Command::new(&helm)
        .args([
            "get",
            "values",
            &args.release,
            "--namespace",
            release_ns,
            "--output",
            "json",
        ])
        .args(&kubeconfig)
        .output();
    let installed_values: Option<Value> = current
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| serde_json::from_slice(&out.stdout).ok());
    if installed_values.as_ref() == Some(values) && release_deployed(&helm, &args.release, release_ns, &kubeconfig) {
        report.add(what, Outcome::Unchanged);
        return Ok(());
    }
    let out = std::process::Command::new(&helm)
        .args(helm_args)
        .output()
        .map_err(|e| Error::Load {
            setting: format!("helm ({})", helm.display()),
            action: "run",
            source: e.into(),
        })?;
    if !out.status.success() {
        return Err(Error::Setting {
            setting: format!("helm {}", shell_words(helm_args)),
            problem: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    report.add(
        what,
        if installed_values.is_some() {
            Outcome::Changed
        } else {
            Outcome::Created
        },
    );
    Ok(())
}

/// Whether the release's last revision is deployed (a failed one is installed again).
fn release_deployed(helm: &Path, release: &str, namespace: &str, kubeconfig: &[String]) -> bool {
    let out = std::process::Command::new(helm)
        .args(["status", release, "--namespace", namespace, "--output", "json"])
        .args(kubeconfig)
        .output();
    out.ok()
        .filter(|o| o.status.success())
        .and_then(|o| serde_json::from_slice::<Value>(&o.stdout).ok())
        .is_some_and(|status| status["info"]["status"] == "deployed")
}

/// The path of `program` on PATH, if it is there.
fn on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|candidate| candidate.is_file())
    })
}
