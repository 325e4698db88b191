//! The TLS material for `rediss…` URLs.

use redis::RedisResult;

/// The TLS material from `QRLOGIN_REDIS_CA_FILE` and
/// `QRLOGIN_REDIS_CLIENT_CERT_FILE`/`…_KEY_FILE` (PEM bytes). Empty means
/// the system's roots and no client certificate.
#[derive(Clone, Default)]
pub struct TlsFiles {
    pub ca: Option<Vec<u8>>,
    /// Certificate chain and private key, for mutual TLS.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl TlsFiles {
    pub(super) fn is_empty(&self) -> bool {
        self.ca.is_none() && self.client.is_none()
    }

    pub(super) fn certificates(&self) -> redis::TlsCertificates {
        redis::TlsCertificates {
            client_tls: self
                .client
                .as_ref()
                .map(|(cert, key)| redis::ClientTlsConfig {
                    client_cert: cert.clone(),
                    client_key: key.clone(),
                }),
            root_cert: self.ca.clone(),
        }
    }

    /// A client for one node URL: with our CA and client certificate when
    /// the URL is TLS and any was given, else as the URL says (a
    /// `rediss://` URL then verifies against the system's roots).
    pub(super) fn client(&self, url: &str) -> RedisResult<redis::Client> {
        if url.starts_with("rediss://") && !self.is_empty() {
            redis::Client::build_with_tls(url, self.certificates())
        } else {
            redis::Client::open(url)
        }
    }
}
