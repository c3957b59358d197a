//! Ledger: the DynamoDB table that records every conversion, and the claim protocol that makes
//! each one sent once ([`claim`]: records, states, the in-memory ledger for tests), with its
//! DynamoDB implementation ([`dynamo`]); and the record an order refused with 422 leaves
//! ([`refusal`]).

pub mod claim;
#[cfg(feature = "runtime")]
pub mod dynamo;
pub mod refusal;
