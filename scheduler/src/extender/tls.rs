//! HTTPS serving: rustls (ring provider) in front of the same router and
//! accept loop (`connections`). kube-scheduler's extender client
//! speaks HTTP/1.1 over TLS when `enableHTTPS` is set.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::server::router;
use super::service::Extender;

/// Why the HTTPS server configuration could not be built.
#[derive(Debug, Error)]
pub enum TlsError {
    /// The certificate file is unreadable, not PEM, or holds no certificate.
    #[error("reading certificate {path}: {detail}")]
    Cert {
        /// Path of the certificate file.
        path: String,
        /// What went wrong reading it.
        detail: String,
    },
    /// The private key file is unreadable or holds no PEM private key.
    #[error("reading private key {path}: {detail}")]
    Key {
        /// Path of the key file.
        path: String,
        /// What went wrong reading it.
        detail: String,
    },
    /// rustls rejected the certificate chain or key (e.g. an unsupported key type).
    #[error("TLS configuration: {0}")]
    Config(#[from] tokio_rustls::rustls::Error),
}

/// Loads a PEM certificate chain and key into a server configuration.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let cert_err = |detail: String| TlsError::Cert {
        path: cert.display().to_string(),
        detail,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_err(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_err("no certificate in file".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.display().to_string(),
        detail: e.to_string(),
    })?;
    let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves HTTPS until `shutdown` completes, then drains open connections.
pub async fn serve_tls(
    ext: Arc<Extender>,
    listener: TcpListener,
    config: Arc<ServerConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let timeout = ext.config().request_timeout();
    super::server::serve_app(router(ext), listener, Some(config), timeout, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_or_empty_files_are_clear_errors() {
        let dir = std::env::temp_dir().join(format!("kubesched-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let err = server_config(&dir.join("nope.pem"), &empty).unwrap_err();
        assert!(matches!(err, TlsError::Cert { .. }), "{err}");
        let err = server_config(&empty, &empty).unwrap_err();
        assert!(err.to_string().contains("no certificate"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
