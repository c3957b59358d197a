//! Secrets kept out of the ledger's table and out of the template: SSM Parameter Store
//! SecureStrings, read with decryption (the AWS-managed `aws/ssm` key, whose key policy lets the
//! account's principals decrypt through SSM) by one SSM client, built on first use: a deployment
//! that keeps no secret in SSM never pays for it at cold start (docs/performance.md).
//!
//! Every parameter of a deployment lives under [`prefix`] (`/cartpanda-redtrack/<table>/`), the
//! one path the function's role may read: a named shop's Cartpanda API token at
//! [`shop_api_token`] and its RedTrack API key at [`shop_redtrack_api_key`], and, when the
//! deployment names them instead of giving values, `WEBHOOK_TOKEN_PARAMETER`,
//! `CARTPANDA_API_TOKEN_PARAMETER` and `REDTRACK_API_KEY_PARAMETER` (read once at cold start, so
//! a rotation needs a new instance, not a redeploy).

use crate::inbound::auth::Secret;
use async_trait::async_trait;

/// Why a secret could not be read or written (never its value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("SSM parameter `{0}` does not exist")]
    NotFound(String),
    #[error("SSM parameter `{name}` could not be used: {reason}")]
    Unavailable { name: String, reason: String },
}

/// Where secrets are kept.
#[async_trait]
pub trait SecretStore: Send + Sync {
    async fn get(&self, name: &str) -> Result<Secret, SecretError>;
    async fn put(&self, name: &str, value: &Secret) -> Result<(), SecretError>;
}

/// The path under which every parameter of the deployment whose ledger is `table` lives.
pub fn prefix(table: &str) -> String {
    format!("/cartpanda-redtrack/{table}/")
}

/// The parameter holding a named shop's Cartpanda API token.
pub fn shop_api_token(table: &str, shop: &str) -> String {
    format!("{}shops/{shop}/cartpanda-api-token", prefix(table))
}

/// The parameter holding a named shop's RedTrack API key (`shop put --redtrack-api-key`), read
/// by reconciliation's daily count of what RedTrack recorded ([`crate::reconcile::rtcount`]).
pub fn shop_redtrack_api_key(table: &str, shop: &str) -> String {
    format!("{}shops/{shop}/redtrack-api-key", prefix(table))
}

/// Checks that a parameter name the configuration gives lies under [`prefix`].
pub fn check_parameter(name: &str, table: &str) -> Result<(), String> {
    let prefix = prefix(table);
    if name.starts_with(&prefix) && name.len() > prefix.len() {
        Ok(())
    } else {
        Err(format!(
            "must name an SSM parameter under {prefix} (the only path the function may read), got `{name}`"
        ))
    }
}

/// SSM Parameter Store. The client is built on the first read or write, not with the store:
/// building an SDK client costs about as much CPU as the rest of init (its endpoint rules and
/// partitions are parsed from JSON), and most instances never read a parameter.
#[cfg(feature = "runtime")]
pub struct SsmSecrets {
    conf: aws_sdk_ssm::Config,
    client: std::sync::OnceLock<aws_sdk_ssm::Client>,
}

#[cfg(feature = "runtime")]
impl SsmSecrets {
    /// A store whose client will use `conf`.
    pub fn new(conf: aws_sdk_ssm::Config) -> Self {
        SsmSecrets {
            conf,
            client: std::sync::OnceLock::new(),
        }
    }

    /// A store whose client will use the shared AWS configuration.
    pub fn from_sdk(aws: &aws_config::SdkConfig) -> Self {
        Self::new(aws_sdk_ssm::Config::from(aws))
    }

    fn client(&self) -> &aws_sdk_ssm::Client {
        self.client
            .get_or_init(|| aws_sdk_ssm::Client::from_conf(self.conf.clone()))
    }
}

#[cfg(feature = "runtime")]
#[async_trait]
impl SecretStore for SsmSecrets {
    async fn get(&self, name: &str) -> Result<Secret, SecretError> {
        use aws_sdk_ssm::error::ProvideErrorMetadata;
        let answer = self
            .client()
            .get_parameter()
            .name(name)
            .with_decryption(true)
            .send()
            .await
            .map_err(|e| match e.code() {
                Some("ParameterNotFound") => SecretError::NotFound(name.to_owned()),
                code => SecretError::Unavailable {
                    name: name.to_owned(),
                    reason: code.unwrap_or("no answer").to_owned(),
                },
            })?;
        answer
            .parameter
            .and_then(|p| p.value)
            .map(Secret::new)
            .ok_or_else(|| SecretError::NotFound(name.to_owned()))
    }

    async fn put(&self, name: &str, value: &Secret) -> Result<(), SecretError> {
        use aws_sdk_ssm::error::ProvideErrorMetadata;
        self.client()
            .put_parameter()
            .name(name)
            .value(value.expose())
            .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
            .overwrite(true)
            .send()
            .await
            .map_err(|e| SecretError::Unavailable {
                name: name.to_owned(),
                reason: e.code().unwrap_or("no answer").to_owned(),
            })?;
        Ok(())
    }
}

/// Secrets in memory, for tests of the logic above the store.
#[derive(Default)]
pub struct MemorySecrets(std::sync::Mutex<std::collections::HashMap<String, String>>);

#[async_trait]
impl SecretStore for MemorySecrets {
    async fn get(&self, name: &str) -> Result<Secret, SecretError> {
        let values = self.0.lock().expect("memory secrets lock");
        values
            .get(name)
            .map(|v| Secret::new(v.clone()))
            .ok_or_else(|| SecretError::NotFound(name.to_owned()))
    }

    async fn put(&self, name: &str, value: &Secret) -> Result<(), SecretError> {
        let mut values = self.0.lock().expect("memory secrets lock");
        values.insert(name.to_owned(), value.expose().to_owned());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_live_under_the_deployments_path() {
        assert_eq!(
            shop_api_token("ledger-1", "loja-sp"),
            "/cartpanda-redtrack/ledger-1/shops/loja-sp/cartpanda-api-token"
        );
        assert!(check_parameter("/cartpanda-redtrack/ledger-1/webhook-token", "ledger-1").is_ok());
        for bad in [
            "/cartpanda-redtrack/ledger-2/webhook-token",
            "/cartpanda-redtrack/ledger-1/",
            "webhook-token",
            "/other/ledger-1/x",
        ] {
            let e = check_parameter(bad, "ledger-1").unwrap_err();
            assert!(e.contains("/cartpanda-redtrack/ledger-1/"), "{bad}: {e}");
        }
    }
}
