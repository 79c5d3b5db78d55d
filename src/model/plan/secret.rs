//! The plan for a claim's connection Secret: which Secrets to read, whether the remote one is Crossplane's for the
//! twin, whether the local name is the claim's to write, and when the copy is in place. Decisions only.

use std::collections::BTreeMap;

use claimsync_state::content_hash;
use k8s_openapi::api::core::v1::Secret;
use serde_json::{Value, json};

use super::{Facts, Step};
use crate::model::secret::{Owner, SecretOutcome, controlled_by, local_secret, made_for_an_earlier, stale_copies};
use crate::model::vocabulary::CONNECTION_SECRET_TYPE;

/// The outcome for the claim's connection Secret, or the step that must come first: Secrets the claim asked for
/// under another name before (or no longer asks for) go, looked for only when the name differs from the journal's
/// (and so once after the journal was lost); then the twin's Secret is copied to the name the claim asks for.
pub(super) fn secret_step(f: &Facts, twin: &Value, local_name: Option<&str>) -> Result<SecretOutcome, Step> {
    if f.record.and_then(|r| r.secret_name_down.as_deref()) != local_name && !f.stale_secrets_removed {
        let Some(made) = &f.made_secrets else {
            return Err(Step::ListMadeSecrets);
        };
        let stale = stale_copies(made, f.uid(), local_name);
        if !stale.is_empty() {
            let names = stale.into_iter().map(str::to_string).collect();
            return Err(Step::DeleteSecrets { names });
        }
    }
    let Some(local_name) = local_name else {
        return Ok(SecretOutcome::NotRequested);
    };
    let remote_name = twin["metadata"]["name"].as_str().unwrap_or_default();
    let Some(remote) = &f.remote_secret else {
        return Err(Step::ReadRemoteSecret {
            name: remote_name.to_string(),
        });
    };
    let Some(remote) = remote else {
        return Ok(SecretOutcome::NotYet);
    };
    if !controlled_by(remote, twin["metadata"]["uid"].as_str().unwrap_or_default()) {
        return Ok(SecretOutcome::RemoteNotOwned {
            name: remote_name.to_string(),
        });
    }
    let data = data_of(remote);
    let hash = content_hash(&json!(data));
    if f.secret_written {
        return Ok(SecretOutcome::InPlace { hash, written: true });
    }
    let Some(existing) = &f.local_secret else {
        return Err(Step::ReadLocalSecret {
            name: local_name.to_string(),
        });
    };
    let owner = Owner {
        api_version: &f.kind.api_version,
        kind: &f.kind.kind,
        name: f.name(),
        uid: f.uid(),
    };
    if let Some(existing) = existing {
        // Made for an earlier claim of this name: taken over by the write below, which names this claim.
        if !controlled_by(existing, f.uid()) && !made_for_an_earlier(existing, &owner) {
            return Ok(SecretOutcome::Conflict {
                name: local_name.to_string(),
            });
        }
        if controlled_by(existing, f.uid())
            && data_of(existing) == data
            && existing.type_.as_deref() == Some(CONNECTION_SECRET_TYPE)
        {
            return Ok(SecretOutcome::InPlace { hash, written: false });
        }
    }
    Err(Step::ApplySecret {
        name: local_name.to_string(),
        secret: local_secret(&data, local_name, f.namespace(), &owner),
    })
}

/// A Secret's data as JSON values (base64 text), by key.
fn data_of(secret: &Secret) -> BTreeMap<String, Value> {
    secret
        .data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, serde_json::to_value(v).unwrap_or(Value::Null)))
        .collect()
}
