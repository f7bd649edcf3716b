//! `skycut bench --control-plane`: what each component of the distributed topology spends per
//! job when the cutout itself costs nothing, and how many jobs a second the control plane
//! carries on this machine.
//!
//! The source image is tiny (`--cp-image-size`, 16×16 pixels by default), so a job's cost is
//! the control plane's: the frontend, wobbly, PostgreSQL, Redis and the workers' bookkeeping.
//!
//! 1. Cost per job: on a cluster of one wobbly, one frontend and `--cp-workers` workers,
//!    `--cp-jobs` sync jobs, as many async jobs and `--cp-bulk-jobs` bulk jobs of
//!    `--cp-bulk-stamps` stamps, each kind measured apart: the CPU seconds of every process
//!    (`/proc/PID/stat`), of the PostgreSQL backends serving this run's wobbly replicas and of
//!    PostgreSQL's background processes, of Redis (`INFO cpu`), and the round trips: requests
//!    to wobbly (its `skycut_http_requests_total`), store calls of the frontends and workers
//!    (their `skycut_job_store_latency_seconds_count`), PostgreSQL transactions and rows
//!    (`pg_stat_database`), Redis commands (`INFO commandstats`).
//! 2. Simulation: for each of `--cp-replicas` (that many wobbly replicas and frontends, with
//!    `--cp-workers` workers of `--cp-worker-concurrency`), closed loops of sync jobs at each of
//!    `--cp-clients` clients (spread over the frontends in turn) for `--cp-seconds` each: the
//!    jobs a second and the cores each component used. The largest rate is the control plane's
//!    maximum, and the component with the largest share of the CPU the one that saturates.
//!    The model's prediction is the cores left to this run over the CPU seconds a sync job
//!    costs (step 1, the load generator included, since it shares the machine).
//!
//! The figures of PostgreSQL (transactions, rows, background processes) and Redis (CPU,
//! commands) are server-wide: other users of the same servers show in them, which the notes
//! say. A sync job is counted up to its 303 (the result's download is the bucket's work in
//! production, not the control plane's).

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::cluster::{self, Cluster, ClusterSpec, Topology};
use super::{BenchArgs, DEC, RA, SCALE, load, redact, write_image};

/// The repository and image every job of this measurement cuts.
const IMAGE_ID: &str = "butler://cp/cp";

/// What the load asks of the service.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// `GET /sync` up to its 303.
    Sync,
    /// `POST /jobs` with `PHASE=RUN`, then `GET /jobs/{id}?WAIT=30` until it is final.
    Async,
    /// `POST /bulk` of a catalogue of a few stamps, then waits as for an async job.
    Bulk,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Sync => "sync",
            Kind::Async => "async",
            Kind::Bulk => "bulk",
        }
    }
}

/// The components whose CPU is measured, in the order of the tables.
const COMPONENTS: [&str; 8] = [
    "load generator (bench)",
    "frontend",
    "wobbly",
    "workers",
    "PostgreSQL backends of wobbly",
    "PostgreSQL background",
    "Redis",
    "rest of the machine",
];

/// Everything counted at one instant.
#[derive(Default, Clone)]
struct Sample {
    at: Option<Instant>,
    /// CPU seconds by component (the first seven of [`COMPONENTS`]).
    cpu: BTreeMap<&'static str, f64>,
    /// CPU seconds of each worker.
    worker_cpu: Vec<f64>,
    /// Busy and total CPU seconds of the machine.
    machine: (f64, f64),
    redis_calls: BTreeMap<String, u64>,
    pg: BTreeMap<&'static str, i64>,
    /// Requests each wobbly replica answered (probes and scrapes left out).
    wobbly_requests: f64,
    /// Job-store calls of the frontends and of the workers, by operation.
    frontend_calls: BTreeMap<String, f64>,
    worker_calls: BTreeMap<String, f64>,
}

/// The difference of two samples, per job.
struct Cost {
    kind: Kind,
    jobs: usize,
    errors: usize,
    seconds: f64,
    /// CPU milliseconds per job by component.
    cpu_ms: BTreeMap<&'static str, f64>,
    /// The busiest worker's CPU milliseconds per job.
    worker_max_ms: f64,
    client_requests: f64,
    wobbly_requests: f64,
    frontend_calls: BTreeMap<String, f64>,
    worker_calls: BTreeMap<String, f64>,
    pg: BTreeMap<&'static str, f64>,
    redis_calls: BTreeMap<String, f64>,
}

impl Cost {
    /// CPU milliseconds per job of everything this run started or drives.
    fn total_ms(&self) -> f64 {
        self.cpu_ms
            .iter()
            .filter(|(c, _)| **c != "rest of the machine")
            .map(|(_, v)| v)
            .sum()
    }

    fn redis_total(&self) -> f64 {
        self.redis_calls.values().sum()
    }
}

/// The PostgreSQL counters of `pg_stat_database` read per job.
const PG_COUNTERS: [&str; 6] = [
    "xact_commit",
    "tup_returned",
    "tup_fetched",
    "tup_inserted",
    "tup_updated",
    "tup_deleted",
];

/// What this run reads from outside the cluster: PostgreSQL's statistics, Redis's `INFO`.
struct Probe {
    pool: sqlx::PgPool,
    /// How long after its last transaction a backend's counters are surely in
    /// `pg_stat_database` (`--cp-settle-seconds`).
    settle: Duration,
    redis: String,
    http: reqwest::Client,
}

impl Probe {
    /// Connects to the run's own database `postgres_url`.
    async fn connect(args: &BenchArgs, postgres_url: &str) -> anyhow::Result<Probe> {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(postgres_url)
            .await
            .with_context(|| format!("cannot connect to {}", redact(postgres_url)))?;
        let parsed = reqwest::Url::parse(&args.redis_url).context("invalid Redis URL")?;
        let redis = format!(
            "{}:{}",
            parsed.host_str().unwrap_or("127.0.0.1"),
            parsed.port().unwrap_or(6379)
        );
        Ok(Probe {
            pool,
            settle: Duration::from_secs_f64(args.cp_settle_seconds),
            redis,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
        })
    }

    /// Everything at once, except that with `settle` PostgreSQL's counters are read only once
    /// they hold every transaction so far: a backend that reported its counters less than a
    /// second ago reports the next ones only after 10 s idle (PostgreSQL 15's
    /// `PGSTAT_MIN_INTERVAL` and `PGSTAT_IDLE_INTERVAL`).
    async fn sample(&self, cluster: &Cluster, settle: bool) -> anyhow::Result<Sample> {
        let mut s = Sample {
            at: Some(Instant::now()),
            ..Sample::default()
        };
        let cpu = |pids: &[u32]| {
            pids.iter()
                .filter_map(|&p| load::cpu_seconds(p))
                .sum::<f64>()
        };
        s.cpu.insert(COMPONENTS[0], cpu(&[std::process::id()]));
        s.cpu.insert(COMPONENTS[1], cpu(&cluster.frontend_pids()));
        s.cpu.insert(COMPONENTS[2], cpu(&cluster.wobbly_pids()));
        s.worker_cpu = cluster
            .worker_pids()
            .iter()
            .map(|&p| load::cpu_seconds(p).unwrap_or_default())
            .collect();
        s.cpu.insert(COMPONENTS[3], s.worker_cpu.iter().sum());
        let backends = self.wobbly_backends(&cluster.wobbly_pids()).await?;
        s.cpu.insert(COMPONENTS[4], cpu(&backends));
        s.cpu.insert(COMPONENTS[5], cpu(&postgres_background()));
        let info = self.redis_info()?;
        s.cpu.insert(COMPONENTS[6], redis_cpu(&info));
        s.redis_calls = redis_calls(&info);
        if let Some((busy, total)) = load::machine_cpu() {
            s.machine = (busy as f64 / 100.0, total as f64 / 100.0);
        }
        for url in &cluster.wobbly_urls {
            let text = self.metrics(url).await?;
            s.wobbly_requests += sum_metric(&text, "skycut_http_requests_total", |labels| {
                !["/metrics", "/healthz", "/readyz"]
                    .iter()
                    .any(|r| labels.contains(&format!("route=\"{r}\"")))
            });
        }
        for base in &cluster.bases {
            let root = base.trim_end_matches("/api/cutout");
            add_calls(&mut s.frontend_calls, &self.metrics(root).await?);
        }
        for url in &cluster.worker_metrics {
            add_calls(&mut s.worker_calls, &self.metrics(url).await?);
        }
        if settle {
            tokio::time::sleep(self.settle).await;
        }
        let row = sqlx::query_as::<_, (i64, i64, i64, i64, i64, i64)>(
            "SELECT xact_commit + xact_rollback, tup_returned, tup_fetched, tup_inserted, \
             tup_updated, tup_deleted FROM pg_stat_database WHERE datname = current_database()",
        )
        .fetch_one(&self.pool)
        .await
        .context("cannot read pg_stat_database")?;
        for (name, value) in PG_COUNTERS
            .iter()
            .zip([row.0, row.1, row.2, row.3, row.4, row.5])
        {
            s.pg.insert(name, value);
        }
        Ok(s)
    }

    /// Jobs in the run's database, and the bytes of their table with its indexes and TOAST.
    async fn stored_jobs(&self) -> anyhow::Result<(i64, i64)> {
        sqlx::query_as::<_, (i64, i64)>(
            "SELECT count(*), pg_total_relation_size('uws_job') FROM uws_job",
        )
        .fetch_one(&self.pool)
        .await
        .context("cannot size uws_job")
    }

    async fn metrics(&self, root: &str) -> anyhow::Result<String> {
        let r = self.http.get(format!("{root}/metrics")).send().await?;
        anyhow::ensure!(r.status() == 200, "{root}/metrics answered {}", r.status());
        Ok(r.text().await?)
    }

    /// The PostgreSQL backends whose client is one of these processes (wobbly replicas): their
    /// sockets' local ports against `pg_stat_activity.client_port`.
    async fn wobbly_backends(&self, pids: &[u32]) -> anyhow::Result<Vec<u32>> {
        let ports: HashSet<i32> = pids
            .iter()
            .flat_map(|&p| local_ports(p))
            .map(i32::from)
            .collect();
        let rows = sqlx::query_as::<_, (i32, Option<i32>)>(
            "SELECT pid, client_port FROM pg_stat_activity WHERE client_port IS NOT NULL",
        )
        .fetch_all(&self.pool)
        .await
        .context("cannot read pg_stat_activity")?;
        Ok(rows
            .into_iter()
            .filter(|(_, port)| port.is_some_and(|p| ports.contains(&p)))
            .filter_map(|(pid, _)| u32::try_from(pid).ok())
            .collect())
    }

    /// `INFO` (all sections) in plain RESP over a socket of its own, so that the probe's
    /// connection is not one of the cluster's.
    fn redis_info(&self) -> anyhow::Result<String> {
        let mut stream = std::net::TcpStream::connect(&self.redis)
            .with_context(|| format!("cannot connect to Redis at {}", self.redis))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.write_all(b"*2\r\n$4\r\nINFO\r\n$3\r\nall\r\n")?;
        let mut answer = Vec::new();
        let mut chunk = [0u8; 16384];
        loop {
            let n = stream.read(&mut chunk)?;
            anyhow::ensure!(n > 0, "Redis closed the connection during INFO");
            answer.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&answer);
            if let Some((head, body)) = text.split_once("\r\n") {
                anyhow::ensure!(head.starts_with('$'), "Redis answered INFO with {head}");
                let len: usize = head[1..].parse().context("bad INFO length")?;
                if body.len() >= len {
                    return Ok(body[..len].to_owned());
                }
            }
        }
    }
}

/// Adds a role's job-store calls by operation (`skycut_job_store_latency_seconds_count`).
fn add_calls(calls: &mut BTreeMap<String, f64>, text: &str) {
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("skycut_job_store_latency_seconds_count{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let operation = labels
            .split("operation=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or("other");
        *calls.entry(operation.to_owned()).or_default() += value.trim().parse().unwrap_or(0.0);
    }
}

/// The sum of a metric's series whose labels pass `keep`.
fn sum_metric(text: &str, name: &str, keep: impl Fn(&str) -> bool) -> f64 {
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(r) => r.rsplit_once("} ")?,
                None => ("", rest.strip_prefix(' ')?),
            };
            keep(labels).then(|| value.trim().parse::<f64>().ok())?
        })
        .sum()
}

fn redis_cpu(info: &str) -> f64 {
    ["used_cpu_user:", "used_cpu_sys:"]
        .iter()
        .filter_map(|k| {
            info.lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| v.trim().parse::<f64>().ok())
        })
        .sum()
}

/// Calls by command from `INFO commandstats` (`cmdstat_xadd:calls=12,usec=…`), the probe's own
/// `INFO` left out.
fn redis_calls(info: &str) -> BTreeMap<String, u64> {
    info.lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            (name != "info").then(|| (name.to_owned(), calls))
        })
        .collect()
}

/// Local TCP ports of a process's sockets: its file descriptors' socket inodes looked up in
/// `/proc/net/tcp` and `tcp6`.
fn local_ports(pid: u32) -> Vec<u16> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let inodes: HashSet<String> = fds
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|link| {
            let link = link.to_string_lossy().into_owned();
            Some(link.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(inode)) = (fields.get(1), fields.get(9)) else {
                continue;
            };
            if !inodes.contains(*inode) {
                continue;
            }
            if let Some(port) = local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
            {
                ports.push(port);
            }
        }
    }
    ports
}

/// PostgreSQL's own processes (checkpointer, background writer, WAL writer…): `postgres`
/// processes that serve no client (a backend's title names its client's address in
/// parentheses).
fn postgres_background() -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let cmdline =
                std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            comm.trim() == "postgres" && !cmdline.contains('(')
        })
        .collect()
}

/// The change between two samples, per job.
fn cost(kind: Kind, jobs: usize, errors: usize, before: &Sample, after: &Sample) -> Cost {
    let n = jobs.max(1) as f64;
    let mut cpu_ms: BTreeMap<&'static str, f64> = COMPONENTS[..7]
        .iter()
        .map(|c| {
            let d = after.cpu.get(c).copied().unwrap_or_default()
                - before.cpu.get(c).copied().unwrap_or_default();
            (*c, d.max(0.0) * 1e3 / n)
        })
        .collect();
    let ours: f64 = cpu_ms.values().sum();
    let busy = (after.machine.0 - before.machine.0) * 1e3 / n;
    cpu_ms.insert(COMPONENTS[7], (busy - ours).max(0.0));
    let worker_max_ms = after
        .worker_cpu
        .iter()
        .zip(&before.worker_cpu)
        .map(|(a, b)| (a - b) * 1e3 / n)
        .fold(0.0, f64::max);
    let per_job = |a: &BTreeMap<String, f64>, b: &BTreeMap<String, f64>| {
        a.iter()
            .map(|(k, v)| (k.clone(), (v - b.get(k).copied().unwrap_or_default()) / n))
            .filter(|(_, v)| *v > 0.0)
            .collect::<BTreeMap<_, _>>()
    };
    let redis_calls = after
        .redis_calls
        .iter()
        .map(|(k, v)| {
            let d = v.saturating_sub(before.redis_calls.get(k).copied().unwrap_or_default());
            (k.clone(), d as f64 / n)
        })
        .filter(|(_, v)| *v > 0.0)
        .collect();
    let pg = PG_COUNTERS
        .iter()
        .map(|k| {
            let d = after.pg.get(k).copied().unwrap_or_default()
                - before.pg.get(k).copied().unwrap_or_default();
            (*k, d as f64 / n)
        })
        .collect();
    let seconds = match (before.at, after.at) {
        (Some(b), Some(a)) => a.duration_since(b).as_secs_f64(),
        _ => 0.0,
    };
    Cost {
        kind,
        jobs,
        errors,
        seconds,
        cpu_ms,
        worker_max_ms,
        client_requests: 0.0,
        wobbly_requests: (after.wobbly_requests - before.wobbly_requests) / n,
        frontend_calls: per_job(&after.frontend_calls, &before.frontend_calls),
        worker_calls: per_job(&after.worker_calls, &before.worker_calls),
        pg,
        redis_calls,
    }
}

/// A client of the load: which frontend it talks to, what it asks, and how many requests it
/// made.
struct Client {
    http: reqwest::Client,
    base: String,
    catalogue: Arc<Vec<u8>>,
    stamp: usize,
    requests: AtomicUsize,
}

impl Client {
    /// One job of `kind`, from creation to its final phase (a sync job: to its 303).
    async fn job(&self, kind: Kind) -> anyhow::Result<()> {
        let circle = format!("{RA} {DEC} {}", 3.0 * SCALE);
        let id = match kind {
            Kind::Sync => {
                self.requests.fetch_add(1, Ordering::Relaxed);
                let r = self
                    .http
                    .get(format!("{}/sync", self.base))
                    .query(&[("ID", IMAGE_ID), ("CIRCLE", circle.as_str())])
                    .send()
                    .await?;
                anyhow::ensure!(r.status() == 303, "sync answered {}", r.status());
                return Ok(());
            }
            Kind::Async => {
                self.requests.fetch_add(1, Ordering::Relaxed);
                load::create_job(&self.http, &self.base, IMAGE_ID, &circle).await?
            }
            Kind::Bulk => {
                self.requests.fetch_add(1, Ordering::Relaxed);
                super::bulk::post(&self.http, &self.base, &self.catalogue, self.stamp).await?
            }
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            self.requests.fetch_add(1, Ordering::Relaxed);
            let doc = self
                .http
                .get(format!("{}/jobs/{id}", self.base))
                .query(&[("WAIT", "30")])
                .send()
                .await?
                .text()
                .await?;
            if doc.contains("<uws:phase>COMPLETED</uws:phase>") {
                return Ok(());
            }
            anyhow::ensure!(
                !["ERROR", "ABORTED", "ARCHIVED"]
                    .iter()
                    .any(|p| doc.contains(&format!("<uws:phase>{p}</uws:phase>"))),
                "job {id} did not complete"
            );
            anyhow::ensure!(Instant::now() < deadline, "job {id} still running");
        }
    }
}

/// `clients` closed loops spread over the frontends, each taking jobs from a shared count
/// (`jobs`) or running until `until`: completed jobs, errors, requests made.
async fn drive(
    clients: &[Arc<Client>],
    kind: Kind,
    jobs: Option<usize>,
    until: Option<Instant>,
) -> (usize, usize, usize) {
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let requests_before: usize = clients
        .iter()
        .map(|c| c.requests.load(Ordering::Relaxed))
        .sum();
    let mut tasks = Vec::with_capacity(clients.len());
    for client in clients {
        let (client, next, done, errors) =
            (client.clone(), next.clone(), done.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                if jobs.is_some_and(|n| next.fetch_add(1, Ordering::Relaxed) >= n)
                    || until.is_some_and(|t| Instant::now() >= t)
                {
                    break;
                }
                match client.job(kind).await {
                    Ok(()) => {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        if errors.fetch_add(1, Ordering::Relaxed) < 5 {
                            eprintln!("{} job failed: {e:#}", kind.name());
                        }
                    }
                }
            }
        }));
    }
    for task in tasks {
        if task.await.is_err() {
            errors.fetch_add(1, Ordering::Relaxed);
        }
    }
    let requests_after: usize = clients
        .iter()
        .map(|c| c.requests.load(Ordering::Relaxed))
        .sum();
    (
        done.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed),
        requests_after - requests_before,
    )
}

/// One step of the simulation: a closed loop of sync jobs held for a while.
struct Step {
    replicas: usize,
    clients: usize,
    jobs_per_second: f64,
    errors: usize,
    /// Cores each component used (the CPU seconds over the step's seconds).
    cores: BTreeMap<&'static str, f64>,
    machine_busy: f64,
}

impl Step {
    /// The component that used the most CPU, and its cores.
    fn largest(&self) -> (&'static str, f64) {
        self.cores
            .iter()
            .filter(|(c, _)| **c != "rest of the machine")
            .map(|(c, v)| (*c, *v))
            .fold(("none", 0.0), |a, b| if b.1 > a.1 { b } else { a })
    }
}

pub(super) async fn measure(args: &BenchArgs, dir: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(
        cluster::reachable(&args.postgres_url) && cluster::reachable(&args.redis_url),
        "--control-plane: PostgreSQL ({}) or Redis ({}) is unreachable",
        redact(&args.postgres_url),
        args.redis_url
    );
    let images = dir.join("images");
    write_image(&images.join("cp.fits"), args.cp_image_size)?;
    // A database of the run's own, so that its statistics count this run's transactions and
    // rows alone, whoever else uses the server.
    let database = OwnDatabase::create(&args.postgres_url).await?;
    let outcome = measure_in(args, dir, &images, &database.url).await;
    database.drop().await;
    outcome
}

async fn measure_in(
    args: &BenchArgs,
    dir: &Path,
    images: &Path,
    postgres_url: &str,
) -> anyhow::Result<()> {
    let spec = ClusterSpec {
        postgres_url: postgres_url.to_owned(),
        redis_url: args.redis_url.clone(),
        repositories: vec![("cp".to_owned(), images.to_owned())],
        data_dir: dir.join("cluster"),
    };
    let probe = Probe::connect(args, postgres_url).await?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let load_before = load_average();
    let mut costs = Vec::new();
    let mut steps = Vec::new();
    let mut stored = None;
    for (i, &replicas) in args.cp_replicas.iter().enumerate() {
        let topology = Topology {
            wobblies: replicas,
            frontends: replicas,
            workers: args.cp_workers,
            worker_concurrency: Some(args.cp_worker_concurrency),
            worker_metrics: true,
        };
        eprintln!(
            "control plane: starting {replicas} wobbly, {replicas} frontend(s), {} workers…",
            args.cp_workers
        );
        let cluster = tokio::task::block_in_place(|| Cluster::start_topology(&spec, &topology))?;
        let outcome = async {
            let clients = |n: usize| -> anyhow::Result<Vec<Arc<Client>>> {
                let http = load::client()?;
                let catalogue = Arc::new(catalogue(args.cp_bulk_stamps));
                Ok((0..n)
                    .map(|c| {
                        Arc::new(Client {
                            http: http.clone(),
                            base: cluster.bases[c % cluster.bases.len()].clone(),
                            catalogue: catalogue.clone(),
                            stamp: 4,
                            requests: AtomicUsize::new(0),
                        })
                    })
                    .collect())
            };
            // Warm connections, pools and caches; not counted.
            drive(&clients(4)?, Kind::Sync, Some(20), None).await;
            if i == 0 {
                let plan = [
                    (Kind::Sync, args.cp_jobs, args.cp_cost_clients),
                    (Kind::Async, args.cp_jobs, args.cp_cost_clients),
                    (Kind::Bulk, args.cp_bulk_jobs, 1),
                ];
                // The warm-up's counters are all in first (each kind's last sample waits for
                // its own).
                tokio::time::sleep(probe.settle).await;
                for (kind, jobs, n) in plan {
                    if jobs == 0 {
                        continue;
                    }
                    eprintln!("control plane: cost of {jobs} {} jobs…", kind.name());
                    let before = probe.sample(&cluster, false).await?;
                    let (done, errors, requests) =
                        drive(&clients(n)?, kind, Some(jobs), None).await;
                    let after = probe.sample(&cluster, true).await?;
                    let mut c = cost(kind, done, errors, &before, &after);
                    c.client_requests = requests as f64 / done.max(1) as f64;
                    eprintln!(
                        "measured: {} cost: {:.2} CPU ms per job in all, {done} jobs, {errors} errors",
                        kind.name(),
                        c.total_ms()
                    );
                    costs.push(c);
                }
                stored = Some(probe.stored_jobs().await?);
            }
            for &n in &args.cp_clients {
                let before = probe.sample(&cluster, false).await?;
                let until = Instant::now() + Duration::from_secs_f64(args.cp_seconds);
                let (done, errors, _) = drive(&clients(n)?, Kind::Sync, None, Some(until)).await;
                let after = probe.sample(&cluster, false).await?;
                let seconds = match (before.at, after.at) {
                    (Some(b), Some(a)) => a.duration_since(b).as_secs_f64(),
                    _ => args.cp_seconds,
                };
                let c = cost(Kind::Sync, 1, errors, &before, &after);
                let step = Step {
                    replicas,
                    clients: n,
                    jobs_per_second: done as f64 / seconds,
                    errors,
                    cores: c
                        .cpu_ms
                        .iter()
                        .map(|(k, v)| (*k, v / 1e3 / seconds))
                        .collect(),
                    machine_busy: (after.machine.0 - before.machine.0)
                        / (after.machine.1 - before.machine.1).max(1e-9),
                };
                eprintln!(
                    "measured: {replicas} replicas, {n} clients: {:.1} sync jobs/s, machine {:.0} % busy, largest {} ({:.2} cores)",
                    step.jobs_per_second,
                    step.machine_busy * 100.0,
                    step.largest().0,
                    step.largest().1
                );
                steps.push(step);
            }
            anyhow::Ok(())
        }
        .await;
        clean_up(args, cluster).await;
        outcome?;
    }
    probe.pool.close().await;
    print_report(args, cores, &load_before, &costs, &steps, stored);
    Ok(())
}

/// A database made for one run, dropped (with its jobs) at the end.
struct OwnDatabase {
    admin: sqlx::PgPool,
    name: String,
    url: String,
}

impl OwnDatabase {
    async fn create(admin_url: &str) -> anyhow::Result<OwnDatabase> {
        let admin = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(admin_url)
            .await
            .with_context(|| format!("cannot connect to {}", redact(admin_url)))?;
        let name = format!("skycut_cp_{:016x}", rand::random::<u64>());
        // The name is this function's own hex digits, never anyone's input.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .context("cannot create the run's database")?;
        let mut url = reqwest::Url::parse(admin_url).context("invalid PostgreSQL URL")?;
        url.set_path(&format!("/{name}"));
        Ok(OwnDatabase {
            admin,
            name,
            url: url.to_string(),
        })
    }

    async fn drop(self) {
        let dropped = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&self.admin)
        .await;
        if let Err(e) = dropped {
            eprintln!("could not drop the run's database {}: {e}", self.name);
        }
    }
}

/// The run's Redis keys go with its cluster (its jobs go with the run's database).
async fn clean_up(args: &BenchArgs, cluster: Cluster) {
    let streams = worker::redis::Streams::new(&cluster.scope);
    drop(cluster);
    if let Err(e) = worker::redis::delete_keys(&args.redis_url, &streams).await {
        eprintln!(
            "could not delete this run's Redis keys: {}",
            worker::redis::describe(&e)
        );
    }
}

/// A bulk catalogue of `stamps` positions around the tiny image's centre, by image ID.
fn catalogue(stamps: usize) -> Vec<u8> {
    let mut text = String::from("ra,dec,id\n");
    for i in 0..stamps {
        let offset = (i % 5) as f64 * SCALE;
        let _ = writeln!(text, "{:.8},{:.8},{IMAGE_ID}", RA + offset, DEC - offset);
    }
    text.into_bytes()
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| {
            let f: Vec<&str> = l.split_whitespace().take(3).collect();
            (f.len() == 3).then(|| f.join(" "))
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

fn print_report(
    args: &BenchArgs,
    cores: f64,
    load_before: &str,
    costs: &[Cost],
    steps: &[Step],
    stored: Option<(i64, i64)>,
) {
    println!(
        "control plane: a {0}x{0} float32 image; {1} workers of concurrency {2}; load average before {load_before}, after {3}; {cores} cores",
        args.cp_image_size,
        args.cp_workers,
        args.cp_worker_concurrency,
        load_average()
    );
    println!();
    println!("Cost per job (1 wobbly, 1 frontend):");
    let header: Vec<String> = costs
        .iter()
        .map(|c| {
            format!(
                "{} ({} jobs, {} clients, {} errors)",
                c.kind.name(),
                c.jobs,
                if c.kind == Kind::Bulk {
                    1
                } else {
                    args.cp_cost_clients
                },
                c.errors
            )
        })
        .collect();
    println!("| per job | {} |", header.join(" | "));
    println!("|---|{}", "---|".repeat(costs.len()));
    let row = |name: &str, f: &dyn Fn(&Cost) -> String| {
        let cells: Vec<String> = costs.iter().map(f).collect();
        println!("| {name} | {} |", cells.join(" | "));
    };
    for component in COMPONENTS {
        row(&format!("CPU ms: {component}"), &|c| {
            format!(
                "{:.3}",
                c.cpu_ms.get(component).copied().unwrap_or_default()
            )
        });
    }
    row("CPU ms: busiest worker", &|c| {
        format!("{:.3}", c.worker_max_ms)
    });
    row("CPU ms: all of this run's processes", &|c| {
        format!("{:.3}", c.total_ms())
    });
    row("HTTP requests client → frontend", &|c| {
        format!("{:.2}", c.client_requests)
    });
    row("HTTP requests to wobbly", &|c| {
        format!("{:.2}", c.wobbly_requests)
    });
    row("job-store calls of the frontend", &|c| {
        calls(&c.frontend_calls)
    });
    row("job-store calls of the workers", &|c| {
        calls(&c.worker_calls)
    });
    for k in PG_COUNTERS {
        let label = if k == "xact_commit" {
            "PostgreSQL transactions".to_owned()
        } else {
            format!("PostgreSQL {k}")
        };
        row(&label, &|c| {
            format!("{:.2}", c.pg.get(k).copied().unwrap_or_default())
        });
    }
    row("Redis commands", &|c| format!("{:.2}", c.redis_total()));
    row("Redis commands by name", &|c| {
        let mut v: Vec<(&String, &f64)> = c.redis_calls.iter().collect();
        v.sort_by(|a, b| b.1.total_cmp(a.1));
        v.iter()
            .take(8)
            .map(|(k, n)| format!("{k} {n:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    });
    row("seconds measured", &|c| format!("{:.1}", c.seconds));
    if let Some((jobs, bytes)) = stored {
        println!(
            "job store after the cost measurement: {jobs} jobs in {bytes} bytes of uws_job with its indexes and TOAST ({:.0} bytes a job)",
            bytes as f64 / jobs.max(1) as f64
        );
    }
    println!();
    println!("Simulation: closed loops of sync jobs, clients spread over the frontends:");
    println!(
        "| wobbly + frontends | clients | sync jobs/s | errors | machine busy | cores: {} | largest share |",
        COMPONENTS.join(" | ")
    );
    println!(
        "|---|---|---|---|---|{}---|",
        "---|".repeat(COMPONENTS.len())
    );
    for s in steps {
        let cells: Vec<String> = COMPONENTS
            .iter()
            .map(|c| format!("{:.2}", s.cores.get(c).copied().unwrap_or_default()))
            .collect();
        let (largest, share) = s.largest();
        println!(
            "| {} | {} | {:.1} | {} | {:.0} % | {} | {largest} ({share:.2} cores) |",
            s.replicas,
            s.clients,
            s.jobs_per_second,
            s.errors,
            s.machine_busy * 100.0,
            cells.join(" | ")
        );
    }
    let mut maxima: BTreeMap<usize, &Step> = BTreeMap::new();
    for s in steps {
        let best = maxima.entry(s.replicas).or_insert(s);
        if s.jobs_per_second > best.jobs_per_second {
            *best = s;
        }
    }
    let sync = costs.iter().find(|c| c.kind == Kind::Sync);
    for (replicas, best) in &maxima {
        let (largest, share) = best.largest();
        let mut line = format!(
            "maximum with {replicas} wobbly + {replicas} frontend(s): {:.1} sync jobs/s at {} clients; largest share {largest} ({share:.2} of {cores} cores)",
            best.jobs_per_second, best.clients
        );
        if let Some(c) = sync.filter(|c| c.total_ms() > 0.0) {
            // The cores the run could have: the machine's, less what the rest of the machine
            // (other users) took during the step.
            let free = cores
                - best
                    .cores
                    .get("rest of the machine")
                    .copied()
                    .unwrap_or_default();
            let predicted = free / (c.total_ms() / 1e3);
            let _ = write!(
                line,
                "; model {free:.2} free cores / {:.3} CPU ms per sync job = {predicted:.1} jobs/s, measured/model {:.2}",
                c.total_ms(),
                best.jobs_per_second / predicted
            );
        }
        println!("{line}");
    }
    println!(
        "notes: PostgreSQL transactions and rows are pg_stat_database's of a database made for the run (its probe's own few reads included); PostgreSQL's background processes, Redis CPU and commands are server-wide, so other users of the same servers show in them; 'rest of the machine' is the machine's busy CPU that none of this run's processes used; a sync job is counted up to its 303; a bulk job is {} stamps of {}x{} pixels (bulk shards do not exist yet, so a bulk job is one job)",
        args.cp_bulk_stamps, 4, 4
    );
}

/// Job-store calls by operation, the total first.
fn calls(by_operation: &BTreeMap<String, f64>) -> String {
    let total: f64 = by_operation.values().sum();
    let parts: Vec<String> = by_operation
        .iter()
        .map(|(k, v)| format!("{k} {v:.2}"))
        .collect();
    if parts.is_empty() {
        "0".to_owned()
    } else {
        format!("{total:.2} ({})", parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_metric_is_summed_over_the_series_its_labels_keep() {
        let text = "# TYPE skycut_http_requests_total counter\n\
            skycut_http_requests_total{method=\"POST\",route=\"/v1/jobs\",status=\"201\"} 3\n\
            skycut_http_requests_total{method=\"GET\",route=\"/metrics\",status=\"200\"} 7\n\
            skycut_http_requests_total{method=\"GET\",route=\"/v1/jobs/{id}\",status=\"200\"} 2\n";
        let sum = sum_metric(text, "skycut_http_requests_total", |l| {
            !l.contains("route=\"/metrics\"")
        });
        assert_eq!(sum, 5.0);
    }

    #[test]
    fn store_calls_are_added_by_operation_across_outcomes() {
        let mut calls = BTreeMap::new();
        add_calls(
            &mut calls,
            "skycut_job_store_latency_seconds_count{operation=\"get\",outcome=\"ok\"} 4\n\
             skycut_job_store_latency_seconds_count{operation=\"get\",outcome=\"refused\"} 1\n\
             skycut_job_store_latency_seconds_sum{operation=\"get\",outcome=\"ok\"} 0.5\n",
        );
        assert_eq!(calls.get("get"), Some(&5.0));
        assert_eq!(calls.len(), 1);
    }

    #[test]
    fn redis_commandstats_are_read_without_the_probes_own_info() {
        let info = "# Commandstats\r\ncmdstat_xadd:calls=12,usec=30,usec_per_call=2.5\r\n\
            cmdstat_info:calls=9,usec=1\r\n# CPU\r\nused_cpu_sys:1.5\r\nused_cpu_user:2.25\r\n";
        let calls = redis_calls(info);
        assert_eq!(calls.get("xadd"), Some(&12));
        assert!(!calls.contains_key("info"));
        assert_eq!(redis_cpu(info), 3.75);
    }

    #[test]
    fn the_step_with_the_most_cpu_names_the_largest_share_but_never_the_rest_of_the_machine() {
        let step = Step {
            replicas: 1,
            clients: 8,
            jobs_per_second: 1.0,
            errors: 0,
            cores: [
                ("wobbly", 0.4),
                ("frontend", 0.6),
                ("rest of the machine", 0.9),
            ]
            .into_iter()
            .collect(),
            machine_busy: 1.0,
        };
        assert_eq!(step.largest(), ("frontend", 0.6));
    }
}
