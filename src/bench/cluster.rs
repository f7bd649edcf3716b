//! The distributed topology as child processes of this executable: `skycut wobbly`,
//! `skycut frontend` and N × `skycut worker`, each configured only through `SKYCUT_*` variables,
//! with a Redis prefix and job-store service name unique to this run.
//!
//! [`Cluster`] owns the children: dropping it kills them, so an error anywhere in the bench
//! leaves no process behind (leaked ones hold PostgreSQL connections).

use std::io::{BufRead, BufReader};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;

/// Where the distributed roles find their dependencies and images.
pub struct ClusterSpec {
    pub postgres_url: String,
    pub redis_url: String,
    /// Image repositories every role sees: name → directory.
    pub repositories: Vec<(String, PathBuf)>,
    pub data_dir: PathBuf,
}

/// How many of each role a [`Cluster`] runs.
pub struct Topology {
    /// wobbly replicas, all over the same database; frontends and workers are spread over them
    /// in turn.
    pub wobblies: usize,
    /// Frontends, each on its own port (a load spreads itself over [`Cluster::bases`]).
    pub frontends: usize,
    pub workers: usize,
    /// Jobs each worker runs at once (`worker.concurrency`); `None` keeps the default.
    pub worker_concurrency: Option<usize>,
    /// Whether each worker serves `/metrics` (`worker.health_listen` on a free port).
    pub worker_metrics: bool,
}

/// A running distributed Skycut; every child is killed on drop.
pub struct Cluster {
    /// `http://ADDR/api/cutout` of the (first) frontend.
    pub base: String,
    /// `http://ADDR/api/cutout` of every frontend.
    pub bases: Vec<String>,
    /// `http://ADDR` of every wobbly replica.
    pub wobbly_urls: Vec<String>,
    /// `http://ADDR` where each worker serves `/metrics`, with [`Topology::worker_metrics`].
    pub worker_metrics: Vec<String>,
    /// The job-store service name (and Redis prefix) of this run.
    pub scope: String,
    env: Vec<(String, String)>,
    worker_concurrency: Option<usize>,
    wobblies: Vec<Child>,
    frontends: Vec<Child>,
    workers: Vec<Child>,
}

/// Whether a TCP connection to the host and port of `url` opens within a second.
pub fn reachable(url: &str) -> bool {
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return false;
    };
    let (Some(host), Some(port)) = (
        parsed.host_str(),
        parsed.port_or_known_default().or(match parsed.scheme() {
            "postgres" | "postgresql" => Some(5432),
            "redis" => Some(6379),
            _ => None,
        }),
    ) else {
        return false;
    };
    let Ok(addrs) = (host, port).to_socket_addrs() else {
        return false;
    };
    addrs
        .into_iter()
        .any(|a| TcpStream::connect_timeout(&a, Duration::from_secs(1)).is_ok())
}

/// 32 random bytes in hex: as long as a secret key must be.
fn random_hex() -> String {
    format!(
        "{:032x}{:032x}",
        rand::random::<u128>(),
        rand::random::<u128>()
    )
}

impl Cluster {
    /// Starts wobbly, the frontend and `workers` workers, and returns once each has said it is
    /// ready.
    pub fn start(spec: &ClusterSpec, workers: usize) -> anyhow::Result<Cluster> {
        Cluster::start_topology(
            spec,
            &Topology {
                wobblies: 1,
                frontends: 1,
                workers,
                worker_concurrency: None,
                worker_metrics: false,
            },
        )
    }

    /// Starts the roles of `topology`, and returns once each has said it is ready.
    pub fn start_topology(spec: &ClusterSpec, topology: &Topology) -> anyhow::Result<Cluster> {
        let scope = format!("bench{}", &random_hex()[..16]);
        let mut env = vec![
            (
                "SKYCUT_DATA_DIR".to_owned(),
                spec.data_dir.display().to_string(),
            ),
            ("SKYCUT_SIGNING_KEY".to_owned(), random_hex()),
            ("SKYCUT_DATABASE_URL".to_owned(), spec.postgres_url.clone()),
            ("SKYCUT_REDIS_URL".to_owned(), spec.redis_url.clone()),
            ("SKYCUT_REDIS_PREFIX".to_owned(), scope.clone()),
            ("SKYCUT_SERVICE_NAME".to_owned(), scope.clone()),
            ("SKYCUT_WOBBLY__TOKEN_KEY".to_owned(), random_hex()),
            ("SKYCUT_WOBBLY__LISTEN".to_owned(), "127.0.0.1:0".to_owned()),
            // The frontend refuses anonymous mode; only the bench can reach it on loopback, so
            // the bench names its user in the ingress header itself.
            ("SKYCUT_AUTH__MODE".to_owned(), "ingress".to_owned()),
            (
                "SKYCUT_AUTH__TRUST_HEADERS_FROM_ANY".to_owned(),
                "true".to_owned(),
            ),
            ("RUST_LOG".to_owned(), "warn".to_owned()),
        ];
        for (name, dir) in &spec.repositories {
            env.push((
                format!("SKYCUT_REPOSITORIES__{}", name.to_ascii_uppercase()),
                dir.display().to_string(),
            ));
        }
        if topology.worker_metrics {
            env.push((
                "SKYCUT_WORKER__HEALTH_LISTEN".to_owned(),
                "127.0.0.1:0".to_owned(),
            ));
        }
        let mut cluster = Cluster {
            base: String::new(),
            bases: Vec::new(),
            wobbly_urls: Vec::new(),
            worker_metrics: Vec::new(),
            scope,
            env,
            worker_concurrency: topology.worker_concurrency,
            wobblies: Vec::new(),
            frontends: Vec::new(),
            workers: Vec::new(),
        };
        for _ in 0..topology.wobblies.max(1) {
            let (wobbly, line) = cluster.spawn(&["wobbly"], &[])?;
            cluster.wobblies.push(wobbly);
            let url = listening_url(&line).context("wobbly did not start")?;
            cluster.wobbly_urls.push(url);
        }
        for i in 0..topology.frontends.max(1) {
            let wobbly = cluster.next_wobbly(i);
            let (frontend, line) = cluster.spawn(
                &["frontend", "--listen", "127.0.0.1:0"],
                &[("SKYCUT_WOBBLY__URL", &wobbly)],
            )?;
            cluster.frontends.push(frontend);
            let base = listening_url(&line).context("the frontend did not start")?;
            cluster.bases.push(base);
        }
        cluster.base = cluster.bases[0].clone();
        for _ in 0..topology.workers {
            cluster.start_worker(None)?;
        }
        Ok(cluster)
    }

    /// The wobbly replica the `i`th frontend or worker uses.
    fn next_wobbly(&self, i: usize) -> String {
        self.wobbly_urls[i % self.wobbly_urls.len()].clone()
    }

    /// Starts one more worker; with `address_space_limit`, under that `RLIMIT_AS` (bytes, set by
    /// the shell's `ulimit -v` before it execs the worker).
    pub fn start_worker(&mut self, address_space_limit: Option<u64>) -> anyhow::Result<u32> {
        let wobbly = self.next_wobbly(self.workers.len());
        let concurrency = self.worker_concurrency.map(|n| n.to_string());
        let mut extra = vec![("SKYCUT_WOBBLY__URL", wobbly.as_str())];
        if let Some(n) = &concurrency {
            extra.push(("SKYCUT_WORKER__CONCURRENCY", n));
        }
        let (child, line) = match address_space_limit {
            None => self.spawn(&["worker"], &extra)?,
            Some(bytes) => {
                let script = format!("ulimit -v {} && exec \"$0\" worker", bytes / 1024);
                // Each thread's malloc arena reserves 64 MiB of address space; two arenas keep
                // the limit about the worker's data, not its thread count.
                extra.push(("MALLOC_ARENA_MAX", "2"));
                self.spawn_via_shell(&script, &extra)?
            }
        };
        let pid = child.id();
        self.workers.push(child);
        anyhow::ensure!(line.contains("ready"), "worker did not start: {line:?}");
        if let Some((_, url)) = line.split_once("health on ") {
            self.worker_metrics.push(url.trim().to_owned());
        }
        Ok(pid)
    }

    /// Kills every worker (and waits for it).
    pub fn stop_workers(&mut self) {
        for mut child in self.workers.drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn frontend_pid(&self) -> Option<u32> {
        self.frontends.first().map(Child::id)
    }

    pub fn wobbly_pid(&self) -> Option<u32> {
        self.wobblies.first().map(Child::id)
    }

    pub fn frontend_pids(&self) -> Vec<u32> {
        self.frontends.iter().map(Child::id).collect()
    }

    pub fn wobbly_pids(&self) -> Vec<u32> {
        self.wobblies.iter().map(Child::id).collect()
    }

    pub fn worker_pids(&self) -> Vec<u32> {
        self.workers.iter().map(Child::id).collect()
    }

    fn spawn(&self, args: &[&str], extra: &[(&str, &str)]) -> anyhow::Result<(Child, String)> {
        let exe = std::env::current_exe().context("cannot find the skycut executable")?;
        let mut command = Command::new(exe);
        command.args(args);
        self.run(command, extra)
    }

    fn spawn_via_shell(
        &self,
        script: &str,
        extra: &[(&str, &str)],
    ) -> anyhow::Result<(Child, String)> {
        let exe = std::env::current_exe().context("cannot find the skycut executable")?;
        let mut command = Command::new("sh");
        command.arg("-c").arg(script).arg(exe);
        self.run(command, extra)
    }

    /// Runs `command` with only this cluster's configuration and returns it with its first
    /// line of output.
    fn run(&self, mut command: Command, extra: &[(&str, &str)]) -> anyhow::Result<(Child, String)> {
        command.stdout(Stdio::piped()).stderr(Stdio::inherit());
        // The caller's own SKYCUT_* settings would change what is measured.
        for (k, _) in std::env::vars() {
            if k.starts_with("SKYCUT_") {
                command.env_remove(k);
            }
        }
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        command.envs(extra.iter().copied());
        let mut child = command.spawn().context("cannot start a skycut child")?;
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            anyhow::bail!("child has no stdout");
        };
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        if let Err(e) = reader.read_line(&mut line) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e).context("cannot read a child's first line");
        }
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sink = String::new();
            while reader.read_line(&mut sink).is_ok_and(|n| n > 0) {
                sink.clear();
            }
        });
        Ok((child, line))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_workers();
        for mut child in self.frontends.drain(..).chain(self.wobblies.drain(..)) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn listening_url(line: &str) -> Option<String> {
    line.split_once(" listening on ")
        .map(|(_, url)| url.trim().to_owned())
}

/// Peak resident set size (`VmHWM`) of a process, in bytes.
pub fn peak_rss(pid: u32) -> Option<u64> {
    let status =
        std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
