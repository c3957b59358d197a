//! The registry of named shops: one item, `registry#shops`, naming every shop (`shops`) and
//! those with reconciliation on (`reconciled`), kept by `shop put`, `shop delete` and `shop rename`
//! (each adds or removes its name with an atomic `ADD`/`DELETE`, so concurrent commands lose
//! nothing). A scheduled reconciliation finds its shops with one `GetItem` of it, then one
//! `GetItem` per reconciled shop: nothing it reads grows with the conversion records.
//!
//! A table written before the registry existed has shops but no registry (or one that
//! `shop put` started, without `indexed_at_ms`): the first reconciliation that finds no
//! `indexed_at_ms` indexes the shop records once, with the one `Scan` left ([`index`]), and sets
//! it. `shop reindex` does the same on demand and also drops names whose record is gone: after
//! a shop was saved by an older `cartpanda-redtrack-admin`, which does not keep the registry.

use crate::ledger::claim::LedgerError;
use crate::ledger::dynamo::{DynamoLedger, get_n, ledger_error, n, s};
use crate::ledger::keys;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use std::collections::{BTreeSet, HashMap};

/// The registry as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registry {
    /// Every named shop.
    pub shops: BTreeSet<String>,
    /// The named shops with reconciliation on.
    pub reconciled: BTreeSet<String>,
    /// When the shop records were last indexed into it (`None`: never; the next reconciliation
    /// indexes them).
    pub indexed_at_ms: Option<i64>,
}

fn names(item: &HashMap<String, AttributeValue>, k: &str) -> BTreeSet<String> {
    item.get(k)
        .and_then(|v| v.as_ss().ok())
        .map(|v| v.iter().cloned().collect())
        .unwrap_or_default()
}

fn from_item(item: &HashMap<String, AttributeValue>) -> Registry {
    Registry {
        shops: names(item, "shops"),
        reconciled: names(item, "reconciled"),
        indexed_at_ms: get_n(item, "indexed_at_ms"),
    }
}

/// Reads the registry (empty and never indexed when there is none).
pub async fn read(ledger: &DynamoLedger) -> Result<Registry, LedgerError> {
    Ok(ledger
        .read(&keys::registry())
        .await?
        .as_ref()
        .map(from_item)
        .unwrap_or_default())
}

/// Notes a saved shop: its name in `shops`, and in `reconciled` exactly when `reconcile`.
pub async fn note_shop(
    ledger: &DynamoLedger,
    name: &str,
    reconcile: bool,
) -> Result<(), LedgerError> {
    let expression = if reconcile {
        "SET kind = :kind ADD shops :name, reconciled :name"
    } else {
        "SET kind = :kind ADD shops :name DELETE reconciled :name"
    };
    update(ledger, expression, name).await
}

/// Forgets a deleted (or renamed) shop.
pub async fn forget_shop(ledger: &DynamoLedger, name: &str) -> Result<(), LedgerError> {
    update(
        ledger,
        "SET kind = :kind DELETE shops :name, reconciled :name",
        name,
    )
    .await
}

async fn update(ledger: &DynamoLedger, expression: &str, name: &str) -> Result<(), LedgerError> {
    ledger
        .client
        .update_item()
        .table_name(&ledger.table)
        .key("pk", s(&keys::registry()))
        .update_expression(expression)
        .expression_attribute_values(":kind", s("registry"))
        .expression_attribute_values(":name", AttributeValue::Ss(vec![name.to_owned()]))
        .send()
        .await
        .map_err(ledger_error)?;
    Ok(())
}

/// Indexes the shop records into the registry (a `Scan` of the table) and marks it indexed.
/// `replace`: the registry becomes exactly what the records say (`shop reindex`); otherwise the
/// names found are added to it (the first reconciliation: a `shop put` running meanwhile is
/// never undone).
pub async fn index(
    ledger: &DynamoLedger,
    replace: bool,
    now_ms: i64,
) -> Result<Registry, LedgerError> {
    let records = ledger.list_shops().await?;
    let all: Vec<String> = records.iter().map(|r| r.name.clone()).collect();
    let reconciled: Vec<String> = records
        .iter()
        .filter(|r| r.reconcile)
        .map(|r| r.name.clone())
        .collect();
    let mut update = ledger
        .client
        .update_item()
        .table_name(&ledger.table)
        .key("pk", s(&keys::registry()))
        .expression_attribute_values(":kind", s("registry"))
        .expression_attribute_values(":now", n(now_ms))
        .return_values(ReturnValue::AllNew);
    let mut set = vec!["kind = :kind".to_owned(), "indexed_at_ms = :now".to_owned()];
    let (mut add, mut remove) = (Vec::new(), Vec::new());
    for (attribute, names) in [("shops", all), ("reconciled", reconciled)] {
        let value = format!(":{attribute}");
        if names.is_empty() {
            if replace {
                remove.push(attribute.to_owned());
            }
            continue;
        }
        update = update.expression_attribute_values(&value, AttributeValue::Ss(names));
        match replace {
            true => set.push(format!("{attribute} = {value}")),
            false => add.push(format!("{attribute} {value}")),
        }
    }
    let mut expression = format!("SET {}", set.join(", "));
    if !add.is_empty() {
        expression.push_str(&format!(" ADD {}", add.join(", ")));
    }
    if !remove.is_empty() {
        expression.push_str(&format!(" REMOVE {}", remove.join(", ")));
    }
    let out = update
        .update_expression(expression)
        .send()
        .await
        .map_err(ledger_error)?;
    Ok(out.attributes.as_ref().map(from_item).unwrap_or_default())
}

/// The named shops with reconciliation on, by name: the registry's, indexed first when it never
/// was (a table written before the registry existed).
pub async fn reconciled_shops(
    ledger: &DynamoLedger,
    now_ms: i64,
) -> Result<Vec<String>, LedgerError> {
    let mut registry = read(ledger).await?;
    if registry.indexed_at_ms.is_none() {
        registry = index(ledger, false, now_ms).await?;
        tracing::info!(
            shops = registry.shops.len(),
            reconciled = registry.reconciled.len(),
            "shop registry indexed from the shop records (once)"
        );
    }
    Ok(registry.reconciled.into_iter().collect())
}
