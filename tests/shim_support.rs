//! Helpers for tests of the aggregated API: an instance's shim port, its registration in the app cluster (an
//! `ExternalName: localhost` Service and the APIService `v1alpha1.claimsync.dev`, removed again when dropped,
//! since only one can exist and while it points at a stopped server every namespace deletion in the app cluster
//! waits; one test at a time holds it, see `Turn`), the APIService's availability, kubectl through the
//! aggregator, the set-ups the tests share, and HTTPS requests straight to the shim, bypassing the aggregator.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, MutexGuard};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use tokio_rustls::rustls::crypto::{CryptoProvider, ring, verify_tls12_signature, verify_tls13_signature};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

use crate::claim_support::{apply_claim, cluster_claim_yaml, kubectl_apply};
use crate::instance::{Instance, tail};
use crate::support::{self, env, wait_for};

pub const API_SERVICE: &str = "v1alpha1.claimsync.dev";
/// The Service claimsync's `--shim-service` names by default.
pub const SERVICE: &str = "claimsync";

/// The port the instance's shim listens on (the last start's), from its log.
pub async fn shim_port(instance: &Instance) -> u16 {
    wait_for("the shim to listen", Duration::from_secs(60), || async {
        let log = instance.log();
        log.rsplit("serving on https://127.0.0.1:")
            .next()
            .filter(|_| log.contains("serving on https://127.0.0.1:"))
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|port| port.parse().ok())
            .ok_or_else(|| format!("not yet; log:\n{}", tail(&log, 10)))
    })
    .await
}

/// Taken by a test before anything else that registers the APIService, and held to its end.
static TURN: Mutex<()> = Mutex::const_new(());

/// A test's turn with the app cluster's one APIService: no other test of this run registers it meanwhile. Take
/// it after the env lock (`env_shared` or `env_exclusive`), never before, so that no two tests wait on each other.
pub struct Turn {
    _guard: MutexGuard<'static, ()>,
}

impl Turn {
    /// Waits for the turn, then removes an APIService an earlier run left behind.
    pub async fn take(client: &kube::Client) -> Turn {
        let guard = TURN.lock().await;
        Registration::remove_stale(client).await;
        Turn { _guard: guard }
    }
}

/// The APIService of the aggregated API, pointing at an instance's shim; deleted when dropped.
pub struct Registration;

impl Registration {
    /// Points `v1alpha1.claimsync.dev` at the shim on `port` through an `ExternalName: localhost` Service in the
    /// instance's own namespace, without a caBundle: claimsync patches it in.
    pub async fn register(_turn: &Turn, instance: &Instance, port: u16) -> Registration {
        let services = Api::<Service>::namespaced(instance.app.clone(), &instance.own_namespace);
        let service = json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": SERVICE},
            "spec": {"type": "ExternalName", "externalName": "localhost",
                     "ports": [{"name": "https", "port": port, "protocol": "TCP"}]},
        });
        let apply = PatchParams::apply("claimsync-tests").force();
        services.patch(SERVICE, &apply, &Patch::Apply(&service)).await.unwrap();
        let api_service = json!({
            "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService", "metadata": {"name": API_SERVICE},
            "spec": {"group": "claimsync.dev", "version": "v1alpha1", "groupPriorityMinimum": 1000, "versionPriority": 15,
                     "service": {"namespace": instance.own_namespace, "name": SERVICE, "port": port}},
        });
        Api::<APIService>::all(instance.app.clone())
            .patch(API_SERVICE, &apply, &Patch::Apply(&api_service))
            .await
            .unwrap();
        Registration
    }

    /// Removes an APIService left by an earlier run that died before cleaning up.
    pub async fn remove_stale(client: &kube::Client) {
        let _ = Api::<APIService>::all(client.clone())
            .delete(API_SERVICE, &DeleteParams::default())
            .await;
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // Synchronous on purpose: it must happen even when the test panics.
        let _ = std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&env().app_kubeconfig)
            .args([
                "delete",
                "apiservice",
                API_SERVICE,
                "--ignore-not-found",
                "--wait=false",
            ])
            .output();
    }
}

/// The APIService's Available condition: (status, message).
pub async fn availability(client: &kube::Client) -> (String, String) {
    let Ok(api_service) = Api::<APIService>::all(client.clone()).get(API_SERVICE).await else {
        return ("Absent".into(), String::new());
    };
    api_service
        .status
        .and_then(|s| s.conditions)
        .and_then(|c| c.into_iter().find(|c| c.type_ == "Available"))
        .map(|c| (c.status, c.message.unwrap_or_default()))
        .unwrap_or_default()
}

pub async fn wait_available(client: &kube::Client, want: &str, timeout: Duration) {
    wait_for(&format!("the APIService to be Available={want}"), timeout, || async {
        let (status, message) = availability(client).await;
        (status == want).then_some(()).ok_or(format!("{status}: {message}"))
    })
    .await
}

pub async fn kubectl(args: &[&str]) -> Result<String, String> {
    env().kubectl(&env().app_kubeconfig, args).await
}

/// A shim the aggregator serves: its port, its registration and the test's turn with the APIService (both end
/// when this is dropped), what discovery listed, and how long after the start the shim listened and discovery
/// answered through the aggregator.
pub struct Registered {
    pub port: u16,
    _registration: Registration,
    _turn: Turn,
    pub discovery: String,
    pub listening: Duration,
    pub discovered: Duration,
}

/// Starts the instance's shim on a free port, registers it and waits until the aggregator serves claimsync.dev
/// (the APIService Available, and discovery listing it). Waits for the test's turn with the APIService first;
/// call it after taking the env lock.
pub async fn start_registered(instance: &mut Instance) -> Registered {
    let turn = Turn::take(&instance.app).await;
    let started = std::time::Instant::now();
    instance.start_with(&["--shim-addr", "127.0.0.1:0"]).await;
    let port = shim_port(instance).await;
    let listening = started.elapsed();
    let registration = Registration::register(&turn, instance, port).await;
    wait_available(&instance.app, "True", Duration::from_secs(90)).await;
    let discovery = wait_for(
        "claimsync.dev in kubectl api-resources",
        Duration::from_secs(90),
        || async {
            let out = kubectl(&["api-resources", "--api-group=claimsync.dev"]).await?;
            out.contains("claimsyncs").then_some(out.clone()).ok_or(out)
        },
    )
    .await;
    Registered {
        port,
        _registration: registration,
        _turn: turn,
        discovery,
        listening,
        discovered: started.elapsed(),
    }
}

pub fn postgres_claim_yaml(ns: &str, name: &str) -> String {
    format!(
        "apiVersion: db.starter.org/v1beta1\nkind: PostgreSQLInstance\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  parameters:\n    storageGB: 5\n"
    )
}

/// Two kinds sharing the name `alpha` in `ns`: a KubernetesCluster and a PostgreSQLInstance.
pub async fn apply_alphas(ns: &str) {
    let id = support::unique("kc");
    kubectl_apply(&cluster_claim_yaml(ns, "alpha", &id, "alpha-conn", ""))
        .await
        .unwrap();
    kubectl_apply(&postgres_claim_yaml(ns, "alpha")).await.unwrap();
}

/// Applies the claims `names` (KubernetesClusters) in `ns` and waits until their claimsyncs are Synced.
pub async fn synced_claims(ns: &str, names: &[&str], instance: &Instance) {
    for name in names {
        apply_claim(ns, name).await;
    }
    wait_phase(ns, names, "Synced", instance).await;
}

/// The claimsyncs of a namespace as JSON, through the aggregator.
pub async fn claimsyncs(ns: &str) -> Result<Vec<Value>, String> {
    let out = kubectl(&["get", "claimsyncs", "-n", ns, "-o", "json"]).await?;
    let list: Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
    Ok(list["items"].as_array().cloned().unwrap_or_default())
}

/// Waits until every claimsync of `ns` named in `names` shows `phase`.
pub async fn wait_phase(ns: &str, names: &[&str], phase: &str, instance: &Instance) {
    wait_for(
        &format!("claimsyncs {names:?} in {ns} to be {phase}"),
        Duration::from_secs(120),
        || async {
            let items = claimsyncs(ns).await?;
            let phases: Vec<(String, String)> = items
                .iter()
                .map(|i| {
                    (
                        i["metadata"]["name"].as_str().unwrap_or_default().to_string(),
                        i["status"]["phase"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect();
            let done = names
                .iter()
                .all(|n| phases.iter().any(|(name, p)| name == n && p == phase))
                && phases
                    .iter()
                    .filter(|(n, _)| names.contains(&n.as_str()))
                    .all(|(_, p)| p == phase);
            done.then_some(())
                .ok_or_else(|| format!("{phases:?}\nclaimsync log:\n{}", tail(&instance.log(), 8)))
        },
    )
    .await
}

/// The user `<instance>-reader`, whom a Role lets get, list and watch claimsyncs in `ns` only.
pub async fn reader_of(ns: &str, instance: &Instance) -> String {
    let reader = format!("{}-reader", instance.id);
    let rbac = format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: claimsync-reader, namespace: {ns}}}\nrules:\n- apiGroups: [claimsync.dev]\n  resources: [claimsyncs]\n  verbs: [get, list, watch]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: claimsync-reader, namespace: {ns}}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: claimsync-reader}}\nsubjects:\n- {{apiGroup: rbac.authorization.k8s.io, kind: User, name: {reader}}}\n"
    );
    kubectl_apply(&rbac).await.unwrap();
    reader
}

/// Accepts any server certificate: these requests test the shim's client authentication, not its certificate
/// (the aggregator checks that against the caBundle).
#[derive(Debug)]
struct AnyServer(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, tokio_rustls::rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// What a direct request got: the status code, the body, and the certificate the shim served.
pub struct Direct {
    pub status: u16,
    pub body: String,
    pub server_cert: Vec<u8>,
}

/// A client certificate and key, PEM.
pub struct Identity {
    pub cert: String,
    pub key: String,
}

impl Identity {
    /// The app cluster's front-proxy client certificate: what the aggregator presents.
    pub fn front_proxy() -> Identity {
        let pki = env().dir.join("app/pki");
        Identity {
            cert: std::fs::read_to_string(pki.join("front-proxy-client.crt")).unwrap(),
            key: std::fs::read_to_string(pki.join("front-proxy-client.key")).unwrap(),
        }
    }

    /// A client certificate with the front proxy's CN from a CA of its own.
    pub fn impostor() -> Identity {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "front-proxy-client");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Identity {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

/// `GET path` straight to the shim on `port`, with a client certificate or none, and extra headers.
pub async fn direct_get(port: u16, path: &str, identity: Option<&Identity>, headers: &[(&str, &str)]) -> Direct {
    let provider = Arc::new(ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)));
    let config = match identity {
        Some(identity) => {
            let chain = CertificateDer::pem_slice_iter(identity.cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_slice(identity.key.as_bytes()).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap_or_else(|e| panic!("TLS to the shim on {port}: {e}"));
    let server_cert = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    let mut request =
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response).await;
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Direct {
        status,
        body,
        server_cert,
    }
}
