//! Cartpanda order webhooks in, RedTrack postbacks out: authenticated, deduplicated, exact.
//!
//! The path of one delivery, a module per step: [`auth`] → [`webhook`] (parse) → [`mapping`]
//! (classify) → [`dedup`] / [`dynamo`] (claim) → [`postback`] (render) → [`tracker`] (send),
//! driven by [`bridge`] behind the HTTP adapter in [`handler`].

#[cfg(feature = "runtime")]
pub mod admin;
pub mod auth;
#[cfg(feature = "runtime")]
pub mod aws;
pub mod bridge;
pub mod clock;
pub mod config;
pub mod currency;
pub mod datetime;
pub mod dedup;
pub mod delivery;
#[cfg(feature = "runtime")]
pub mod dynamo;
#[cfg(feature = "runtime")]
pub mod entry;
pub mod error;
#[cfg(feature = "runtime")]
pub mod handler;
pub mod lenient;
#[cfg(feature = "runtime")]
pub mod logging;
pub mod macros;
pub mod mapping;
pub mod metrics;
pub mod money;
pub mod normalize;
pub mod phone;
pub mod postback;
pub mod queue;
#[cfg(feature = "runtime")]
pub mod redrive;
#[cfg(feature = "runtime")]
pub mod runtime;
pub mod s2s;
pub mod stores;
pub mod tracker;
pub mod verify;
pub mod webhook;
