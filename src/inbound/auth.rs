//! The shared-secret check. Cartpanda signs nothing, so the token in the webhook URL (or the
//! `X-Webhook-Token` header) is the only gate. Checks run on bytes, without I/O, in constant time.

use sha2::{Digest, Sha256};
use std::fmt;
use subtle::{Choice, ConstantTimeEq};

/// Longest token looked at; a longer one is refused without hashing it.
pub const MAX_TOKEN_BYTES: usize = 512;
/// Secrets accepted at once (the current one and the next, while rotating).
pub const MAX_SECRETS: usize = 2;

/// A secret whose `Debug` and `Display` never show it.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Why a call was not authenticated. The messages are safe to return to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing token: pass ?token=... in the webhook URL or an X-Webhook-Token header")]
    Missing,
    #[error("the token is empty")]
    Empty,
    #[error("the token in the query and the X-Webhook-Token header disagree")]
    Disagree,
    #[error("invalid token")]
    Invalid,
}

/// The accepted webhook tokens, stored as SHA-256 digests so comparisons take the same time
/// whatever the presented token's length.
#[derive(Clone)]
pub struct Tokens {
    digests: Vec<[u8; 32]>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tokens([redacted] x{})", self.digests.len())
    }
}

impl Tokens {
    /// From `WEBHOOK_TOKEN`: one secret, or two separated by a comma while rotating.
    pub fn parse(value: &Secret) -> Result<Self, String> {
        let parts: Vec<&str> = value.expose().split(',').map(str::trim).collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err("is empty or has an empty entry".to_owned());
        }
        if parts.len() > MAX_SECRETS {
            return Err(format!(
                "holds {} secrets; at most {MAX_SECRETS} (current,next)",
                parts.len()
            ));
        }
        if let Some(p) = parts.iter().find(|p| p.len() > MAX_TOKEN_BYTES) {
            return Err(format!(
                "has a secret of {} bytes; at most {MAX_TOKEN_BYTES}",
                p.len()
            ));
        }
        if parts
            .iter()
            .any(|p| p.chars().any(|c| c.is_control() || c.is_whitespace()))
        {
            return Err("has a secret with whitespace or control characters".to_owned());
        }
        Ok(Tokens {
            digests: parts.iter().map(|p| digest(p.as_bytes())).collect(),
        })
    }

    /// From stored SHA-256 digests (hex), as kept for named stores.
    pub fn from_hex_digests<'a>(hex: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut digests = Vec::new();
        for h in hex {
            let h = h.trim();
            let mut d = [0u8; 32];
            hex::decode_to_slice(h, &mut d)
                .map_err(|_| "a stored token digest is not 64 hex digits".to_owned())?;
            digests.push(d);
        }
        if digests.is_empty() || digests.len() > MAX_SECRETS {
            return Err(format!("a store needs 1 to {MAX_SECRETS} tokens"));
        }
        Ok(Tokens { digests })
    }

    /// The hex SHA-256 digest a token is stored as.
    pub fn hex_digest(token: &str) -> String {
        hex::encode(digest(token.as_bytes()))
    }

    /// Checks the tokens a request presented (query and header). Every configured secret is
    /// compared, with no early return, so timing says nothing about which one matched.
    pub fn verify(&self, query: Option<&str>, header: Option<&[u8]>) -> Result<(), AuthError> {
        let presented: &[u8] = match (query.map(str::as_bytes), header) {
            (None, None) => return Err(AuthError::Missing),
            (Some(q), Some(h)) => {
                if !bool::from(digest(q).ct_eq(&digest(h))) {
                    return Err(AuthError::Disagree);
                }
                q
            }
            (Some(one), None) | (None, Some(one)) => one,
        };
        if presented.is_empty() {
            return Err(AuthError::Empty);
        }
        if presented.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Invalid);
        }
        let candidate = digest(presented);
        let mut ok = Choice::from(0);
        for known in &self.digests {
            ok |= known.ct_eq(&candidate);
        }
        if bool::from(ok) {
            Ok(())
        } else {
            Err(AuthError::Invalid)
        }
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(v: &str) -> Tokens {
        Tokens::parse(&Secret::new(v)).unwrap()
    }

    #[test]
    fn accepts_the_token_from_either_place() {
        let t = tokens("s3cret-token-value");
        assert_eq!(t.verify(Some("s3cret-token-value"), None), Ok(()));
        assert_eq!(t.verify(None, Some(b"s3cret-token-value")), Ok(()));
        assert_eq!(
            t.verify(Some("s3cret-token-value"), Some(b"s3cret-token-value")),
            Ok(())
        );
    }

    #[test]
    fn refuses_wrong_missing_and_disagreeing_tokens() {
        let t = tokens("s3cret-token-value");
        assert_eq!(t.verify(None, None), Err(AuthError::Missing));
        assert_eq!(t.verify(Some(""), None), Err(AuthError::Empty));
        assert_eq!(t.verify(Some("wrong"), None), Err(AuthError::Invalid));
        assert_eq!(
            t.verify(Some("S3CRET-TOKEN-VALUE"), None),
            Err(AuthError::Invalid)
        );
        assert_eq!(
            t.verify(Some("s3cret-token-value "), None),
            Err(AuthError::Invalid)
        );
        assert_eq!(
            t.verify(Some("s3cret-token-valu"), None),
            Err(AuthError::Invalid)
        );
        assert_eq!(
            t.verify(Some(&"x".repeat(10_000)), None),
            Err(AuthError::Invalid)
        );
        assert_eq!(
            t.verify(Some("s3cret-token-value"), Some(b"wrong")),
            Err(AuthError::Disagree)
        );
        assert_eq!(
            t.verify(Some("wrong"), Some(b"s3cret-token-value")),
            Err(AuthError::Disagree)
        );
    }

    #[test]
    fn stored_digests_check_like_the_secrets() {
        let t = Tokens::from_hex_digests([Tokens::hex_digest("store-secret-1").as_str()]).unwrap();
        assert_eq!(t.verify(Some("store-secret-1"), None), Ok(()));
        assert_eq!(
            t.verify(Some("store-secret-2"), None),
            Err(AuthError::Invalid)
        );
        assert!(Tokens::from_hex_digests(["abc"]).is_err());
        assert!(Tokens::from_hex_digests(std::iter::empty()).is_err());
    }

    #[test]
    fn two_secrets_rotate() {
        let t = tokens("old-secret-aaaa, new-secret-bbbb");
        assert_eq!(t.verify(Some("old-secret-aaaa"), None), Ok(()));
        assert_eq!(t.verify(Some("new-secret-bbbb"), None), Ok(()));
        assert_eq!(
            t.verify(Some("old-secret-aaaa,new-secret-bbbb"), None),
            Err(AuthError::Invalid)
        );
    }

    #[test]
    fn refuses_bad_configuration_and_never_prints_secrets() {
        for bad in ["", " ", "a,", "a,b,c", "has space"] {
            assert!(Tokens::parse(&Secret::new(bad)).is_err(), "{bad:?}");
        }
        let s = Secret::new("top-secret");
        assert_eq!(format!("{s:?} {s}"), "[redacted] [redacted]");
        assert!(!format!("{:?}", tokens("top-secret")).contains("top-secret"));
    }
}
