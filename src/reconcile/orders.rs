//! Cartpanda's order list: `GET {list url}?created_at_min=…&created_at_max=…&payment_status=3&page=N`
//! with `Authorization: Bearer`, answering `{"orders": {"data": [<order>…], "current_page": n,
//! "last_page": m}}`. One request at a time per API token (so per shop: shops reconciled at
//! once never wait on each other), at least `min_interval` apart; `429` and `5xx` (and
//! timeouts) backed off and retried, honouring `Retry-After`; never past the caller's stop time;
//! answers over the size cap refused. Errors name the status, never the token or an order.
//! The retry set ([`crate::reconcile::retry`]) re-reads single orders the same way
//! (`CARTPANDA_ORDER_URL`, answering `{"order": {…}}`).

use crate::inbound::auth::Secret;
use crate::reconcile::config::ListSettings;
use std::time::{Duration, Instant};

/// Which list a request reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Paid orders created in the window: their sales (purchase and upsells).
    Created,
    /// Orders updated since the window's start: their refunds and chargebacks, and the sales
    /// of those whose own `payment_status` is 3 (paid after they were created).
    Updated,
    /// Paid orders created in the last `RECONCILE_PAID_LOOKBACK_H`, at least daily when there
    /// is no "updated since" filter: the sales of orders paid after their window was listed.
    Lookback,
}

impl Pass {
    pub fn as_str(self) -> &'static str {
        match self {
            Pass::Created => "created",
            Pass::Updated => "updated",
            Pass::Lookback => "lookback",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "created" => Some(Pass::Created),
            "updated" => Some(Pass::Updated),
            "lookback" => Some(Pass::Lookback),
            _ => None,
        }
    }
}

/// The time window of a run, in epoch seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from_s: i64,
    pub to_s: i64,
}

/// One page of the list.
#[derive(Debug, Default)]
pub struct Page {
    /// The orders, each shaped like the webhook's `order`.
    pub orders: Vec<serde_json::Value>,
    pub current_page: u32,
    pub last_page: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListError {
    #[error("Cartpanda refused the API token (HTTP {0}); check the shop's Cartpanda API token")]
    Unauthorized(u16),
    #[error(
        "Cartpanda's order list answered 404; check the shop slug and CARTPANDA_ORDER_LIST_URL"
    )]
    NotFound,
    #[error("Cartpanda's order list refused the request with HTTP {0}")]
    Refused(u16),
    #[error("Cartpanda's order list is unavailable: {0}")]
    Unavailable(String),
    #[error("Cartpanda's order list answered more than {0} bytes")]
    TooLarge(usize),
    #[error("Cartpanda's order list answered something that is not an order list")]
    NotAList,
    #[error("no time left before the run's deadline")]
    Deadline,
}

/// When an API token's last request was sent; locked for a whole request and its retries, so
/// one token's calls go one at a time.
type Pace = std::sync::Arc<tokio::sync::Mutex<Option<Instant>>>;

/// The order list over HTTPS.
pub struct OrderLister {
    http: reqwest::Client,
    pub settings: ListSettings,
    /// Each API token's pace, by the token's SHA-256 digest.
    paces: std::sync::Mutex<std::collections::HashMap<String, Pace>>,
}

/// Percent-encodes a query value.
fn enc(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

impl OrderLister {
    pub fn new(settings: ListSettings) -> Result<Self, reqwest::Error> {
        let http = crate::postback::redtrack::http_builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(3)))
            .redirect(reqwest::redirect::Policy::limited(3))
            .user_agent(concat!("cartpanda-redtrack/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(OrderLister {
            http,
            settings,
            paces: std::sync::Mutex::new(std::collections::HashMap::new()),
        })
    }

    /// `token`'s pace (shared by the shops that share a token).
    fn pace(&self, token: &Secret) -> Pace {
        let key = crate::inbound::auth::Tokens::hex_digest(token.expose());
        let mut paces = self.paces.lock().unwrap_or_else(|e| e.into_inner());
        paces.entry(key).or_default().clone()
    }

    /// The URL of one page.
    pub fn page_url(&self, slug: &str, pass: Pass, window: Window, page: u32) -> String {
        let base = self.settings.url.replace(
            "{shop_slug}",
            &crate::inbound::verify::order_url("{order_id}", "", slug),
        );
        let from = crate::inbound::datetime::format_utc(window.from_s);
        let to = crate::inbound::datetime::format_utc(window.to_s);
        let query = match (pass, &self.settings.updated_filter) {
            (Pass::Updated, Some(filter)) => format!(
                "{}={}&{}={page}",
                enc(filter),
                enc(&from),
                enc(self.settings.page_param())
            ),
            _ => self
                .settings
                .query
                .replace("{from}", &enc(&from))
                .replace("{to}", &enc(&to))
                .replace("{page}", &page.to_string()),
        };
        format!("{base}?{query}")
    }

    /// Reads one page, waiting for the rate limit and retrying what can be retried, but never
    /// past `stop_at` ([`ListError::Deadline`]).
    pub async fn page(
        &self,
        slug: &str,
        token: &Secret,
        pass: Pass,
        window: Window,
        page: u32,
        stop_at: Instant,
    ) -> Result<Page, ListError> {
        let url = self.page_url(slug, pass, window, page);
        let body = self
            .get(&url, token, (pass.as_str(), page), stop_at)
            .await?;
        parse_page(&body)
    }

    /// Reads one order from `url` (its order API URL) as the list would carry it; `None` when
    /// Cartpanda answers 404. Paced, retried and bounded like [`OrderLister::page`].
    pub async fn order(
        &self,
        url: &str,
        token: &Secret,
        stop_at: Instant,
    ) -> Result<Option<serde_json::Value>, ListError> {
        match self.get(url, token, ("order", 0), stop_at).await {
            Ok(body) => parse_order(&body).map(Some),
            Err(ListError::NotFound) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// One GET's body, waiting for the rate limit and retrying what can be retried, but never
    /// past `stop_at`; `what` (the pass or `order`, and the page) names it in the log.
    async fn get(
        &self,
        url: &str,
        token: &Secret,
        what: (&str, u32),
        stop_at: Instant,
    ) -> Result<Vec<u8>, ListError> {
        let pace = self.pace(token);
        let mut last = pace.lock().await;
        let mut attempt = 0;
        loop {
            attempt += 1;
            if let Some(at) = *last {
                let ready = at + self.settings.min_interval;
                if ready > stop_at {
                    return Err(ListError::Deadline);
                }
                tokio::time::sleep_until(ready.into()).await;
            }
            let now = Instant::now();
            if now >= stop_at {
                return Err(ListError::Deadline);
            }
            *last = Some(now);
            let timeout = self.settings.timeout.min(stop_at - now);
            let wait = match self.attempt(url, token, timeout).await {
                Ok(body) => return Ok(body),
                Err(Retry::No(err)) => return Err(err),
                Err(Retry::After(err, retry_after)) => {
                    if attempt >= self.settings.max_attempts {
                        return Err(err);
                    }
                    let backoff = Duration::from_secs(1 << (attempt - 1).min(5));
                    let wait = retry_after.unwrap_or(backoff).min(Duration::from_secs(120));
                    tracing::warn!(
                        pass = what.0,
                        page = what.1,
                        attempt,
                        wait_ms = wait.as_millis() as u64,
                        error = %err,
                        "order list: retrying"
                    );
                    wait
                }
            };
            let resume = Instant::now() + wait;
            if resume >= stop_at {
                return Err(ListError::Deadline);
            }
            tokio::time::sleep_until(resume.into()).await;
        }
    }

    /// One request: sent, its status checked, its answer read.
    async fn attempt(
        &self,
        url: &str,
        token: &Secret,
        timeout: Duration,
    ) -> Result<Vec<u8>, Retry> {
        let response = self
            .http
            .get(url)
            .bearer_auth(token.expose())
            .header("accept", "application/json")
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| {
                let reason = if e.is_timeout() {
                    "timeout"
                } else if e.is_connect() {
                    "connection failed"
                } else {
                    "request failed"
                };
                Retry::After(ListError::Unavailable(reason.to_owned()), None)
            })?;
        check_status(&response)?;
        self.body(response).await
    }

    /// The answer's body, refused past [`ListSettings::max_bytes`].
    async fn body(&self, mut response: reqwest::Response) -> Result<Vec<u8>, Retry> {
        let max = self.settings.max_bytes;
        if response.content_length().is_some_and(|n| n as usize > max) {
            return Err(Retry::No(ListError::TooLarge(max)));
        }
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > max {
                        return Err(Retry::No(ListError::TooLarge(max)));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(body),
                Err(_) => {
                    return Err(Retry::After(
                        ListError::Unavailable("answer cut short".to_owned()),
                        None,
                    ));
                }
            }
        }
    }
}

/// What an answer's status means: read it (2xx), retry it (429, 5xx, after `Retry-After` when
/// given) or give up.
fn check_status(response: &reqwest::Response) -> Result<(), Retry> {
    let status = response.status().as_u16();
    match status {
        200..=299 => Ok(()),
        401 | 403 => Err(Retry::No(ListError::Unauthorized(status))),
        404 => Err(Retry::No(ListError::NotFound)),
        429 | 500..=599 => {
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            Err(Retry::After(
                ListError::Unavailable(format!("HTTP {status}")),
                retry_after,
            ))
        }
        _ => Err(Retry::No(ListError::Refused(status))),
    }
}

enum Retry {
    No(ListError),
    After(ListError, Option<Duration>),
}

fn page_number(value: Option<&serde_json::Value>) -> Option<u32> {
    match value? {
        serde_json::Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Reads a page: `{"orders": {"data": [...], "current_page", "last_page"}}` (also the bare
/// paginator `{"data": [...], …}`). Entries that are not objects are dropped.
pub fn parse_page(body: &[u8]) -> Result<Page, ListError> {
    let mut value: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| ListError::NotAList)?;
    let mut paginator = match value.get_mut("orders") {
        Some(inner) if inner.is_object() => inner.take(),
        _ => value,
    };
    let orders = match paginator.get_mut("data").map(serde_json::Value::take) {
        Some(serde_json::Value::Array(items)) => {
            items.into_iter().filter(|o| o.is_object()).collect()
        }
        _ => return Err(ListError::NotAList),
    };
    let current_page = page_number(paginator.get("current_page")).unwrap_or(1);
    let last_page = page_number(paginator.get("last_page")).unwrap_or(current_page);
    Ok(Page {
        orders,
        current_page,
        last_page,
    })
}

/// Reads one order: `{"order": {…}}`, or the bare order object.
pub fn parse_order(body: &[u8]) -> Result<serde_json::Value, ListError> {
    let mut value: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| ListError::NotAList)?;
    let order = match value.get_mut("order") {
        Some(inner) if inner.is_object() => inner.take(),
        _ => value,
    };
    if order.get("id").is_some() {
        Ok(order)
    } else {
        Err(ListError::NotAList)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lister(updated: Option<&str>) -> OrderLister {
        let env: std::collections::HashMap<&str, &str> = updated
            .map(|u| ("CARTPANDA_ORDER_LIST_UPDATED_FILTER", u))
            .into_iter()
            .collect();
        let settings = crate::reconcile::config::ReconcileSettings::from_lookup(|k| {
            env.get(k).map(|v| (*v).to_owned())
        })
        .unwrap();
        OrderLister::new(settings.list).unwrap()
    }

    #[test]
    fn urls_carry_the_filters() {
        let window = Window {
            from_s: 1_657_934_303,
            to_s: 1_657_934_303 + 3600,
        };
        assert_eq!(
            lister(None).page_url("minha loja", Pass::Created, window, 2),
            "https://accounts.cartpanda.com/api/v3/minha%20loja/orders?created_at_min=2022-07-16+01%3A18%3A23&created_at_max=2022-07-16+02%3A18%3A23&payment_status=3&page=2"
        );
        assert_eq!(
            lister(Some("updated_at_min")).page_url("loja", Pass::Updated, window, 1),
            "https://accounts.cartpanda.com/api/v3/loja/orders?updated_at_min=2022-07-16+01%3A18%3A23&page=1"
        );
    }

    #[test]
    fn pages_are_read_leniently() {
        let p = parse_page(
            br#"{"orders":{"data":[{"id":1},"junk",{"id":2}],"current_page":"2","last_page":3,"per_page":2,"total":5}}"#,
        )
        .unwrap();
        assert_eq!((p.orders.len(), p.current_page, p.last_page), (2, 2, 3));
        let bare = parse_page(br#"{"data":[],"current_page":1,"last_page":1}"#).unwrap();
        assert!(bare.orders.is_empty());
        assert_eq!(parse_order(br#"{"order":{"id":7}}"#).unwrap()["id"], 7);
        assert_eq!(parse_order(br#"{"id":8}"#).unwrap()["id"], 8);
        assert_eq!(parse_order(b"{}").unwrap_err(), ListError::NotAList);
        for bad in [
            &b"[]"[..],
            b"{\"orders\":[]}",
            b"<html>",
            b"{\"orders\":{\"data\":{}}}",
        ] {
            assert_eq!(parse_page(bad).unwrap_err(), ListError::NotAList);
        }
    }
}
