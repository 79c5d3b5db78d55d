//! Front-proxy authentication: a request is the aggregator's if its client certificate chains to the
//! request-header CA (clientAuth usage) and names an allowed CN; the user is then read from the configured headers
//! (configuration from `trust`). Decides identity only; authorization is `review`'s.

use std::collections::BTreeMap;
use std::sync::Arc;

use http::HeaderMap;
use percent_encoding::percent_decode_str;
use tokio_rustls::rustls::RootCertStore;
use tokio_rustls::rustls::crypto::ring::default_provider;
use tokio_rustls::rustls::pki_types::pem;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, UnixTime};
use tokio_rustls::rustls::server::VerifierBuilderError;
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::server::danger::ClientCertVerifier;
use x509_parser::nom;
use x509_parser::prelude::{FromDer, X509Certificate, X509Error};

/// Why the request-header configuration cannot be used; every request gets 401 until it can.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("requestheader-client-ca-file is missing: the app cluster has no front-proxy CA configured")]
    MissingCa,
    #[error("failed to read a certificate of requestheader-client-ca-file")]
    ReadCa(#[source] pem::Error),
    #[error("failed to trust a certificate of requestheader-client-ca-file")]
    TrustCa(#[source] tokio_rustls::rustls::Error),
    #[error("requestheader-client-ca-file holds no certificate")]
    NoCa,
    #[error("failed to verify client certificates against requestheader-client-ca-file")]
    Verifier(#[source] VerifierBuilderError),
    #[error("{key}: not a JSON array of strings")]
    NotAList {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("requestheader-username-headers is empty: no header names the user")]
    NoUsernameHeaders,
}

/// Why a request is not the front proxy's; the client is told, in a 401.
#[derive(Debug, thiserror::Error)]
pub enum Unauthenticated {
    #[error("no client certificate: only the API server's aggregator may call this server")]
    NoCertificate,
    #[error("the client certificate is not the front proxy's")]
    Untrusted(#[source] tokio_rustls::rustls::Error),
    #[error("failed to read the client certificate")]
    Unreadable(#[source] nom::Err<X509Error>),
    #[error("the client certificate's CN {cn:?} is not one of requestheader-allowed-names")]
    NameNotAllowed { cn: String },
    #[error("the front proxy named no user")]
    NoUser,
}

/// Who a request is from, as the aggregator says.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct User {
    pub name: String,
    pub uid: Option<String>,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

/// The request-header configuration the app cluster publishes for aggregated API servers.
pub struct FrontProxy {
    verifier: Arc<dyn ClientCertVerifier>,
    allowed_names: Vec<String>,
    username_headers: Vec<String>,
    uid_headers: Vec<String>,
    group_headers: Vec<String>,
    extra_prefixes: Vec<String>,
}

impl std::fmt::Debug for FrontProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrontProxy")
            .field("allowed_names", &self.allowed_names)
            .field("username_headers", &self.username_headers)
            .finish_non_exhaustive()
    }
}

/// A JSON array of strings as the ConfigMap stores lists; a missing key is an empty list.
fn list(data: &BTreeMap<String, String>, key: &str) -> Result<Vec<String>, ConfigError> {
    match data.get(key).map(|v| v.trim()).filter(|v| !v.is_empty()) {
        None => Ok(Vec::new()),
        Some(raw) => serde_json::from_str(raw).map_err(|source| ConfigError::NotAList {
            key: key.to_string(),
            source,
        }),
    }
}

impl FrontProxy {
    /// Reads the `extension-apiserver-authentication` ConfigMap's data.
    pub fn from_config_map(data: &BTreeMap<String, String>) -> Result<FrontProxy, ConfigError> {
        let pem = data
            .get("requestheader-client-ca-file")
            .filter(|p| !p.trim().is_empty())
            .ok_or(ConfigError::MissingCa)?;
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let cert = cert.map_err(ConfigError::ReadCa)?;
            roots.add(cert).map_err(ConfigError::TrustCa)?;
        }
        if roots.is_empty() {
            return Err(ConfigError::NoCa);
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::new(default_provider()))
            .build()
            .map_err(ConfigError::Verifier)?;
        let username_headers = list(data, "requestheader-username-headers")?;
        if username_headers.is_empty() {
            return Err(ConfigError::NoUsernameHeaders);
        }
        Ok(FrontProxy {
            verifier,
            allowed_names: list(data, "requestheader-allowed-names")?,
            username_headers,
            uid_headers: list(data, "requestheader-uid-headers")?,
            group_headers: list(data, "requestheader-group-headers")?,
            extra_prefixes: list(data, "requestheader-extra-headers-prefix")?,
        })
    }

    /// The user a request is from, if its client certificate (`peer`, leaf first) is the front proxy's.
    pub fn authenticate(&self, peer: &[CertificateDer<'static>], headers: &HeaderMap) -> Result<User, Unauthenticated> {
        let (leaf, intermediates) = peer.split_first().ok_or(Unauthenticated::NoCertificate)?;
        self.verifier
            .verify_client_cert(leaf, intermediates, UnixTime::now())
            .map_err(Unauthenticated::Untrusted)?;
        if !self.allowed_names.is_empty() {
            let (_, cert) = X509Certificate::from_der(leaf).map_err(Unauthenticated::Unreadable)?;
            let cn = cert
                .subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok())
                .unwrap_or_default();
            if !self.allowed_names.iter().any(|n| n == cn) {
                return Err(Unauthenticated::NameNotAllowed { cn: cn.to_string() });
            }
        }
        let first = |names: &[String]| {
            names
                .iter()
                .find_map(|h| headers.get(h).and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty()))
                .map(str::to_string)
        };
        let name = first(&self.username_headers).ok_or(Unauthenticated::NoUser)?;
        let mut groups: Vec<String> = self
            .group_headers
            .iter()
            .flat_map(|h| headers.get_all(h).iter())
            .filter_map(|v| v.to_str().ok())
            .map(str::to_string)
            .collect();
        // As the API server's authenticators do: whoever is authenticated is in system:authenticated.
        if name != "system:anonymous" && !groups.iter().any(|g| g == "system:authenticated") {
            groups.push("system:authenticated".into());
        }
        let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (header, value) in headers {
            let header = header.as_str();
            let Some(key) = self.extra_prefixes.iter().find_map(|prefix| {
                (header.len() > prefix.len() && header[..prefix.len()].eq_ignore_ascii_case(prefix))
                    .then(|| &header[prefix.len()..])
            }) else {
                continue;
            };
            let key = percent_decode_str(key).decode_utf8_lossy().to_lowercase();
            if let Ok(value) = value.to_str() {
                extra.entry(key).or_default().push(value.to_string());
            }
        }
        Ok(User {
            name,
            uid: first(&self.uid_headers),
            groups,
            extra,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };

    /// A CA and a function issuing client certificates from it: (CA PEM, issue(CN, clientAuth?) -> leaf DER).
    pub(crate) fn test_ca() -> (String, impl Fn(&str, bool) -> CertificateDer<'static>) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, "front-proxy-ca");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().unwrap();
        let ca = params.self_signed(&key).unwrap();
        let issuer = Issuer::new(params, key);
        let issue = move |cn: &str, client_auth: bool| {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.distinguished_name.push(DnType::CommonName, cn);
            params.extended_key_usages = vec![if client_auth {
                ExtendedKeyUsagePurpose::ClientAuth
            } else {
                ExtendedKeyUsagePurpose::ServerAuth
            }];
            let key = KeyPair::generate().unwrap();
            params.signed_by(&key, &issuer).unwrap().der().clone()
        };
        (ca.pem(), issue)
    }

    pub(crate) fn config_map(ca: &str, allowed: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("requestheader-client-ca-file".to_string(), ca.to_string()),
            ("requestheader-allowed-names".to_string(), allowed.to_string()),
            (
                "requestheader-username-headers".to_string(),
                r#"["X-Remote-User"]"#.to_string(),
            ),
            (
                "requestheader-group-headers".to_string(),
                r#"["X-Remote-Group"]"#.to_string(),
            ),
            (
                "requestheader-extra-headers-prefix".to_string(),
                r#"["X-Remote-Extra-"]"#.to_string(),
            ),
        ])
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        map
    }

    #[test]
    fn only_the_front_proxy_is_believed() {
        let (ca, issue) = test_ca();
        let (_, issue_other) = test_ca();
        let proxy = FrontProxy::from_config_map(&config_map(&ca, r#"["front-proxy-client"]"#)).unwrap();
        let anyone = FrontProxy::from_config_map(&config_map(&ca, "")).unwrap();
        let alice = headers(&[
            ("X-Remote-User", "alice"),
            ("X-Remote-Group", "team-a"),
            ("X-Remote-Group", "system:authenticated"),
            ("X-Remote-Extra-Scopes%2fone", "s1"),
            ("x-remote-extra-scopes%2fone", "s2"),
        ]);
        // (proxy, certificates, headers, Ok(user) or the error's words)
        type Case<'a> = (
            &'a FrontProxy,
            Vec<CertificateDer<'static>>,
            HeaderMap,
            Result<&'a str, &'a str>,
        );
        let cases: Vec<Case<'_>> = vec![
            (
                &proxy,
                vec![issue("front-proxy-client", true)],
                alice.clone(),
                Ok("alice"),
            ),
            (&proxy, vec![], alice.clone(), Err("no client certificate")),
            (
                &proxy,
                vec![issue_other("front-proxy-client", true)],
                alice.clone(),
                Err("not the front proxy's"),
            ),
            (
                &proxy,
                vec![issue("front-proxy-client", false)],
                alice.clone(),
                Err("not the front proxy's"),
            ),
            (
                &proxy,
                vec![issue("someone-else", true)],
                alice.clone(),
                Err("not one of requestheader-allowed-names"),
            ),
            (&anyone, vec![issue("someone-else", true)], alice.clone(), Ok("alice")),
            (
                &proxy,
                vec![issue("front-proxy-client", true)],
                headers(&[("X-Remote-Group", "g")]),
                Err("named no user"),
            ),
        ];
        for (i, (proxy, certs, headers, want)) in cases.into_iter().enumerate() {
            match (proxy.authenticate(&certs, &headers), want) {
                (Ok(user), Ok(name)) => assert_eq!(user.name, name, "case {i}"),
                (Err(e), Err(words)) => assert!(e.to_string().contains(words), "case {i}: {e}"),
                (got, want) => panic!("case {i}: got {got:?}, want {want:?}"),
            }
        }
        let user = proxy
            .authenticate(&[issue("front-proxy-client", true)], &alice)
            .unwrap();
        assert_eq!(user.groups, ["team-a", "system:authenticated"]);
        assert_eq!(user.extra.get("scopes/one").unwrap(), &["s1", "s2"]);
        let aggregator = proxy
            .authenticate(
                &[issue("front-proxy-client", true)],
                &headers(&[("X-Remote-User", "system:kube-aggregator")]),
            )
            .unwrap();
        assert_eq!(aggregator.groups, ["system:authenticated"]);
    }

    #[test]
    fn configuration_errors_say_which_key() {
        let (ca, _) = test_ca();
        let mut data = config_map(&ca, "[]");
        data.insert("requestheader-allowed-names".into(), "front-proxy-client".into());
        assert!(
            FrontProxy::from_config_map(&data)
                .unwrap_err()
                .to_string()
                .contains("requestheader-allowed-names")
        );
        let mut data = config_map(&ca, "[]");
        data.remove("requestheader-client-ca-file");
        assert!(
            FrontProxy::from_config_map(&data)
                .unwrap_err()
                .to_string()
                .contains("requestheader-client-ca-file")
        );
        let mut data = config_map("not a pem", "[]");
        data.remove("requestheader-username-headers");
        assert!(FrontProxy::from_config_map(&data).is_err());
    }
}
