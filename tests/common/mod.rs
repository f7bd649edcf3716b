//! Test support: start a `skycut serve` process, speak the protocol to it, check documents
//! against the IVOA schemas with xmllint.

#![allow(dead_code)]

pub mod image_server;
pub mod moto;
pub mod postgres;
pub mod proxy;
pub mod redis;

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

/// Which processes a test talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// `skycut serve`: everything in one process, SQLite, in-process queue.
    Embedded,
    /// `skycut frontend` + `skycut worker` × N as separate processes, PostgreSQL and Redis.
    Distributed { workers: usize },
}

impl Topology {
    /// The suites run once per topology: `E2E_TOPOLOGY=distributed` selects the
    /// distributed one (scripts/test runs both).
    pub fn from_env() -> Topology {
        match std::env::var("E2E_TOPOLOGY").as_deref() {
            Ok("distributed") => Topology::Distributed { workers: 2 },
            _ => Topology::Embedded,
        }
    }
}

/// The user the default client names in ingress mode (and the embedded owner's name).
pub const DEFAULT_USER: &str = "anonymous";

pub fn postgres_url() -> String {
    std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A running Skycut (one process or several) with its own data directory, job-store scope and
/// Redis prefix; every process is killed on drop.
pub struct TestApp {
    pub base: String,
    pub dir: tempfile::TempDir,
    pub topology: Topology,
    /// Unique per app: the Redis key prefix and job-store service name.
    pub scope: String,
    frontend: Child,
    pub workers: Vec<Child>,
    /// `http://ADDR` of each worker's probe and metrics port, in the order of `workers`.
    pub worker_ops: Vec<String>,
    /// The job-store service and its URL (distributed topology).
    wobbly: Option<(Child, String)>,
    env: Vec<(String, String)>,
    /// Where each process's stderr goes, one file per process; `None`: inherited.
    log_dir: Option<PathBuf>,
    http: Client,
}

pub struct AppBuilder {
    env: Vec<(String, String)>,
    topology: Topology,
    log_filter: Option<String>,
    wobbly_proxy: Option<std::sync::Arc<proxy::LossyProxy>>,
}

pub fn app() -> AppBuilder {
    AppBuilder {
        env: Vec::new(),
        topology: Topology::from_env(),
        log_filter: None,
        wobbly_proxy: None,
    }
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

    /// The frontend and workers reach wobbly through `proxy` (distributed topology).
    pub fn wobbly_through(mut self, proxy: std::sync::Arc<proxy::LossyProxy>) -> AppBuilder {
        self.wobbly_proxy = Some(proxy);
        self
    }

    pub fn topology(mut self, topology: Topology) -> AppBuilder {
        self.topology = topology;
        self
    }

    /// Writes every process's stderr to a file under the app's `logs/` (read them with
    /// [`TestApp::logs`]), logging at `filter` (a `RUST_LOG` value).
    pub fn capture_logs(mut self, filter: &str) -> AppBuilder {
        self.log_filter = Some(filter.to_owned());
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
        let scope = format!("t{:032x}", rand_u128());
        let mut env = vec![
            (
                "SKYCUT_DATA_DIR".to_owned(),
                dir.path().join("data").display().to_string(),
            ),
            (
                "SKYCUT_SIGNING_KEY".to_owned(),
                format!("{:032x}{:032x}", rand_u128(), rand_u128()),
            ),
            (
                "SKYCUT_REPOSITORIES__TEST".to_owned(),
                images.display().to_string(),
            ),
            (
                "RUST_LOG".to_owned(),
                self.log_filter.clone().unwrap_or_else(|| "warn".to_owned()),
            ),
        ];
        let log_dir = self.log_filter.as_ref().map(|_| {
            let logs = dir.path().join("logs");
            std::fs::create_dir_all(&logs).expect("logs dir");
            logs
        });
        let mut wobbly = None;
        if let Topology::Distributed { .. } = self.topology {
            // A shared frontend refuses anonymous mode: the suites run it behind an
            // "ingress" on loopback (a trusted proxy), with the default client naming the user.
            env.push(("SKYCUT_AUTH__MODE".to_owned(), "ingress".to_owned()));
            env.push(("SKYCUT_DATABASE_URL".to_owned(), postgres_url()));
            env.push(("SKYCUT_REDIS_URL".to_owned(), redis_url()));
            env.push(("SKYCUT_REDIS_PREFIX".to_owned(), scope.clone()));
            env.push(("SKYCUT_SERVICE_NAME".to_owned(), scope.clone()));
            env.push((
                "SKYCUT_WOBBLY__TOKEN_KEY".to_owned(),
                format!("{:032x}", rand_u128()),
            ));
            env.push(("SKYCUT_WOBBLY__LISTEN".to_owned(), "127.0.0.1:0".to_owned()));
            env.push((
                "SKYCUT_WORKER__HEALTH_LISTEN".to_owned(),
                "127.0.0.1:0".to_owned(),
            ));
            env.extend(self.env.iter().cloned());
            // Frontend and workers reach the job store only through the wobbly service.
            let (child, line) = start_process(&["wobbly"], &env, log_dir.as_deref());
            let url = line
                .split_once(" listening on ")
                .map(|(_, url)| url.trim().to_owned())
                .unwrap_or_else(|| panic!("wobbly did not start: {line:?}"));
            let roles_url = match &self.wobbly_proxy {
                Some(proxy) => {
                    proxy.forward_to(&url);
                    proxy.url.clone()
                }
                None => url.clone(),
            };
            env.push(("SKYCUT_WOBBLY__URL".to_owned(), roles_url));
            wobbly = Some((child, url));
        } else {
            env.extend(self.env);
        }
        let role = match self.topology {
            Topology::Embedded => "serve",
            Topology::Distributed { .. } => "frontend",
        };
        let (frontend, line) =
            start_process(&[role, "--listen", "127.0.0.1:0"], &env, log_dir.as_deref());
        let base = line
            .split_once(" listening on ")
            .map(|(_, url)| url.trim().to_owned())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            "x-auth-request-user",
            reqwest::header::HeaderValue::from_static(DEFAULT_USER),
        );
        let http = Client::builder()
            .default_headers(headers)
            .redirect(Policy::none())
            .timeout(Duration::from_secs(120))
            .build()
            .expect("client");
        let mut app = TestApp {
            base,
            dir,
            topology: self.topology,
            scope,
            frontend,
            workers: Vec::new(),
            worker_ops: Vec::new(),
            wobbly,
            env,
            log_dir,
            http,
        };
        if let Topology::Distributed { workers } = self.topology {
            for _ in 0..workers {
                app.start_worker();
            }
        }
        app
    }
}

pub fn rand_u128() -> u128 {
    use std::hash::{BuildHasher, Hasher};
    let a = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let b = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    (u128::from(a) << 64) | u128::from(b)
}

/// Starts `skycut ARGS` with `env` and returns it with the first line it prints; with `log_dir`,
/// its stderr goes to a new file there.
pub fn start_process(
    args: &[&str],
    env: &[(String, String)],
    log_dir: Option<&std::path::Path>,
) -> (Child, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_skycut"));
    let stderr = match log_dir {
        Some(dir) => {
            let n = std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
            let file = std::fs::File::create(dir.join(format!("{n:02}-{}.log", args[0])))
                .expect("log file");
            Stdio::from(file)
        }
        None => Stdio::inherit(),
    };
    command.args(args).stdout(Stdio::piped()).stderr(stderr);
    // Hermetic: only the configuration the test chose, never the caller's SKYCUT_* settings.
    for (k, _) in std::env::vars() {
        if k.starts_with("SKYCUT_") {
            command.env_remove(k);
        }
    }
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().expect("start skycut");
    let stdout = child.stdout.take().expect("stdout");
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .expect("read skycut's first line");
    // Keep draining stdout so the process never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut sink = String::new();
        while reader.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
            sink.clear();
        }
    });
    (child, line)
}

impl TestApp {
    /// Starts one more `skycut worker` (distributed topology only).
    pub fn start_worker(&mut self) -> usize {
        let (child, line) = start_process(&["worker"], &self.env, self.log_dir.as_deref());
        assert!(line.contains("ready"), "worker did not start: {line:?}");
        let ops = line
            .split_once("health on ")
            .map(|(_, url)| url.trim().to_owned())
            .unwrap_or_else(|| panic!("worker serves no health port: {line:?}"));
        self.workers.push(child);
        self.worker_ops.push(ops);
        self.workers.len() - 1
    }

    /// Everything the app's processes wrote to stderr so far (with `capture_logs`), each file
    /// after a `== NAME ==` line.
    pub fn logs(&self) -> String {
        self.log_files()
            .iter()
            .map(|f| {
                let text = std::fs::read_to_string(f).expect("log file");
                format!("== {} ==\n{text}", f.display())
            })
            .collect()
    }

    /// What each `skycut worker` wrote to stderr so far (with `capture_logs`), in the order of
    /// [`TestApp::workers`].
    pub fn worker_logs(&self) -> Vec<String> {
        self.log_files()
            .iter()
            .filter(|f| f.to_string_lossy().ends_with("-worker.log"))
            .map(|f| std::fs::read_to_string(f).expect("log file"))
            .collect()
    }

    /// The log file of each process (with `capture_logs`), in the order they were started.
    fn log_files(&self) -> Vec<PathBuf> {
        let dir = self
            .log_dir
            .as_ref()
            .expect("logs are captured (capture_logs)");
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .expect("logs dir")
            .map(|e| e.expect("log entry").path())
            .collect();
        files.sort();
        files
    }

    /// The value of a setting the app's processes were started with, e.g. `SKYCUT_SIGNING_KEY`.
    pub fn env_value(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The wobbly service's base URL (distributed topology).
    pub fn wobbly_url(&self) -> Option<&str> {
        self.wobbly.as_ref().map(|(_, url)| url.as_str())
    }

    /// Kills the wobbly service (distributed topology): the job store becomes unreachable.
    pub fn kill_wobbly(&mut self) {
        if let Some((child, _)) = self.wobbly.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts wobbly again on the address it had (after [`TestApp::kill_wobbly`]).
    pub fn restart_wobbly(&mut self) {
        let Some((child, url)) = self.wobbly.as_mut() else {
            return;
        };
        let _ = child.kill();
        let _ = child.wait();
        let mut env = self.env.clone();
        env.push((
            "SKYCUT_WOBBLY__LISTEN".to_owned(),
            url.trim_start_matches("http://").to_owned(),
        ));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (new, line) = start_process(&["wobbly"], &env, self.log_dir.as_deref());
            if line.contains(" listening on ") {
                *child = new;
                return;
            }
            // The port may not be free yet; try again.
            let mut new = new;
            let _ = new.kill();
            let _ = new.wait();
            assert!(
                Instant::now() < deadline,
                "wobbly did not restart: {line:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `http://ADDR` of the frontend, where the probes and `/metrics` live (outside the
    /// service path).
    pub fn root(&self) -> &str {
        self.base.trim_end_matches("/api/cutout")
    }

    pub fn is_distributed(&self) -> bool {
        matches!(self.topology, Topology::Distributed { .. })
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let wobbly = self.wobbly.as_mut().map(|(child, _)| child);
        for child in self
            .workers
            .iter_mut()
            .chain(std::iter::once(&mut self.frontend))
            .chain(wobbly)
        {
            let _ = child.kill();
            let _ = child.wait();
        }
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

    /// POSTs a `multipart/form-data` body: `fields` as text parts, `files` as file parts
    /// (name, bytes), written out by hand as RFC 7578 lays them.
    pub fn post_multipart(
        &self,
        path: &str,
        fields: &[(&str, &str)],
        files: &[(&str, &[u8])],
    ) -> Response {
        let boundary = format!("skycut{:032x}", rand_u128());
        let mut body = Vec::new();
        for (name, value) in fields {
            body.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
                )
                .as_bytes(),
            );
        }
        for (name, bytes) in files {
            body.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; \
                     filename=\"{name}.csv\"\r\nContent-Type: text/csv\r\n\r\n"
                )
                .as_bytes(),
            );
            body.extend_from_slice(bytes);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        self.http
            .post(self.url(path))
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body)
            .send()
            .expect("POST")
    }

    /// A client that sends `headers` on every request instead of the default user's.
    pub fn as_caller(&self, headers: &[(&str, &str)]) -> Caller<'_> {
        Caller {
            app: self,
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
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
        self.as_caller(&[]).wait_final(id)
    }

    /// Blocks (WAIT wakes on the phase event) until the job leaves QUEUED; returns the new phase.
    pub fn wait_until_not_queued(&self, id: &str) -> String {
        self.as_caller(&[]).wait_until_not_queued(id)
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

/// Writes `butler://test/big`, an 8192×4096 image: cutting all of it (`CIRCLE RA DEC 1`) takes
/// long enough for a test to act while the job is EXECUTING.
pub fn big_image(app: &TestApp) -> &'static str {
    soda::write_synthetic_image(
        &app.dir.path().join("images/big.fits"),
        &soda::SyntheticImage {
            nx: 8192,
            ny: 4096,
            ra_deg: RA,
            dec_deg: DEC,
            pixel_scale_deg: PIXEL_DEG,
        },
    )
    .expect("big image");
    "butler://test/big"
}

/// Sends a signal (`STOP`, `CONT`, `TERM`...) to a process the test started.
pub fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{name} {}", child.id());
}

/// The files holding a job's result objects in the local bucket of `app`: the flat files named
/// `{job}+{attempt}+{result}` (and any under a `{job}/` directory of the earlier nested layout),
/// metadata files left out.
pub fn bucket_objects(app: &TestApp, job: &str) -> Vec<PathBuf> {
    let bucket = app.dir.path().join("data/bucket");
    let flat = format!("{job}+");
    let mut found = Vec::new();
    let mut pending = vec![bucket.join(job)];
    for entry in std::fs::read_dir(&bucket).into_iter().flatten().flatten() {
        if entry.file_name().to_string_lossy().starts_with(&flat) {
            found.push(entry.path());
        }
    }
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            match entry.file_type().is_ok_and(|t| t.is_dir()) {
                true => pending.push(entry.path()),
                false => found.push(entry.path()),
            }
        }
    }
    found.retain(|p| p.extension().is_none_or(|e| e != "meta"));
    found
}

/// Writes a new FITS file at `path` whose primary HDU is a float32 image of `dimensions` (C
/// order: NAXIS1 last) holding `data`, with the `text` and `real` header cards.
pub fn write_primary_image(
    path: &Path,
    dimensions: &[usize],
    text: &[(&str, &str)],
    real: &[(&str, f64)],
    data: &[f32],
) {
    let description = fitsio::images::ImageDescription {
        data_type: fitsio::images::ImageType::Float,
        dimensions,
    };
    let mut f = fitsio::FitsFile::create(path)
        .with_custom_primary(&description)
        .open()
        .expect("create image");
    let hdu = f.primary_hdu().expect("primary");
    for &(k, v) in text {
        hdu.write_key(&mut f, k, v).expect(k);
    }
    for &(k, v) in real {
        hdu.write_key(&mut f, k, v).expect(k);
    }
    hdu.write_image(&mut f, data).expect("pixels");
}

/// Path of the source test image.
pub fn source_image(app: &TestApp) -> PathBuf {
    app.dir.path().join("images/field.fits")
}

/// Requests to a [`TestApp`] with the caller's own credentials (a user header or a Bearer token).
pub struct Caller<'a> {
    pub app: &'a TestApp,
    headers: Vec<(String, String)>,
}

impl Caller<'_> {
    fn send(&self, request: reqwest::blocking::RequestBuilder) -> Response {
        let mut request = request;
        for (k, v) in &self.headers {
            request = request.header(k.as_str(), v.as_str());
        }
        request.send().expect("request")
    }

    pub fn get(&self, path: &str, params: &[(&str, &str)]) -> Response {
        self.send(self.app.http.get(url_with(&self.app.url(path), params)))
    }

    pub fn post(&self, path: &str, params: &[(&str, &str)]) -> Response {
        self.send(
            self.app
                .http
                .post(self.app.url(path))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form_urlencoded(params)),
        )
    }

    pub fn delete(&self, path: &str) -> Response {
        self.send(self.app.http.delete(self.app.url(path)))
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
        location(&r).rsplit('/').next().expect("id").to_owned()
    }

    /// Blocks (with WAIT) until the job is in a final phase; returns its XML.
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

    /// Blocks (WAIT wakes on the phase event) until the job leaves QUEUED; returns the new phase.
    pub fn wait_until_not_queued(&self, id: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let r = self.get(
                &format!("/jobs/{id}"),
                &[("WAIT", "10"), ("PHASE", "QUEUED")],
            );
            assert_eq!(r.status(), 200);
            let doc = r.text().expect("body");
            let phase = element(&doc, "uws:phase").expect("phase");
            if phase != "QUEUED" {
                return phase;
            }
            assert!(Instant::now() < deadline, "job {id} never started");
        }
    }

    pub fn phase(&self, id: &str) -> String {
        self.get(&format!("/jobs/{id}/phase"), &[])
            .text()
            .expect("phase")
    }

    pub fn job_ids(&self) -> Vec<String> {
        let r = self.get("/jobs", &[]);
        assert_eq!(r.status(), 200);
        attributes(&r.text().expect("body"), "uws:jobref", "id")
    }
}

/// The `STAMPS` HDU of a stamp table (the HDU after the empty primary): where its rows start,
/// and the value of one of its header cards by name.
fn stamps_hdu(bytes: &[u8]) -> (usize, impl Fn(&str) -> String + '_) {
    let cards: Vec<&[u8]> = bytes.chunks(80).collect();
    let ends: Vec<usize> = (0..cards.len())
        .filter(|&i| cards[i].starts_with(b"END "))
        .take(2)
        .collect();
    let start = (ends[1] * 80 / 2880 + 1) * 2880;
    let key = move |name: &str| -> String {
        cards[ends[0]..ends[1]]
            .iter()
            .find(|c| c.starts_with(format!("{name:<8}=").as_bytes()))
            .map(|c| {
                String::from_utf8_lossy(&c[10..])
                    .trim()
                    .trim_matches('\'')
                    .trim()
                    .to_owned()
            })
            .unwrap_or_else(|| panic!("no {name} card"))
    };
    (start, key)
}

/// The `STAMPS` rows of a stamp table: (ROW, IMAGE, CRPIX1, CRPIX2, pixels) each, read from
/// the bytes as FITS lays them out (the header after the primary's, rows big-endian).
pub fn stamp_rows(bytes: &[u8], size: usize) -> Vec<(i64, i32, f64, f64, Vec<f32>)> {
    let (start, key) = stamps_hdu(bytes);
    let naxis2: usize = key("NAXIS2").parse().expect("NAXIS2");
    let row_bytes = 68 + 4 * size * size;
    let f64_at = |at: usize| f64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    (0..naxis2)
        .map(|n| {
            let row = start + n * row_bytes;
            let pixels = bytes[row + 68..row + row_bytes]
                .chunks(4)
                .map(|b| f32::from_be_bytes(b.try_into().expect("4 bytes")))
                .collect();
            (
                i64::from_be_bytes(bytes[row..row + 8].try_into().expect("8 bytes")),
                i32::from_be_bytes(bytes[row + 24..row + 28].try_into().expect("4 bytes")),
                f64_at(row + 52),
                f64_at(row + 60),
                pixels,
            )
        })
        .collect()
}

/// One row of a stamp table whose stamps have shapes of their own (`RADIUS`, or per-row
/// sizes): catalogue row, image, `CRPIX1`, `CRPIX2`, `NX`, `NY` and the pixels from the heap.
pub struct VariedStamp {
    pub row: i64,
    pub image: i32,
    pub crpix: (f64, f64),
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<f32>,
}

/// The rows of a stamp table with a variable-length `STAMP` column (`1QE`), read by hand as
/// FITS lays them out: the rows, then the heap they point into.
pub fn varied_stamp_rows(bytes: &[u8]) -> Vec<VariedStamp> {
    let (start, key) = stamps_hdu(bytes);
    assert_eq!(key("TTYPE12"), "STAMP");
    assert!(key("TFORM12").starts_with("1QE("), "{}", key("TFORM12"));
    let row_bytes: usize = key("NAXIS1").parse().expect("NAXIS1");
    let rows: usize = key("NAXIS2").parse().expect("NAXIS2");
    let heap = start + row_bytes * rows;
    let at = |n: usize, len: usize| &bytes[n..n + len];
    let f64_at = |n: usize| f64::from_be_bytes(at(n, 8).try_into().expect("8 bytes"));
    let i32_at = |n: usize| i32::from_be_bytes(at(n, 4).try_into().expect("4 bytes"));
    let i64_at = |n: usize| i64::from_be_bytes(at(n, 8).try_into().expect("8 bytes"));
    (0..rows)
        .map(|n| {
            let row = start + n * row_bytes;
            let (count, offset) = (i64_at(row + 76) as usize, i64_at(row + 84) as usize);
            let stamp = VariedStamp {
                row: i64_at(row),
                image: i32_at(row + 24),
                crpix: (f64_at(row + 52), f64_at(row + 60)),
                width: i32_at(row + 68) as usize,
                height: i32_at(row + 72) as usize,
                pixels: at(heap + offset, 4 * count)
                    .chunks(4)
                    .map(|b| f32::from_be_bytes(b.try_into().expect("4 bytes")))
                    .collect(),
            };
            assert_eq!(stamp.width * stamp.height, count, "row {n}");
            stamp
        })
        .collect()
}

/// Checks that a stamp of the test image is exactly its source pixels: the window that the
/// stamp's `CRPIX` (the source's, moved by the window's first pixel) places, NaN off the image.
pub fn assert_stamp_is_a_source_window(
    app: &TestApp,
    (crpix1, crpix2): (f64, f64),
    pixels: &[f32],
    size: usize,
) {
    assert_stamp_is_a_window_of(&source_image(app), (crpix1, crpix2), pixels, size);
}

/// [`assert_stamp_is_a_source_window`] of the image at `path`.
pub fn assert_stamp_is_a_window_of(
    path: &std::path::Path,
    (crpix1, crpix2): (f64, f64),
    pixels: &[f32],
    size: usize,
) {
    assert_window_of(path, (crpix1, crpix2), pixels, (size, size));
}

/// [`assert_stamp_is_a_window_of`] for a stamp of `width`×`height` pixels.
pub fn assert_window_of(
    path: &std::path::Path,
    (crpix1, crpix2): (f64, f64),
    pixels: &[f32],
    (width, height): (usize, usize),
) {
    assert_eq!(pixels.len(), width * height);
    let mut f = fitsio::FitsFile::open(path).expect("source");
    let hdu = f.primary_hdu().expect("primary");
    let source: Vec<f32> = hdu.read_image(&mut f).expect("pixels");
    let (sw, sh) = match &hdu.info {
        fitsio::hdu::HduInfo::ImageInfo { shape, .. } => (shape[1] as i64, shape[0] as i64),
        _ => panic!("not an image"),
    };
    let crpix: f64 = hdu.read_key(&mut f, "CRPIX1").expect("CRPIX1");
    let crpix_y: f64 = hdu.read_key(&mut f, "CRPIX2").expect("CRPIX2");
    let (x0, y0) = ((crpix - crpix1) as i64, (crpix_y - crpix2) as i64);
    assert_eq!((x0 as f64, y0 as f64), (crpix - crpix1, crpix_y - crpix2));
    for j in 0..height as i64 {
        for i in 0..width as i64 {
            let (x, y) = (x0 + i, y0 + j);
            let got = pixels[(j * width as i64 + i) as usize];
            if (0..sw).contains(&x) && (0..sh).contains(&y) {
                assert_eq!(got, source[(y * sw + x) as usize], "({i},{j})");
            } else {
                assert!(got.is_nan(), "({i},{j}) off the image holds {got}");
            }
        }
    }
}

/// A bulk catalogue long enough to be killed or aborted half-way: `images` hard links to the big
/// test image, 200 stamps of 16×16 spread over each (so each is read stamp by stamp), every row
/// naming its image. Returns the catalogue and its row count.
pub fn slow_bulk_catalogue(app: &TestApp, images: usize) -> (String, usize) {
    big_image(app);
    let dir = app.dir.path().join("images");
    let mut catalogue = String::from("ra,dec,id\n");
    let mut rows = 0;
    for n in 0..images {
        std::fs::hard_link(dir.join("big.fits"), dir.join(format!("big{n}.fits"))).expect("link");
        for k in 0..200 {
            // Pixel offsets within ±1900 (x) and ±1900 (y) of the centre: on the image.
            let dx = ((k * 7919) % 3800) as f64 - 1900.0;
            let dy = ((k * 104_729) % 3800) as f64 - 1900.0;
            let ra = RA - dx * PIXEL_DEG / DEC.to_radians().cos();
            let dec = DEC + dy * PIXEL_DEG;
            catalogue.push_str(&format!("{ra},{dec},butler://test/big{n}\n"));
            rows += 1;
        }
    }
    (catalogue, rows)
}

pub fn create_bulk(app: &TestApp, catalogue: &str) -> String {
    let r = app.post_multipart(
        "/bulk",
        &[
            ("UPLOAD", "cat,param:cat"),
            ("SIZE", "16"),
            ("PHASE", "RUN"),
        ],
        &[("cat", catalogue.as_bytes())],
    );
    assert_eq!(r.status(), 303, "{:?}", r.text());
    location(&r).rsplit('/').next().expect("id").to_owned()
}
