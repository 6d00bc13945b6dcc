//! TLS to Redis (`rediss…` URLs): the rustls connector, trusting either the system's certificate
//! authorities or only those of `REDIS_TLS_CA_CERT_FILE` (a private CA), with rustls' ring
//! provider named explicitly so the process-wide default provider never matters. Server
//! certificates are always verified (chain and name); there is no switch to turn that off.

use std::{path::Path, sync::Arc};

use domain::{Error, Result};
use fred::{
    prelude::TlsConnector,
    rustls::{
        ClientConfig, RootCertStore,
        crypto::ring,
        pki_types::{CertificateDer, pem::PemObject},
    },
};

/// The connector for TLS connections, trusting the authorities of `ca_file` when given,
/// otherwise the system's.
///
/// # Errors
/// `Unavailable { Cache }` when the file cannot be read, holds no certificate, or the system's
/// store cannot be read.
pub(crate) fn connector(ca_file: Option<&Path>) -> Result<TlsConnector> {
    let roots = match ca_file {
        Some(path) => roots_from_file(path)?,
        None => system_roots()?,
    };
    let config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|_| Error::cache("the TLS library offers no protocol version for redis"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(config))
}

/// Every certificate of a PEM file, as the only trusted authorities.
fn roots_from_file(path: &Path) -> Result<RootCertStore> {
    let unreadable = || {
        Error::cache(format!(
            "REDIS_TLS_CA_CERT_FILE {} cannot be read as PEM certificates",
            path.display()
        ))
    };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|_| unreadable())?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|_| unreadable())?;
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certificates);
    if added == 0 {
        return Err(Error::cache(format!(
            "REDIS_TLS_CA_CERT_FILE {} holds no usable CA certificate",
            path.display()
        )));
    }
    Ok(roots)
}

/// The system's trusted authorities (on Debian, `/etc/ssl/certs`).
fn system_roots() -> Result<RootCertStore> {
    let found = fred::rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(Error::cache(
            "no trusted certificate authority found on this system for redis TLS; \
             set REDIS_TLS_CA_CERT_FILE",
        ));
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_empty_ca_file_is_a_clear_error() {
        let missing = connector(Some(Path::new("/nonexistent/ca.pem")));
        assert!(
            matches!(&missing, Err(Error::Unavailable { message, .. }) if message.contains("REDIS_TLS_CA_CERT_FILE")),
            "{missing:?}"
        );
        let dir =
            std::env::temp_dir().join(format!("akr-tls-{}", domain::contract::unique_suffix()));
        std::fs::create_dir_all(&dir).ok();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").ok();
        let result = connector(Some(&empty));
        assert!(
            matches!(&result, Err(Error::Unavailable { message, .. }) if message.contains("no usable CA")),
            "{result:?}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
