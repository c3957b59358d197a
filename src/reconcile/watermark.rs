//! Where each shop's reconciliation stands, kept in the ledger's table in its own key space:
//! `watermark#default` for the default shop, `watermark#shop#<name>` for a named shop.
//!
//! Attributes: `kind` = `watermark`; `watermark_s`, the end of the last window listed to the
//! end (epoch seconds; the next window starts one run of overlap before it); and, while a window
//! is unfinished because a run reached its deadline, the cursor to resume from: `cursor_from_s`,
//! `cursor_to_s`, `cursor_pass` (`created` or `updated`), `cursor_page`. No expiry.

use crate::ledger::claim::LedgerError;
use crate::reconcile::orders::{Pass, Window};
use aws_sdk_dynamodb::types::AttributeValue as V;

/// Where an unfinished window stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub window: Window,
    pub pass: Pass,
    /// The page that was being read when the run stopped.
    pub page: u32,
}

/// A shop's reconciliation state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mark {
    pub watermark_s: Option<i64>,
    pub cursor: Option<Cursor>,
}

/// The record key of a shop's watermark.
pub fn key(shop: Option<&str>) -> String {
    crate::ledger::keys::watermark(shop)
}

fn unavailable<E: aws_sdk_dynamodb::error::ProvideErrorMetadata>(err: &E) -> LedgerError {
    LedgerError::Unavailable(err.code().unwrap_or("request failed").to_owned())
}

/// Reads a shop's state (the default when there is none yet).
pub async fn get(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    shop: Option<&str>,
) -> Result<Mark, LedgerError> {
    let out = client
        .get_item()
        .table_name(table)
        .key("pk", V::S(key(shop)))
        .consistent_read(true)
        .send()
        .await
        .map_err(|e| unavailable(&e))?;
    let Some(item) = out.item else {
        return Ok(Mark::default());
    };
    let num = |k: &str| {
        item.get(k)
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse::<i64>().ok())
    };
    let cursor = match (
        num("cursor_from_s"),
        num("cursor_to_s"),
        item.get("cursor_pass")
            .and_then(|v| v.as_s().ok())
            .and_then(|p| Pass::parse(p)),
        num("cursor_page"),
    ) {
        (Some(from_s), Some(to_s), Some(pass), Some(page)) if page >= 1 => Some(Cursor {
            window: Window { from_s, to_s },
            pass,
            page: u32::try_from(page).unwrap_or(1),
        }),
        _ => None,
    };
    Ok(Mark {
        watermark_s: num("watermark_s"),
        cursor,
    })
}

/// Writes a shop's state.
pub async fn put(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    shop: Option<&str>,
    mark: &Mark,
    now_ms: i64,
) -> Result<(), LedgerError> {
    let mut put = client
        .put_item()
        .table_name(table)
        .item("pk", V::S(key(shop)))
        .item("kind", V::S("watermark".to_owned()))
        .item("updated_at_ms", V::N(now_ms.to_string()));
    if let Some(shop) = shop {
        put = put.item("shop", V::S(shop.to_owned()));
    }
    if let Some(w) = mark.watermark_s {
        put = put.item("watermark_s", V::N(w.to_string()));
    }
    if let Some(c) = mark.cursor {
        put = put
            .item("cursor_from_s", V::N(c.window.from_s.to_string()))
            .item("cursor_to_s", V::N(c.window.to_s.to_string()))
            .item("cursor_pass", V::S(c.pass.as_str().to_owned()))
            .item("cursor_page", V::N(c.page.to_string()));
    }
    put.send().await.map_err(|e| unavailable(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_have_their_own_space() {
        assert_eq!(super::key(None), "watermark#default");
        assert_eq!(super::key(Some("default")), "watermark#shop#default");
    }
}
