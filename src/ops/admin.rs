//! Operator commands, run from a workstation with AWS credentials
//! (`cartpanda-redtrack-admin <command>`; `--help` on every command):
//!
//! - `shop put <name> --token <secret> [--token <next secret>] --postback-url <url>
//!   [--conversion-types <event=Type,…>] [--send-test-orders true|false]
//!   [--cartx-test-orders send|skip] [--sum-currency USD|EUR|BRL]
//!   [--normalize-pii true|false] [--cartpanda-api-token <token>]`
//!   [--clickid-sources <source,…>] [--reconcile true|false] [--shop-slug <slug>]
//!   [--s2s true|false] [--verify-orders true|false] [--timezone <IANA zone>]
//!   [--redtrack-api-key <key>]`
//! - `shop list` · `shop delete <name>` · `shop migrate-secrets` (`store` is the same command,
//!   its old name)
//! - `shop rename <old> <new>` (moves a shop, its API token and RedTrack key parameters,
//!   watermark and records)
//! - `shop reindex` (rebuilds the registry of shops from the shop records,
//!   [`crate::shops::registry`])
//! - `ledger extend [--dry-run] [--rate N] [--resume KEY] [--max N] [--days N]`
//!   ([`crate::ledger::extend`])
//! - `redrive --from <DLQ URL> --to <queue URL> [--max N]`
//! - `reconcile --since <RFC 3339 time | 48h> [--shop <name>] [--dry-run]` ([`crate::reconcile`])
//! - `report [--since 7d] [--shop <name>] [--format table|csv|json|html] [--dry-runs]`
//!   ([`crate::report`])
//! - `order <order id> [--shop <name>] [--format table|json]`: the order's story
//!   ([`crate::story`]); `resend <event id> [--shop <name>]` ([`crate::story::resend`])
//!
//! The table is `--table <name>` or `DEDUP_TABLE`. Webhook tokens are stored as SHA-256 digests
//! only; a shop's Cartpanda API token as an SSM SecureString ([`crate::shops::api_token`]).
//! [`run`] takes the words after the program name, so tests run a command without a process.

use crate::conversion::rules::CartxTestOrders;
use crate::inbound::auth::{Secret, Tokens};
use crate::ledger::dynamo::DynamoLedger;
use crate::ops::secrets::SsmSecrets;
use crate::redrive::consumer::move_messages;
use crate::shops::directory::{ShopRecord, check_new_name};
use clap::{Args, Parser, Subcommand};

/// The program name commands are parsed and shown under.
pub const PROGRAM: &str = "cartpanda-redtrack-admin";

/// Operator commands for cartpanda-redtrack: named shops in the ledger table, reconciliation
/// back-fills, the report, the ledger's memory, and moving dead-lettered postbacks back to the
/// redrive queue.
#[derive(Debug, Parser)]
#[command(name = PROGRAM)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Named shops: each its own webhook URL, tokens and postback settings.
    #[command(subcommand, alias = "store")]
    Shop(ShopCommand),
    /// Finds and sends the conversions webhooks never delivered, from Cartpanda's order list.
    Reconcile {
        /// Where to start: an RFC 3339 time or a duration back from now (`48h`, `7d`).
        #[arg(long, value_name = "time|duration")]
        since: String,
        /// Only this named shop (default: the deployment's own shop and every shop with
        /// reconciliation on).
        #[arg(long, value_name = "name")]
        shop: Option<String>,
        /// Show what would be sent; claim and send nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Conversions per day and type from the ledger, then the orders that need a look.
    Report {
        /// How far back: a duration (`7d`, `48h`) or an RFC 3339 time.
        #[arg(long, value_name = "time|duration", default_value = "7d")]
        since: String,
        /// Only this named shop.
        #[arg(long, value_name = "name")]
        shop: Option<String>,
        /// Output format (`html`: one self-contained page with a chart per shop).
        #[arg(long, value_name = "table|csv|json|html", default_value = "table")]
        format: String,
        /// The dry-run conversions (`dry#…`, DRY_RUN=true) instead of the live ones.
        #[arg(long)]
        dry_runs: bool,
        #[command(flatten)]
        table: TableArg,
    },
    /// Every record of one order: its conversions (state, attempts, when, which input brought
    /// them, RedTrack's last status), notes and refusals. Reads the function's environment.
    Order {
        /// The order's Cartpanda ID.
        order_id: String,
        /// The named shop it belongs to (default: the deployment's own shop).
        #[arg(long, value_name = "name")]
        shop: Option<String>,
        /// Output format.
        #[arg(long, value_name = "table|json", default_value = "table")]
        format: String,
        /// Most items read a second when the table must be scanned (no Cartpanda API token).
        #[arg(long, value_name = "N", default_value_t = 100)]
        rate: u32,
    },
    /// Sends one conversion again (recorded FAILED, released, refused, or queued for over an
    /// hour), rebuilt from the order Cartpanda's API gives; never one recorded SENT. Reads the
    /// function's environment.
    Resend {
        /// The conversion's event ID (`rdtk_event_id`, e.g. `48213577-purchase`).
        event_id: String,
        /// The named shop it belongs to (default: the deployment's own shop).
        #[arg(long, value_name = "name")]
        shop: Option<String>,
    },
    /// The ledger's records.
    #[command(subcommand)]
    Ledger(LedgerCommand),
    /// Moves messages from the dead-letter queue back to the redrive queue.
    Redrive {
        /// URL of the dead-letter queue.
        #[arg(long, value_name = "DLQ URL")]
        from: String,
        /// URL of the redrive queue.
        #[arg(long, value_name = "queue URL")]
        to: String,
        /// Most messages to move.
        #[arg(long, value_name = "N", default_value_t = 10_000)]
        max: usize,
    },
}

#[derive(Debug, Subcommand)]
pub enum ShopCommand {
    /// Saves a shop (creates it or replaces its settings).
    Put(Box<ShopPut>),
    /// Lists the shops, without their secrets.
    List {
        #[command(flatten)]
        table: TableArg,
    },
    /// Moves a shop to a new name (a new webhook URL): its record, API token parameter,
    /// reconciliation watermark and conversion records.
    Rename {
        /// The shop's name now.
        old: String,
        /// Its new name.
        new: String,
        #[command(flatten)]
        table: TableArg,
    },
    /// Deletes a shop.
    Delete {
        /// The shop's name.
        name: String,
        #[command(flatten)]
        table: TableArg,
    },
    /// Moves Cartpanda API tokens that older versions kept in shop records into SSM.
    MigrateSecrets {
        #[command(flatten)]
        table: TableArg,
    },
    /// Rebuilds the registry of shops (which reconciliation reads) from the shop records: after
    /// a shop was saved by an older version of this command.
    Reindex {
        #[command(flatten)]
        table: TableArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// Gives every sent conversion record the configured memory: expires_at = its sent time +
    /// the memory, never earlier than it is. Run it with --dry-run first.
    Extend(LedgerExtend),
}

/// `ledger extend`'s settings.
#[derive(Debug, Args)]
pub struct LedgerExtend {
    /// Count what would change; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Most items read a second (the table's read and write capacity follows).
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub rate: u32,
    /// Start after this key (printed by an earlier run).
    #[arg(long, value_name = "KEY")]
    pub resume: Option<String>,
    /// Stop after reading this many items (then resume from the key printed).
    #[arg(long, value_name = "N")]
    pub max: Option<u64>,
    /// The memory in days: the deployment's DEDUP_TTL_DAYS.
    #[arg(long, env = "DEDUP_TTL_DAYS", value_name = "days", default_value_t = crate::ops::config::DEFAULT_TTL_DAYS, value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub days: u32,
    #[command(flatten)]
    pub table: TableArg,
}

#[derive(Debug, Args)]
pub struct TableArg {
    /// The ledger table (shops are records in it).
    #[arg(long = "table", env = "DEDUP_TABLE", value_name = "table")]
    pub table: Option<String>,
}

/// The settings `shop put` saves.
#[derive(Debug, Args)]
pub struct ShopPut {
    /// The shop's name, the last segment of its webhook URL (`/cartpanda/<name>`).
    pub name: String,
    /// Its webhook token (twice while rotating: the old and the new).
    #[arg(long = "token", value_name = "secret", required = true)]
    pub tokens: Vec<String>,
    /// Its RedTrack postback URL template.
    #[arg(long, value_name = "url")]
    pub postback_url: String,
    /// Conversion type per event.
    #[arg(long, value_name = "event=Type,...", default_value = "")]
    pub conversion_types: String,
    /// Send test orders too.
    #[arg(long, value_name = "true|false", action = clap::ArgAction::Set, value_parser = boolean, default_value = "false")]
    pub send_test_orders: bool,
    /// What an order flagged `is_cartx_test` is.
    #[arg(long, value_name = "send|skip")]
    pub cartx_test_orders: Option<String>,
    /// Report sums in this currency.
    #[arg(long, value_name = "USD|EUR|BRL")]
    pub sum_currency: Option<String>,
    /// Normalise email, phone and names for matching.
    #[arg(long, value_name = "true|false", action = clap::ArgAction::Set, value_parser = boolean, default_value = "true")]
    pub normalize_pii: bool,
    /// Its Cartpanda API token (kept as an SSM SecureString): verifies its orders and lets
    /// reconciliation read its order list.
    #[arg(long, value_name = "token")]
    pub cartpanda_api_token: Option<String>,
    /// Its RedTrack API key (kept as an SSM SecureString): reconciliation's daily count of what
    /// RedTrack recorded of the conversions sent. Without it that count is not measured.
    #[arg(long, value_name = "key")]
    pub redtrack_api_key: Option<String>,
    /// Where its click IDs are (`CLICKID_SOURCES`); default the deployment's.
    #[arg(
        long = "clickid-sources",
        value_name = "source,...",
        default_value = ""
    )]
    pub click_id_sources: String,
    /// Reconcile it against Cartpanda's order list (needs --shop-slug and --cartpanda-api-token).
    #[arg(long, value_name = "true|false", action = clap::ArgAction::Set, value_parser = boolean, default_value = "false")]
    pub reconcile: bool,
    /// Its Cartpanda slug (for the order list).
    #[arg(long, value_name = "slug")]
    pub shop_slug: Option<String>,
    /// Fed by Cartpanda's S2S postback rather than webhooks.
    #[arg(long, value_name = "true|false", action = clap::ArgAction::Set, value_parser = boolean, default_value = "false")]
    pub s2s: bool,
    /// Verify its orders with the API token (false: the token serves reconciliation only).
    #[arg(long, value_name = "true|false", action = clap::ArgAction::Set, value_parser = boolean, default_value = "true")]
    pub verify_orders: bool,
    /// Its time zone (e.g. America/Sao_Paulo), for reconciliation until its orders show theirs.
    #[arg(long, value_name = "IANA zone")]
    pub timezone: Option<String>,
    #[command(flatten)]
    pub table: TableArg,
}

/// Runs a command and returns the process exit code (0 ok, 2 usage or failure).
pub async fn main(args: &[String]) -> i32 {
    let cli = match Cli::try_parse_from(command_line(args)) {
        Ok(cli) => cli,
        Err(e) => {
            // `--help` to stdout with 0, mistakes to stderr with 2.
            let _ = e.print();
            return e.exit_code();
        }
    };
    let aws = crate::ops::aws::load_for_operator().await;
    match execute(cli, &aws).await {
        Ok(message) => {
            println!("{message}");
            0
        }
        Err(message) => {
            eprintln!("{message}");
            2
        }
    }
}

fn command_line(args: &[String]) -> impl Iterator<Item = &str> {
    std::iter::once(PROGRAM).chain(args.iter().map(String::as_str))
}

/// Reads the command line after the program name; a mistake reads as clap's message with usage.
pub fn parse(args: &[String]) -> Result<Cli, String> {
    Cli::try_parse_from(command_line(args)).map_err(|e| e.render().to_string())
}

fn boolean(text: &str) -> Result<bool, String> {
    match text {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        other => Err(format!("must be true or false, got `{other}`")),
    }
}

/// Builds and checks the record a `shop put …` command line writes.
pub fn shop_record(args: &[String]) -> Result<ShopRecord, String> {
    match parse(args)?.command {
        Command::Shop(ShopCommand::Put(put)) => put.record(),
        _ => Err(format!("not a `shop put` command: {args:?}")),
    }
}

impl ShopPut {
    /// The record this command writes, checked.
    pub fn record(&self) -> Result<ShopRecord, String> {
        let name = self.name.as_str();
        check_new_name(name)?;
        let tokens = &self.tokens;
        if tokens.is_empty() || tokens.len() > 2 {
            return Err("give one --token (two while rotating)".to_owned());
        }
        if let Some(t) = tokens
            .iter()
            .find(|t| t.len() < 16 || t.chars().any(char::is_whitespace))
        {
            return Err(format!(
                "a token must be at least 16 characters without spaces ({} given)",
                t.len()
            ));
        }
        let record = ShopRecord {
            name: name.to_owned(),
            token_digests: tokens.iter().map(|t| Tokens::hex_digest(t)).collect(),
            postback_url: self.postback_url.clone(),
            conversion_types: self.conversion_types.clone(),
            send_test_orders: self.send_test_orders,
            cartx_test_orders: match &self.cartx_test_orders {
                None => CartxTestOrders::default().as_str().to_owned(),
                Some(v) => CartxTestOrders::parse(v)
                    .map_err(|e| format!("--cartx-test-orders {e}"))?
                    .as_str()
                    .to_owned(),
            },
            sum_currency: self.sum_currency.as_deref().map(str::to_ascii_uppercase),
            normalize_pii: self.normalize_pii,
            // The token itself goes to SSM when the record is saved (`execute`).
            cartpanda_api_token: self.cartpanda_api_token.clone(),
            cartpanda_api_token_parameter: None,
            click_id_sources: self.click_id_sources.clone(),
            reconcile: self.reconcile,
            shop_slug: self.shop_slug.clone(),
            s2s: self.s2s,
            verify_orders: self.verify_orders,
            timezone: self.timezone.clone(),
        };
        record
            .profile()
            .map_err(|problem| format!("shop `{name}`: {problem}"))?;
        Ok(record)
    }
}

impl TableArg {
    fn ledger(&self, aws: &aws_config::SdkConfig) -> Result<DynamoLedger, String> {
        let name = self
            .table
            .clone()
            .ok_or("name the table with --table or DEDUP_TABLE")?;
        Ok(DynamoLedger::new(aws_sdk_dynamodb::Client::new(aws), name))
    }
}

/// Reads and runs one command line (the words after the program name).
pub async fn run(args: &[String], aws: &aws_config::SdkConfig) -> Result<String, String> {
    execute(parse(args)?, aws).await
}

/// Runs one parsed command.
pub async fn execute(cli: Cli, aws: &aws_config::SdkConfig) -> Result<String, String> {
    let now_ms = crate::ops::clock::Clock::now_ms(&crate::ops::clock::SystemClock);
    match cli.command {
        Command::Shop(ShopCommand::Put(put)) => shop_put(&put, aws, now_ms).await,
        Command::Shop(ShopCommand::List { table }) => shop_list(&table, aws).await,
        Command::Shop(ShopCommand::Delete { name, table }) => shop_delete(&name, &table, aws).await,
        Command::Shop(ShopCommand::Rename { old, new, table }) => {
            shop_rename(&old, &new, &table, aws, now_ms).await
        }
        Command::Shop(ShopCommand::MigrateSecrets { table }) => {
            shop_migrate_secrets(&table, aws, now_ms).await
        }
        Command::Shop(ShopCommand::Reindex { table }) => shop_reindex(&table, aws, now_ms).await,
        Command::Reconcile {
            since,
            shop,
            dry_run,
        } => reconcile(&since, shop.as_deref(), dry_run, aws, now_ms).await,
        Command::Report {
            since,
            shop,
            format,
            dry_runs,
            table,
        } => {
            let request = crate::report::Request {
                since: &since,
                shop: shop.as_deref(),
                format: &format,
                dry_run: dry_runs,
            };
            report(&request, &table, aws, now_ms).await
        }
        Command::Order {
            order_id,
            shop,
            format,
            rate,
        } => {
            let request = crate::story::Request {
                order_id: &order_id,
                shop: shop.as_deref(),
                format: &format,
                rate,
            };
            let reconciler = crate::reconcile::from_env(aws).await?;
            crate::story::command(&reconciler, &request).await
        }
        Command::Resend { event_id, shop } => {
            let reconciler = crate::reconcile::from_env(aws).await?;
            crate::story::resend::command(&reconciler, &event_id, shop.as_deref()).await
        }
        Command::Ledger(LedgerCommand::Extend(extend)) => ledger_extend(&extend, aws, now_ms).await,
        Command::Redrive { from, to, max } => redrive(&from, &to, max, aws).await,
    }
}

/// `shop put`: saves the shop's record, its Cartpanda API token in SSM.
async fn shop_put(
    put: &ShopPut,
    aws: &aws_config::SdkConfig,
    now_ms: i64,
) -> Result<String, String> {
    let mut record = put.record()?;
    let name = &put.name;
    let token = record.cartpanda_api_token.take().map(Secret::new);
    let secrets = SsmSecrets::from_sdk(aws);
    let ledger = put.table.ledger(aws)?;
    if let Some(key) = &put.redtrack_api_key {
        let parameter = crate::ops::secrets::shop_redtrack_api_key(&ledger.table, name);
        if key.trim().is_empty() {
            return Err("--redtrack-api-key is empty".to_owned());
        }
        let key = Secret::new(key.trim().to_owned());
        crate::ops::secrets::SecretStore::put(&secrets, &parameter, &key)
            .await
            .map_err(|e| e.to_string())?;
    }
    crate::shops::api_token::put_shop(&ledger, &secrets, record, token.as_ref(), now_ms).await?;
    Ok(format!(
        "shop `{name}` saved; its webhook URL is https://<api>/cartpanda/{name}?token=<secret>"
    ))
}

/// `shop list`: a count, then one line per shop.
async fn shop_list(table: &TableArg, aws: &aws_config::SdkConfig) -> Result<String, String> {
    let shops = table
        .ledger(aws)?
        .list_shops()
        .await
        .map_err(|e| e.to_string())?;
    let mut out = format!("{} shop(s)", shops.len());
    for shop in &shops {
        out.push('\n');
        out.push_str(&shop_line(shop));
    }
    Ok(out)
}

/// A shop's line in `shop list`: its name, its postback host and its settings, no secret.
fn shop_line(s: &ShopRecord) -> String {
    let host = url::Url::parse(s.postback_url.split('?').next().unwrap_or(""))
        .map(|u| crate::postback::template::redact(&u))
        .unwrap_or_else(|_| "?".to_owned());
    format!(
        "{}\tpostback {host}\ttokens {}\ttest orders {}\tcartx test orders {}\tsum {}\tverify {}",
        s.name,
        s.token_digests.len(),
        s.send_test_orders,
        if s.cartx_test_orders.is_empty() {
            "send"
        } else {
            &s.cartx_test_orders
        },
        s.sum_currency.as_deref().unwrap_or("as charged"),
        s.cartpanda_api_token.is_some() || s.cartpanda_api_token_parameter.is_some(),
    )
}

/// `shop delete`: deletes the shop's record; an unknown shop is an error.
async fn shop_delete(
    name: &str,
    table: &TableArg,
    aws: &aws_config::SdkConfig,
) -> Result<String, String> {
    match table
        .ledger(aws)?
        .delete_shop(name)
        .await
        .map_err(|e| e.to_string())?
    {
        true => Ok(format!("shop `{name}` deleted")),
        false => Err(format!("no shop `{name}`")),
    }
}

/// `shop rename`: moves the shop ([`crate::shops::rename`]), then deletes its old API token
/// parameter.
async fn shop_rename(
    old: &str,
    new: &str,
    table: &TableArg,
    aws: &aws_config::SdkConfig,
    now_ms: i64,
) -> Result<String, String> {
    let secrets = SsmSecrets::from_sdk(aws);
    let ledger = table.ledger(aws)?;
    let moved = crate::shops::rename::rename(&ledger, &secrets, old, new, now_ms).await?;
    let mut out = format!(
        "shop `{old}` is now `{new}`: {} conversion record(s){} moved. Its webhook URL is now https://<api>/cartpanda/{new}?token=<secret> (and /cartpanda/{new}/s2s); /cartpanda/{old} is refused (401, as any unknown shop) within a minute: change the URL in Cartpanda now",
        moved.records,
        if moved.watermark {
            " and its reconciliation watermark"
        } else {
            ""
        },
    );
    for parameter in [moved.old_parameter, moved.old_redtrack_key]
        .into_iter()
        .flatten()
    {
        let deleted = aws_sdk_ssm::Client::new(aws)
            .delete_parameter()
            .name(&parameter)
            .send()
            .await;
        if deleted.is_err() {
            out.push_str(&format!(
                "\nthe old parameter {parameter} could not be deleted: delete it by hand"
            ));
        }
    }
    Ok(out)
}

/// `shop migrate-secrets`: moves the Cartpanda API tokens older shop records hold into SSM.
async fn shop_migrate_secrets(
    table: &TableArg,
    aws: &aws_config::SdkConfig,
    now_ms: i64,
) -> Result<String, String> {
    let secrets = SsmSecrets::from_sdk(aws);
    let moved =
        crate::shops::api_token::migrate_plain_tokens(&table.ledger(aws)?, &secrets, now_ms)
            .await?;
    Ok(format!(
        "moved the Cartpanda API token of {} shop(s) into SSM: {}",
        moved.len(),
        moved.join(", ")
    ))
}

/// `shop reindex`: the registry of shops rebuilt from the shop records (a `Scan`).
async fn shop_reindex(
    table: &TableArg,
    aws: &aws_config::SdkConfig,
    now_ms: i64,
) -> Result<String, String> {
    let registry = crate::shops::registry::index(&table.ledger(aws)?, true, now_ms)
        .await
        .map_err(|e| e.to_string())?;
    Ok(format!(
        "shop registry rebuilt: {} shop(s), {} with reconciliation on",
        registry.shops.len(),
        registry.reconciled.len()
    ))
}

/// `reconcile`: a back-fill from `since` ([`crate::reconcile::command`]), its summary as JSON.
async fn reconcile(
    since: &str,
    shop: Option<&str>,
    dry_run: bool,
    aws: &aws_config::SdkConfig,
    now_ms: i64,
) -> Result<String, String> {
    let reconciler = crate::reconcile::from_env(aws).await?;
    let summary = crate::reconcile::command(
        &reconciler,
        since,
        shop,
        dry_run,
        now_ms + crate::reconcile::run::CLI_BUDGET_MS,
    )
    .await?;
    serde_json::to_string_pretty(&summary).map_err(|e| e.to_string())
}

/// `report`: the ledger's conversions since `since` ([`crate::report::command`]).
async fn report(
    request: &crate::report::Request<'_>,
    table: &TableArg,
    aws: &aws_config::SdkConfig,
    now_ms: i64,
) -> Result<String, String> {
    let ledger = table.ledger(aws)?;
    crate::report::command(ledger.client(), ledger.table(), request, now_ms).await
}

/// `ledger extend`: the sent conversion records given the memory, paced; each page's progress
/// (and the key to resume from) on stderr.
async fn ledger_extend(
    extend: &LedgerExtend,
    aws: &aws_config::SdkConfig,
    now_ms: i64,
) -> Result<String, String> {
    let options = crate::ledger::extend::ExtendOptions {
        memory_days: extend.days,
        dry_run: extend.dry_run,
        rate: extend.rate,
        resume: extend.resume.clone(),
        max_items: extend.max,
        now_ms,
    };
    let mut progress = |s: &crate::ledger::extend::ExtendSummary| {
        if let Some(key) = &s.resume {
            eprintln!(
                "read {}, extended {}; resume key {key}",
                s.scanned, s.extended
            );
        }
    };
    let summary =
        crate::ledger::extend::extend(&extend.table.ledger(aws)?, &options, &mut progress)
            .await
            .map_err(|e| format!("ledger extend stopped: {e}"))?;
    Ok(summary.line(extend.dry_run))
}

/// `redrive`: moves up to `max` messages from the dead-letter queue back to the redrive queue.
async fn redrive(
    from: &str,
    to: &str,
    max: usize,
    aws: &aws_config::SdkConfig,
) -> Result<String, String> {
    let sqs = aws_sdk_sqs::Client::new(aws);
    let moved = move_messages(&sqs, from, to, max)
        .await
        .map_err(|e| format!("redrive stopped: {e}"))?;
    Ok(format!(
        "moved {moved} message(s) from the DLQ back to the redrive queue"
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
