//! AWS SDK configuration shared by both functions: loaded once at cold start, with timeouts so a
//! hanging DynamoDB or SQS cannot eat the invocation (the handler then answers 503).

use aws_config::timeout::TimeoutConfig;
use std::time::Duration;

pub async fn load() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
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
