//! Extractors that turn an HTTP request into what the protocol talks about: DALI parameters, the
//! caller, and the base URL that every link in a response starts with.

use std::net::{IpAddr, SocketAddr};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRef, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{Extensions, HeaderMap, Method, header};
use uws::Parameters;

use uws::queue::DelegatedToken;

use crate::error::FrontendError;
use crate::state::{App, AppState};

/// The path under which the service lives; every URL the service writes starts with it.
pub const SERVICE_PATH: &str = "/api/cutout";

/// Largest request body accepted (a form-encoded POST): ample for real requests (a polygon of
/// 1000 vertices is about 40 KB), small enough that a flood of bodies cannot exhaust memory.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Most parameters one request may carry, query and body together.
pub const MAX_PARAMETERS: usize = 500;

/// The DALI parameters of a request: the query string, plus the form body of a POST. Names are
/// case-insensitive; values are kept as sent.
#[derive(Debug, Clone)]
pub struct DaliParams(pub Parameters);

impl<S: Send + Sync> FromRequest<S> for DaliParams {
    type Rejection = FrontendError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let mut params = Parameters::new();
        if let Some(query) = req.uri().query() {
            for (n, v) in form_urlencoded::parse(query.as_bytes()) {
                push_bounded(&mut params, &n, &v)?;
            }
        }
        if req.method() == Method::POST {
            let content_type = req
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/x-www-form-urlencoded")
                .to_ascii_lowercase();
            let body = Bytes::from_request(req, state).await.map_err(|e| {
                if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    FrontendError::Usage(format!(
                        "the request body is larger than {MAX_BODY_BYTES} bytes"
                    ))
                } else {
                    FrontendError::Usage(format!("cannot read the request body: {e}"))
                }
            })?;
            if !body.is_empty() {
                if !content_type.starts_with("application/x-www-form-urlencoded") {
                    return Err(FrontendError::Usage(format!(
                        "POST bodies must be application/x-www-form-urlencoded, not {content_type}"
                    )));
                }
                for (n, v) in form_urlencoded::parse(&body) {
                    push_bounded(&mut params, &n, &v)?;
                }
            }
        }
        Ok(DaliParams(params))
    }
}

fn push_bounded(params: &mut Parameters, name: &str, value: &str) -> Result<(), FrontendError> {
    if params.len() >= MAX_PARAMETERS {
        return Err(FrontendError::Usage(format!(
            "a request may carry at most {MAX_PARAMETERS} parameters"
        )));
    }
    // PostgreSQL cannot store NUL and XML 1.0 cannot carry control characters: refused here,
    // so the store and every document stay readable.
    let control = |s: &str| {
        s.chars()
            .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    };
    if control(name) || control(value) {
        return Err(FrontendError::Usage(format!(
            "parameter {:?} holds a control character",
            name.chars()
                .filter(|c| !c.is_control())
                .take(64)
                .collect::<String>()
        )));
    }
    params.push(name, value);
    Ok(())
}

/// The caller: the user name that owns the jobs a request touches, as the configured
/// [`crate::auth::Authenticator`] establishes it (401/403 if it cannot).
#[derive(Debug, Clone)]
pub struct Owner(pub String);

impl<S> FromRequestParts<S> for Owner
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = FrontendError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        // The request span established the caller already: a token is validated once.
        if let Some(owner) = parts.extensions.get::<Owner>() {
            return Ok(owner.clone());
        }
        let app = AppState::from_ref(state);
        app.auth
            .authenticate(&parts.headers, peer(parts), &app.settings.trusted_proxies)
            .map(Owner)
    }
}

/// The address the connection came from (a proxy's, behind one).
fn peer(parts: &Parts) -> Option<IpAddr> {
    peer_of(&parts.extensions)
}

/// The connection's peer address among a request's extensions.
pub fn peer_of(extensions: &Extensions) -> Option<IpAddr> {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// The caller's delegated token, if the request carries one (see
/// [`crate::auth::Authenticator::delegated_token`]). Extract it after [`Owner`], which rejects
/// an unauthenticated request first. It goes to the job queue and nowhere else.
#[derive(Debug, Clone)]
pub struct Delegated(pub Option<DelegatedToken>);

impl<S> FromRequestParts<S> for Delegated
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = FrontendError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let app = AppState::from_ref(state);
        Ok(Delegated(app.auth.delegated_token(
            &parts.headers,
            peer(parts),
            &app.settings.trusted_proxies,
        )))
    }
}

/// Longest `Idempotency-Key` accepted, in bytes (a UUID is 36).
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// The `Idempotency-Key` request header (IETF draft-ietf-httpapi-idempotency-key-header): a
/// client's name for one create, so that repeating the request (its answer was lost) answers the
/// first outcome instead of creating a second job. Sent as a structured-field string
/// (`"8e03978e-…"`) or bare; 1 to [`MAX_IDEMPOTENCY_KEY_LEN`] printable ASCII characters.
#[derive(Debug, Clone)]
pub struct IdempotencyKey(pub Option<String>);

impl IdempotencyKey {
    /// The job ID a create uses: the key's own (so that repeats meet), else a fresh random one.
    pub fn job_id(&self, owner: &str) -> uws::JobId {
        match &self.0 {
            Some(key) => uws::JobId::for_idempotency_key(owner, key),
            None => uws::JobId::random(),
        }
    }

    pub fn parse(value: &[u8]) -> Result<String, FrontendError> {
        let bad = || {
            FrontendError::Usage(format!(
                "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} printable ASCII characters"
            ))
        };
        let value = std::str::from_utf8(value).map_err(|_| bad())?.trim();
        let key = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        if key.is_empty()
            || key.len() > MAX_IDEMPOTENCY_KEY_LEN
            || !key.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
        {
            return Err(bad());
        }
        Ok(key.to_owned())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = FrontendError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let mut values = parts.headers.get_all("idempotency-key").iter();
        let key = values
            .next()
            .map(|v| IdempotencyKey::parse(v.as_bytes()))
            .transpose()?;
        if values.next().is_some() {
            return Err(FrontendError::Usage(
                "Idempotency-Key may be sent once".to_owned(),
            ));
        }
        Ok(IdempotencyKey(key))
    }
}

/// The absolute base URL of the service as the client sees it, e.g. `https://host/api/cutout`:
/// from configuration if set, else from `Host`, with `X-Forwarded-Proto` / `X-Forwarded-Host`
/// believed only from a trusted proxy.
#[derive(Debug, Clone)]
pub struct PublicBase(pub String);

impl PublicBase {
    pub fn jobs(&self) -> String {
        format!("{}/jobs", self.0)
    }

    pub fn job(&self, id: &str) -> String {
        format!("{}/jobs/{id}", self.0)
    }

    /// The web page's asset `name` (see [`crate::ui`]).
    pub fn ui(&self, name: &str) -> String {
        format!("{}/ui/{name}", self.0)
    }
}

impl<S> FromRequestParts<S> for PublicBase
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = FrontendError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let app = AppState::from_ref(state);
        Ok(PublicBase::of(&app, &parts.headers, peer(parts)))
    }
}

impl PublicBase {
    /// The base URL a request from `peer` with `headers` sees.
    pub fn of(app: &App, headers: &HeaderMap, peer: Option<IpAddr>) -> PublicBase {
        if let Some(url) = &app.settings.public_url {
            return PublicBase(url.trim_end_matches('/').to_owned());
        }
        let trusted = peer.is_some_and(|ip| app.settings.trusted_proxies.contains(&ip));
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let forwarded = |name: &str| if trusted { header(name) } else { None };
        let scheme = forwarded("x-forwarded-proto")
            .filter(|s| s == "http" || s == "https")
            .unwrap_or_else(|| "http".to_owned());
        let host = forwarded("x-forwarded-host")
            .or_else(|| header("host"))
            .filter(|h| is_plausible_host(h))
            .unwrap_or_else(|| "localhost".to_owned());
        PublicBase(format!("{scheme}://{host}{SERVICE_PATH}"))
    }
}

/// A host (and port) as a URL authority may hold it; anything else could inject into the URLs
/// the service writes.
fn is_plausible_host(host: &str) -> bool {
    host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}
