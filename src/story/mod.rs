//! An order's story: `cartpanda-redtrack-admin order <order-id> [--shop NAME] [--format
//! table|json]` lists every record the ledger holds about one order — each conversion (event ID,
//! type, sum, currency, state, attempts, when, the input that brought it, RedTrack's last status),
//! each note ("needs a look") and each refusal (422) — and, when Cartpanda's API can be read, the
//! conversions the order makes that have no record (never sent, or released after RedTrack
//! failed). Never PII: the table holds none. Records written before `via`, `attempts` and
//! `rt_status` existed show "unknown" (`null` in JSON).
//!
//! Finding the records: with the shop's Cartpanda API token and slug, the order is read from the
//! API, its conversions rebuilt as reconciliation rebuilds them (same event IDs), and each key
//! read (`GetItem` each: the conversions, the two notes, the refusals of each event); without
//! them, a paced scan of the table filtered by `order_id`. The command says which, and what it
//! cost. `resend` ([`resend`]) re-sends one conversion.

pub mod resend;

use crate::conversion::classify::{self, Decision};
use crate::inbound::auth::Secret;
use crate::ledger::dynamo::{DynamoLedger, get_n, get_opt_s, get_s, record_from_item};
use crate::ledger::keys::{self, Key};
use crate::ops::config::Profile;
use crate::reconcile::run::{Reconciler, Target, deliveries_of};
use aws_sdk_dynamodb::types::AttributeValue;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

type Item = HashMap<String, AttributeValue>;

/// The Cartpanda events whose refusals (422) are looked up by key.
const REFUSED_EVENTS: [&str; 5] = [
    "order.paid",
    "order.upsell",
    "order.refunded",
    "order.chargeback",
    "order.updated",
];

/// How the records were found, and what it cost.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Found {
    /// `event_ids` (the order read from Cartpanda's API, each key read) or `scan`.
    pub method: &'static str,
    /// Requests to Cartpanda's API.
    pub api_requests: u32,
    /// `GetItem` calls (one strongly consistent read each).
    pub get_items: u32,
    /// Items the scan read, in how many pages.
    pub scanned_items: u64,
    pub scan_pages: u32,
    /// Why Cartpanda's API was not used (a scan).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why_scan: Option<String>,
}

/// One line of the story.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Line {
    /// `conversion`, `not_recorded` (made by the order, no record), `note` or `refusal`.
    pub kind: &'static str,
    pub event_id: Option<String>,
    /// The Cartpanda event that brought it.
    pub event: Option<String>,
    pub conversion_type: Option<String>,
    pub sum: Option<String>,
    pub currency: Option<String>,
    /// `SENT`, `QUEUED`, `FAILED`, `IN_PROGRESS`; `no record`; `not sent`; `refused (422)`.
    pub state: String,
    /// Postback attempts so far; `None`: unknown (or none made).
    pub attempts: Option<u32>,
    /// When (UTC): sent, else last written, else claimed; noted; refused.
    pub at: Option<String>,
    #[serde(skip)]
    pub at_ms: Option<i64>,
    /// The input that brought it; `None`: unknown.
    pub via: Option<String>,
    /// RedTrack's last HTTP status; `None`: unknown (or none).
    pub rt_status: Option<u16>,
    /// A note's reason, or what a refusal refused.
    pub note: Option<String>,
}

/// Everything the ledger holds about one order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Story {
    pub order_id: String,
    /// `None` for the default shop.
    pub shop: Option<String>,
    pub found: Found,
    pub lines: Vec<Line>,
}

/// The shop an order belongs to: its profile, and Cartpanda's API when its token and slug are
/// known (else why not).
pub struct Shop {
    pub profile: Arc<Profile>,
    pub api: Result<Target, String>,
}

/// The shop named `name` (`None`: the deployment's own).
pub async fn shop(rec: &Reconciler, name: Option<&str>) -> Result<Shop, String> {
    let Some(name) = name else {
        return Ok(default_shop(rec));
    };
    let record = crate::shops::directory::ShopDirectory::get(&rec.table, name)
        .await
        .map_err(|e| format!("could not read shop `{name}`: {e}"))?
        .ok_or_else(|| format!("no shop `{name}`"))?;
    let profile = Arc::new(
        record
            .profile()
            .map_err(|p| format!("shop `{name}`: {p}"))?,
    );
    let why_not = format!(
        "shop `{name}` has no Cartpanda API token and slug (shop put … --cartpanda-api-token … --shop-slug …)"
    );
    let api = match &record.shop_slug {
        None => Err(why_not),
        Some(slug) => match crate::reconcile::shop_api_token(rec, &record).await {
            Ok(token) => Ok(Target {
                shop: Some(name.to_owned()),
                profile: Arc::clone(&profile),
                slug: slug.clone(),
                token,
                s2s: record.s2s,
                timezone: crate::reconcile::config::timezone(record.timezone.as_deref())
                    .ok()
                    .flatten(),
            }),
            Err(_) => Err(why_not),
        },
    };
    Ok(Shop { profile, api })
}

/// The default shop: reconciliation's token and slug, else the verification token and
/// `CARTPANDA_SHOP_SLUG`.
fn default_shop(rec: &Reconciler) -> Shop {
    let profile = Arc::clone(&rec.bridge.config.profile);
    let api = match crate::reconcile::default_target(rec) {
        Some(target) => Ok(target),
        None => {
            let token = profile
                .cartpanda_api_token
                .clone()
                .or_else(|| std::env::var("CARTPANDA_API_TOKEN").ok().map(Secret::new));
            match (token, std::env::var("CARTPANDA_SHOP_SLUG").ok()) {
                (Some(token), Some(slug)) => Ok(Target {
                    shop: None,
                    profile: Arc::clone(&profile),
                    slug,
                    token,
                    s2s: false,
                    timezone: crate::reconcile::config::timezone(
                        std::env::var("CARTPANDA_TIMEZONE").ok().as_deref(),
                    )
                    .ok()
                    .flatten(),
                }),
                _ => Err("the default shop has no Cartpanda API token and slug (CARTPANDA_API_TOKEN or CARTPANDA_API_TOKEN_PARAMETER, and CARTPANDA_SHOP_SLUG)".to_owned()),
            }
        }
    };
    Shop { profile, api }
}

/// An order or event ID as keys hold it: `[A-Za-z0-9._-]`, at most 128 characters.
pub fn check_id(what: &str, id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    match ok {
        true => Ok(()),
        false => Err(format!(
            "`{id}` is not {what} (letters, digits, `.`, `_`, `-`)"
        )),
    }
}

/// The order as Cartpanda's API gives it now; `None` when it has no such order.
pub async fn read_order(
    rec: &Reconciler,
    target: &Target,
    order_id: &str,
) -> Result<Option<serde_json::Value>, String> {
    let template = &rec.bridge.config.cartpanda_order_url;
    let url = crate::inbound::verify::order_url(template, &target.slug, order_id);
    let stop_at = Instant::now() + Duration::from_secs(60);
    rec.lister
        .order(&url, &target.token, stop_at)
        .await
        .map_err(|e| format!("could not read order {order_id} from Cartpanda's API: {e}"))
}

/// One conversion the order makes, rebuilt from Cartpanda's API.
#[derive(Debug, Clone)]
struct Rebuilt {
    event: &'static str,
    event_id: String,
    conversion_type: String,
    sum: String,
    currency: Option<String>,
    /// The event IDs earlier versions gave it (an S2S shop's upsell), read when its own has no
    /// record.
    former: Vec<String>,
}

/// The conversions an order read from the API makes, as reconciliation rebuilds them (each
/// event ID once).
fn rebuilt(target: &Target, value: &serde_json::Value) -> Vec<Rebuilt> {
    let mut out: Vec<Rebuilt> = Vec::new();
    for (event, delivery) in deliveries_of(value, target) {
        let Ok(classified) = classify::classify(&delivery, &target.profile.rules) else {
            continue;
        };
        let Decision::Convert(conversions) = &classified.decision else {
            continue;
        };
        let order_id = classified.order_id.as_deref().unwrap_or_default();
        for c in conversions {
            if out.iter().all(|r| r.event_id != c.event_id) {
                out.push(Rebuilt {
                    event,
                    event_id: c.event_id.clone(),
                    conversion_type: c.conversion_type.clone(),
                    sum: crate::inbound::money::format_sum(c.amount),
                    currency: c.currency.clone(),
                    former: crate::bridge::former::former_event_ids(order_id, c),
                });
            }
        }
    }
    out
}

/// What `order` asks.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub order_id: &'a str,
    pub shop: Option<&'a str>,
    /// `table` or `json`.
    pub format: &'a str,
    /// Most items the scan reads a second (when it scans).
    pub rate: u32,
}

/// `order`: the story of one order, as a table or JSON.
pub async fn command(rec: &Reconciler, request: &Request<'_>) -> Result<String, String> {
    check_id("an order ID", request.order_id)?;
    if !matches!(request.format, "table" | "json") {
        return Err(format!(
            "--format must be table or json, got `{}`",
            request.format
        ));
    }
    let story = story(rec, request).await?;
    Ok(match request.format {
        "json" => serde_json::to_string_pretty(&story).map_err(|e| e.to_string())?,
        _ => table(&story),
    })
}

/// Finds and reads the order's records: by key from its event IDs when Cartpanda's API can be
/// read, else by a paced scan.
pub async fn story(rec: &Reconciler, request: &Request<'_>) -> Result<Story, String> {
    let shop = shop(rec, request.shop).await?;
    let order_id = request.order_id;
    let mut story = Story {
        order_id: order_id.to_owned(),
        shop: request.shop.map(str::to_owned),
        ..Story::default()
    };
    let why_scan = match &shop.api {
        Ok(target) => match read_order(rec, target, order_id).await {
            Ok(Some(value)) => {
                by_event_ids(rec, target, &value, &mut story).await?;
                return Ok(sorted(story));
            }
            Ok(None) => format!("Cartpanda's API has no order {order_id}"),
            Err(e) => e,
        },
        Err(why) => why.clone(),
    };
    story.found.api_requests = u32::from(shop.api.is_ok());
    story.found.why_scan = Some(why_scan);
    by_scan(&rec.table, &shop.profile, request, &mut story).await?;
    Ok(sorted(story))
}

/// The records under the keys the order's event IDs (and its notes and refusals) name, one
/// `GetItem` each (and one per event ID an earlier version gave an S2S shop's upsell, when its
/// own has no record); a conversion the order makes without a record is `not_recorded`.
async fn by_event_ids(
    rec: &Reconciler,
    target: &Target,
    value: &serde_json::Value,
    story: &mut Story,
) -> Result<(), String> {
    story.found.method = "event_ids";
    story.found.api_requests = 1;
    let (shop, order_id) = (target.shop.as_deref(), story.order_id.clone());
    let conversions = rebuilt(target, value);
    let mut keys: Vec<String> = conversions
        .iter()
        .map(|c| target.profile.record_key(&c.event_id, false))
        .collect();
    for reason in [
        crate::ledger::notes::NO_CLICK_ID,
        crate::ledger::notes::TOO_OLD,
    ] {
        keys.push(keys::note(shop, &order_id, reason));
    }
    keys.extend(REFUSED_EVENTS.map(|e| keys::refusal(shop, &order_id, e)));
    for (n, key) in keys.iter().enumerate() {
        let conversion = conversions.get(n);
        let formers = conversion.map_or(&[][..], |c| c.former.as_slice());
        let former_keys = formers
            .iter()
            .map(|id| target.profile.record_key(id, false));
        let mut line = None;
        for key in std::iter::once(key.clone()).chain(former_keys) {
            story.found.get_items += 1;
            let item = rec.table.read(&key).await.map_err(|e| e.to_string())?;
            line = item.as_ref().and_then(line_of);
            if line.is_some() {
                break;
            }
        }
        match (line, conversion) {
            (Some(line), _) => story.lines.push(line),
            (None, Some(c)) => story.lines.push(not_recorded(c)),
            (None, None) => {}
        }
    }
    Ok(())
}

/// A conversion the order makes that has no record.
fn not_recorded(c: &Rebuilt) -> Line {
    Line {
        kind: "not_recorded",
        event_id: Some(c.event_id.clone()),
        event: Some(c.event.to_owned()),
        conversion_type: Some(c.conversion_type.clone()),
        sum: Some(c.sum.clone()),
        currency: c.currency.clone(),
        state: "no record".to_owned(),
        note: Some("never sent, released after RedTrack failed, or expired".to_owned()),
        ..Line::default()
    }
}

/// The order's records found by a scan of the whole table filtered by `order_id`, paced at
/// `rate` items a second; only the shop's, never dry runs'.
async fn by_scan(
    table: &DynamoLedger,
    profile: &Profile,
    request: &Request<'_>,
    story: &mut Story,
) -> Result<(), String> {
    story.found.method = "scan";
    let rate = request.rate.max(1);
    let started = Instant::now();
    let mut start: Option<Item> = None;
    loop {
        let page = table
            .client()
            .scan()
            .table_name(table.table())
            .limit(rate.min(1000) as i32)
            .filter_expression("order_id = :order_id")
            .expression_attribute_values(":order_id", AttributeValue::S(request.order_id.into()))
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .map_err(|e| {
                format!(
                    "the scan failed: {}",
                    crate::ledger::dynamo::ledger_error(e)
                )
            })?;
        story.found.scan_pages += 1;
        story.found.scanned_items += page.scanned_count().max(0) as u64;
        let mine = page.items().iter().filter(|i| of_shop(i, profile));
        story.lines.extend(mine.filter_map(line_of));
        start = page.last_evaluated_key.filter(|k| !k.is_empty());
        if start.is_none() {
            return Ok(());
        }
        let due = Duration::from_secs_f64(story.found.scanned_items as f64 / f64::from(rate));
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Whether an item is a record of the profile's shop (dry runs' and other kinds' are not).
fn of_shop(item: &Item, profile: &Profile) -> bool {
    let key = get_s(item, "pk");
    let shop = match keys::parse(&key) {
        Some(Key::Conversion {
            shop,
            dry_run: false,
            ..
        }) => shop,
        Some(Key::Note { shop, .. } | Key::Refusal { shop, .. }) => shop,
        _ => return false,
    };
    shop == profile.shop.as_deref()
}

/// A record as a line of the story; `None` for other kinds (and dry runs).
fn line_of(item: &Item) -> Option<Line> {
    let key = get_s(item, "pk");
    let at = |names: &[&str]| names.iter().find_map(|k| get_n(item, k));
    let mut line = match keys::parse(&key)? {
        Key::Conversion {
            event_id,
            dry_run: false,
            ..
        } => conversion_line(item, event_id),
        Key::Note { reason, .. } => Line {
            kind: "note",
            state: "not sent".to_owned(),
            note: Some(reason.to_owned()),
            at_ms: at(&["created_at_ms"]),
            ..Line::default()
        },
        Key::Refusal { .. } => Line {
            kind: "refusal",
            state: "refused (422)".to_owned(),
            note: Some(format!(
                "{}: {}",
                get_s(item, "field"),
                get_s(item, "reason")
            )),
            at_ms: at(&["refused_at_ms"]),
            ..Line::default()
        },
        _ => return None,
    };
    line.event = get_opt_s(item, "event");
    line.via = get_opt_s(item, "via");
    line.at = line
        .at_ms
        .map(|ms| crate::inbound::datetime::format_utc(ms / 1000));
    Some(line)
}

/// A conversion record as a line.
fn conversion_line(item: &Item, event_id: &str) -> Line {
    let record = record_from_item(item);
    Line {
        kind: "conversion",
        event_id: Some(event_id.to_owned()),
        conversion_type: get_opt_s(item, "conversion_type"),
        sum: get_opt_s(item, "amount"),
        currency: get_opt_s(item, "currency"),
        state: record.status,
        attempts: record.attempts,
        at_ms: ["sent_at_ms", "updated_at_ms", "claimed_at_ms"]
            .iter()
            .find_map(|k| get_n(item, k)),
        rt_status: record.rt_status,
        ..Line::default()
    }
}

/// The lines in time order (lines without a time last, by event ID).
fn sorted(mut story: Story) -> Story {
    story
        .lines
        .sort_by_key(|l| (l.at_ms.is_none(), l.at_ms, l.event_id.clone()));
    story
}

/// The story as a text table, after a line saying how the records were found and what it cost.
pub fn table(story: &Story) -> String {
    let unknown = |v: Option<String>| v.unwrap_or_else(|| "unknown".to_owned());
    let mut rows = vec![
        [
            "WHEN (UTC)",
            "EVENT ID",
            "EVENT",
            "TYPE",
            "SUM",
            "STATE",
            "ATTEMPTS",
            "VIA",
            "REDTRACK",
            "NOTE",
        ]
        .map(str::to_owned),
    ];
    for l in &story.lines {
        let conversion = l.kind == "conversion";
        let known = |v: Option<String>| match conversion {
            true => unknown(v),
            false => v.unwrap_or_else(|| "-".to_owned()),
        };
        rows.push([
            l.at.clone().unwrap_or_else(|| "-".to_owned()),
            l.event_id.clone().unwrap_or_else(|| "-".to_owned()),
            l.event.clone().unwrap_or_else(|| "-".to_owned()),
            l.conversion_type.clone().unwrap_or_else(|| "-".to_owned()),
            match (&l.sum, &l.currency) {
                (Some(sum), Some(cur)) => format!("{sum} {cur}"),
                (Some(sum), None) => sum.clone(),
                _ => "-".to_owned(),
            },
            l.state.clone(),
            known(l.attempts.map(|a| a.to_string())),
            match l.kind {
                "not_recorded" => "-".to_owned(),
                _ => unknown(l.via.clone()),
            },
            known(l.rt_status.map(|s| s.to_string())),
            l.note.clone().unwrap_or_default(),
        ]);
    }
    format!("{}\n{}", headline(story), columns(&rows))
}

/// What the story covers and what finding it cost.
fn headline(story: &Story) -> String {
    let shop = story.shop.as_deref().unwrap_or("the default shop");
    let f = &story.found;
    let how = match f.method {
        "event_ids" => format!(
            "found from its event IDs: {} request(s) to Cartpanda's API, {} GetItem(s)",
            f.api_requests, f.get_items
        ),
        _ => format!(
            "found by a scan of the table ({}): {} item(s) read in {} page(s){}",
            f.why_scan.as_deref().unwrap_or("no API"),
            f.scanned_items,
            f.scan_pages,
            match f.api_requests {
                0 => String::new(),
                n => format!(", {n} request(s) to Cartpanda's API"),
            }
        ),
    };
    format!(
        "order {} of {shop}: {} line(s), {how}",
        story.order_id,
        story.lines.len()
    )
}

/// Rows as left-aligned columns two spaces apart.
fn columns(rows: &[[String; 10]]) -> String {
    let mut widths = [0usize; 10];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let lines: Vec<String> = rows
        .iter()
        .map(|row| {
            let cells: Vec<String> = row
                .iter()
                .zip(widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect();
            cells.join("  ").trim_end().to_owned()
        })
        .collect();
    lines.join("\n")
}
