//! TLS to Redis: the certificates `redis.tls_*` name.

use redis::{ClientTlsConfig, TlsCertificates};

use crate::config::RedisSettings;

/// The CAs and the client certificate `settings` name, read from their
/// files; `None` when they name none (the system's roots, no client
/// certificate). A file that cannot be read is the error, named.
pub(crate) fn certificates(settings: &RedisSettings) -> Result<Option<TlsCertificates>, String> {
    let read = |setting: &str, path: &str| -> Result<Option<Vec<u8>>, String> {
        if path.is_empty() {
            return Ok(None);
        }
        std::fs::read(path)
            .map(Some)
            .map_err(|e| format!("redis.{setting} {path}: {e}"))
    };
    let root_cert = read("tls_ca_file", &settings.tls_ca_file)?;
    let client_tls = match (
        read("tls_cert_file", &settings.tls_cert_file)?,
        read("tls_key_file", &settings.tls_key_file)?,
    ) {
        (Some(client_cert), Some(client_key)) => Some(ClientTlsConfig {
            client_cert,
            client_key,
        }),
        _ => None,
    };
    Ok(
        (root_cert.is_some() || client_tls.is_some()).then_some(TlsCertificates {
            client_tls,
            root_cert,
        }),
    )
}
