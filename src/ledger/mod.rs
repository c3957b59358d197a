//! Ledger: the DynamoDB table that records every conversion, and the claim protocol that makes
//! each one sent once ([`claim`]: records, states, the in-memory ledger for tests), with its
//! DynamoDB implementation ([`dynamo`]), the "needs a look" notes kept next to them ([`notes`])
//! and the record an order refused with 422 leaves ([`refusal`]), and the memory of sent
//! conversions that answers their duplicates without a DynamoDB call ([`cache`]), and `ledger
//! extend`, which gives records written before an upgrade the configured memory ([`extend`]).
//! Every record key is made and read in one place ([`keys`]).

pub mod cache;
pub mod claim;
#[cfg(feature = "runtime")]
pub mod dynamo;
#[cfg(feature = "runtime")]
pub mod extend;
pub mod keys;
pub mod notes;
pub mod refusal;
