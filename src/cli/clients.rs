//! Client set-up shared by the subcommands: the app cluster's client (a kubeconfig file or in-cluster), the control
//! plane's (a kubeconfig file or a Secret in the app cluster), and a bounded check that each answers.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use std::sync::Arc;

use super::args::{AppArgs, ClusterArgs};
use crate::error::{BoxError, Error, Side};
use crate::ops::counting::counted_client;
use crate::ops::metrics::Metrics;

/// How long start-up waits for each API server before giving up with a clear message.
pub const REACH_TIMEOUT: Duration = Duration::from_secs(15);

/// The app cluster's client configuration (a kubeconfig file, or in-cluster).
pub async fn app_config(args: &AppArgs) -> Result<Config, Error> {
    match &args.app_kubeconfig {
        Some(path) => from_file(path, "--app-kubeconfig").await,
        None => Config::infer().await.map_err(|e| Error::Load {
            setting: "the app cluster's in-cluster config or $KUBECONFIG".into(),
            action: "load",
            source: e.into(),
        }),
    }
}

pub async fn app_client(args: &AppArgs, metrics: &Arc<Metrics>) -> Result<Client, Error> {
    let config = app_config(args).await?;
    counted_client(config, "app", metrics.clone()).map_err(|e| Error::Load {
        setting: "the app cluster's client".into(),
        action: "build",
        source: e.into(),
    })
}

/// Where the control plane's kubeconfig comes from; it is read again when it changes (a rotated token).
pub enum RemoteSource {
    File(PathBuf),
    Secret {
        namespace: String,
        name: String,
        key: String,
    },
}

impl RemoteSource {
    pub fn from_args(args: &ClusterArgs) -> Result<Self, Error> {
        match (&args.control_plane_kubeconfig, &args.control_plane_kubeconfig_secret) {
            (Some(path), _) => Ok(RemoteSource::File(path.clone())),
            (None, Some(reference)) => {
                let (namespace, rest) = reference.split_once('/').ok_or_else(|| Error::Setting {
                    setting: format!("--control-plane-kubeconfig-secret {reference:?}"),
                    problem: "want <namespace>/<name>[:<key>]".into(),
                })?;
                let (name, key) = rest.split_once(':').unwrap_or((rest, "kubeconfig"));
                Ok(RemoteSource::Secret {
                    namespace: namespace.to_string(),
                    name: name.to_string(),
                    key: key.to_string(),
                })
            }
            (None, None) => Err(Error::Setting {
                setting: "the control plane's kubeconfig".into(),
                problem: "missing: set --control-plane-kubeconfig or --control-plane-kubeconfig-secret".into(),
            }),
        }
    }

    fn describe(&self) -> String {
        match self {
            RemoteSource::File(path) => format!("--control-plane-kubeconfig {}", path.display()),
            RemoteSource::Secret { namespace, name, key } => {
                format!("control plane kubeconfig in Secret {namespace}/{name} (key {key:?})")
            }
        }
    }

    /// The kubeconfig's text as it is now.
    async fn text(&self, local: &Client) -> Result<String, Error> {
        match self {
            RemoteSource::File(path) => std::fs::read_to_string(path).map_err(|e| self.failed("read", e)),
            RemoteSource::Secret { namespace, name, key } => {
                let secret = Api::<Secret>::namespaced(local.clone(), namespace)
                    .get(name)
                    .await
                    .map_err(|e| self.failed("read from the app cluster", e))?;
                let raw = secret
                    .data
                    .and_then(|d| d.get(key).cloned())
                    .ok_or_else(|| Error::Setting {
                        setting: self.describe(),
                        problem: "the Secret has no such key".into(),
                    })?;
                String::from_utf8(raw.0).map_err(|e| self.failed("read as text", e))
            }
        }
    }

    /// Reads and checks the kubeconfig; returns the client configuration and a fingerprint of the text.
    pub async fn load(&self, local: &Client) -> Result<(Config, String), Error> {
        let text = self.text(local).await?;
        let kubeconfig = Kubeconfig::from_yaml(&text).map_err(|e| self.failed("parse", e))?;
        if let RemoteSource::Secret { .. } = self {
            inline_only(&kubeconfig).map_err(|field| Error::Setting {
                setting: self.describe(),
                problem: format!(
                    "{field} is refused: a kubeconfig read from a Secret may carry only inline credentials (token, \
                     client certificate and key data, CA data), since whoever can write that Secret would otherwise \
                     run programs or read files in claimsync's pod"
                ),
            })?;
        }
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|e| self.failed("use", e))?;
        Ok((config, claimsync_state::content_hash(&serde_json::Value::String(text))))
    }

    /// The kubeconfig could not be had: what was tried, and why it failed.
    fn failed(&self, action: &'static str, source: impl Into<BoxError>) -> Error {
        Error::Load {
            setting: self.describe(),
            action,
            source: source.into(),
        }
    }

    /// Waits until the kubeconfig differs from `fingerprint` and is usable; returns it. A changed kubeconfig that is
    /// not usable is logged and waited past: the one in use stays.
    pub async fn changed(&self, local: &Client, fingerprint: &str) -> (Config, String) {
        loop {
            tokio::time::sleep(RELOAD_EVERY).await;
            match self.load(local).await {
                Ok((config, seen)) if seen != fingerprint => return (config, seen),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "the control plane's kubeconfig changed but cannot be used; keeping the one in use")
                }
            }
        }
    }
}

/// How often the control plane's kubeconfig is read again for a change.
const RELOAD_EVERY: Duration = Duration::from_secs(5);

pub(super) async fn from_file(path: &std::path::Path, flag: &str) -> Result<Config, Error> {
    let failed = |action, source: BoxError| Error::Load {
        setting: format!("{flag} {}", path.display()),
        action,
        source,
    };
    let kubeconfig = Kubeconfig::read_from(path).map_err(|e| failed("read", e.into()))?;
    Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| failed("use", e.into()))
}

pub async fn reachable(client: &Client, side: Side) -> Result<(), Error> {
    match tokio::time::timeout(REACH_TIMEOUT, client.apiserver_version()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(Error::NotReached { side, source: e.into() }),
        Err(e) => Err(Error::NotReached {
            side,
            source: format!("no answer within {}s ({e})", REACH_TIMEOUT.as_secs()).into(),
        }),
    }
}

/// Checks that a kubeconfig uses only inline credentials; the first field that is not is named.
pub fn inline_only(kubeconfig: &Kubeconfig) -> Result<(), String> {
    for named in &kubeconfig.auth_infos {
        let Some(user) = &named.auth_info else { continue };
        let at = |field: &str| format!("users[{:?}].{field}", named.name);
        let refused = [
            (user.exec.is_some(), "exec"),
            (user.auth_provider.is_some(), "auth-provider"),
            (user.token_file.is_some(), "tokenFile"),
            (user.client_certificate.is_some(), "client-certificate"),
            (user.client_key.is_some(), "client-key"),
        ];
        if let Some((_, field)) = refused.iter().find(|(present, _)| *present) {
            return Err(at(field));
        }
    }
    for named in &kubeconfig.clusters {
        let Some(cluster) = &named.cluster else { continue };
        if cluster.certificate_authority.is_some() {
            return Err(format!("clusters[{:?}].certificate-authority", named.name));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kubeconfig(user: &str, cluster: &str) -> Kubeconfig {
        Kubeconfig::from_yaml(&format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: cp\n  cluster:\n    server: https://cp:6443\n{cluster}\n\
             users:\n- name: claimsync\n  user:\n{user}\ncontexts:\n- name: cp\n  context: {{cluster: cp, user: claimsync}}\n\
             current-context: cp\n"
        ))
        .unwrap()
    }

    #[test]
    fn only_inline_credentials_pass() {
        let inline = "    token: abc\n    client-certificate-data: Zm9v\n    client-key-data: YmFy";
        assert_eq!(
            inline_only(&kubeconfig(inline, "    certificate-authority-data: Zm9v")),
            Ok(())
        );
        let cases = [
            (
                "    exec: {apiVersion: client.authentication.k8s.io/v1, command: /bin/sh}",
                "",
                "exec",
            ),
            ("    auth-provider: {name: oidc}", "", "auth-provider"),
            ("    tokenFile: /var/run/secrets/token", "", "tokenFile"),
            ("    client-certificate: /etc/cert.pem", "", "client-certificate"),
            ("    client-key: /etc/key.pem", "", "client-key"),
            (
                "    token: abc",
                "    certificate-authority: /etc/ca.pem",
                "certificate-authority",
            ),
        ];
        for (user, cluster, field) in cases {
            let refused = inline_only(&kubeconfig(user, cluster)).expect_err(field);
            assert!(refused.ends_with(field), "{refused}");
        }
    }
}
