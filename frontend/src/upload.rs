//! A bulk request's catalogue brought onto local disk: spooled from the request, or fetched from
//! a URL the operator allows.
//!
//! DALI lets an `UPLOAD` name a URL instead of a part of the request (`UPLOAD=cat,https://…`), so
//! that a catalogue an archive already publishes need not pass through the client. The frontend
//! then makes the request itself, from inside the deployment's network: whoever may name a URL
//! could make it reach any host it reaches (server-side request forgery). So it fetches only URLs
//! under a prefix the operator allows (`[bulk] upload_urls`, none by default), compared on the
//! parsed URL ([`UrlPrefix::allows`]: the same scheme, host and port, and the path at a `/`
//! boundary), never a URL carrying a user name or password, and follows a redirect only to a URL
//! it would fetch too. A fetch is bounded in time ([`UrlUploads::timeout`]) and in size
//! (`max_upload_bytes`, refused early when `Content-Length` says so), and spooled through the same
//! [`Spool`] as an uploaded part; whatever goes wrong is a `UsageError` naming the URL, before any
//! job exists.

use std::io::Write;
use std::time::Duration;

use reqwest::Url;

use crate::error::FrontendError;

type Result<T, E = FrontendError> = std::result::Result<T, E>;

/// Redirects followed, each to an allowed URL, before a fetch gives up.
const MAX_REDIRECTS: usize = 5;

/// A catalogue written to a temporary file as it arrives (never held in memory whole), refused
/// once it passes its limit; the file is removed when dropped.
pub struct Spool {
    file: tempfile::NamedTempFile,
    size: u64,
    limit: u64,
}

impl Spool {
    /// An empty spool that takes at most `limit` bytes.
    pub fn new(limit: u64) -> Result<Spool> {
        let file = tempfile::NamedTempFile::new()
            .map_err(|e| FrontendError::Internal(format!("cannot spool the upload: {e}")))?;
        Ok(Spool {
            file,
            size: 0,
            limit,
        })
    }

    /// Appends `chunk`, or answers `too_big()` (and writes nothing) when the catalogue would pass
    /// the limit.
    pub fn append(&mut self, chunk: &[u8], too_big: impl FnOnce() -> FrontendError) -> Result<()> {
        self.size = self.size.saturating_add(chunk.len() as u64);
        if self.size > self.limit {
            return Err(too_big());
        }
        self.file
            .write_all(chunk)
            .map_err(|e| FrontendError::Unavailable(format!("cannot spool the upload: {e}")))
    }

    /// The spooled file.
    pub fn into_file(self) -> tempfile::NamedTempFile {
        self.file
    }
}

/// A URL prefix catalogues may be fetched from: an `http` or `https` URL with a host, and no user
/// name, password, query or fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlPrefix(Url);

impl UrlPrefix {
    /// Reads a prefix from the configuration; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<UrlPrefix, String> {
        let url = Url::parse(text).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("{text:?} is not an http or https URL"));
        }
        if url.host().is_none() {
            return Err(format!("{text:?} names no host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!("{text:?} holds a user name or password"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "{text:?} has a query or a fragment: a prefix is a scheme, a host, a port and a path"
            ));
        }
        Ok(UrlPrefix(url))
    }

    /// Whether `url` lies under this prefix: the same scheme, host and port (a default port
    /// written or not), and a path that is the prefix's or continues it after a `/`, so
    /// `https://h/data` allows `https://h/data/cat.csv` but not `https://h/database.csv`.
    pub fn allows(&self, url: &Url) -> bool {
        let prefix = &self.0;
        url.scheme() == prefix.scheme()
            && url.host() == prefix.host()
            && url.port_or_known_default() == prefix.port_or_known_default()
            && path_under(url.path(), prefix.path())
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

/// Whether `path` is `prefix` or lies below it at a `/` boundary (both as the URL parser left
/// them: dot segments resolved, so `/data/../admin` is `/admin`).
fn path_under(path: &str, prefix: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || prefix.ends_with('/') || rest.starts_with('/'),
        None => false,
    }
}

/// Why `url` may not be fetched, if it may not.
fn refusal(allowed: &[UrlPrefix], url: &Url) -> Option<String> {
    if !matches!(url.scheme(), "http" | "https") {
        return Some("only http and https URLs are fetched".to_owned());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Some(
            "a URL holding a user name or password is not fetched (the job keeps its URL among \
             its parameters)"
                .to_owned(),
        );
    }
    if allowed.iter().any(|prefix| prefix.allows(url)) {
        return None;
    }
    let list: Vec<&str> = allowed.iter().map(UrlPrefix::as_str).collect();
    Some(format!(
        "it is not under a URL this service fetches catalogues from ({})",
        list.join(", ")
    ))
}

/// Where bulk catalogues may be fetched from by URL, and how long a fetch may take.
#[derive(Debug, Clone)]
pub struct UrlUploads {
    /// The prefixes a catalogue's URL must lie under; empty: no catalogue is fetched by URL.
    pub allowed: Vec<UrlPrefix>,
    /// From the start of a fetch to its last byte.
    pub timeout: Duration,
}

impl Default for UrlUploads {
    fn default() -> Self {
        UrlUploads {
            allowed: Vec::new(),
            timeout: Duration::from_secs(300),
        }
    }
}

impl UrlUploads {
    /// The URL an `UPLOAD` names (`text`, after `NAME,`), if this service may fetch it.
    pub fn check(&self, text: &str) -> Result<Url> {
        if self.allowed.is_empty() {
            return Err(FrontendError::Usage(format!(
                "UPLOAD names {text:?}, but this service fetches no catalogue by URL (its \
                 operator allows none: [bulk] upload_urls): send the catalogue in the request, \
                 UPLOAD=cat,param:cat with a part named cat"
            )));
        }
        let url = Url::parse(text.trim()).map_err(|e| {
            FrontendError::Usage(format!(
                "UPLOAD names {text:?}, which is neither param:PART (a part of this request) nor \
                 a URL ({e})"
            ))
        })?;
        match refusal(&self.allowed, &url) {
            None => Ok(url),
            Some(why) => Err(FrontendError::Usage(format!(
                "UPLOAD names {url}, which this service does not fetch: {why}"
            ))),
        }
    }

    /// Fetches the catalogue at `url` (checked by [`UrlUploads::check`]) into a temporary file of
    /// at most `limit` bytes.
    pub async fn fetch(&self, url: &Url, limit: u64) -> Result<tempfile::NamedTempFile> {
        let allowed = self.allowed.clone();
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            // A refused redirect stops here: its answer, a 3xx, is reported below.
            if attempt.previous().len() <= MAX_REDIRECTS
                && refusal(&allowed, attempt.url()).is_none()
            {
                attempt.follow()
            } else {
                attempt.stop()
            }
        });
        // A client per fetch: a catalogue URL is fetched once per bulk request, and the redirect
        // policy holds the allowed prefixes.
        let client = reqwest::Client::builder()
            .redirect(policy)
            .connect_timeout(self.timeout)
            .user_agent(concat!("skycut/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| FrontendError::Internal(format!("cannot make an HTTP client: {e}")))?;
        match tokio::time::timeout(self.timeout, download(&client, &self.allowed, url, limit)).await
        {
            Ok(file) => file,
            Err(_) => Err(FrontendError::Usage(format!(
                "the catalogue at {url} did not arrive within {} s (upload_timeout): no job was \
                 created",
                self.timeout.as_secs()
            ))),
        }
    }
}

/// Streams the answer for `url` into a [`Spool`].
async fn download(
    client: &reqwest::Client,
    allowed: &[UrlPrefix],
    url: &Url,
    limit: u64,
) -> Result<tempfile::NamedTempFile> {
    let failed = |what: String| {
        FrontendError::Usage(format!(
            "cannot fetch the catalogue at {url}: {what}; no job was created"
        ))
    };
    let too_big = || {
        failed(format!(
            "it is larger than {limit} bytes, the most this service takes (max_upload_bytes)"
        ))
    };
    let mut response = client
        .get(url.clone())
        .send()
        .await
        .map_err(|e| failed(describe(e)))?;
    let status = response.status();
    if status.is_redirection() {
        let to = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| response.url().join(v).ok());
        return Err(failed(match to {
            Some(to) => match refusal(allowed, &to) {
                Some(why) => format!("it redirects to {to}, which is not fetched: {why}"),
                None => format!("more than {MAX_REDIRECTS} redirects"),
            },
            None => format!("the server answered {status} with no usable Location"),
        }));
    }
    if !status.is_success() {
        return Err(failed(format!("the server answered {status}")));
    }
    if let Some(length) = response.content_length().filter(|n| *n > limit) {
        return Err(failed(format!(
            "its Content-Length, {length} bytes, is over the {limit} bytes this service takes \
             (max_upload_bytes)"
        )));
    }
    let mut spool = Spool::new(limit)?;
    while let Some(chunk) = response.chunk().await.map_err(|e| failed(describe(e)))? {
        spool.append(&chunk, too_big)?;
    }
    Ok(spool.into_file())
}

/// An HTTP client's error with its causes ("connection refused"), without the URL, which the
/// message names already.
fn describe(error: reqwest::Error) -> String {
    if error.is_timeout() {
        return "the server did not answer in time".to_owned();
    }
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Url {
        Url::parse(text).expect("url")
    }

    fn allows(prefix: &str, candidate: &str) -> bool {
        UrlPrefix::parse(prefix)
            .expect("prefix")
            .allows(&url(candidate))
    }

    #[test]
    fn a_url_under_the_prefix_is_allowed() {
        assert!(allows(
            "https://data.example.org/",
            "https://data.example.org/cat.csv"
        ));
        assert!(allows(
            "https://data.example.org",
            "https://data.example.org/a/b/cat.csv?v=2"
        ));
        assert!(allows(
            "https://data.example.org/cats",
            "https://data.example.org/cats"
        ));
        assert!(allows(
            "https://data.example.org/cats",
            "https://data.example.org/cats/m31.parquet"
        ));
        assert!(allows(
            "https://data.example.org/cats/",
            "https://data.example.org/cats/m31.parquet"
        ));
        // Case in the scheme and host, and a default port written out, change nothing.
        assert!(allows(
            "https://data.example.org/cats/",
            "HTTPS://Data.Example.ORG:443/cats/m31.parquet"
        ));
        assert!(allows(
            "http://127.0.0.1:8000/images",
            "http://127.0.0.1:8000/images/cat.csv"
        ));
    }

    #[test]
    fn a_lookalike_host_never_passes() {
        let prefix = "https://data.example.org/";
        for candidate in [
            "https://data.example.org.evil.com/cat.csv",
            "https://data.example.org@evil.com/cat.csv",
            "https://data.example.org:443@evil.com/cat.csv",
            "https://evil.com/data.example.org/cat.csv",
            "https://evil.com/?https://data.example.org/",
            "https://xdata.example.org/cat.csv",
            "https://sub.data.example.org/cat.csv",
            "https://data.example.org./cat.csv",
        ] {
            assert!(!allows(prefix, candidate), "{candidate}");
        }
    }

    #[test]
    fn the_scheme_and_the_port_must_be_the_prefix_s() {
        let prefix = "https://data.example.org/";
        assert!(!allows(prefix, "http://data.example.org/cat.csv"));
        assert!(!allows(prefix, "https://data.example.org:8443/cat.csv"));
        assert!(!allows(
            "http://127.0.0.1:8000/",
            "http://127.0.0.1:8001/cat.csv"
        ));
        assert!(!allows(
            "http://127.0.0.1:8000/",
            "http://127.0.0.1/cat.csv"
        ));
    }

    #[test]
    fn the_path_must_continue_the_prefix_at_a_slash() {
        let prefix = "https://data.example.org/cats";
        assert!(!allows(prefix, "https://data.example.org/catsup.csv"));
        assert!(!allows(prefix, "https://data.example.org/cats.csv"));
        assert!(!allows(prefix, "https://data.example.org/"));
        assert!(!allows(prefix, "https://data.example.org/other/cats"));
        // Dot segments are resolved before the comparison, percent-encoded or not.
        assert!(!allows(prefix, "https://data.example.org/cats/../admin"));
        assert!(!allows(
            prefix,
            "https://data.example.org/cats/%2e%2e/admin"
        ));
        assert!(!allows(
            "https://data.example.org/cats/",
            "https://data.example.org/cats"
        ));
    }

    #[test]
    fn a_prefix_is_an_http_url_with_a_host_and_nothing_after_its_path() {
        for bad in [
            "data.example.org/cats",
            "ftp://data.example.org/",
            "file:///etc/",
            "https://user:pw@data.example.org/",
            "https://data.example.org/cats?key=1",
            "https://data.example.org/cats#top",
            "",
        ] {
            assert!(UrlPrefix::parse(bad).is_err(), "{bad:?}");
        }
        assert!(UrlPrefix::parse("http://localhost:9000/").is_ok());
    }

    #[test]
    fn check_refuses_every_url_when_none_is_allowed_and_names_the_setting() {
        let none = UrlUploads::default();
        let Err(FrontendError::Usage(message)) = none.check("https://data.example.org/cat.csv")
        else {
            panic!("a URL upload was taken with none allowed");
        };
        assert!(message.contains("upload_urls"), "{message}");
        assert!(message.contains("allows none"), "{message}");
    }

    #[test]
    fn check_refuses_credentials_other_schemes_and_non_urls_with_a_reason() {
        let uploads = UrlUploads {
            allowed: vec![UrlPrefix::parse("https://data.example.org/").expect("prefix")],
            ..UrlUploads::default()
        };
        assert!(uploads.check("https://data.example.org/cat.csv").is_ok());
        for (text, says) in [
            ("https://me:pw@data.example.org/cat.csv", "user name"),
            ("ftp://data.example.org/cat.csv", "http and https"),
            ("cat.csv", "neither param:PART"),
            (
                "https://data.example.org.evil.com/cat.csv",
                "https://data.example.org/",
            ),
        ] {
            let Err(FrontendError::Usage(message)) = uploads.check(text) else {
                panic!("{text} was taken");
            };
            assert!(message.contains(says), "{text}: {message}");
        }
    }

    #[tokio::test]
    async fn a_fetch_that_gets_no_answer_in_time_is_a_usage_error_naming_the_url() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        // Takes connections and never answers.
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let uploads = UrlUploads {
            allowed: vec![UrlPrefix::parse(&format!("http://{addr}/")).expect("prefix")],
            timeout: Duration::from_secs(1),
        };
        let url = uploads
            .check(&format!("http://{addr}/cat.csv"))
            .expect("allowed");
        let Err(FrontendError::Usage(message)) = uploads.fetch(&url, 1000).await else {
            panic!("a silent server's catalogue was taken");
        };
        assert!(message.contains(url.as_str()), "{message}");
        assert!(message.contains("did not arrive within 1 s"), "{message}");
        silent.abort();
    }

    #[test]
    fn a_spool_refuses_the_chunk_that_passes_its_limit() {
        let mut spool = Spool::new(5).expect("spool");
        let too_big = || FrontendError::Usage("too big".to_owned());
        spool.append(b"abc", too_big).expect("3 bytes");
        spool.append(b"de", too_big).expect("5 bytes");
        assert!(spool.append(b"f", too_big).is_err());
        let file = spool.into_file();
        assert_eq!(std::fs::read(file.path()).expect("read"), b"abcde");
    }
}
