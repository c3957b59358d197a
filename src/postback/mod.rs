//! Postback: RedTrack's postback URL as the merchant pasted it ([`template`]), the value of each of
//! its macros for one conversion ([`values`]), the RedTrack client ([`redtrack`]) and the step that
//! sends a claimed conversion and records the outcome in the ledger ([`send`]).

pub mod redtrack;
pub mod send;
pub mod template;
pub mod values;
