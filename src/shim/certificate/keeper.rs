//! The serving certificate of the moment: read from a given TLS Secret, or generated once into a Secret in
//! claimsync's namespace that every replica shares (created if absent, renewed when due), loaded into the TLS slot
//! whenever the Secret changes, its CA handed to `api_service`. Writes only that generated Secret.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use time::OffsetDateTime;
use tracing::{info, warn};

use super::api_service::{self, ApiServiceTarget};
use super::generated::{Bundle, GenerateError, Pem, plan};
use crate::error::with_causes;
use crate::shim::api::resources::API_SERVICE;
use crate::shim::transport::tls::{CertLoadError, CertSlot};

/// Why the serving certificate cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("failed to read the Secret {secret} of the serving certificate")]
    Read {
        secret: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("the Secret {secret} of the serving certificate (--shim-cert-secret) is not found")]
    NotFound { secret: String },
    #[error("the Secret {secret} of the serving certificate has no {key}")]
    MissingKey { secret: String, key: &'static str },
    #[error("failed to generate the serving certificate for the Secret {secret}")]
    Generate {
        secret: String,
        #[source]
        source: GenerateError,
    },
    #[error("failed to write the generated serving certificate into the Secret {secret}")]
    Write {
        secret: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("failed to load the serving certificate of the Secret {secret}")]
    Load {
        secret: String,
        #[source]
        source: CertLoadError,
    },
}

/// Where the serving certificate comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertSource {
    /// A `kubernetes.io/tls` Secret someone else keeps (`tls.crt`, `tls.key`, and `ca.crt` for the caBundle).
    Given { namespace: String, name: String },
    /// A Secret claimsync generates and renews (`ca.crt`, `ca.key`, `tls.crt`, `tls.key`).
    Generated { namespace: String, name: String },
}

impl CertSource {
    fn secret(&self) -> (&str, &str) {
        match self {
            CertSource::Given { namespace, name } | CertSource::Generated { namespace, name } => (namespace, name),
        }
    }
}

pub struct CertKeeper {
    pub client: Client,
    pub source: CertSource,
    /// The names a generated serving certificate covers.
    pub names: Vec<String>,
    pub target: ApiServiceTarget,
    pub slot: Arc<CertSlot>,
}

const CHECK_EVERY: Duration = Duration::from_secs(3600);

fn text(data: &BTreeMap<String, ByteString>, key: &str) -> Option<String> {
    data.get(key)
        .and_then(|v| String::from_utf8(v.0.clone()).ok())
        .filter(|v| !v.trim().is_empty())
}

fn bundle_of(secret: &Secret) -> Option<Bundle> {
    let data = secret.data.as_ref()?;
    Some(Bundle {
        ca: Pem {
            cert: text(data, "ca.crt")?,
            key: text(data, "ca.key")?,
        },
        serving: Pem {
            cert: text(data, "tls.crt")?,
            key: text(data, "tls.key")?,
        },
    })
}

fn secret_of(name: &str, bundle: &Bundle, resource_version: Option<String>) -> Secret {
    let bytes = |s: &str| ByteString(s.as_bytes().to_vec());
    let mut secret = Secret {
        type_: Some("kubernetes.io/tls".into()),
        data: Some(BTreeMap::from([
            ("ca.crt".to_string(), bytes(&bundle.ca.cert)),
            ("ca.key".to_string(), bytes(&bundle.ca.key)),
            ("tls.crt".to_string(), bytes(&bundle.serving.cert)),
            ("tls.key".to_string(), bytes(&bundle.serving.key)),
        ])),
        ..Secret::default()
    };
    secret.metadata.name = Some(name.to_string());
    secret.metadata.resource_version = resource_version;
    secret.metadata.labels = Some(BTreeMap::from([(
        crate::model::vocabulary::MANAGED_BY.to_string(),
        "claimsync".to_string(),
    )]));
    secret
}

impl CertKeeper {
    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), self.source.secret().0)
    }

    /// `<namespace>/<name>` of the Secret.
    fn secret(&self) -> String {
        let (namespace, name) = self.source.secret();
        format!("{namespace}/{name}")
    }

    /// The generated bundle, made or renewed in the Secret if due; every replica arrives at the same one.
    async fn generated(&self) -> Result<Bundle, CertError> {
        let name = self.source.secret().1;
        loop {
            let existing = self.secrets().get_opt(name).await.map_err(|source| CertError::Read {
                secret: self.secret(),
                source: Box::new(source),
            })?;
            let current = existing.as_ref().and_then(bundle_of);
            let planned = plan(current.as_ref(), &self.names, OffsetDateTime::now_utc()).map_err(|source| {
                CertError::Generate {
                    secret: self.secret(),
                    source,
                }
            })?;
            let Some((bundle, why)) = planned else {
                return Ok(current.expect("a plan without changes keeps a bundle"));
            };
            let written = match &existing {
                None => {
                    self.secrets()
                        .create(&PostParams::default(), &secret_of(name, &bundle, None))
                        .await
                }
                Some(secret) => {
                    self.secrets()
                        .replace(
                            name,
                            &PostParams::default(),
                            &secret_of(name, &bundle, secret.resource_version()),
                        )
                        .await
                }
            };
            match written {
                Ok(_) => {
                    info!(secret = %self.secret(), %why, "wrote the shim's serving certificate");
                    return Ok(bundle);
                }
                // Another replica wrote it first: use theirs.
                Err(kube::Error::Api(status)) if status.code == 409 => continue,
                Err(source) => {
                    return Err(CertError::Write {
                        secret: self.secret(),
                        source: Box::new(source),
                    });
                }
            }
        }
    }

    /// Reads the certificate and loads it; returns the CA the APIService must trust.
    async fn load(&self) -> Result<String, CertError> {
        let missing = |key| CertError::MissingKey {
            secret: self.secret(),
            key,
        };
        let (cert, key, ca) = match &self.source {
            CertSource::Generated { .. } => {
                let bundle = self.generated().await?;
                (bundle.serving.cert, bundle.serving.key, bundle.ca.cert)
            }
            CertSource::Given { name, .. } => {
                let secret = self
                    .secrets()
                    .get_opt(name)
                    .await
                    .map_err(|source| CertError::Read {
                        secret: self.secret(),
                        source: Box::new(source),
                    })?
                    .ok_or_else(|| CertError::NotFound { secret: self.secret() })?;
                let data = secret.data.unwrap_or_default();
                let cert = text(&data, "tls.crt").ok_or_else(|| missing("tls.crt"))?;
                let key = text(&data, "tls.key").ok_or_else(|| missing("tls.key"))?;
                let ca = text(&data, "ca.crt").unwrap_or_else(|| cert.clone());
                (cert, key, ca)
            }
        };
        self.slot.load(&cert, &key).map_err(|source| CertError::Load {
            secret: self.secret(),
            source,
        })?;
        Ok(ca)
    }

    /// Loads the certificate now (an error here is a configuration error), then keeps it and the APIService's
    /// caBundle current for as long as claimsync runs.
    pub async fn start(self) -> Result<(), CertError> {
        let ca = self.load().await?;
        if let Err(e) = api_service::trust(&self.client, &self.target, &ca).await {
            warn!(error = %e, "could not set the APIService's caBundle; trying again when something changes");
        }
        tokio::spawn(self.keep(ca));
        Ok(())
    }

    async fn keep(self, mut ca: String) {
        let (namespace, name) = self.source.secret();
        let secrets = Api::<Secret>::namespaced(self.client.clone(), namespace);
        let by_name = |n: &str| watcher::Config::default().fields(&format!("metadata.name={n}"));
        let mut secret_events = watcher(secrets, by_name(name)).default_backoff().boxed();
        let api_services = Api::<APIService>::all(self.client.clone());
        let mut api_service_events = watcher(api_services, by_name(API_SERVICE)).default_backoff().boxed();
        let mut check = tokio::time::interval(CHECK_EVERY);
        loop {
            let reload = tokio::select! {
                Some(event) = secret_events.next() => matches!(event, Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone)),
                Some(event) = api_service_events.next() => {
                    if matches!(event, Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone))
                        && let Err(e) = api_service::trust(&self.client, &self.target, &ca).await
                    {
                        warn!(error = %e, "could not set the APIService's caBundle");
                    }
                    false
                }
                _ = check.tick() => true,
            };
            if !reload {
                continue;
            }
            match self.load().await {
                Ok(current) => {
                    if current != ca {
                        info!("the shim's CA changed");
                    }
                    ca = current;
                    if let Err(e) = api_service::trust(&self.client, &self.target, &ca).await {
                        warn!(error = %e, "could not set the APIService's caBundle");
                    }
                }
                Err(e) => {
                    warn!(error = %with_causes(&e), "could not reload the shim's serving certificate; serving the previous one")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shim::certificate::generated::serving_names;

    #[test]
    fn bundles_round_trip_through_a_secret() {
        let (bundle, _) = plan(None, &serving_names("s", "n"), OffsetDateTime::now_utc())
            .unwrap()
            .unwrap();
        let secret = secret_of("claimsync-shim-tls", &bundle, Some("7".into()));
        assert_eq!(bundle_of(&secret), Some(bundle));
        assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
        assert_eq!(secret.metadata.resource_version.as_deref(), Some("7"));
        let mut partial = secret.clone();
        partial.data.as_mut().unwrap().remove("ca.key");
        assert_eq!(bundle_of(&partial), None);
    }
}
