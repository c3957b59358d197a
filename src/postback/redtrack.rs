//! The RedTrack client: one GET per postback, retried within the invocation's deadline on any
//! transport error (connect, timeout, …), 429 and 5xx. Errors never carry the postback URL (it holds PII):
//! only scheme and host.

use async_trait::async_trait;
use std::time::Duration;
use tokio::time::Instant;
use url::Url;

/// Most bytes of RedTrack's reply read (it is only drained, never interpreted).
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024;

/// RedTrack's answer to an accepted postback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub status: u16,
    pub attempts: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("RedTrack ({target}) refused the postback with HTTP {status}")]
    Rejected {
        target: String,
        status: u16,
        attempts: u32,
    },
    #[error("RedTrack ({target}) failed: {reason} after {attempts} attempt(s)")]
    Unavailable {
        target: String,
        reason: String,
        last_status: Option<u16>,
        attempts: u32,
    },
}

impl SendError {
    pub fn attempts(&self) -> u32 {
        match self {
            SendError::Rejected { attempts, .. } | SendError::Unavailable { attempts, .. } => {
                *attempts
            }
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            SendError::Rejected { status, .. } => Some(*status),
            SendError::Unavailable { last_status, .. } => *last_status,
        }
    }
}

#[async_trait]
pub trait Tracker: Send + Sync {
    /// Sends one postback, giving up by `deadline`.
    async fn send(&self, url: &Url, deadline: Instant) -> Result<Accepted, SendError>;
}

/// The shortest timeout of a postback's first attempt, whatever the deadline leaves.
pub const FIRST_ATTEMPT_FLOOR: Duration = Duration::from_secs(1);

/// The timeout of the attempt after `attempts` earlier ones, with `left` before the margin. The
/// first attempt always gets a usable one, even when the margin leaves nothing (a deadline under
/// 3.6 s: Lambda's default 3 s timeout, a local emulator's past deadline): 50 ms failed every
/// RedTrack slower than that. Retries keep within the margin.
#[cfg(feature = "runtime")]
fn attempt_timeout(timeout: Duration, left: Duration, attempts: u32) -> Duration {
    let floor = if attempts == 0 {
        FIRST_ATTEMPT_FLOOR
    } else {
        Duration::from_millis(50)
    };
    timeout.min(left.max(floor))
}

/// Retry policy for one invocation.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// Time kept free before the deadline for the calls after RedTrack (queue or release and the
    /// record): [`crate::ops::budget::AFTER_SEND`] by default.
    pub margin: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(2),
            margin: crate::ops::budget::AFTER_SEND,
        }
    }
}

/// RedTrack over HTTPS with reqwest; the client is built once at cold start.
#[cfg(feature = "runtime")]
#[derive(Debug, Clone)]
pub struct RedTrackClient {
    http: reqwest::Client,
    timeout: Duration,
    retry: RetryPolicy,
}

/// TLS for RedTrack and the Cartpanda API: rustls (aws-lc, as the AWS SDK), trusting the Mozilla
/// roots compiled in by `webpki-roots`. Reading and parsing the system certificate store instead
/// (reqwest's default) took most of the cold start (docs/performance.md). `None` — the caller
/// keeps reqwest's default, the system store — when `SSL_CERT_FILE` or `SSL_CERT_DIR` names
/// certificates to trust (a TLS-inspecting proxy's CA, say; Lambda sets neither).
#[cfg(feature = "runtime")]
pub fn tls_config() -> Option<rustls::ClientConfig> {
    tls_config_for(crate::ops::aws::custom_ca_configured())
}

/// [`tls_config`] with the environment's answer given: `None` when a custom CA is configured.
#[cfg(feature = "runtime")]
fn tls_config_for(custom_ca: bool) -> Option<rustls::ClientConfig> {
    if custom_ca {
        return None;
    }
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Some(config)
}

/// A reqwest client builder with [`tls_config`].
#[cfg(feature = "runtime")]
pub fn http_builder() -> reqwest::ClientBuilder {
    let builder = reqwest::Client::builder();
    match tls_config() {
        Some(tls) => builder.tls_backend_preconfigured(tls),
        None => builder,
    }
}

#[cfg(feature = "runtime")]
impl RedTrackClient {
    pub fn new(timeout: Duration, retry: RetryPolicy) -> Result<Self, reqwest::Error> {
        let http = http_builder()
            .connect_timeout(timeout.min(Duration::from_secs(3)))
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::limited(3))
            .user_agent(concat!("cartpanda-redtrack/", env!("CARGO_PKG_VERSION")))
            .pool_idle_timeout(Duration::from_secs(50))
            .build()?;
        Ok(RedTrackClient {
            http,
            timeout,
            retry,
        })
    }

    async fn attempt(
        &self,
        url: &Url,
        timeout: Duration,
    ) -> Result<u16, (String, Option<u16>, bool)> {
        let response = self
            .http
            .get(url.clone())
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| {
                let e = e.without_url();
                let reason = if e.is_timeout() {
                    "timeout"
                } else if e.is_connect() {
                    "connection failed"
                } else {
                    "request failed"
                };
                (reason.to_owned(), None, true)
            })?;
        let status = response.status().as_u16();
        drain(response).await;
        match status {
            200..=299 => Ok(status),
            429 | 500..=599 => Err((format!("HTTP {status}"), Some(status), true)),
            _ => Err((format!("HTTP {status}"), Some(status), false)),
        }
    }
}

#[cfg(feature = "runtime")]
async fn drain(mut response: reqwest::Response) {
    let mut read = 0usize;
    while let Ok(Some(chunk)) = response.chunk().await {
        read += chunk.len();
        if read >= MAX_RESPONSE_BYTES {
            break;
        }
    }
}

/// Reads a reply's body, refusing one over `cap` bytes without reading more than `cap` (the
/// declared length is checked first): the clients of Cartpanda's API read JSON they interpret.
#[cfg(feature = "runtime")]
pub async fn read_capped(mut response: reqwest::Response, cap: usize) -> Result<Vec<u8>, String> {
    let too_large = || format!("the answer is larger than {cap} bytes");
    if response.content_length().is_some_and(|n| n > cap as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|_| "the answer could not be read".to_owned())?
    {
        if body.len() + chunk.len() > cap {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Exponential backoff with full jitter.
pub fn backoff(retry: &RetryPolicy, attempt: u32, jitter: f64) -> Duration {
    let exp = retry.base_delay.saturating_mul(1u32 << attempt.min(16));
    exp.min(retry.max_delay)
        .mul_f64(jitter.clamp(0.0, 1.0))
        .max(Duration::from_millis(10))
}

#[cfg(feature = "runtime")]
fn jitter() -> f64 {
    (crate::ops::clock::random_u64() % 1000) as f64 / 1000.0
}

#[cfg(feature = "runtime")]
#[async_trait]
impl Tracker for RedTrackClient {
    async fn send(&self, url: &Url, deadline: Instant) -> Result<Accepted, SendError> {
        let target = crate::postback::template::redact(url);
        let mut attempts = 0;
        loop {
            let now = Instant::now();
            let left = deadline
                .saturating_duration_since(now)
                .saturating_sub(self.retry.margin);
            if left < Duration::from_millis(50) && attempts > 0 {
                break;
            }
            let timeout = attempt_timeout(self.timeout, left, attempts);
            attempts += 1;
            match self.attempt(url, timeout).await {
                Ok(status) => return Ok(Accepted { status, attempts }),
                Err((_, Some(status), false)) => {
                    return Err(SendError::Rejected {
                        target,
                        status,
                        attempts,
                    });
                }
                Err((reason, last_status, _)) => {
                    if attempts >= self.retry.max_attempts {
                        return Err(SendError::Unavailable {
                            target,
                            reason,
                            last_status,
                            attempts,
                        });
                    }
                    let pause = backoff(&self.retry, attempts - 1, jitter());
                    let left = deadline
                        .saturating_duration_since(Instant::now())
                        .saturating_sub(self.retry.margin);
                    if pause + Duration::from_millis(50) > left {
                        return Err(SendError::Unavailable {
                            target,
                            reason,
                            last_status,
                            attempts,
                        });
                    }
                    tokio::time::sleep(pause).await;
                }
            }
        }
        Err(SendError::Unavailable {
            target,
            reason: "no time left before the deadline".to_owned(),
            last_status: None,
            attempts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "runtime")]
    #[test]
    fn tls_trusts_the_compiled_in_roots_unless_a_custom_ca_is_configured() {
        // Each branch asserted on its own, whatever this machine's environment says.
        let config = tls_config_for(false).expect("the compiled-in roots make a TLS config");
        assert_eq!(config.alpn_protocols, [b"http/1.1".to_vec()]);
        assert!(
            tls_config_for(true).is_none(),
            "a custom CA falls back to reqwest's system store"
        );
        assert_eq!(
            tls_config().is_none(),
            crate::ops::aws::custom_ca_configured()
        );
        assert!(http_builder().build().is_ok());
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy::default();
        assert_eq!(backoff(&p, 0, 1.0), Duration::from_millis(200));
        assert_eq!(backoff(&p, 1, 1.0), Duration::from_millis(400));
        assert_eq!(backoff(&p, 10, 1.0), Duration::from_secs(2));
        assert_eq!(backoff(&p, 3, 0.0), Duration::from_millis(10));
        assert!(backoff(&p, 2, 0.5) <= Duration::from_millis(400));
    }
}
