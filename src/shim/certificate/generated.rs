//! The shim's own certificates when none is given: a CA and a serving certificate it signs for the Service's
//! names and localhost, and when either must be made anew (expiring, or not naming the Service). Pure functions
//! over PEM text; `keeper` stores them in a Secret and `transport::tls` serves them.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// A certificate and its private key, PEM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pem {
    pub cert: String,
    pub key: String,
}

pub const CA_VALIDITY: Duration = Duration::days(3650);
pub const SERVING_VALIDITY: Duration = Duration::days(365);
/// A certificate this close to its end is made anew.
pub const RENEW_BEFORE: Duration = Duration::days(30);

/// The names the serving certificate covers: what the aggregator checks (`<service>.<namespace>.svc`), the
/// cluster-local form, and localhost for probes and tests.
pub fn serving_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
        "localhost".to_string(),
    ]
}

/// Why a certificate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("failed to set up the CA certificate")]
    CaParameters(#[source] rcgen::Error),
    #[error("failed to generate the CA key")]
    GenerateCaKey(#[source] rcgen::Error),
    #[error("failed to self-sign the CA certificate")]
    SignCa(#[source] rcgen::Error),
    #[error("failed to read the CA key")]
    ReadCaKey(#[source] rcgen::Error),
    #[error("failed to read the CA certificate")]
    ReadCa(#[source] rcgen::Error),
    #[error("failed to set up a serving certificate for {names:?}")]
    ServingParameters {
        names: Vec<String>,
        #[source]
        source: rcgen::Error,
    },
    #[error("failed to generate the serving key")]
    GenerateServingKey(#[source] rcgen::Error),
    #[error("failed to sign the serving certificate for {names:?}")]
    SignServing {
        names: Vec<String>,
        #[source]
        source: rcgen::Error,
    },
}

pub fn new_ca(now: OffsetDateTime) -> Result<Pem, GenerateError> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(GenerateError::CaParameters)?;
    params.distinguished_name.push(DnType::CommonName, "claimsync-shim-ca");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::CrlSign,
    ];
    params.not_before = now - Duration::hours(1);
    params.not_after = now + CA_VALIDITY;
    let key = KeyPair::generate().map_err(GenerateError::GenerateCaKey)?;
    let cert = params.self_signed(&key).map_err(GenerateError::SignCa)?;
    Ok(Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

pub fn issue_serving(ca: &Pem, names: &[String], now: OffsetDateTime) -> Result<Pem, GenerateError> {
    let ca_key = KeyPair::from_pem(&ca.key).map_err(GenerateError::ReadCaKey)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert, ca_key).map_err(GenerateError::ReadCa)?;
    let mut params = CertificateParams::new(names.to_vec()).map_err(|source| GenerateError::ServingParameters {
        names: names.to_vec(),
        source,
    })?;
    params
        .distinguished_name
        .push(DnType::CommonName, names.first().cloned().unwrap_or_default());
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.not_before = now - Duration::hours(1);
    params.not_after = now + SERVING_VALIDITY;
    let key = KeyPair::generate().map_err(GenerateError::GenerateServingKey)?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|source| GenerateError::SignServing {
            names: names.to_vec(),
            source,
        })?;
    Ok(Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// Why a certificate (the first in `pem`) must be made anew at `now`, if it must: unreadable, expiring within
/// [`RENEW_BEFORE`], or missing one of `names`.
pub fn renewal(pem: &str, names: &[String], now: OffsetDateTime) -> Option<String> {
    let der = match CertificateDer::pem_slice_iter(pem.as_bytes()).next() {
        Some(Ok(der)) => der,
        Some(Err(e)) => return Some(format!("unreadable: {e}")),
        None => return Some("no certificate".into()),
    };
    let cert = match X509Certificate::from_der(&der) {
        Ok((_, cert)) => cert,
        Err(e) => return Some(format!("unreadable: {e}")),
    };
    let not_after = cert.validity().not_after.timestamp();
    if not_after < (now + RENEW_BEFORE).unix_timestamp() {
        return Some(format!("it expires at {}", cert.validity().not_after));
    }
    let covered: Vec<&str> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(name) => Some(*name),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    names
        .iter()
        .find(|n| !covered.contains(&n.as_str()))
        .map(|missing| format!("it does not name {missing}"))
}

/// A generated CA and the serving certificate it signed, as stored in the shim's Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bundle {
    pub ca: Pem,
    pub serving: Pem,
}

/// What the shim's Secret must hold from `now` on: `None` when `existing` serves as it is, else the new bundle
/// and why. A CA due for renewal takes a new serving certificate with it; a serving certificate alone is re-issued
/// by the same CA, so the APIService's caBundle stays.
pub fn plan(
    existing: Option<&Bundle>,
    names: &[String],
    now: OffsetDateTime,
) -> Result<Option<(Bundle, String)>, GenerateError> {
    let fresh_ca = |why: String| -> Result<Option<(Bundle, String)>, GenerateError> {
        let ca = new_ca(now)?;
        let serving = issue_serving(&ca, names, now)?;
        Ok(Some((Bundle { ca, serving }, why)))
    };
    let Some(existing) = existing else {
        return fresh_ca("there is none yet".into());
    };
    if let Some(why) = renewal(&existing.ca.cert, &[], now) {
        return fresh_ca(format!("the CA must be renewed: {why}"));
    }
    if KeyPair::from_pem(&existing.ca.key).is_err() {
        return fresh_ca("the CA key is unreadable".into());
    }
    let serving_renewal = renewal(&existing.serving.cert, names, now).or_else(|| {
        KeyPair::from_pem(&existing.serving.key)
            .err()
            .map(|e| format!("the key is unreadable: {e}"))
    });
    match serving_renewal {
        None => Ok(None),
        Some(why) => {
            let serving = issue_serving(&existing.ca, names, now)?;
            let bundle = Bundle {
                ca: existing.ca.clone(),
                serving,
            };
            Ok(Some((
                bundle,
                format!("the serving certificate must be renewed: {why}"),
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_keep_what_serves_and_renew_the_least_needed() {
        let now = OffsetDateTime::now_utc();
        let names = serving_names("claimsync", "ns");
        let (made, why) = plan(None, &names, now).unwrap().unwrap();
        assert!(why.contains("none yet"));
        assert_eq!(plan(Some(&made), &names, now).unwrap(), None);

        let moved = serving_names("claimsync", "other");
        let (renewed, why) = plan(Some(&made), &moved, now).unwrap().unwrap();
        assert!(why.contains("serving certificate"), "{why}");
        assert_eq!(renewed.ca, made.ca, "the same CA, so the caBundle stays");
        assert_ne!(renewed.serving, made.serving);

        let (renewed, _) = plan(Some(&made), &names, now + Duration::days(340)).unwrap().unwrap();
        assert_eq!(renewed.ca, made.ca);
        let (renewed, why) = plan(Some(&made), &names, now + Duration::days(3630)).unwrap().unwrap();
        assert!(why.contains("CA"), "{why}");
        assert_ne!(renewed.ca, made.ca);

        let mut broken = made.clone();
        broken.ca.key = "nonsense".into();
        let (renewed, why) = plan(Some(&broken), &names, now).unwrap().unwrap();
        assert!(why.contains("CA key"), "{why}");
        assert_ne!(renewed.ca, made.ca);
    }

    #[test]
    fn serving_certificates_are_renewed_when_due_or_misnamed() {
        let now = OffsetDateTime::now_utc();
        let ca = new_ca(now).unwrap();
        let names = serving_names("claimsync", "claimsync-system");
        let serving = issue_serving(&ca, &names, now).unwrap();
        let other_names = serving_names("claimsync", "elsewhere");
        let cases = [
            (serving.cert.as_str(), &names, now, None),
            (serving.cert.as_str(), &names, now + Duration::days(300), None),
            (
                serving.cert.as_str(),
                &names,
                now + Duration::days(340),
                Some("expires"),
            ),
            (
                serving.cert.as_str(),
                &other_names,
                now,
                Some("does not name claimsync.elsewhere.svc"),
            ),
            (ca.cert.as_str(), &vec![], now + Duration::days(3000), None),
            (ca.cert.as_str(), &vec![], now + Duration::days(3630), Some("expires")),
            ("garbage", &names, now, Some("no certificate")),
        ];
        for (i, (pem, names, at, want)) in cases.into_iter().enumerate() {
            match (renewal(pem, names, at), want) {
                (None, None) => {}
                (Some(why), Some(words)) => assert!(why.contains(words), "case {i}: {why}"),
                (got, want) => panic!("case {i}: got {got:?}, want {want:?}"),
            }
        }
    }
}
