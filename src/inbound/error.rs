//! The one application error type for requests refused before anything is claimed or sent, and
//! its mapping to HTTP. Each 4xx says precisely what was wrong; 5xx say little, the logs say the
//! rest. (Outcomes after the claim are decided by [`crate::bridge::Report`].)

use crate::conversion::rules::Reject;
use crate::inbound::auth::AuthError;
use crate::inbound::verify::VerifyError;
use crate::inbound::webhook::ParseError;
use crate::ledger::claim::LedgerError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(
        "no such route: POST /cartpanda, GET /cartpanda/s2s, POST /cartpanda/<shop>, GET /cartpanda/<shop>/s2s"
    )]
    NotFound,
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("method {0} is not allowed; Cartpanda webhooks are POSTed")]
    MethodNotAllowed(String),
    #[error("method {0} is not allowed; S2S postbacks are GET requests")]
    S2sMethodNotAllowed(String),
    #[error("request body is marked base64-encoded but is not valid base64")]
    BadBase64,
    #[error("content type `{0}` is not supported; send the webhook as application/json")]
    UnsupportedMediaType(String),
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error(transparent)]
    Reject(#[from] Reject),
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// The ledger (DynamoDB) could not be read for a named shop's settings.
    #[error("the shop settings could not be read; redeliver later")]
    Ledger(#[from] LedgerError),
}

impl AppError {
    pub fn status(&self) -> u16 {
        match self {
            AppError::NotFound => 404,
            AppError::Auth(_) => 401,
            AppError::MethodNotAllowed(_) | AppError::S2sMethodNotAllowed(_) => 405,
            AppError::BadBase64 => 400,
            AppError::UnsupportedMediaType(_) => 415,
            AppError::Parse(ParseError::TooLarge(_)) => 413,
            AppError::Parse(_) => 400,
            AppError::Reject(Reject::OrderMissing | Reject::OrderNotObject(_)) => 400,
            AppError::Reject(_) => 422,
            AppError::Verify(e) => e.status(),
            AppError::Ledger(_) => 503,
        }
    }

    /// The field and reason of a 422 (value-free), for the refusal record; `None` for any other
    /// status.
    pub fn refused_field(&self) -> Option<(String, String)> {
        if self.status() != 422 {
            return None;
        }
        match self {
            AppError::Reject(reject) => reject.field_and_reason(),
            AppError::Verify(err) => Some(("order".to_owned(), err.reason().to_owned())),
            _ => None,
        }
    }

    /// The `Allow` header of a 405.
    pub fn allow(&self) -> Option<&'static str> {
        match self {
            AppError::MethodNotAllowed(_) => Some("POST"),
            AppError::S2sMethodNotAllowed(_) => Some("GET"),
            _ => None,
        }
    }

    /// A short stable code for logs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            AppError::NotFound => "not_found",
            AppError::Auth(_) => "unauthorized",
            AppError::MethodNotAllowed(_) | AppError::S2sMethodNotAllowed(_) => {
                "method_not_allowed"
            }
            AppError::BadBase64 => "bad_base64",
            AppError::UnsupportedMediaType(_) => "unsupported_media_type",
            AppError::Parse(ParseError::TooLarge(_)) => "body_too_large",
            AppError::Parse(_) => "bad_body",
            AppError::Reject(_) => "unprocessable_order",
            AppError::Verify(VerifyError::Unavailable(_)) => "verification_unavailable",
            AppError::Verify(_) => "order_not_verified",
            // Frozen: metrics and alarms use the value.
            AppError::Ledger(_) => "store_unavailable",
        }
    }
}
