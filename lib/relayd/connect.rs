//! Dialling the broker: credentials and TLS as NATS users spell them
//! (`--creds FILE`, `nats+tls://`, `--tls-ca/--tls-cert/--tls-key`).

use std::path::PathBuf;

use anyhow::Context;

use super::url::Broker;

/// How to authenticate and encrypt.
#[derive(Clone, Debug, Default)]
pub struct Auth {
    /// A `.creds` file (JWT + NKey seed), as `nats --creds` takes.
    pub creds: Option<PathBuf>,
    /// CA certificate(s) that sign the server's certificate.
    pub tls_ca: Option<PathBuf>,
    /// Client certificate and key for mutual TLS.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

impl Auth {
    fn wants_tls(&self) -> bool {
        self.tls_ca.is_some() || self.tls_cert.is_some()
    }
}

/// Connects, reconnecting on its own later (the client retries forever and
/// replays subscriptions; JetStream calls made meanwhile fail and are retried
/// by the caller).
pub async fn connect(
    broker: &Broker,
    auth: &Auth,
    name: &str,
) -> anyhow::Result<async_nats::Client> {
    let mut options = async_nats::ConnectOptions::new()
        .name(name)
        .max_reconnects(None);
    if let Some(creds) = &auth.creds {
        options = options
            .credentials_file(creds)
            .await
            .with_context(|| format!("reading NATS credentials {}", creds.display()))?;
    }
    if let Some(ca) = &auth.tls_ca {
        options = options.add_root_certificates(ca.clone());
    }
    match (&auth.tls_cert, &auth.tls_key) {
        (Some(cert), Some(key)) => {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        (None, None) => {}
        _ => anyhow::bail!("--tls-cert and --tls-key go together"),
    }
    if broker.tls || auth.wants_tls() {
        options = options.require_tls(true);
    }
    options
        .connect(broker.server.as_str())
        .await
        .with_context(|| format!("connecting to NATS at {}", broker.server))
}
