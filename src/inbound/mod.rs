//! Inbound: everything between API Gateway and a parsed delivery. The HTTP adapter and its routes
//! ([`http`]), the token check ([`auth`]), the readers of Cartpanda's webhook ([`webhook`]) and S2S
//! postback ([`s2s`]) with their lenient fields, money and dates, the one application error that
//! maps to an HTTP status ([`error`]), and the optional re-read of an order from Cartpanda's API
//! ([`verify`]). Parsing is pure; only [`http`], [`runtime`] and [`verify`] do I/O.

pub mod auth;
pub mod datetime;
pub mod error;
#[cfg(feature = "runtime")]
pub mod http;
pub mod lenient;
pub mod money;
#[cfg(feature = "runtime")]
pub mod runtime;
pub mod s2s;
pub mod verify;
pub mod webhook;
pub mod zone;
