//! The one application error type for requests refused before any I/O, and its mapping to HTTP.
//! Each maps to a precise 4xx whose message says what was wrong; 5xx are decided by the
//! [`crate::bridge::Report`] and say little, the logs say the rest.

use crate::auth::AuthError;
use crate::mapping::Reject;
use crate::webhook::ParseError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("method {0} is not allowed; Cartpanda webhooks are POSTed")]
    MethodNotAllowed(String),
    #[error("request body is marked base64-encoded but is not valid base64")]
    BadBase64,
    #[error("content type `{0}` is not supported; send the webhook as application/json")]
    UnsupportedMediaType(String),
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error(transparent)]
    Reject(#[from] Reject),
}

impl AppError {
    pub fn status(&self) -> u16 {
        match self {
            AppError::Auth(_) => 401,
            AppError::MethodNotAllowed(_) => 405,
            AppError::BadBase64 => 400,
            AppError::UnsupportedMediaType(_) => 415,
            AppError::Parse(ParseError::TooLarge(_)) => 413,
            AppError::Parse(_) => 400,
            AppError::Reject(Reject::OrderMissing | Reject::OrderNotObject(_)) => 400,
            AppError::Reject(_) => 422,
        }
    }

    /// A short stable code for logs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            AppError::Auth(_) => "unauthorized",
            AppError::MethodNotAllowed(_) => "method_not_allowed",
            AppError::BadBase64 => "bad_base64",
            AppError::UnsupportedMediaType(_) => "unsupported_media_type",
            AppError::Parse(ParseError::TooLarge(_)) => "body_too_large",
            AppError::Parse(_) => "bad_body",
            AppError::Reject(_) => "unprocessable_order",
        }
    }
}
