//! Who may call the job-store service: callers present a JWT (HS256, a key shared by the
//! deployment's frontends, workers and wobbly) naming the service whose jobs they act on and,
//! optionally, the user they act for.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// The claims of a wobbly token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The service whose jobs the caller acts on.
    pub service: String,
    /// The user the caller acts for; absent for a service's own components (frontend, workers),
    /// which check owners themselves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Expiry, Unix seconds.
    pub exp: u64,
}

/// Signs and checks tokens with one secret. Cloning copies the keys.
#[derive(Clone)]
pub struct TokenKey {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey([redacted])")
    }
}

impl TokenKey {
    /// A key from a shared secret (an empty secret is refused).
    pub fn new(secret: &[u8]) -> Result<TokenKey, jsonwebtoken::errors::Error> {
        Ok(TokenKey {
            encoding: EncodingKey::from_secret(secret)?,
            decoding: DecodingKey::from_secret(secret)?,
        })
    }

    /// A token for `service` (and `user`), valid for `ttl_seconds`.
    pub fn issue(
        &self,
        service: &str,
        user: Option<&str>,
        ttl_seconds: u64,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let claims = Claims {
            service: service.to_owned(),
            user: user.map(str::to_owned),
            exp: now + ttl_seconds,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
    }

    /// The claims of a valid, unexpired token.
    pub fn verify(&self, token: &str) -> Result<Claims, jsonwebtoken::errors::Error> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.required_spec_claims = ["exp".to_owned()].into_iter().collect();
        validation.leeway = 5;
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation).map(|d| d.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_verify_with_the_same_key_only() {
        let key = TokenKey::new(b"secret").expect("key");
        let token = key.issue("cutout", Some("alice"), 60).expect("token");
        let claims = key.verify(&token).expect("valid");
        assert_eq!(claims.service, "cutout");
        assert_eq!(claims.user.as_deref(), Some("alice"));
        assert!(
            TokenKey::new(b"other")
                .expect("key")
                .verify(&token)
                .is_err()
        );
        assert!(key.verify("not.a.token").is_err());
    }
}
