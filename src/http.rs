//! The HTTP client shared by the InfluxDB sink and the batch API threads: ureq with rustls on
//! `ring`, certificate verification always on, Mozilla's roots by default or the plant's own
//! CA bundle (`tls.ca_file`), no redirects (a write must not be replayed somewhere else), a
//! global timeout per request. Plain HTTP is used only where a URL says `http://`.

use std::path::Path;
use std::time::Duration;
use ureq::tls::{parse_pem, PemItem, RootCerts, TlsConfig};

/// Read a PEM bundle; every certificate in it becomes a trusted root.
pub fn load_ca(path: &Path) -> Result<Vec<ureq::tls::Certificate<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs: Vec<_> = parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

pub fn agent(timeout: Duration, ca: Option<&[ureq::tls::Certificate<'static>]>) -> ureq::Agent {
    let tls = match ca {
        Some(certs) => TlsConfig::builder()
            .root_certs(RootCerts::new_with_certs(certs))
            .build(),
        None => TlsConfig::builder().build(),
    };
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .tls_config(tls)
        .user_agent(concat!("dyeing-gateway/", env!("CARGO_PKG_VERSION")))
        .build()
        .new_agent()
}
