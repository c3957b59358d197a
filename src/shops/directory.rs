//! Several Cartpanda shops on one deployment. Each named shop (`POST /cartpanda/{shop}`) has
//! its own token(s), postback template, conversion types and test-order settings, kept in the
//! ledger's table as a `store#<name>` item (a frozen key; tokens stored as SHA-256 digests), read on
//! first use and cached for a short time. The environment keeps configuring the default shop
//! (`POST /cartpanda`).

use crate::conversion::currency::is_sum_currency;
use crate::conversion::rules::{CartxTestOrders, ConversionTypes, DEFAULT_CONVERSION_TYPES, Rules};
use crate::inbound::auth::{Secret, Tokens};
use crate::ledger::claim::LedgerError;
use crate::ops::clock::Clock;
use crate::ops::config::Profile;
use crate::ops::secrets::{SecretError, SecretStore};
use crate::postback::template::PostbackTemplate;
use async_trait::async_trait;
use std::sync::Arc;

/// How long a shop's settings are cached before they are read again.
pub const CACHE_TTL_MS: i64 = 60_000;

/// A shop as kept in the ledger's table.
#[derive(Clone, PartialEq, Eq)]
pub struct ShopRecord {
    pub name: String,
    /// Hex SHA-256 digests of the accepted tokens (one, or two while rotating).
    pub token_digests: Vec<String>,
    pub postback_url: String,
    pub conversion_types: String,
    pub send_test_orders: bool,
    /// `send` or `skip` for orders marked only by `is_cartx_test`; empty means `send`.
    pub cartx_test_orders: String,
    pub sum_currency: Option<String>,
    pub normalize_pii: bool,
    /// A token kept in the record by an older version (`shop migrate-secrets` moves it to SSM).
    pub cartpanda_api_token: Option<String>,
    /// The SSM SecureString holding the shop's Cartpanda API token.
    pub cartpanda_api_token_parameter: Option<String>,
    /// `CLICKID_SOURCES` of this shop; empty means the default.
    pub click_id_sources: String,
    /// Reconciled against Cartpanda's order list (`--reconcile`, see [`crate::reconcile`]).
    pub reconcile: bool,
    /// The shop's Cartpanda slug, for the order list (required with `reconcile`).
    pub shop_slug: Option<String>,
    /// Fed by Cartpanda's S2S postback rather than webhooks: reconciled with the S2S event IDs.
    pub s2s: bool,
    /// `false` keeps the API token for reconciliation only (`--verify-orders false`).
    pub verify_orders: bool,
    /// Its time zone (`--timezone`), for reconciliation until its listed orders show theirs.
    pub timezone: Option<String>,
}

impl std::fmt::Debug for ShopRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShopRecord")
            .field("name", &self.name)
            .field("tokens", &self.token_digests.len())
            .field("conversion_types", &self.conversion_types)
            .field("send_test_orders", &self.send_test_orders)
            .field("cartx_test_orders", &self.cartx_test_orders)
            .field("sum_currency", &self.sum_currency)
            .field("normalize_pii", &self.normalize_pii)
            .field(
                "verified",
                &(self.cartpanda_api_token.is_some()
                    || self.cartpanda_api_token_parameter.is_some()),
            )
            .field("click_id_sources", &self.click_id_sources)
            .field("reconcile", &self.reconcile)
            .field("shop_slug", &self.shop_slug)
            .field("s2s", &self.s2s)
            .field("verify_orders", &self.verify_orders)
            .field("timezone", &self.timezone)
            .finish_non_exhaustive()
    }
}

/// Checks a shop name: 1–64 of `a-z 0-9 - _`, and not a route word.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !ok {
        return Err(format!("shop name `{name}` must be 1-64 of a-z 0-9 - _"));
    }
    if name == "s2s" {
        return Err("`s2s` is a route, not a shop name".to_owned());
    }
    Ok(())
}

/// Checks the name of a shop being saved (`shop put`, the new name of `shop rename`): besides
/// [`check_name`], `default` is refused, the name the deployment's own shop goes by in refusal
/// records (`refused#default#…`) and the report, so the ledger's keys could not tell
/// the two apart. (Every other name is told apart: within a key no part holds `#`, and the
/// default shop's keys have one part fewer.) A shop saved as `default` by an older version keeps
/// working ([`check_name`] reads it); `shop rename` moves it.
pub fn check_new_name(name: &str) -> Result<(), String> {
    check_name(name)?;
    if name == "default" {
        return Err(
            "`default` names the deployment's own shop in the ledger's records: choose another name (an existing shop `default` keeps working; `shop rename default <new>` moves it)"
                .to_owned(),
        );
    }
    Ok(())
}

impl ShopRecord {
    /// The record's profile; an invalid record is reported, never half-used.
    pub fn profile(&self) -> Result<Profile, String> {
        check_name(&self.name)?;
        let tokens = Tokens::from_hex_digests(self.token_digests.iter().map(String::as_str))?;
        let postback = PostbackTemplate::parse(&self.postback_url, false)
            .map_err(|e| format!("postback URL {e}"))?;
        let types = if self.conversion_types.trim().is_empty() {
            DEFAULT_CONVERSION_TYPES
        } else {
            &self.conversion_types
        };
        let conversion_types =
            ConversionTypes::parse(types).map_err(|e| format!("conversion types: {e}"))?;
        if let Some(c) = &self.sum_currency {
            if !is_sum_currency(c) {
                return Err(format!("sum currency `{c}` must be USD, EUR or BRL"));
            }
        }
        let cartx_test_orders = match self.cartx_test_orders.trim() {
            "" => CartxTestOrders::default(),
            text => CartxTestOrders::parse(text).map_err(|e| format!("cartx test orders {e}"))?,
        };
        let click_id_sources = match self.click_id_sources.trim() {
            "" => crate::conversion::clickid::ClickIdSources::default(),
            text => crate::conversion::clickid::ClickIdSources::parse(text)
                .map_err(|e| format!("click ID sources {e}"))?,
        };
        let has_api_token =
            self.cartpanda_api_token.is_some() || self.cartpanda_api_token_parameter.is_some();
        crate::reconcile::config::timezone(self.timezone.as_deref())?;
        if self.reconcile && (self.shop_slug.is_none() || !has_api_token) {
            return Err(
                "reconcile needs the shop's Cartpanda slug and a Cartpanda API token".to_owned(),
            );
        }
        Ok(Profile {
            shop: Some(self.name.clone()),
            tokens,
            postback,
            rules: Rules {
                conversion_types,
                send_test_orders: self.send_test_orders,
                cartx_test_orders,
                sum_currency: self.sum_currency.clone(),
            },
            normalize_pii: self.normalize_pii,
            cartpanda_api_token: self
                .cartpanda_api_token
                .clone()
                .filter(|_| self.verify_orders)
                .map(Secret::new),
            click_id_sources,
        })
    }
}

#[async_trait]
pub trait ShopDirectory: Send + Sync {
    async fn get(&self, name: &str) -> Result<Option<ShopRecord>, LedgerError>;
}

/// A cached profile (`None`: no such shop) and when it was read.
type Cached = (Option<Arc<Profile>>, i64);

/// Most shop names remembered at once, known and unknown alike: far above any agency's shops, and
/// a bound on what requests for made-up names can make a warm instance hold.
pub const CACHE_CAPACITY: usize = 1024;

/// The profiles of named shops, each read on first use and kept [`CACHE_TTL_MS`] (unknown names
/// too, so probing the URL costs at most one read per name and TTL), in a cache of at most
/// [`CACHE_CAPACITY`] names. Concurrent requests for a name not cached share one read.
pub struct ShopCache {
    directory: Arc<dyn ShopDirectory>,
    entries: quick_cache::sync::Cache<String, Cached>,
    /// Where shops' Cartpanda API tokens are kept (SSM).
    secrets: Option<Arc<dyn SecretStore>>,
}

impl ShopCache {
    pub fn new(directory: Arc<dyn ShopDirectory>) -> Self {
        ShopCache {
            directory,
            entries: quick_cache::sync::Cache::new(CACHE_CAPACITY),
            secrets: None,
        }
    }

    /// Reads shops' Cartpanda API tokens from `secrets` (cached with the rest of the profile).
    pub fn with_secrets(self, secrets: Arc<dyn SecretStore>) -> Self {
        ShopCache {
            secrets: Some(secrets),
            ..self
        }
    }

    /// How many names are cached now (at most [`CACHE_CAPACITY`]).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no name is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The shop's profile; `Ok(None)` when there is no such (valid) shop.
    pub async fn profile(
        &self,
        name: &str,
        clock: &dyn Clock,
    ) -> Result<Option<Arc<Profile>>, LedgerError> {
        if check_name(name).is_err() {
            return Ok(None);
        }
        let now = clock.now_ms();
        match self.entries.get(name) {
            Some((profile, at)) if now - at < CACHE_TTL_MS => return Ok(profile),
            Some(_) => {
                self.entries.remove(name);
            }
            None => {}
        }
        let guard = match self.entries.get_value_or_guard_async(name).await {
            Ok((profile, _)) => return Ok(profile),
            Err(guard) => guard,
        };
        let profile = self.read(name).await?;
        let _ = guard.insert((profile.clone(), now));
        Ok(profile)
    }

    async fn read(&self, name: &str) -> Result<Option<Arc<Profile>>, LedgerError> {
        let Some(record) = self.directory.get(name).await? else {
            return Ok(None);
        };
        let mut profile = match record.profile() {
            Ok(p) => p,
            Err(problem) => {
                tracing::error!(shop = name, problem = %problem, "shop settings are invalid; deliveries refused");
                return Ok(None);
            }
        };
        // The token is read only when the shop's orders are verified, as a token in the clear
        // is used only then (`ShopRecord::profile`).
        let parameter = record
            .cartpanda_api_token_parameter
            .as_ref()
            .filter(|_| record.verify_orders);
        if let Some(parameter) = parameter {
            match self.api_token(parameter).await {
                Ok(token) => profile.cartpanda_api_token = Some(token),
                Err(SecretError::NotFound(_)) => {
                    tracing::error!(
                        shop = name,
                        "the shop's Cartpanda API token parameter does not exist; deliveries refused"
                    );
                    return Ok(None);
                }
                Err(e) => return Err(LedgerError::Unavailable(e.to_string())),
            }
        }
        Ok(Some(Arc::new(profile)))
    }

    /// A shop's Cartpanda API token from the parameter its record names.
    pub async fn api_token(&self, parameter: &str) -> Result<Secret, SecretError> {
        match &self.secrets {
            Some(secrets) => secrets.get(parameter).await,
            None => Err(SecretError::Unavailable {
                name: parameter.to_owned(),
                reason: "no secret store configured".to_owned(),
            }),
        }
    }
}
