//! The app cluster's aggregation layer works: an HTTPS server started by the test, registered through an
//! APIService whose Service is `ExternalName: localhost`, answers `kubectl get --raw /apis/<group>/<version>`.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::support::{self, env, wait_for};

/// Serves one APIResourceList for `/apis/<group>/v1` over TLS with a self-signed certificate.
async fn tiny_aggregated_server(group: String) -> u16 {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = CertificateDer::from(certified.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der()));
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let group = group.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&request);
                let path = head
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or("/")
                    .split('?')
                    .next()
                    .unwrap_or("/");
                let (status, body) = if path == format!("/apis/{group}/v1") {
                    let list = json!({
                        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("{group}/v1"),
                        "resources": [{"name": "tinies", "singularName": "tiny", "namespaced": true,
                                       "kind": "Tiny", "verbs": ["get", "list"]}]
                    });
                    ("200 OK", list.to_string())
                } else {
                    (
                        "404 Not Found",
                        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                             "code": 404, "reason": "NotFound"})
                        .to_string(),
                    )
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    port
}

#[tokio::test]
async fn aggregated_server_reachable_through_app_cluster() {
    let _env = support::env_shared().await;
    let client = support::app().await;
    let ns = support::namespace(&client, "agg").await;
    let group = format!("{}.test.claimsync.dev", support::unique("tiny"));
    let port = tiny_aggregated_server(group.clone()).await;

    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "tiny"},
        "spec": {"type": "ExternalName", "externalName": "localhost",
                 "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}
    }))
    .unwrap();
    Api::<Service>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &service)
        .await
        .unwrap();
    let api_service: APIService = serde_json::from_value(json!({
        "metadata": {"name": format!("v1.{group}")},
        "spec": {"group": group, "version": "v1", "insecureSkipTLSVerify": true,
                 "groupPriorityMinimum": 1000, "versionPriority": 15,
                 "service": {"namespace": ns, "name": "tiny", "port": port}}
    }))
    .unwrap();
    let api_services = Api::<APIService>::all(client.clone());
    api_services.create(&PostParams::default(), &api_service).await.unwrap();

    let path = format!("/apis/{group}/v1");
    let answer = wait_for(
        "the aggregated server to answer through the app cluster",
        Duration::from_secs(60),
        || {
            let path = path.clone();
            async move { env().kubectl(&env().app_kubeconfig, &["get", "--raw", &path]).await }
        },
    )
    .await;
    let list: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(list["groupVersion"], format!("{group}/v1"));
    assert_eq!(list["resources"][0]["kind"], "Tiny");

    api_services
        .delete(&format!("v1.{group}"), &DeleteParams::default())
        .await
        .unwrap();
}
