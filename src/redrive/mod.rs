//! Redrive: the queue a conversion waits in while RedTrack is down ([`queue`]), and its consumer
//! Lambda, which re-sends through the same claim protocol and parks refusals in the DLQ
//! ([`consumer`]).

#[cfg(feature = "runtime")]
pub mod consumer;
pub mod queue;
