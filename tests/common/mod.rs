//! Test support: start a `skycut serve` process, speak the protocol to it, check documents
//! against the IVOA schemas with xmllint.

#![allow(dead_code)]

pub mod moto;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::blocking::{Client, Response};
use reqwest::redirect::Policy;

/// The test image repository every app gets: `butler://test/field` is 512×512 float32 at
/// RA 150, Dec 2, 1 arcsec pixels.
pub const IMAGE: &str = "butler://test/field";
pub const RA: f64 = 150.0;
pub const DEC: f64 = 2.0;
pub const PIXEL_DEG: f64 = 1.0 / 3600.0;

pub fn schemas() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::env::var_os("SKYCUT_SCHEMAS")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("../shared/schemas"))
}

/// A running `skycut serve` with its own data directory; killed on drop.
pub struct TestApp {
    pub base: String,
    pub dir: tempfile::TempDir,
    child: Child,
    http: Client,
}

pub struct AppBuilder {
    env: Vec<(String, String)>,
}

pub fn app() -> AppBuilder {
    AppBuilder { env: Vec::new() }
}

pub fn spawn_app() -> TestApp {
    app().start()
}

impl AppBuilder {
    /// Sets a configuration key through the environment, e.g. `("JOBS__MAX_WAIT", "5")`.
    pub fn config(mut self, key: &str, value: &str) -> AppBuilder {
        self.env.push((format!("SKYCUT_{key}"), value.to_owned()));
        self
    }

    pub fn start(self) -> TestApp {
        let dir = tempfile::tempdir().expect("tempdir");
        let images = dir.path().join("images");
        std::fs::create_dir_all(&images).expect("images dir");
        soda::write_synthetic_image(
            &images.join("field.fits"),
            &soda::SyntheticImage {
                nx: 512,
                ny: 512,
                ra_deg: RA,
                dec_deg: DEC,
                pixel_scale_deg: PIXEL_DEG,
            },
        )
        .expect("test image");
        let mut command = Command::new(env!("CARGO_BIN_EXE_skycut"));
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .arg("--repository")
            .arg(format!("test={}", images.display()))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in &self.env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("start skycut");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read skycut's first line");
        let base = line
            .trim()
            .strip_prefix("skycut listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        let http = Client::builder()
            .redirect(Policy::none())
            .timeout(Duration::from_secs(120))
            .build()
            .expect("client");
        TestApp {
            base,
            dir,
            child,
            http,
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn url_with(base: &str, params: &[(&str, &str)]) -> String {
    if params.is_empty() {
        return base.to_owned();
    }
    let query: String = form_urlencoded(params);
    format!("{base}?{query}")
}

pub fn form_urlencoded(params: &[(&str, &str)]) -> String {
    params
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn get(&self, path: &str, params: &[(&str, &str)]) -> Response {
        self.http
            .get(url_with(&self.url(path), params))
            .send()
            .expect("GET")
    }

    pub fn get_url(&self, url: &str) -> Response {
        self.http.get(url).send().expect("GET")
    }

    pub fn get_with_header(&self, path: &str, name: &str, value: &str) -> Response {
        self.http
            .get(self.url(path))
            .header(name, value)
            .send()
            .expect("GET")
    }

    pub fn post(&self, path: &str, params: &[(&str, &str)]) -> Response {
        self.http
            .post(self.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_urlencoded(params))
            .send()
            .expect("POST")
    }

    pub fn delete(&self, path: &str) -> Response {
        self.http.delete(self.url(path)).send().expect("DELETE")
    }

    /// POSTs a job (303 expected) and returns its ID.
    pub fn create_job(&self, params: &[(&str, &str)]) -> String {
        let r = self.post("/jobs", params);
        assert_eq!(
            r.status(),
            303,
            "create job: {}",
            r.text().unwrap_or_default()
        );
        let location = location(&r);
        assert!(location.starts_with(&self.url("/jobs/")), "{location}");
        location.rsplit('/').next().expect("id").to_owned()
    }

    pub fn cutout_job(&self) -> String {
        self.create_job(&[("ID", IMAGE), ("CIRCLE", &circle(RA, DEC, 20.0))])
    }

    pub fn run_job(&self, id: &str) {
        let r = self.post(&format!("/jobs/{id}/phase"), &[("PHASE", "RUN")]);
        assert_eq!(r.status(), 303, "run: {}", r.text().unwrap_or_default());
    }

    pub fn job_xml(&self, id: &str) -> String {
        let r = self.get(&format!("/jobs/{id}"), &[]);
        assert_eq!(r.status(), 200);
        r.text().expect("body")
    }

    pub fn phase(&self, id: &str) -> String {
        self.get(&format!("/jobs/{id}/phase"), &[])
            .text()
            .expect("phase")
    }

    /// Blocks (with WAIT, not sleeps) until the job is in a final phase; returns its XML.
    pub fn wait_final(&self, id: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let r = self.get(&format!("/jobs/{id}"), &[("WAIT", "5")]);
            assert_eq!(r.status(), 200);
            let doc = r.text().expect("body");
            let phase = element(&doc, "uws:phase").expect("phase");
            if !matches!(phase.as_str(), "PENDING" | "QUEUED" | "EXECUTING") {
                return doc;
            }
            assert!(Instant::now() < deadline, "job {id} still {phase}");
        }
    }

    pub fn job_ids(&self, params: &[(&str, &str)]) -> Vec<String> {
        let r = self.get("/jobs", params);
        assert_eq!(r.status(), 200);
        let doc = r.text().expect("body");
        attributes(&doc, "uws:jobref", "id")
    }
}

/// `CIRCLE` value with a radius in pixels of the test image.
pub fn circle(ra: f64, dec: f64, radius_px: f64) -> String {
    format!("{ra} {dec} {}", radius_px * PIXEL_DEG)
}

pub fn location(r: &Response) -> String {
    r.headers()
        .get("location")
        .expect("Location header")
        .to_str()
        .expect("ascii")
        .to_owned()
}

pub fn content_type(r: &Response) -> String {
    r.headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap_or_default().to_owned())
        .unwrap_or_default()
}

/// Text of the first `<name>…</name>` in a document.
pub fn element(doc: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = doc.find(&open)? + open.len();
    let end = doc[start..].find(&format!("</{name}>"))? + start;
    Some(doc[start..end].to_owned())
}

/// Values of `attr` on every `<name …>` element.
pub fn attributes(doc: &str, name: &str, attr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let open = format!("<{name} ");
    let key = format!("{attr}=\"");
    let mut rest = doc;
    while let Some(i) = rest.find(&open) {
        rest = &rest[i + open.len()..];
        let tag_end = rest.find('>').unwrap_or(rest.len());
        let tag = &rest[..tag_end];
        if let Some(j) = tag.find(&key) {
            let v = &tag[j + key.len()..];
            if let Some(k) = v.find('"') {
                out.push(v[..k].replace("&amp;", "&"));
            }
        }
    }
    out
}

/// Validates a document with `xmllint --nonet --schema` against a file in shared/schemas.
pub fn assert_valid(doc: &str, schema: &str) {
    let mut file = tempfile::NamedTempFile::new().expect("temp");
    file.write_all(doc.as_bytes()).expect("write");
    let out = Command::new("xmllint")
        .args(["--nonet", "--noout", "--schema"])
        .arg(schemas().join(schema))
        .arg(file.path())
        .output()
        .expect("run xmllint (apt-get install libxml2-utils)");
    assert!(
        out.status.success(),
        "document does not validate against {schema}:\n{}\n{doc}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn assert_uws_valid(doc: &str) {
    assert_valid(doc, "UWS.xsd");
}

/// Timestamps as UWS clients need them: UTC, milliseconds, `Z`.
pub fn assert_timestamp(s: &str) {
    let ok = s.len() == 24
        && s.ends_with('Z')
        && s.as_bytes()[10] == b'T'
        && s.as_bytes()[19] == b'.'
        && time_parse_ok(s);
    assert!(ok, "bad timestamp {s:?}");
}

fn time_parse_ok(s: &str) -> bool {
    s[..4].bytes().all(|b| b.is_ascii_digit()) && s[20..23].bytes().all(|b| b.is_ascii_digit())
}

/// Path of the source test image.
pub fn source_image(app: &TestApp) -> PathBuf {
    app.dir.path().join("images/field.fits")
}
