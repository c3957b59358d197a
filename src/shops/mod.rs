//! Shops: a merchant's Cartpanda shop served on its own route (`/cartpanda/{shop}`), with its own
//! tokens, postback template and rules, kept in the ledger's table as `store#<name>` records and
//! cached ([`directory`]), read and written in DynamoDB ([`dynamo`]), moved to a new name
//! ([`rename`]), and named in one registry item ([`registry`]) that reconciliation reads.

#[cfg(feature = "runtime")]
pub mod api_token;
pub mod directory;
#[cfg(feature = "runtime")]
pub mod dynamo;
#[cfg(feature = "runtime")]
pub mod registry;
#[cfg(feature = "runtime")]
pub mod rename;
