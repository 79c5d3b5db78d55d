//! Client set-up shared by the subcommands: the app cluster's client (a kubeconfig file or in-cluster), the control
//! plane's (a kubeconfig file or a Secret in the app cluster), and a bounded check that each answers.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use super::RunArgs;
use crate::error::Error;

/// How long start-up waits for each API server before giving up with a clear message.
pub const REACH_TIMEOUT: Duration = Duration::from_secs(15);

pub async fn app_client(args: &RunArgs) -> Result<Client, Error> {
    let config = match &args.app_kubeconfig {
        Some(path) => from_file(path, "--app-kubeconfig").await?,
        None => Config::infer().await.map_err(|e| {
            Error::Config(format!(
                "app cluster: no in-cluster config and no usable $KUBECONFIG: {e}"
            ))
        })?,
    };
    Client::try_from(config).map_err(|e| Error::Config(format!("app cluster: {e}")))
}

pub async fn control_plane_client(args: &RunArgs, local: &Client) -> Result<Client, Error> {
    let config = match (&args.control_plane_kubeconfig, &args.control_plane_kubeconfig_secret) {
        (Some(path), _) => from_file(path, "--control-plane-kubeconfig").await?,
        (None, Some(reference)) => {
            let (namespace, rest) = reference.split_once('/').ok_or_else(|| {
                Error::Config(format!(
                    "--control-plane-kubeconfig-secret {reference:?}: want <namespace>/<name>[:<key>]"
                ))
            })?;
            let (name, key) = rest.split_once(':').unwrap_or((rest, "kubeconfig"));
            let secret = Api::<Secret>::namespaced(local.clone(), namespace)
                .get(name)
                .await
                .map_err(|e| {
                    Error::Config(format!(
                        "control plane kubeconfig: Secret {namespace}/{name} in the app cluster: {e}"
                    ))
                })?;
            let raw = secret.data.and_then(|d| d.get(key).cloned()).ok_or_else(|| {
                Error::Config(format!(
                    "control plane kubeconfig: Secret {namespace}/{name} has no key {key:?}"
                ))
            })?;
            let text = String::from_utf8(raw.0).map_err(|_| {
                Error::Config(format!(
                    "control plane kubeconfig: key {key:?} of Secret {namespace}/{name} is not text"
                ))
            })?;
            let kubeconfig = Kubeconfig::from_yaml(&text)
                .map_err(|e| Error::Config(format!("control plane kubeconfig in Secret {namespace}/{name}: {e}")))?;
            inline_only(&kubeconfig).map_err(|field| {
                Error::Config(format!(
                    "control plane kubeconfig in Secret {namespace}/{name} (key {key:?}): {field} is refused: a \
                     kubeconfig read from a Secret may carry only inline credentials (token, client certificate and \
                     key data, CA data), since whoever can write that Secret would otherwise run programs or read \
                     files in claimsync's pod"
                ))
            })?;
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(|e| Error::Config(format!("control plane kubeconfig in Secret {namespace}/{name}: {e}")))?
        }
        (None, None) => {
            return Err(Error::Config(
                "the control plane's kubeconfig is missing: set --control-plane-kubeconfig or --control-plane-kubeconfig-secret".into(),
            ));
        }
    };
    Client::try_from(config).map_err(|e| Error::Config(format!("control plane: {e}")))
}

async fn from_file(path: &std::path::Path, flag: &str) -> Result<Config, Error> {
    let kubeconfig =
        Kubeconfig::read_from(path).map_err(|e| Error::Config(format!("{flag} {}: {e}", path.display())))?;
    Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| Error::Config(format!("{flag} {}: {e}", path.display())))
}

pub async fn reachable(client: &Client, which: &str) -> Result<(), Error> {
    match tokio::time::timeout(REACH_TIMEOUT, client.apiserver_version()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(Error::Config(format!("{which} is unreachable: {e}"))),
        Err(_) => Err(Error::Config(format!(
            "{which} did not answer within {}s",
            REACH_TIMEOUT.as_secs()
        ))),
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
