//! Several Cartpanda stores on one deployment. Each named store (`POST /cartpanda/{store}`) has
//! its own token(s), postback template, conversion types and test-order settings, kept in the dedup
//! table as a `store#<name>` item (tokens stored as SHA-256 digests), read on first use and cached
//! for a short time. The environment keeps configuring the default store (`POST /cartpanda`).

use crate::conversion::classify::{
    CartxTestOrders, ConversionTypes, DEFAULT_CONVERSION_TYPES, Rules,
};
use crate::inbound::auth::{Secret, Tokens};
use crate::ledger::claim::LedgerError;
use crate::ops::clock::Clock;
use crate::ops::config::Profile;
use crate::postback::template::PostbackTemplate;
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// How long a store's settings are cached before they are read again.
pub const CACHE_TTL_MS: i64 = 60_000;

/// A store as kept in the table.
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
    pub cartpanda_api_token: Option<String>,
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
            .field("verified", &self.cartpanda_api_token.is_some())
            .field("click_id_sources", &self.click_id_sources)
            .field("reconcile", &self.reconcile)
            .field("shop_slug", &self.shop_slug)
            .field("s2s", &self.s2s)
            .field("verify_orders", &self.verify_orders)
            .finish_non_exhaustive()
    }
}

/// Checks a store name: 1–64 of `a-z 0-9 - _`, and not a route word.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !ok {
        return Err(format!("store name `{name}` must be 1-64 of a-z 0-9 - _"));
    }
    if name == "s2s" {
        return Err("`s2s` is a route, not a store name".to_owned());
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
            if !matches!(c.as_str(), "USD" | "EUR" | "BRL") {
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
        if self.reconcile && (self.shop_slug.is_none() || self.cartpanda_api_token.is_none()) {
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

/// A cached profile (`None`: no such store) and when it was read.
type Cached = (Option<Arc<Profile>>, i64);

/// The profiles of named stores, each read on first use and kept [`CACHE_TTL_MS`] (unknown names
/// too, so probing the URL cannot hammer the table).
pub struct ShopCache {
    directory: Arc<dyn ShopDirectory>,
    entries: Mutex<HashMap<String, Cached>>,
}

impl ShopCache {
    pub fn new(directory: Arc<dyn ShopDirectory>) -> Self {
        ShopCache {
            directory,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The store's profile; `Ok(None)` when there is no such (valid) store.
    pub async fn profile(
        &self,
        name: &str,
        clock: &dyn Clock,
    ) -> Result<Option<Arc<Profile>>, LedgerError> {
        if check_name(name).is_err() {
            return Ok(None);
        }
        let now = clock.now_ms();
        if let Some((profile, at)) = self.entries.lock().expect("store cache lock").get(name) {
            if now - at < CACHE_TTL_MS {
                return Ok(profile.clone());
            }
        }
        let profile = match self.directory.get(name).await? {
            None => None,
            Some(record) => match record.profile() {
                Ok(p) => Some(Arc::new(p)),
                Err(problem) => {
                    tracing::error!(shop = name, problem = %problem, "shop settings are invalid; deliveries refused");
                    None
                }
            },
        };
        self.entries
            .lock()
            .expect("store cache lock")
            .insert(name.to_owned(), (profile.clone(), now));
        Ok(profile)
    }
}
