//! Cartpanda's order list: `GET {list url}?created_at_min=…&created_at_max=…&payment_status=3&
//! limit=N&page=N` with `Authorization: Bearer`, answering in any of the shapes public clients
//! read ([`parse_page`]): `{"orders": {"data": [<order>…], "current_page", "last_page"}}`,
//! `{"orders": [<order>…], "meta": {"current_page", "last_page", "per_page", "total"}}`, or a bare
//! array; pages followed as [`Paging`] says. The filters' times are written in the shop's zone
//! when it is known, else in UTC with the window widened ([`ListTimes`]). One request at a time
//! per API token (so per shop: shops reconciled at once never wait on each other), at least
//! `min_interval` apart; `429` and `5xx` (and timeouts) backed off and retried, honouring
//! `Retry-After`; never past the caller's stop time; answers over the size cap refused. Errors
//! name the status, never the token or an order. The retry set ([`crate::reconcile::retry`])
//! re-reads single orders the same way (`CARTPANDA_ORDER_URL`, answering `{"order": {…}}`).

use crate::inbound::auth::Secret;
use crate::inbound::zone::{MAX_OFFSET_S, Zone};
use crate::reconcile::config::ListSettings;
use std::time::Duration;
use tokio::time::Instant;

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

/// How a run writes its filters' times: in the shop's zone when known, else in UTC; widened by
/// [`MAX_OFFSET_S`] on each side while the zone is unknown or has just changed, so that whether
/// Cartpanda reads them as UTC or as the shop's local time, no order falls between two windows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListTimes {
    pub zone: Option<&'static Zone>,
    pub widen: bool,
}

impl ListTimes {
    /// The window's `{from}` and `{to}` as the filters carry them (`YYYY-MM-DD HH:MM:SS`).
    pub fn bounds(&self, window: Window) -> (String, String) {
        let pad = if self.widen || self.zone.is_none() {
            MAX_OFFSET_S
        } else {
            0
        };
        let (from, to) = (window.from_s - pad, window.to_s + pad);
        let zone = self.zone.unwrap_or(Zone::utc());
        (zone.format(from), zone.format(to))
    }
}

/// One request of the list: which pass, window and page, its times written as `times` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub pass: Pass,
    pub window: Window,
    pub page: u32,
    pub times: ListTimes,
}

/// One page of the list, and what the answer says of the pages (absent when it does not).
#[derive(Debug, Default)]
pub struct Page {
    /// The orders, each shaped like the webhook's `order`.
    pub orders: Vec<serde_json::Value>,
    pub current_page: Option<u32>,
    pub last_page: Option<u32>,
    pub per_page: Option<u32>,
}

/// Where a pass's list ends: at `last_page` when the answer gives it; else at an empty page, at a
/// page shorter than the answer's `per_page`, or without one, shorter than the pass's first page
/// read — never merely shorter than the size asked for (`CARTPANDA_ORDER_LIST_LIMIT`), which
/// Cartpanda may ignore. A page with the very orders of the one before ends it too (an answer
/// that ignores the page number would otherwise be read to [`crate::reconcile::run::MAX_PAGES`]).
#[derive(Debug, Default, Clone)]
pub struct Paging {
    first_len: Option<usize>,
    previous: Option<(usize, String, String)>,
}

impl Paging {
    /// Whether the list goes on after `page`, page number `number`.
    pub fn more(&mut self, number: u32, page: &Page) -> bool {
        let len = page.orders.len();
        let id = |o: Option<&serde_json::Value>| o.map_or(String::new(), |o| o["id"].to_string());
        let seen = (len, id(page.orders.first()), id(page.orders.last()));
        if len == 0 || self.previous.as_ref() == Some(&seen) {
            return false;
        }
        self.previous = Some(seen);
        let first_len = *self.first_len.get_or_insert(len);
        match (page.last_page, page.per_page) {
            (Some(last), _) => number < last,
            (None, Some(per_page)) if per_page > 0 => len >= per_page as usize,
            (None, _) => len >= first_len,
        }
    }
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

/// The HTTP client of an API reconciliation reads (Cartpanda's order list, RedTrack's
/// conversions log): `timeout` per request, three redirects at most, the crate's user agent.
pub fn api_client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    crate::postback::redtrack::http_builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(3)))
        .redirect(reqwest::redirect::Policy::limited(3))
        .user_agent(concat!("cartpanda-redtrack/", env!("CARGO_PKG_VERSION")))
        .build()
}

impl OrderLister {
    pub fn new(settings: ListSettings) -> Result<Self, reqwest::Error> {
        let http = api_client(settings.timeout)?;
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
    pub fn page_url(&self, slug: &str, request: &PageRequest) -> String {
        let base = self.settings.url.replace(
            "{shop_slug}",
            &crate::inbound::verify::order_url("{order_id}", "", slug),
        );
        let (from, to) = request.times.bounds(request.window);
        let (limit, page) = (self.settings.limit.to_string(), request.page.to_string());
        let query = match (request.pass, &self.settings.updated_filter) {
            (Pass::Updated, Some(filter)) => {
                let mut query = format!("{}={}", enc(filter), enc(&from));
                if let Some(name) = self.settings.limit_param() {
                    query.push_str(&format!("&{}={limit}", enc(name)));
                }
                query + &format!("&{}={page}", enc(self.settings.page_param()))
            }
            _ => self
                .settings
                .query
                .replace("{from}", &enc(&from))
                .replace("{to}", &enc(&to))
                .replace("{limit}", &limit)
                .replace("{page}", &page),
        };
        format!("{base}?{query}")
    }

    /// Reads one page, waiting for the rate limit and retrying what can be retried, but never
    /// past `stop_at` ([`ListError::Deadline`]).
    pub async fn page(
        &self,
        slug: &str,
        token: &Secret,
        request: &PageRequest,
        stop_at: Instant,
    ) -> Result<Page, ListError> {
        let url = self.page_url(slug, request);
        let what = (request.pass.as_str(), request.page);
        let body = self.get(&url, token, what, stop_at).await?;
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
                tokio::time::sleep_until(ready).await;
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
            tokio::time::sleep_until(resume).await;
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

/// Reads a page in any shape seen: `{"orders": {"data": [...], "current_page", "last_page",
/// "per_page"}}` (a Laravel paginator), `{"orders": [...], "meta": {"current_page", "last_page",
/// "per_page", "total"}}` (v3 clients), a bare array, or the bare paginator `{"data": [...], …}`.
/// Entries that are not objects are dropped; absent or unreadable page numbers are `None`.
pub fn parse_page(body: &[u8]) -> Result<Page, ListError> {
    use serde_json::Value;
    let value: Value = serde_json::from_slice(body).map_err(|_| ListError::NotAList)?;
    let (items, about) = match value {
        Value::Array(items) => (items, Value::Null),
        Value::Object(mut map) => {
            let meta = map.remove("meta");
            let (items, rest) = match map.remove("orders") {
                Some(Value::Object(mut inner)) => (inner.remove("data"), inner),
                Some(orders) => (Some(orders), map),
                None => (map.remove("data"), map),
            };
            match items {
                Some(Value::Array(items)) => (items, meta.unwrap_or(Value::Object(rest))),
                _ => return Err(ListError::NotAList),
            }
        }
        _ => return Err(ListError::NotAList),
    };
    Ok(Page {
        orders: items.into_iter().filter(Value::is_object).collect(),
        current_page: page_number(about.get("current_page")),
        last_page: page_number(about.get("last_page")),
        per_page: page_number(about.get("per_page")),
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
        let utc = ListTimes {
            zone: Zone::find("UTC"),
            widen: false,
        };
        let request = |pass, page, times| PageRequest {
            pass,
            window,
            page,
            times,
        };
        assert_eq!(
            lister(None).page_url("minha loja", &request(Pass::Created, 2, utc)),
            "https://accounts.cartpanda.com/api/v3/minha%20loja/orders?created_at_min=2022-07-16+01%3A18%3A23&created_at_max=2022-07-16+02%3A18%3A23&payment_status=3&limit=100&page=2"
        );
        assert_eq!(
            lister(Some("updated_at_min")).page_url("loja", &request(Pass::Updated, 1, utc)),
            "https://accounts.cartpanda.com/api/v3/loja/orders?updated_at_min=2022-07-16+01%3A18%3A23&limit=100&page=1"
        );
        // In the shop's zone; widened by 14 hours while the zone is unknown.
        let sao_paulo = ListTimes {
            zone: Zone::find("America/Sao_Paulo"),
            widen: false,
        };
        assert_eq!(
            sao_paulo.bounds(window),
            ("2022-07-15 22:18:23".into(), "2022-07-15 23:18:23".into())
        );
        assert_eq!(
            ListTimes::default().bounds(window),
            ("2022-07-15 11:18:23".into(), "2022-07-16 16:18:23".into())
        );
        let changed = ListTimes {
            widen: true,
            ..sao_paulo
        };
        assert_eq!(changed.bounds(window).0, "2022-07-15 08:18:23");
    }

    #[test]
    fn every_list_shape_is_read() {
        let shapes: [&[u8]; 4] = [
            br#"{"orders":{"data":[{"id":1},"junk",{"id":2}],"current_page":"2","last_page":3,"per_page":2,"total":5}}"#,
            br#"{"orders":[{"id":1},{"id":2}],"meta":{"current_page":2,"last_page":"3","per_page":2,"total":5}}"#,
            br#"{"data":[{"id":1},{"id":2}],"current_page":2,"last_page":3,"per_page":2}"#,
            br#"[{"id":1},{"id":2}]"#,
        ];
        for (n, body) in shapes.into_iter().enumerate() {
            let p = parse_page(body).unwrap();
            assert_eq!(p.orders.len(), 2, "shape {n}");
            let pages = (p.current_page, p.last_page, p.per_page);
            if n < 3 {
                assert_eq!(pages, (Some(2), Some(3), Some(2)), "shape {n}");
            } else {
                assert_eq!(pages, (None, None, None));
            }
        }
        assert!(parse_page(b"[]").unwrap().orders.is_empty());
        assert!(parse_page(br#"{"orders":[]}"#).unwrap().orders.is_empty());
        assert_eq!(parse_order(br#"{"order":{"id":7}}"#).unwrap()["id"], 7);
        assert_eq!(parse_order(br#"{"id":8}"#).unwrap()["id"], 8);
        assert_eq!(parse_order(b"{}").unwrap_err(), ListError::NotAList);
        for bad in [
            &b"{}"[..],
            b"\"orders\"",
            b"<html>",
            b"{\"orders\":{\"data\":{}}}",
            b"{\"orders\":7}",
            b"{\"message\":\"Unauthenticated.\"}",
        ] {
            assert_eq!(parse_page(bad).unwrap_err(), ListError::NotAList);
        }
    }

    fn orders(ids: std::ops::Range<u32>) -> Vec<serde_json::Value> {
        ids.map(|id| serde_json::json!({ "id": id })).collect()
    }

    /// Pages until [`Paging`] says the list ended: the page numbers read.
    fn read(pages: &[Page]) -> u32 {
        let mut paging = Paging::default();
        let mut number = 1;
        while paging.more(number, &pages[number as usize - 1]) {
            number += 1;
        }
        number
    }

    fn page(ids: std::ops::Range<u32>, last_page: Option<u32>, per_page: Option<u32>) -> Page {
        Page {
            orders: orders(ids),
            current_page: None,
            last_page,
            per_page,
        }
    }

    #[test]
    fn pages_end_where_the_answer_says_or_at_a_short_page() {
        // last_page given: followed, whatever the pages' lengths.
        let pages = [
            page(0..3, Some(3), None),
            page(3..4, Some(3), None),
            page(4..7, Some(3), None),
        ];
        assert_eq!(read(&pages), 3);
        // No last_page, per_page given: a page shorter than it is the last.
        let pages = [
            page(0..5, None, Some(5)),
            page(5..10, None, Some(5)),
            page(10..12, None, Some(5)),
        ];
        assert_eq!(read(&pages), 3);
        // Neither (a bare array): a page shorter than the first is the last...
        let pages = [
            page(0..20, None, None),
            page(20..40, None, None),
            page(40..45, None, None),
        ];
        assert_eq!(read(&pages), 3);
        // ...and a page as long as the first asks for the next, an empty one ends it.
        let pages = [
            page(0..20, None, None),
            page(20..40, None, None),
            page(0..0, None, None),
        ];
        assert_eq!(read(&pages), 3);
        // Cartpanda ignoring the size asked for (100): pages of 20 are not short.
        let pages = [
            page(0..20, None, None),
            page(20..40, None, None),
            page(40..41, None, None),
        ];
        assert_eq!(read(&pages), 3);
        // An answer ignoring the page number: its repeated page ends the list.
        let pages = [page(0..20, None, None), page(0..20, None, None)];
        assert_eq!(read(&pages), 2);
        // An empty first page.
        assert_eq!(read(&[page(0..0, Some(4), Some(5))]), 1);
    }
}
