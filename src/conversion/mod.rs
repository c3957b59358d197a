//! Conversion: from a parsed delivery to the conversions it makes (RedTrack type, sum, currency,
//! event ID, fingerprint), and the PII normalised for ad platforms' matching. Pure: no I/O, no
//! clock; it may call [`crate::inbound`]'s readers, never a client. [`classify`] decides,
//! following the [`rules`] and reading the order's [`fields`]; [`currency`] converts sums;
//! [`normalize`] and [`phone`] prepare the PII.

pub mod classify;
pub mod clickid;
pub mod currency;
pub mod fields;
pub mod normalize;
pub mod phone;
pub mod rules;
