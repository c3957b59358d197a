//! One time budget for every AWS call of an invocation, so the step after RedTrack always fits
//! before the deadline.
//!
//! When RedTrack stays down, the conversion is queued (an SQS call) and its record set `QUEUED`
//! (a DynamoDB call), or, without a queue, released (one DynamoDB call). Each SDK call may take up
//! to [`SDK_OPERATION`] with its retries; RedTrack's retries therefore stop [`AFTER_SEND`] before
//! the invocation's deadline: the SDK calls that follow plus some slack. Were the margin shorter
//! than those calls, a slow DynamoDB would run them past the deadline and leave the claim in
//! progress with nothing queued.

use std::time::Duration;

/// Longest wait for a TCP connection to an AWS endpoint.
pub const SDK_CONNECT: Duration = Duration::from_millis(500);
/// Longest single attempt of an SDK call (DynamoDB answers in milliseconds).
pub const SDK_ATTEMPT: Duration = Duration::from_millis(800);
/// Longest SDK call, all attempts included.
pub const SDK_OPERATION: Duration = Duration::from_millis(1600);
/// SDK calls made after RedTrack's last attempt: when it gave up, enqueue and the `QUEUED`
/// record (or one release); when it accepted, the `SENT` write and, should that fail, handing
/// "record SENT" to the redrive queue. Further tries of a failed `SENT` write are made only while
/// the time left still holds one more try plus [`SENT_RETRY_RESERVE`].
pub const CALLS_AFTER_SEND: u32 = 2;
/// Room for the work between those calls and for answering.
pub const SLACK: Duration = Duration::from_millis(400);
/// Time kept free before the deadline when RedTrack is retried.
pub const AFTER_SEND: Duration = Duration::from_millis(
    SDK_OPERATION.as_millis() as u64 * CALLS_AFTER_SEND as u64 + SLACK.as_millis() as u64,
);

/// Time a failed `SENT` write keeps free for what follows it: the enqueue of "record SENT" and
/// the answer.
pub const SENT_RETRY_RESERVE: Duration =
    Duration::from_millis(SDK_OPERATION.as_millis() as u64 + SLACK.as_millis() as u64);
/// Time a conversion needs to be claimed and given its first RedTrack attempt: the claim's SDK
/// call and the slack. With less time left before the deadline, the conversion is not claimed
/// (answered `not_attempted`, 503, for a redelivery). With more, it is: in the common case the
/// claim, the send and the record take milliseconds, and at worst the deadline cuts them (the
/// claim's lease ends with the invocation, so a redelivery can take it at once). A larger
/// margin (the worst case of every call after the claim) left the second conversion of most
/// multi-conversion deliveries unclaimed under Lambda's default 3 s timeout, for a redelivery
/// that Cartpanda may never make.
pub const BEFORE_CLAIM: Duration =
    Duration::from_millis(SDK_OPERATION.as_millis() as u64 + SLACK.as_millis() as u64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_step_after_redtrack_fits_in_the_margin() {
        assert!(SDK_CONNECT <= SDK_ATTEMPT && SDK_ATTEMPT <= SDK_OPERATION);
        // The figures docs/reliability.md and docs/security.md give, checked against the constants
        // (not against the formula that defines them).
        assert_eq!(SDK_OPERATION, Duration::from_millis(1600));
        assert_eq!(CALLS_AFTER_SEND, 2);
        assert_eq!(AFTER_SEND, Duration::from_millis(3600));
    }

    #[cfg(feature = "runtime")]
    #[tokio::test]
    async fn the_sdk_calls_use_the_budget() {
        // The timeouts the functions' SDK clients really get are the budget's: a longer one in
        // `ops::aws::load` would let the step after RedTrack run past the deadline.
        let sdk = crate::ops::aws::load().await;
        let timeouts = sdk.timeout_config().expect("timeouts configured");
        assert_eq!(timeouts.connect_timeout(), Some(SDK_CONNECT));
        assert_eq!(timeouts.operation_attempt_timeout(), Some(SDK_ATTEMPT));
        assert_eq!(timeouts.operation_timeout(), Some(SDK_OPERATION));
    }
}
