//! Who is calling: the one [`Authenticator`] the configuration chose, turning a request's headers
//! into a user name (or an authentication failure).
//!
//! Three modes. `Anonymous` (embedded `skycut serve` only) makes every request one fixed owner.
//! `Ingress` believes the user that an authenticating proxy (Rubin's Gafaelfawr) puts in
//! `X-Auth-Request-User`, but only from a trusted proxy address, so a client that reaches the
//! service directly cannot claim to be anyone. `Jwt` validates a Bearer token itself: signature
//! against a JWKS (RS256 or ES256 only, the algorithm fixed by the key, never by the token),
//! issuer, audience, expiry, and a required scope.
//!
//! Tokens are credentials: nothing here logs one or puts one into an error message.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use axum::http::HeaderMap;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use uws::queue::DelegatedToken;

use crate::error::FrontendError;

/// The header in which an authenticating ingress names the user.
pub const USER_HEADER: &str = "x-auth-request-user";

/// The header in which an authenticating ingress passes the user's delegated token (Gafaelfawr
/// sends a token with the scopes the service asked for).
pub const TOKEN_HEADER: &str = "x-auth-request-token";

/// Longest user name accepted, in bytes; Gafaelfawr's own limit is 64.
const MAX_USER_LEN: usize = 64;

/// Seconds of clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECONDS: u64 = 5;

/// How the service decides who is calling.
pub enum Authenticator {
    /// Every request is `owner`.
    Anonymous { owner: String },
    /// The user named by a trusted authenticating proxy.
    Ingress {
        /// Believe the proxy headers from any peer (the network guarantees that only the proxy
        /// can reach the service), not only from the trusted proxy addresses.
        trust_any: bool,
    },
    /// A Bearer JWT validated here.
    Jwt(JwtVerifier),
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Authenticator::Anonymous { owner } => write!(f, "Anonymous({owner})"),
            Authenticator::Ingress { trust_any } => write!(f, "Ingress(trust_any={trust_any})"),
            Authenticator::Jwt(_) => f.write_str("Jwt"),
        }
    }
}

impl Authenticator {
    /// The user a request acts for. `peer` is the address the connection came from, `trusted`
    /// the proxies whose headers are believed.
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        peer: Option<IpAddr>,
        trusted: &[IpAddr],
    ) -> Result<String, FrontendError> {
        match self {
            Authenticator::Anonymous { owner } => Ok(owner.clone()),
            Authenticator::Ingress { trust_any } => {
                if !from_proxy(*trust_any, peer, trusted) {
                    return Err(unauthenticated(
                        "requests must come through the authenticating proxy",
                        false,
                    ));
                }
                let user = headers
                    .get(USER_HEADER)
                    .ok_or_else(|| unauthenticated("the request carries no user", false))?
                    .to_str()
                    .map_err(|_| unauthenticated("the user name is not ASCII", false))?;
                check_user(user.trim()).map_err(|m| unauthenticated(&m, false))
            }
            Authenticator::Jwt(verifier) => {
                let token = bearer_token(headers)?;
                verifier.verify(token)
            }
        }
    }
}

impl Authenticator {
    /// The credential a request carries for the worker to read source images as the user: the
    /// ingress's `X-Auth-Request-Token` (believed under the same rule as the user header), or
    /// the Bearer token this service validated. Call it after [`Authenticator::authenticate`]
    /// succeeded.
    pub fn delegated_token(
        &self,
        headers: &HeaderMap,
        peer: Option<IpAddr>,
        trusted: &[IpAddr],
    ) -> Option<DelegatedToken> {
        let token = match self {
            Authenticator::Anonymous { .. } => None,
            Authenticator::Ingress { trust_any } => from_proxy(*trust_any, peer, trusted)
                .then(|| headers.get(TOKEN_HEADER)?.to_str().ok())
                .flatten(),
            Authenticator::Jwt(_) => bearer_token(headers).ok(),
        };
        token
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(DelegatedToken::new)
    }
}

/// Whether an ingress header is believed: from a trusted proxy address, or from anyone when the
/// network guarantees that only the proxy reaches the service. The user and the delegated token
/// are believed under this one rule.
fn from_proxy(trust_any: bool, peer: Option<IpAddr>, trusted: &[IpAddr]) -> bool {
    trust_any || peer.is_some_and(|ip| trusted.contains(&ip))
}

/// The token of an `Authorization: Bearer …` header.
fn bearer_token(headers: &HeaderMap) -> Result<&str, FrontendError> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| unauthenticated("a Bearer token is required", false))?
        .to_str()
        .map_err(|_| unauthenticated("the Authorization header is not ASCII", true))?;
    let (scheme, token) = value.trim().split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(unauthenticated(
            "the Authorization header must be Bearer TOKEN",
            true,
        ));
    }
    Ok(token.trim())
}

/// A 401. `invalid_token` is false when the request carried no credentials at all (RFC 6750
/// §3.1: then the challenge names no error code).
fn unauthenticated(message: &str, invalid_token: bool) -> FrontendError {
    let challenge = if invalid_token {
        "Bearer realm=\"skycut\", error=\"invalid_token\""
    } else {
        "Bearer realm=\"skycut\""
    };
    FrontendError::Unauthenticated {
        message: message.to_owned(),
        challenge: challenge.to_owned(),
    }
}

/// User names become job owners and log fields: printable ASCII without spaces or quotes,
/// bounded in length.
fn check_user(user: &str) -> Result<String, String> {
    if user.is_empty() {
        return Err("the user name is empty".into());
    }
    if user.len() > MAX_USER_LEN {
        return Err(format!("the user name is longer than {MAX_USER_LEN} bytes"));
    }
    if !user
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
    {
        return Err("the user name may hold only letters, digits, '-', '_', '.' and '@'".into());
    }
    Ok(user.to_owned())
}

/// What a JWT must say to be accepted.
#[derive(Debug, Clone)]
pub struct JwtRules {
    /// Required `iss`.
    pub issuer: String,
    /// Required member of `aud`.
    pub audience: String,
    /// A scope the space-separated `scope` claim must hold.
    pub required_scope: String,
    /// The claim holding the user name (Gafaelfawr: `username`; most issuers: `sub`).
    pub username_claim: String,
    /// Seconds a token may be valid for, from `iat` (or from now, without `iat`) to `exp`;
    /// `None`: any.
    pub max_lifetime: Option<u64>,
}

/// The verification keys of a JWKS: only RS256 and ES256 (P-256) keys are kept.
pub struct KeySet {
    keys: Vec<VerificationKey>,
}

struct VerificationKey {
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

impl KeySet {
    /// Reads a JWKS document. Keys of other types or algorithms are skipped; a set with no
    /// usable key is an error, so a wrong file is noticed at start.
    pub fn from_jwks_json(text: &str) -> Result<KeySet, String> {
        let set: JwkSet =
            serde_json::from_str(text).map_err(|e| format!("not a JWKS document: {e}"))?;
        let mut keys = Vec::new();
        for jwk in &set.keys {
            let algorithm = match (&jwk.algorithm, jwk.common.key_algorithm) {
                (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
                (AlgorithmParameters::EllipticCurve(p), None | Some(KeyAlgorithm::ES256))
                    if p.curve == jsonwebtoken::jwk::EllipticCurve::P256 =>
                {
                    Algorithm::ES256
                }
                _ => continue,
            };
            let key = DecodingKey::from_jwk(jwk).map_err(|e| {
                format!(
                    "key {:?} is not usable: {e}",
                    jwk.common.key_id.as_deref().unwrap_or("")
                )
            })?;
            keys.push(VerificationKey {
                kid: jwk.common.key_id.clone(),
                algorithm,
                key,
            });
        }
        if keys.is_empty() {
            return Err("the JWKS holds no RS256 or ES256 key".into());
        }
        Ok(KeySet { keys })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key a token names by `kid`; a token without `kid` may use the only key of its
    /// algorithm.
    fn find(&self, kid: Option<&str>, algorithm: Algorithm) -> Option<&VerificationKey> {
        match kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid) && k.algorithm == algorithm),
            None => {
                let mut candidates = self.keys.iter().filter(|k| k.algorithm == algorithm);
                match (candidates.next(), candidates.next()) {
                    (Some(only), None) => Some(only),
                    _ => None,
                }
            }
        }
    }
}

/// Validates Bearer tokens against a key set that a refresher may replace while requests run.
pub struct JwtVerifier {
    rules: JwtRules,
    keys: RwLock<Arc<KeySet>>,
}

impl JwtVerifier {
    pub fn new(rules: JwtRules, keys: KeySet) -> JwtVerifier {
        JwtVerifier {
            rules,
            keys: RwLock::new(Arc::new(keys)),
        }
    }

    /// Swaps in a freshly fetched key set (keys rotated at the issuer).
    pub fn replace_keys(&self, keys: KeySet) {
        let mut guard = self.keys.write().unwrap_or_else(|e| e.into_inner());
        *guard = Arc::new(keys);
    }

    /// The user a valid token names: 401 for a missing, malformed, forged, expired or
    /// wrongly addressed token, 403 for a valid one without the required scope.
    pub fn verify(&self, token: &str) -> Result<String, FrontendError> {
        let invalid = |m: &str| unauthenticated(m, true);
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| invalid("the token is not a well-formed JWT"))?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(invalid("the token must be signed with RS256 or ES256"));
        }
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner()).clone();
        let key = keys
            .find(header.kid.as_deref(), header.alg)
            .ok_or_else(|| invalid("the token is signed with an unknown key"))?;
        let mut validation = Validation::new(key.algorithm);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.rules.issuer]);
        validation.set_audience(&[&self.rules.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let claims = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token,
            &key.key,
            &validation,
        )
        .map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            invalid(match e.kind() {
                ErrorKind::ExpiredSignature => "the token has expired",
                ErrorKind::ImmatureSignature => "the token is not valid yet",
                ErrorKind::InvalidAudience => "the token is not meant for this service",
                ErrorKind::InvalidIssuer => "the token comes from an unknown issuer",
                ErrorKind::InvalidSignature => "the token's signature does not verify",
                ErrorKind::MissingRequiredClaim(_) => {
                    "the token lacks a required claim (exp, iss, aud)"
                }
                _ => "the token is not valid",
            })
        })?
        .claims;
        if let Some(max) = self.rules.max_lifetime {
            let exp = claims.get("exp").and_then(serde_json::Value::as_i64);
            let from = claims
                .get("iat")
                .and_then(serde_json::Value::as_i64)
                .unwrap_or_else(|| time::OffsetDateTime::now_utc().unix_timestamp());
            let lifetime = exp.map_or(i64::MAX, |exp| exp.saturating_sub(from));
            if lifetime > i64::try_from(max).unwrap_or(i64::MAX) {
                return Err(invalid(
                    "the token is valid for longer than this service accepts",
                ));
            }
        }
        let user = claims
            .get(&self.rules.username_claim)
            .and_then(|v| v.as_str())
            .ok_or_else(|| invalid("the token names no user"))?;
        let user = check_user(user).map_err(|m| invalid(&m))?;
        let scopes: BTreeSet<&str> = claims
            .get("scope")
            .and_then(|v| v.as_str())
            .map(|s| s.split_ascii_whitespace().collect())
            .unwrap_or_default();
        if !scopes.contains(self.rules.required_scope.as_str()) {
            return Err(FrontendError::MissingScope {
                scope: self.rules.required_scope.clone(),
            });
        }
        Ok(user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_are_restricted_to_a_safe_alphabet() {
        assert_eq!(check_user("alice-1.b_c@x").as_deref(), Ok("alice-1.b_c@x"));
        for bad in ["", "a b", "a\"b", "../x", "a\nb", &"x".repeat(65)] {
            assert!(check_user(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_jwks_without_rs256_or_es256_keys_is_refused() {
        let hs = r#"{"keys":[{"kty":"oct","k":"c2VjcmV0","alg":"HS256"}]}"#;
        assert!(KeySet::from_jwks_json(hs).is_err());
        assert!(KeySet::from_jwks_json("{}").is_err());
    }

    #[test]
    fn the_delegated_token_is_taken_only_where_the_user_is_believed() {
        let mut headers = HeaderMap::new();
        headers.insert(USER_HEADER, "alice".parse().expect("header"));
        headers.insert(TOKEN_HEADER, "gt-abc".parse().expect("header"));
        let proxy = IpAddr::from([10, 0, 0, 1]);
        let other = IpAddr::from([10, 0, 0, 2]);
        let ingress = Authenticator::Ingress { trust_any: false };
        let token = ingress.delegated_token(&headers, Some(proxy), &[proxy]);
        assert_eq!(token.as_ref().map(DelegatedToken::secret), Some("gt-abc"));
        assert!(
            ingress
                .delegated_token(&headers, Some(other), &[proxy])
                .is_none()
        );
        let anonymous = Authenticator::Anonymous {
            owner: "anonymous".into(),
        };
        assert!(
            anonymous
                .delegated_token(&headers, Some(proxy), &[proxy])
                .is_none()
        );
        headers.insert(
            axum::http::header::AUTHORIZATION,
            "Bearer eyJ.x.y".parse().expect("header"),
        );
        // A JWT is the credential the service validated: it is what goes on.
        let jwt = Authenticator::Jwt(JwtVerifier::new(
            JwtRules {
                issuer: "https://issuer".into(),
                audience: "skycut".into(),
                required_scope: "read:image".into(),
                username_claim: "sub".into(),
                max_lifetime: None,
            },
            KeySet { keys: Vec::new() },
        ));
        let token = jwt.delegated_token(&headers, None, &[]);
        assert_eq!(token.as_ref().map(DelegatedToken::secret), Some("eyJ.x.y"));
    }

    #[test]
    fn ingress_headers_are_ignored_from_untrusted_peers() {
        let auth = Authenticator::Ingress { trust_any: false };
        let mut headers = HeaderMap::new();
        headers.insert(USER_HEADER, "alice".parse().expect("header"));
        let proxy = IpAddr::from([10, 0, 0, 1]);
        let other = IpAddr::from([10, 0, 0, 2]);
        assert_eq!(
            auth.authenticate(&headers, Some(proxy), &[proxy]).ok(),
            Some("alice".to_owned())
        );
        assert!(auth.authenticate(&headers, Some(other), &[proxy]).is_err());
        assert!(auth.authenticate(&headers, None, &[proxy]).is_err());
    }
}
