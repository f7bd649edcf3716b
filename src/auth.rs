//! Builds the frontend's authenticator from `[auth]`: reads the JWKS file, or fetches the JWKS
//! URL at start and keeps refreshing it so that keys rotated at the issuer are picked up.

use std::time::Duration;

use anyhow::Context;
use frontend::auth::{Authenticator, JwtRules, JwtVerifier, KeySet};
use tokio_util::sync::CancellationToken;

use crate::config::{AuthConfig, AuthMode};

/// Which process serves the HTTP routes: only the embedded one may run without authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Embedded,
    Frontend,
}

/// The authenticator `[auth]` describes, plus the JWKS URL to keep refreshing (if any).
pub async fn build(config: &AuthConfig, role: Role) -> anyhow::Result<Authenticator> {
    match config.mode {
        AuthMode::Anonymous => {
            anyhow::ensure!(
                role == Role::Embedded,
                "auth.mode = \"anonymous\" is only for skycut serve; a shared frontend needs \
                 auth.mode = \"ingress\" or \"jwt\" (SKYCUT_AUTH__MODE)"
            );
            Ok(Authenticator::Anonymous {
                owner: "anonymous".to_owned(),
            })
        }
        AuthMode::Ingress => Ok(Authenticator::Ingress {
            trust_any: config.trust_headers_from_any,
        }),
        AuthMode::Jwt => {
            let rules = JwtRules {
                issuer: config
                    .issuer
                    .clone()
                    .context("auth.issuer is required with auth.mode = \"jwt\"")?,
                audience: config
                    .audience
                    .clone()
                    .context("auth.audience is required with auth.mode = \"jwt\"")?,
                required_scope: config.required_scope.clone(),
                username_claim: config.username_claim.clone(),
                max_lifetime: (config.max_token_lifetime > 0).then_some(config.max_token_lifetime),
            };
            let keys = match (&config.jwks_path, &config.jwks_url) {
                (Some(path), None) => {
                    let text = std::fs::read_to_string(path).with_context(|| {
                        format!("cannot read auth.jwks_path {}", path.display())
                    })?;
                    KeySet::from_jwks_json(&text)
                        .map_err(anyhow::Error::msg)
                        .with_context(|| format!("invalid JWKS in {}", path.display()))?
                }
                (None, Some(url)) => fetch(&http_client()?, url).await?,
                _ => anyhow::bail!(
                    "auth.mode = \"jwt\" needs exactly one of auth.jwks_path and auth.jwks_url"
                ),
            };
            Ok(Authenticator::Jwt(JwtVerifier::new(rules, keys)))
        }
    }
}

/// Refreshes the key set from `auth.jwks_url` until shutdown; a failed fetch keeps the keys
/// already held (the issuer being briefly down must not lock every user out).
pub fn spawn_refresh(
    config: &AuthConfig,
    app: frontend::AppState,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let Some(url) = config.jwks_url.clone() else {
        return Ok(());
    };
    let every = Duration::from_secs(config.jwks_refresh.max(1));
    let client = http_client()?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            let Authenticator::Jwt(verifier) = &app.auth else {
                return;
            };
            match fetch(&client, &url).await {
                Ok(keys) => verifier.replace_keys(keys),
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), url, "JWKS refresh failed; keeping the keys held")
                }
            }
        }
    });
    Ok(())
}

fn http_client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .context("cannot build the HTTP client for the JWKS")
}

async fn fetch(client: &reqwest::Client, url: &str) -> anyhow::Result<KeySet> {
    let text = client
        .get(url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| format!("cannot fetch the JWKS from {url}"))?
        .text()
        .await
        .with_context(|| format!("cannot read the JWKS from {url}"))?;
    KeySet::from_jwks_json(&text)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("invalid JWKS at {url}"))
}
