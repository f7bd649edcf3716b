//! Authentication and per-user isolation through the real process: the ingress mode (user named
//! by a trusted proxy) and the JWT mode (Bearer tokens checked against `tests/keys/jwks.json`),
//! and, in both, another user's job answering exactly as a job that does not exist.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::common::{self, Caller, IMAGE, TestApp, attributes, circle};

const ISSUER: &str = "https://issuer.example.org";
const AUDIENCE: &str = "https://data.example.org";
/// A well-formed job ID that no job has.
const NO_SUCH_JOB: &str = "0123456789abcdef0123456789abcdef";

fn keys_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/keys")
}

fn key(name: &str) -> Vec<u8> {
    std::fs::read(keys_dir().join(name)).expect("test key")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// What a test token says; `valid` is accepted by the JWT app.
#[derive(Clone)]
struct Token {
    user: &'static str,
    issuer: &'static str,
    audience: &'static str,
    scope: &'static str,
    expires: u64,
    /// `rsa` or `ec` (keys in the JWKS), or `forged-rsa` (a key that is not).
    key: &'static str,
    kid: &'static str,
}

impl Token {
    fn valid(user: &'static str) -> Token {
        Token {
            user,
            issuer: ISSUER,
            audience: AUDIENCE,
            scope: "openid read:image",
            expires: now() + 600,
            key: "rsa",
            kid: "test-rsa",
        }
    }

    fn sign(&self) -> String {
        let claims = json!({
            "sub": self.user,
            "iss": self.issuer,
            "aud": self.audience,
            "scope": self.scope,
            "exp": self.expires,
            "iat": now(),
        });
        let (alg, encoding) = match self.key {
            "ec" => (Algorithm::ES256, EncodingKey::from_ec_der(&key("ec.der"))),
            name => (
                Algorithm::RS256,
                EncodingKey::from_rsa_der(&key(&format!("{name}.der"))),
            ),
        };
        let mut header = Header::new(alg);
        header.kid = Some(self.kid.to_owned());
        jsonwebtoken::encode(&header, &claims, &encoding).expect("sign")
    }

    fn bearer(&self) -> String {
        format!("Bearer {}", self.sign())
    }
}

fn jwt_app() -> TestApp {
    common::app()
        .config("AUTH__MODE", "jwt")
        .config(
            "AUTH__JWKS_PATH",
            &keys_dir().join("jwks.json").display().to_string(),
        )
        .config("AUTH__ISSUER", ISSUER)
        .config("AUTH__AUDIENCE", AUDIENCE)
        .start()
}

/// Ingress mode where no peer is a trusted proxy but the mode believes the headers anyway.
fn ingress_app() -> TestApp {
    common::app()
        .config("AUTH__MODE", "ingress")
        .config("TRUSTED_PROXIES", "[]")
        .config("AUTH__TRUST_HEADERS_FROM_ANY", "true")
        .start()
}

fn user<'a>(app: &'a TestApp, name: &str) -> Caller<'a> {
    app.as_caller(&[("x-auth-request-user", name)])
}

fn bearer<'a>(app: &'a TestApp, token: &Token) -> Caller<'a> {
    app.as_caller(&[("authorization", &token.bearer())])
}

/// A request with no credentials at all (not even the test client's default user).
fn bare_get(app: &TestApp, path: &str) -> reqwest::blocking::Response {
    reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .get(app.url(path))
        .send()
        .expect("GET")
}

fn header(r: &reqwest::blocking::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Status and body with the job ID blanked, so that answers about two IDs compare.
fn answer(r: reqwest::blocking::Response, id: &str) -> (u16, String) {
    let status = r.status().as_u16();
    (status, r.text().expect("body").replace(id, "{id}"))
}

/// Every route that names a job, as (label, request) pairs over a caller and a job ID.
#[allow(clippy::type_complexity)]
fn job_routes() -> Vec<(
    &'static str,
    Box<dyn Fn(&Caller, &str, &str) -> reqwest::blocking::Response>,
)> {
    vec![
        (
            "read",
            Box::new(|c, id, _| c.get(&format!("/jobs/{id}"), &[])),
        ),
        (
            "WAIT",
            Box::new(|c, id, _| c.get(&format!("/jobs/{id}"), &[("WAIT", "2")])),
        ),
        (
            "results",
            Box::new(|c, id, _| c.get(&format!("/jobs/{id}/results"), &[])),
        ),
        (
            "result file",
            Box::new(|c, id, r| c.get(&format!("/jobs/{id}/results/{r}"), &[])),
        ),
        (
            "phase",
            Box::new(|c, id, _| c.get(&format!("/jobs/{id}/phase"), &[])),
        ),
        (
            "phase RUN",
            Box::new(|c, id, _| c.post(&format!("/jobs/{id}/phase"), &[("PHASE", "RUN")])),
        ),
        (
            "phase ABORT",
            Box::new(|c, id, _| c.post(&format!("/jobs/{id}/phase"), &[("PHASE", "ABORT")])),
        ),
        (
            "parameters",
            Box::new(|c, id, _| c.get(&format!("/jobs/{id}/parameters"), &[])),
        ),
        (
            "set parameters",
            Box::new(|c, id, _| {
                c.post(
                    &format!("/jobs/{id}/parameters"),
                    &[("CIRCLE", &circle(common::RA, common::DEC, 5.0))],
                )
            }),
        ),
        (
            "destruction",
            Box::new(|c, id, _| c.get(&format!("/jobs/{id}/destruction"), &[])),
        ),
        (
            "set destruction",
            Box::new(|c, id, _| {
                c.post(
                    &format!("/jobs/{id}/destruction"),
                    &[("DESTRUCTION", "2030-01-01T00:00:00Z")],
                )
            }),
        ),
        (
            "executionduration",
            Box::new(|c, id, _| c.get(&format!("/jobs/{id}/executionduration"), &[])),
        ),
        (
            "set executionduration",
            Box::new(|c, id, _| {
                c.post(
                    &format!("/jobs/{id}/executionduration"),
                    &[("EXECUTIONDURATION", "5")],
                )
            }),
        ),
        (
            "error",
            Box::new(|c, id, _| c.get(&format!("/jobs/{id}/error"), &[])),
        ),
        (
            "quote",
            Box::new(|c, id, _| c.get(&format!("/jobs/{id}/quote"), &[])),
        ),
        (
            "owner",
            Box::new(|c, id, _| c.get(&format!("/jobs/{id}/owner"), &[])),
        ),
        (
            "POST job",
            Box::new(|c, id, _| c.post(&format!("/jobs/{id}"), &[])),
        ),
        (
            "ACTION=DELETE",
            Box::new(|c, id, _| c.post(&format!("/jobs/{id}"), &[("ACTION", "DELETE")])),
        ),
        (
            "DELETE",
            Box::new(|c, id, _| c.delete(&format!("/jobs/{id}"))),
        ),
    ]
}

/// The isolation scenario: alice's finished job and her pending one, probed by bob on every
/// route, answer as a job that does not exist; afterwards both of alice's jobs are unchanged.
fn check_isolation(alice: &Caller, bob: &Caller) {
    let done = alice.create_job(&[
        ("ID", IMAGE),
        ("CIRCLE", &circle(common::RA, common::DEC, 10.0)),
        ("PHASE", "RUN"),
    ]);
    let doc = alice.wait_final(&done);
    assert!(doc.contains("COMPLETED"), "{doc}");
    let result = attributes(&doc, "uws:result", "id")
        .first()
        .cloned()
        .expect("a result");
    let pending = alice.create_job(&[
        ("ID", IMAGE),
        ("CIRCLE", &circle(common::RA, common::DEC, 10.0)),
    ]);
    // What the store holds; the quote of a pending job is re-estimated and result URLs are
    // signed afresh (their expiry moves with the clock) on each read, so both are left out.
    let stored = |id: &str| {
        let doc = alice.get(&format!("/jobs/{id}"), &[]).text().expect("xml");
        doc.lines()
            .filter(|l| !l.contains("<uws:quote>"))
            .map(|l| match (l.find("?expires="), l.find("\" mime-type=")) {
                (Some(query), Some(end)) if query < end => format!("{}{}", &l[..query], &l[end..]),
                _ => l.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let before_done = stored(&done);
    let before_pending = stored(&pending);

    for (label, route) in job_routes() {
        let missing = answer(route(bob, NO_SUCH_JOB, &result), NO_SUCH_JOB);
        assert_eq!(missing.0, 404, "{label} on a missing job: {missing:?}");
        for id in [&done, &pending] {
            let theirs = answer(route(bob, id, &result), id);
            assert_eq!(theirs, missing, "{label} on another user's job");
        }
    }
    assert!(bob.job_ids().is_empty(), "bob sees jobs");
    assert_eq!(stored(&done), before_done);
    assert_eq!(stored(&pending), before_pending);
    let mut mine = alice.job_ids();
    mine.sort();
    let mut expected = vec![done, pending];
    expected.sort();
    assert_eq!(mine, expected);
}

#[test]
fn another_users_job_answers_as_missing_on_every_route_with_ingress_users() {
    let app = ingress_app();
    check_isolation(&user(&app, "alice"), &user(&app, "bob"));
}

#[test]
fn another_users_job_answers_as_missing_on_every_route_with_jwt_users() {
    let app = jwt_app();
    let alice = Token::valid("alice");
    let bob = Token {
        key: "ec",
        kid: "test-ec",
        ..Token::valid("bob")
    };
    check_isolation(&bearer(&app, &alice), &bearer(&app, &bob));
}

#[test]
fn ingress_request_without_user_gets_401_authentication_error() {
    let app = ingress_app();
    for path in ["/jobs", "/sync", "/links?ID=butler://test/field"] {
        let r = bare_get(&app, path);
        assert_eq!(r.status(), 401, "{path}");
        assert!(header(&r, "www-authenticate").starts_with("Bearer"));
        assert!(r.text().expect("body").starts_with("AuthenticationError: "));
    }
}

#[test]
fn ingress_headers_from_an_untrusted_peer_are_not_believed() {
    let app = common::app()
        .config("AUTH__MODE", "ingress")
        .config("TRUSTED_PROXIES", "[\"192.0.2.1\"]")
        .start();
    let r = user(&app, "alice").get("/jobs", &[]);
    assert_eq!(r.status(), 401);
    assert!(r.text().expect("body").contains("authenticating proxy"));
}

#[test]
fn ingress_user_names_outside_the_safe_alphabet_are_refused() {
    let app = ingress_app();
    for name in ["../alice", "alice bob", &"a".repeat(65)] {
        let r = user(&app, name).get("/jobs", &[]);
        assert_eq!(r.status(), 401, "{name:?}");
    }
}

#[test]
fn jwt_valid_rs256_and_es256_tokens_are_accepted() {
    let app = jwt_app();
    let rs = Token::valid("alice");
    let es = Token {
        key: "ec",
        kid: "test-ec",
        ..Token::valid("alice")
    };
    for token in [rs, es] {
        let r = bearer(&app, &token).get("/jobs", &[]);
        assert_eq!(r.status(), 200, "{}", r.text().unwrap_or_default());
    }
}

#[test]
fn jwt_missing_token_gets_401_with_a_bearer_challenge() {
    let app = jwt_app();
    for path in ["/jobs", "/links?ID=butler://test/field"] {
        let r = bare_get(&app, path);
        assert_eq!(r.status(), 401, "{path}");
        assert_eq!(header(&r, "www-authenticate"), "Bearer realm=\"skycut\"");
        assert!(r.text().expect("body").starts_with("AuthenticationError: "));
    }
}

/// Asserts a 401 `invalid_token` for the token, on a read and on job creation (nothing created).
fn assert_invalid_token(app: &TestApp, authorization: &str, why: &str) {
    let caller = app.as_caller(&[("authorization", authorization)]);
    let r = caller.get("/jobs", &[]);
    assert_eq!(r.status(), 401, "{why}");
    assert!(
        header(&r, "www-authenticate").contains("error=\"invalid_token\""),
        "{why}: {}",
        header(&r, "www-authenticate")
    );
    let body = r.text().expect("body");
    assert!(body.starts_with("AuthenticationError: "), "{why}: {body}");
    let r = caller.post(
        "/jobs",
        &[
            ("ID", IMAGE),
            ("CIRCLE", &circle(common::RA, common::DEC, 5.0)),
        ],
    );
    assert_eq!(r.status(), 401, "{why}: creation");
    assert!(
        bearer(app, &Token::valid("alice")).job_ids().is_empty(),
        "{why}: a job was created"
    );
}

#[test]
fn jwt_forged_token_gets_401_invalid_token() {
    let app = jwt_app();
    let forged = Token {
        key: "forged-rsa",
        ..Token::valid("alice")
    };
    assert_invalid_token(&app, &forged.bearer(), "forged");
    let unknown_kid = Token {
        kid: "other",
        ..Token::valid("alice")
    };
    assert_invalid_token(&app, &unknown_kid.bearer(), "unknown kid");
    assert_invalid_token(&app, "Bearer not.a.jwt", "garbage");
}

#[test]
fn jwt_hs256_token_is_refused_whatever_its_secret() {
    let app = jwt_app();
    // Algorithm confusion: an HMAC token keyed with the public JWKS must not verify.
    let claims = json!({"sub": "alice", "iss": ISSUER, "aud": AUDIENCE, "scope": "read:image", "exp": now() + 600});
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("test-rsa".into());
    let token = jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_secret(&std::fs::read(keys_dir().join("jwks.json")).expect("jwks"))
            .expect("key"),
    )
    .expect("sign");
    assert_invalid_token(&app, &format!("Bearer {token}"), "HS256");
}

#[test]
fn jwt_expired_token_gets_401_invalid_token() {
    let app = jwt_app();
    let expired = Token {
        expires: now() - 60,
        ..Token::valid("alice")
    };
    assert_invalid_token(&app, &expired.bearer(), "expired");
}

#[test]
fn jwt_wrong_audience_or_issuer_gets_401_invalid_token() {
    let app = jwt_app();
    let audience = Token {
        audience: "https://elsewhere.example.org",
        ..Token::valid("alice")
    };
    assert_invalid_token(&app, &audience.bearer(), "audience");
    let issuer = Token {
        issuer: "https://evil.example.org",
        ..Token::valid("alice")
    };
    assert_invalid_token(&app, &issuer.bearer(), "issuer");
}

#[test]
fn jwt_token_without_the_required_scope_gets_403_authorization_error() {
    let app = jwt_app();
    let token = Token {
        scope: "openid read:tap",
        ..Token::valid("alice")
    };
    let caller = bearer(&app, &token);
    let r = caller.get("/jobs", &[]);
    assert_eq!(r.status(), 403);
    assert_eq!(
        header(&r, "www-authenticate"),
        "Bearer realm=\"skycut\", error=\"insufficient_scope\", scope=\"read:image\""
    );
    assert!(r.text().expect("body").starts_with("AuthorizationError: "));
    let r = caller.get(
        "/sync",
        &[
            ("ID", IMAGE),
            ("CIRCLE", &circle(common::RA, common::DEC, 5.0)),
        ],
    );
    assert_eq!(r.status(), 403);
}

#[test]
fn shared_frontend_refuses_to_start_in_anonymous_mode() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_skycut"))
        .args(["frontend", "--listen", "127.0.0.1:0"])
        .env("SKYCUT_AUTH__MODE", "anonymous")
        .env("SKYCUT_DATA_DIR", tempfile::tempdir().expect("dir").path())
        .output()
        .expect("run skycut frontend");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("only for skycut serve"), "{stderr}");
}

/// Serves a JWKS document over HTTP on loopback; `set` replaces what it serves.
struct JwksServer {
    url: String,
    body: std::sync::Arc<std::sync::Mutex<String>>,
}

impl JwksServer {
    fn start(body: String) -> JwksServer {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/jwks.json", listener.local_addr().expect("addr"));
        let body = std::sync::Arc::new(std::sync::Mutex::new(body));
        let served = body.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf);
                let body = served.lock().map(|b| b.clone()).unwrap_or_default();
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        JwksServer { url, body }
    }

    fn set(&self, body: String) {
        *self.body.lock().expect("lock") = body;
    }
}

/// The test JWKS with only the keys whose `kid` is listed.
fn jwks_with(kids: &[&str]) -> String {
    let text = std::fs::read_to_string(keys_dir().join("jwks.json")).expect("jwks");
    let mut doc: serde_json::Value = serde_json::from_str(&text).expect("json");
    if let Some(keys) = doc["keys"].as_array_mut() {
        keys.retain(|k| kids.contains(&k["kid"].as_str().unwrap_or_default()));
    }
    doc.to_string()
}

#[test]
fn jwt_keys_from_a_jwks_url_are_refreshed_after_rotation() {
    let server = JwksServer::start(jwks_with(&["test-ec"]));
    let app = common::app()
        .config("AUTH__MODE", "jwt")
        .config("AUTH__JWKS_URL", &server.url)
        .config("AUTH__JWKS_REFRESH", "1")
        .config("AUTH__ISSUER", ISSUER)
        .config("AUTH__AUDIENCE", AUDIENCE)
        .start();
    let es = Token {
        key: "ec",
        kid: "test-ec",
        ..Token::valid("alice")
    };
    assert_eq!(bearer(&app, &es).get("/jobs", &[]).status(), 200);
    let rs = Token::valid("alice");
    assert_eq!(bearer(&app, &rs).get("/jobs", &[]).status(), 401);
    // The issuer rotates in the RSA key; the frontend picks it up at its next refresh.
    server.set(jwks_with(&["test-ec", "test-rsa"]));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while bearer(&app, &rs).get("/jobs", &[]).status() != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "rotated key not picked up"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn jwt_tokens_valid_for_longer_than_the_maximum_lifetime_are_refused() {
    let app = common::app()
        .config("AUTH__MODE", "jwt")
        .config(
            "AUTH__JWKS_PATH",
            &keys_dir().join("jwks.json").display().to_string(),
        )
        .config("AUTH__ISSUER", ISSUER)
        .config("AUTH__AUDIENCE", AUDIENCE)
        .config("AUTH__MAX_TOKEN_LIFETIME", "3600")
        .start();
    let short = Token::valid("alice");
    let r = bearer(&app, &short).get("/jobs", &[]);
    assert_eq!(r.status(), 200, "{}", r.text().unwrap_or_default());
    let long = Token {
        expires: now() + 30 * 24 * 3600,
        ..Token::valid("alice")
    };
    let r = bearer(&app, &long).get("/jobs", &[]);
    assert_eq!(r.status(), 401);
    assert!(
        r.text().expect("body").contains("valid for longer"),
        "a month-long token"
    );
}
