//! HTTPS: the same routes behind rustls, with a throwaway self-signed
//! certificate for `localhost` kept in `tests/fixtures`.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use common::{extender, node};
use kubesched_scheduler::extender::config::Config;
use kubesched_scheduler::extender::tls;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore, crypto::ring};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[tokio::test]
async fn serves_the_verbs_over_https_and_stops_on_request() {
    let (ext, _) = extender(
        Config::default(),
        &[node("gpu-1", &[("H100-80GB", Some("dynamic"), 0)], &[])],
    );
    let server_config =
        tls::server_config(&fixture("localhost.crt"), &fixture("localhost.key")).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(tls::serve_tls(ext, listener, server_config, async move {
        let _ = stopped.await;
    }));

    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(fixture("localhost.crt")).unwrap())
        .unwrap();
    let client = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut conn = TlsConnector::from(Arc::new(client))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let body = r#"{"Pod":{"metadata":{"uid":"u"},"spec":{"containers":[{"name":"c","resources":{"limits":{"nvidia.com/mig-1g.10gb":"1"}}}]}},"NodeNames":["gpu-1"]}"#;
    let request = format!(
        "POST /filter HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut reply = String::new();
    conn.read_to_string(&mut reply).await.unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains(r#""NodeNames":["gpu-1"]"#), "{reply}");

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
