//! Ledger: the DynamoDB table that records every conversion, and the claim protocol that makes
//! each one sent once ([`claim`]: records, states, the in-memory ledger for tests), with its
//! DynamoDB implementation ([`dynamo`]).

pub mod claim;
#[cfg(feature = "runtime")]
pub mod dynamo;
