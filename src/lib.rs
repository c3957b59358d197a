//! Cartpanda order webhooks in, RedTrack postbacks out: authenticated, deduplicated, exact.
//!
//! The path of one delivery, a module per step: [`auth`] → [`webhook`] (parse) → [`mapping`]
//! (classify) → [`dedup`] / [`dynamo`] (claim) → [`postback`] (render) → [`tracker`] (send),
//! driven by [`bridge`] behind the HTTP adapter in [`handler`].

pub mod auth;
pub mod aws;
pub mod bridge;
pub mod clock;
pub mod config;
pub mod datetime;
pub mod dedup;
pub mod delivery;
pub mod dynamo;
pub mod error;
pub mod handler;
pub mod lenient;
pub mod logging;
pub mod mapping;
pub mod metrics;
pub mod money;
pub mod postback;
pub mod queue;
pub mod redrive;
pub mod runtime;
pub mod tracker;
pub mod webhook;
