//! Ops: what runs the function rather than the path of a delivery: configuration from the
//! environment ([`config`]), the time budget of AWS calls ([`budget`]), logging, metrics, the clock, the AWS SDK set-up and the operator
//! commands ([`admin`]).

#[cfg(feature = "cli")]
pub mod admin;
#[cfg(feature = "runtime")]
pub mod aws;
pub mod budget;
pub mod clock;
pub mod config;
#[cfg(feature = "runtime")]
pub mod logging;
pub mod metrics;
pub mod secrets;
