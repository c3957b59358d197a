//! The HTTP adapter, and only that: request → route and shop, credentials and input → the
//! service ([`Bridge::deliver`]) → response. It decides nothing about the delivery: skipping,
//! previews, dry runs, verification and processing are the service's, and so is the status
//! table ([`Answer::status`], [`AppError::status`]). Nothing but the token is looked at before
//! the token is checked.

use crate::bridge::{Answer, Bridge, DeliveryOptions, Handled};
use crate::inbound::error::AppError;
use crate::inbound::webhook::{self, Delivery, MAX_BODY_BYTES};
use crate::ops::config::Profile;
use lambda_http::http::{HeaderValue, Method, StatusCode, header};
use lambda_http::{Body, Request, RequestExt, Response};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

/// Header set by [`crate::inbound::runtime`] when API Gateway's `isBase64Encoded` body did not decode.
pub const BAD_BASE64_MARKER: &str = "x-cartpanda-redtrack-invalid-base64";
/// Header that carries the token when it is not in the query.
pub const TOKEN_HEADER: &str = "x-webhook-token";

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// `None` for the default shop (configured by the environment).
    pub shop: Option<String>,
    pub s2s: bool,
}

/// Reads the route from the path: `…/cartpanda`, `…/cartpanda/s2s`, `…/cartpanda/<shop>`,
/// `…/cartpanda/<shop>/s2s` (any stage prefix). A path without a `cartpanda` segment is the
/// default webhook, so the function also works behind a bare function URL.
pub fn route(path: &str) -> Option<Route> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let Some(at) = segments.iter().rposition(|s| *s == "cartpanda") else {
        return Some(Route {
            shop: None,
            s2s: false,
        });
    };
    match &segments[at + 1..] {
        [] => Some(Route {
            shop: None,
            s2s: false,
        }),
        ["s2s"] => Some(Route {
            shop: None,
            s2s: true,
        }),
        [shop] => Some(Route {
            shop: Some((*shop).to_owned()),
            s2s: false,
        }),
        [shop, "s2s"] => Some(Route {
            shop: Some((*shop).to_owned()),
            s2s: true,
        }),
        _ => None,
    }
}

/// Handles one request; never fails, never panics on input.
pub async fn handle(bridge: &Bridge, req: Request) -> Response<Body> {
    match handle_inner(bridge, &req).await {
        Ok(response) => response,
        Err(err) => {
            tracing::warn!(
                status = err.status(),
                reason = err.code(),
                "request refused"
            );
            crate::ops::metrics::rejected(err.code());
            let mut response = json_response(err.status(), &json!({ "error": err.to_string() }));
            if let Some(allow) = err.allow() {
                response
                    .headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            response
        }
    }
}

async fn handle_inner(bridge: &Bridge, req: &Request) -> Result<Response<Body>, AppError> {
    let path = req.raw_http_path();
    let path = if path.is_empty() {
        req.uri().path()
    } else {
        path
    };
    let route = route(path).ok_or(AppError::NotFound)?;
    let profile: Arc<Profile> = match &route.shop {
        None => Arc::clone(&bridge.config.profile),
        Some(name) => bridge
            .shop_profile(name)
            .await?
            .ok_or(AppError::Auth(crate::inbound::auth::AuthError::Invalid))?,
    };
    authenticate(&profile, req)?;
    let delivery = if route.s2s {
        s2s_delivery(req)?
    } else {
        webhook_delivery(req)?
    };
    let options = DeliveryOptions {
        dry_run: query_flag(req, "dry_run"),
        deadline_ms: req
            .lambda_context_ref()
            .map(|c| c.deadline as i64)
            .filter(|d| *d > 0),
        via: match route.s2s {
            true => crate::ledger::claim::Via::S2s,
            false => crate::ledger::claim::Via::Webhook,
        },
    };
    let answer = bridge.deliver(&profile, delivery, options).await?;
    Ok(answer_response(&answer))
}

fn webhook_delivery(req: &Request) -> Result<Delivery, AppError> {
    if req.method() != Method::POST {
        return Err(AppError::MethodNotAllowed(req.method().to_string()));
    }
    if req.headers().contains_key(BAD_BASE64_MARKER) {
        return Err(AppError::BadBase64);
    }
    if let Some(ct) = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    {
        let media = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if media == "application/x-www-form-urlencoded" || media.starts_with("multipart/") {
            return Err(AppError::UnsupportedMediaType(media));
        }
    }
    let body: &[u8] = req.body().as_ref();
    if body.len() > MAX_BODY_BYTES {
        return Err(webhook::ParseError::TooLarge(body.len()).into());
    }
    Ok(webhook::parse(body)?)
}

fn s2s_delivery(req: &Request) -> Result<Delivery, AppError> {
    if req.method() != Method::GET {
        return Err(AppError::S2sMethodNotAllowed(req.method().to_string()));
    }
    let query: HashMap<String, String> = req
        .query_string_parameters_ref()
        .map(|q| {
            q.iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        })
        .unwrap_or_default();
    Ok(crate::inbound::s2s::delivery(&query))
}

/// Whether the query says `name=1` (or `true`/`yes`).
fn query_flag(req: &Request, name: &str) -> bool {
    req.query_string_parameters_ref()
        .and_then(|q| q.first(name))
        .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
}

fn authenticate(profile: &Profile, req: &Request) -> Result<(), AppError> {
    let query = req
        .query_string_parameters_ref()
        .and_then(|q| q.first("token"));
    let header = req.headers().get(TOKEN_HEADER).map(HeaderValue::as_bytes);
    profile.tokens.verify(query, header).map_err(AppError::Auth)
}

/// The service's answer as JSON, with its status (and `Retry-After` for a live lease).
fn answer_response(answer: &Answer) -> Response<Body> {
    let body = match &answer.result {
        Handled::Skipped { reason, preview } => json!({
            "order_id": answer.order_id,
            "event": answer.event,
            "skipped": reason.code(),
            "message": reason.message(),
            "conversions": preview,
        }),
        Handled::Converted(report) => {
            let mut body = json!({
                "order_id": answer.order_id.as_deref().unwrap_or_default(),
                "event": answer.event,
                "conversions": report.conversions,
            });
            if let (Some(error), Value::Object(map)) = (report.error(), &mut body) {
                map.insert("error".to_owned(), Value::from(error));
            }
            body
        }
    };
    let mut response = json_response(answer.status(), &body);
    if let Some(secs) = answer.retry_after_s() {
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    response
}

fn json_response(status: u16, body: &Value) -> Response<Body> {
    let mut response = Response::new(Body::Text(body.to_string()));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let r = |shop: Option<&str>, s2s| {
            Some(Route {
                shop: shop.map(str::to_owned),
                s2s,
            })
        };
        assert_eq!(route("/cartpanda"), r(None, false));
        assert_eq!(route("/prod/cartpanda/"), r(None, false));
        assert_eq!(route("/cartpanda/s2s"), r(None, true));
        assert_eq!(route("/cartpanda/loja-1"), r(Some("loja-1"), false));
        assert_eq!(route("/cartpanda/loja-1/s2s"), r(Some("loja-1"), true));
        assert_eq!(route("/"), r(None, false));
        assert_eq!(route(""), r(None, false));
        assert_eq!(route("/cartpanda/a/b/c"), None);
    }
}
