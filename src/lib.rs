//! Cartpanda order webhooks in, RedTrack postbacks out: authenticated, deduplicated, exact.
//!
//! The path of one delivery, a folder per stage:
//!
//! 1. [`inbound`]: route, **auth** (the token), **parse** (the webhook or S2S reader with money,
//!    dates and lenient fields), optional order verification against Cartpanda's API;
//! 2. [`conversion`]: **classify** the delivery into conversions (type, sum, currency, event ID),
//!    PII normalised for matching;
//! 3. [`ledger`]: **claim** each conversion in the table that records every conversion, so it is
//!    sent once;
//! 4. [`postback`]: **render** RedTrack's postback from the merchant's template and the values of
//!    its macros, **send** it with the RedTrack client, and **record** the outcome in the ledger;
//! 5. [`redrive`]: what RedTrack could not take waits in a queue for the consumer, then the DLQ.
//!
//! [`story`] tells one order's story from the ledger and re-sends one conversion (admin `order`,
//! `resend`).
//!
//! [`reconcile`] finds what never arrived: it lists Cartpanda's paid orders on a schedule and sends
//! their missing conversions through the same claim → send path.
//!
//! [`bridge`] is the service that drives one delivery through these steps; [`inbound::http`] is
//! the thin adapter in front of it; `entry` starts the handler Lambda names. [`shops`] holds the settings of named shops, [`ops`] the
//! configuration, logging, metrics, clock, AWS set-up and operator commands.

pub mod bridge;
pub mod conversion;
#[cfg(feature = "runtime")]
pub mod entry;
pub mod inbound;
pub mod ledger;
pub mod ops;
pub mod postback;
#[cfg(feature = "runtime")]
pub mod reconcile;
pub mod redrive;
#[cfg(feature = "runtime")]
pub mod report;
pub mod shops;
#[cfg(feature = "runtime")]
pub mod story;
