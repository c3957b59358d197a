//! AWS SDK configuration shared by every function (bridge, redrive, reconcile): loaded once at cold start, with the timeouts of
//! [`crate::ops::budget`] so a hanging DynamoDB or SQS cannot eat the invocation (the handler then
//! answers 503) and the step after RedTrack always fits before the deadline.
//!
//! Two choices keep cold start and each call cheap (docs/performance.md):
//! - the HTTPS client trusts the Amazon Trust Services roots, which every AWS endpoint chains to,
//!   instead of loading and parsing the system's whole certificate store at cold start (unless
//!   `SSL_CERT_FILE` / `SSL_CERT_DIR` ask for more, as behind a TLS-inspecting proxy);
//! - stalled-stream protection is off: a throughput watchdog polled on every request and response
//!   body, redundant with the connect, attempt and operation timeouts below.

use crate::ops::budget;
use aws_config::stalled_stream_protection::StalledStreamProtectionConfig;
use aws_config::timeout::TimeoutConfig;
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore};

/// Amazon Root CA 1–4 and Starfield Services Root G2 (PEM).
const AMAZON_ROOTS: &[u8] = include_bytes!("amazon_trust_services_roots.pem");

/// Whether `SSL_CERT_FILE` or `SSL_CERT_DIR` names certificates to trust (a TLS-inspecting
/// proxy's CA on a workstation, say). Then the system store is loaded as well, as by default.
pub fn custom_ca_configured() -> bool {
    ["SSL_CERT_FILE", "SSL_CERT_DIR"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|p| !p.is_empty()))
}

/// The HTTPS client of every AWS SDK client: rustls (aws-lc), the Amazon roots (and the system
/// store only when [`custom_ca_configured`]).
pub fn http_client() -> aws_sdk_dynamodb::config::SharedHttpClient {
    let trust = TrustStore::empty()
        .with_native_roots(custom_ca_configured())
        .with_pem_certificate(AMAZON_ROOTS);
    let builder = aws_smithy_http_client::Builder::new().tls_provider(tls::Provider::Rustls(
        tls::rustls_provider::CryptoMode::AwsLc,
    ));
    match TlsContext::builder().with_trust_store(trust).build() {
        Ok(context) => builder.tls_context(context).build_https(),
        // Unreachable with the bundled roots; the SDK's default trust store still works.
        Err(_) => builder.build_https(),
    }
}

/// The SDK configuration of the functions: timeouts from [`crate::ops::budget`].
pub async fn load() -> aws_config::SdkConfig {
    load_with(
        TimeoutConfig::builder()
            .connect_timeout(budget::SDK_CONNECT)
            .operation_attempt_timeout(budget::SDK_ATTEMPT)
            .operation_timeout(budget::SDK_OPERATION)
            .build(),
    )
    .await
}

/// The SDK configuration of operator commands run from a workstation (`cartpanda-redtrack-admin`):
/// no invocation deadline to fit, so a slow link or a large scan is waited for.
pub async fn load_for_operator() -> aws_config::SdkConfig {
    load_with(
        TimeoutConfig::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            .operation_attempt_timeout(std::time::Duration::from_secs(20))
            .operation_timeout(std::time::Duration::from_secs(60))
            .build(),
    )
    .await
}

async fn load_with(timeouts: TimeoutConfig) -> aws_config::SdkConfig {
    // Lambda always sets AWS_REGION; a local run without one falls back rather than failing
    // every call.
    let region =
        aws_config::meta::region::RegionProviderChain::default_provider().or_else("us-east-1");
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(region)
        .http_client(http_client())
        .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
        .timeout_config(timeouts)
        .load()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    #[test]
    fn the_bundled_amazon_roots_are_five_valid_trust_anchors() {
        let mut store = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(AMAZON_ROOTS) {
            store
                .add(cert.expect("PEM"))
                .expect("a valid root certificate");
        }
        assert_eq!(store.len(), 5);
        assert!(
            TlsContext::builder()
                .with_trust_store(
                    TrustStore::empty()
                        .with_native_roots(false)
                        .with_pem_certificate(AMAZON_ROOTS)
                )
                .build()
                .is_ok()
        );
    }
}
