//! Reconciliation's errors, each saying whether a later run may succeed where this one failed
//! ([`ReconcileError::retryable`]): Cartpanda or DynamoDB unavailable is retryable; a refused API
//! token, a missing slug or a bad `--since` is not, and needs the operator.

use crate::reconcile::orders::ListError;

/// Why a shop's reconciliation (or an operator's back-fill) could not go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReconcileError {
    /// Cartpanda's order list or order API failed.
    #[error("{0}")]
    Cartpanda(#[from] ListError),
    /// The ledger's table (DynamoDB) failed.
    #[error("ledger: {0}")]
    Ledger(String),
    /// A shop's Cartpanda API token could not be read from SSM.
    #[error("{0}")]
    Secret(String),
    /// A shop's reconciliation is not set up right (slug, token, profile).
    #[error("{0}")]
    Setup(String),
    /// What an operator asked for cannot be done (`--since`, `--shop`).
    #[error("{0}")]
    Usage(String),
}

impl ReconcileError {
    /// Whether a later run may succeed without anyone changing anything.
    pub fn retryable(&self) -> bool {
        match self {
            ReconcileError::Cartpanda(err) => {
                matches!(err, ListError::Unavailable(_) | ListError::Deadline)
            }
            ReconcileError::Ledger(_) | ReconcileError::Secret(_) => true,
            ReconcileError::Setup(_) | ReconcileError::Usage(_) => false,
        }
    }
}

impl From<crate::ledger::claim::LedgerError> for ReconcileError {
    fn from(err: crate::ledger::claim::LedgerError) -> Self {
        ReconcileError::Ledger(err.to_string())
    }
}

/// The admin command answers in text.
impl From<ReconcileError> for String {
    fn from(err: ReconcileError) -> String {
        err.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_says_whether_a_later_run_may_succeed() {
        let cases = [
            (ReconcileError::from(ListError::Unauthorized(401)), false),
            (ListError::NotFound.into(), false),
            (ListError::Unavailable("HTTP 503".into()).into(), true),
            (ReconcileError::Ledger("timeout".into()), true),
            (ReconcileError::Secret("ssm".into()), true),
            (ReconcileError::Setup("no slug".into()), false),
            (ReconcileError::Usage("--since".into()), false),
        ];
        for (err, retryable) in cases {
            assert_eq!(err.retryable(), retryable, "{err}");
        }
    }
}
