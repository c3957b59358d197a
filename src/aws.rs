//! AWS SDK configuration shared by both functions: loaded once at cold start, with timeouts so a
//! hanging DynamoDB or SQS cannot eat the invocation (the handler then answers 503).

use aws_config::timeout::TimeoutConfig;
use std::time::Duration;

pub async fn load() -> aws_config::SdkConfig {
    // Lambda always sets AWS_REGION; a local run without one falls back rather than failing
    // every call.
    let region =
        aws_config::meta::region::RegionProviderChain::default_provider().or_else("us-east-1");
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(region)
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_millis(1000))
                .operation_attempt_timeout(Duration::from_millis(1500))
                .operation_timeout(Duration::from_millis(4000))
                .build(),
        )
        .load()
        .await
}
