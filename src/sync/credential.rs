//! Keeps the control plane credential fresh: when the kubeconfig Secret holds a ServiceAccount token (as `claimsync
//! connect` makes it), a new token of the same account (a TokenRequest, allowed by its name only) replaces it before
//! it expires, and claimsync reconnects with it (`cli/clients.rs` reads the Secret again). Any other credential is
//! left as it is. Runs on the leader only.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType};
use serde_json::{Value, json};
use tracing::{info, warn};

use crate::error::{Error, KubeContext, Side};
use crate::model::connection::{TokenClaims, renew_at, token_claims};
use crate::sync::context::Context;

/// Where the control plane's kubeconfig is kept in the app cluster.
#[derive(Clone, Debug)]
pub struct CredentialSecret {
    pub namespace: String,
    pub name: String,
    pub key: String,
}

/// What to do next.
enum Next {
    /// Look again at this time (seconds since the epoch).
    At(i64),
    /// The credential is not a ServiceAccount token: nothing to renew.
    Never(String),
}

/// How long to wait after a failed renewal before trying again.
const RETRY: Duration = Duration::from_secs(30);

/// Renews the credential `lead` before it expires (see `renew_at`), for as long as the pass runs.
pub async fn keep_fresh(ctx: Arc<Context>, secret: CredentialSecret, lead: Duration) {
    loop {
        let wait = match renew_if_due(&ctx, &secret, lead.as_secs() as i64).await {
            Ok(Next::At(at)) => {
                let left = (at - Timestamp::now().as_second()).max(1) as u64;
                Duration::from_secs(left.min(600))
            }
            Ok(Next::Never(why)) => {
                info!(secret = %format!("{}/{}", secret.namespace, secret.name), %why, "the control plane credential is not renewed by claimsync");
                return;
            }
            Err(e) => {
                warn!(error = %e, retry_in = ?RETRY, "could not renew the control plane credential");
                RETRY
            }
        };
        tokio::time::sleep(wait).await;
    }
}

async fn renew_if_due(ctx: &Context, at: &CredentialSecret, lead: i64) -> Result<Next, Error> {
    let secrets = Api::<Secret>::namespaced(ctx.local.clone(), &at.namespace);
    let object = format!("Secret {}/{}", at.namespace, at.name);
    let secret = secrets.get(&at.name).await.context(Side::App, "get", &object)?;
    let text = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&at.key))
        .and_then(|raw| String::from_utf8(raw.0.clone()).ok())
        .ok_or_else(|| Error::Object {
            object: object.clone(),
            problem: format!("has no text under key {:?}", at.key),
        })?;
    let mut kubeconfig: Value = serde_saphyr::from_str(&text).map_err(|e| Error::Object {
        object: object.clone(),
        problem: format!("its kubeconfig does not parse: {e}"),
    })?;
    let Some(token) = first_token(&kubeconfig) else {
        return Ok(Next::Never("its kubeconfig has no token".into()));
    };
    let Some(claims) = token_claims(&token) else {
        return Ok(Next::Never("its token is not a JWT with an expiry".into()));
    };
    let Some((namespace, account)) = service_account(&claims) else {
        return Ok(Next::Never(format!(
            "its token is not a ServiceAccount's ({})",
            claims.subject
        )));
    };
    ctx.metrics.credential_expires.set(claims.expires);
    let due = renew_at(&claims, lead);
    if Timestamp::now().as_second() < due {
        return Ok(Next::At(due));
    }
    let life = (claims.expires - claims.issued).max(600);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(life),
            ..Default::default()
        },
        ..Default::default()
    };
    let account_object = format!("ServiceAccount {namespace}/{account}");
    let answer: TokenRequest = Api::<ServiceAccount>::namespaced(ctx.remote.clone(), &namespace)
        .create_subresource("token", &account, &PostParams::default(), &request)
        .await
        .context(Side::ControlPlane, "request a token for", &account_object)?;
    let fresh = answer.status.map(|s| s.token).ok_or_else(|| Error::Object {
        object: format!("the TokenRequest of {account_object}"),
        problem: "answered without a token".into(),
    })?;
    replace_token(&mut kubeconfig, &token, &fresh);
    let new_text = serde_json::to_string_pretty(&kubeconfig).expect("a kubeconfig serializes");
    // Only over the Secret as read: a rotation by someone else meanwhile wins.
    let patch = json!({
        "metadata": {"resourceVersion": secret.metadata.resource_version},
        "data": {at.key.clone(): ByteString(new_text.into_bytes())},
    });
    secrets
        .patch(&at.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .context(Side::App, "renew the credential in", &object)?;
    let renewed = token_claims(&fresh);
    let expires = renewed.as_ref().map_or(0, |c| c.expires);
    ctx.metrics.credential_expires.set(expires);
    ctx.metrics.credential_renewals.inc();
    info!(account = %account_object, expires, "renewed the control plane credential");
    let event = Event {
        type_: EventType::Normal,
        reason: "CredentialRenewed".into(),
        note: Some(format!(
            "a new token of {account_object} on the control plane replaced the one in {object}, before it expired"
        )),
        action: "RenewCredential".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &ctx.reporting_object).await {
        warn!(error = %e, "could not record the renewal as an Event");
    }
    Ok(Next::At(
        renewed.map_or(Timestamp::now().as_second() + 60, |c| renew_at(&c, lead)),
    ))
}

/// The namespace and name of the ServiceAccount a token is for.
fn service_account(claims: &TokenClaims) -> Option<(String, String)> {
    let rest = claims.subject.strip_prefix("system:serviceaccount:")?;
    let (namespace, name) = rest.split_once(':')?;
    Some((namespace.to_string(), name.to_string()))
}

/// The first user's token of a kubeconfig.
fn first_token(kubeconfig: &Value) -> Option<String> {
    kubeconfig["users"]
        .as_array()?
        .iter()
        .find_map(|u| u["user"]["token"].as_str())
        .map(str::to_string)
}

/// Puts `fresh` wherever `old` was a user's token.
fn replace_token(kubeconfig: &mut Value, old: &str, fresh: &str) {
    if let Some(users) = kubeconfig["users"].as_array_mut() {
        for user in users {
            if user["user"]["token"] == old {
                user["user"]["token"] = json!(fresh);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_service_accounts_token_is_renewed_and_only_it_is_replaced() {
        let claims = |sub: &str| TokenClaims {
            subject: sub.into(),
            expires: 2,
            issued: 1,
        };
        assert_eq!(
            service_account(&claims("system:serviceaccount:team-claims:claimsync-east")),
            Some(("team-claims".into(), "claimsync-east".into()))
        );
        assert_eq!(service_account(&claims("admin")), None);
        let mut kubeconfig = json!({"users": [
            {"name": "a", "user": {"token": "old"}},
            {"name": "b", "user": {"token": "other"}},
        ]});
        assert_eq!(first_token(&kubeconfig).as_deref(), Some("old"));
        replace_token(&mut kubeconfig, "old", "new");
        assert_eq!(kubeconfig["users"][0]["user"]["token"], "new");
        assert_eq!(kubeconfig["users"][1]["user"]["token"], "other");
    }
}
