//! A real S3 protocol server on loopback for the bucket tests: `moto` in server mode, from the
//! worktree's venv (`scripts/install-deps` installs it). It does not check signatures, only that
//! a request carries one, so the tests set up and inspect buckets with a plain HTTP client and a
//! dummy `Authorization` header.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::blocking::Client;

const AUTHORIZATION: &str = "authorization";
const DUMMY_SIGNATURE: &str = "AWS4-HMAC-SHA256 Credential=testing/20200101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0";

pub struct Moto {
    pub endpoint: String,
    child: Child,
    http: Client,
}

impl Moto {
    pub fn start() -> Moto {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
        let child = Command::new(&python)
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start moto with {}: {e}", python.display()));
        let moto = Moto {
            endpoint: format!("http://127.0.0.1:{port}"),
            child,
            http: Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while moto.http.get(&moto.endpoint).send().is_err() {
            assert!(Instant::now() < deadline, "moto did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    pub fn create_bucket(&self, bucket: &str) {
        let r = self
            .http
            .put(format!("{}/{bucket}", self.endpoint))
            .header(AUTHORIZATION, DUMMY_SIGNATURE)
            .send()
            .expect("create bucket");
        assert!(r.status().is_success(), "create bucket: {}", r.status());
    }

    pub fn put_object(&self, bucket: &str, key: &str, body: Vec<u8>) {
        let r = self
            .http
            .put(format!("{}/{bucket}/{key}", self.endpoint))
            .body(body)
            .header(AUTHORIZATION, DUMMY_SIGNATURE)
            .send()
            .expect("put object");
        assert!(r.status().is_success(), "put object: {}", r.status());
    }

    pub fn delete_object(&self, bucket: &str, key: &str) {
        let r = self
            .http
            .delete(format!("{}/{bucket}/{key}", self.endpoint))
            .header(AUTHORIZATION, DUMMY_SIGNATURE)
            .send()
            .expect("delete object");
        assert!(r.status().is_success(), "delete object: {}", r.status());
    }

    pub fn object_exists(&self, bucket: &str, key: &str) -> bool {
        let r = self
            .http
            .head(format!("{}/{bucket}/{key}", self.endpoint))
            .header(AUTHORIZATION, DUMMY_SIGNATURE)
            .send()
            .expect("head object");
        r.status().is_success()
    }

    /// Stops the server: the store "goes away".
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}
