//! The load a bench puts on a running Skycut (embedded or distributed, it only sees a base URL):
//! sequential and concurrent sync cutouts, a batch of async jobs, and job-list reads.
//!
//! Every cutout that comes back is checked against the floor's pixels, so a fast wrong answer
//! counts as an error, not as throughput.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

/// What one cutout request asks for and what its answer must hold.
pub struct Workload {
    pub id: String,
    pub circle: String,
    /// The data block (pixels and padding) of the floor's result FITS: a correct result file
    /// ends with exactly these bytes.
    pub expected_data: Vec<u8>,
}

impl Workload {
    fn check(&self, body: &[u8]) -> anyhow::Result<()> {
        anyhow::ensure!(
            body.ends_with(&self.expected_data),
            "result of {} bytes does not end with the floor's {} data bytes",
            body.len(),
            self.expected_data.len()
        );
        Ok(())
    }
}

/// Median and 95th percentile of a set of durations.
pub struct Stats {
    pub median: Duration,
    pub p95: Duration,
}

pub fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples.get(i).copied().unwrap_or_default()
    };
    Stats {
        median: at(0.5),
        p95: at(0.95),
    }
}

/// The user the bench acts for; the distributed frontend believes the ingress header from the
/// bench (see `cluster`), and the embedded one is anonymous whatever the header says.
pub const USER: &str = "anonymous";

pub fn client() -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        "x-auth-request-user",
        reqwest::header::HeaderValue::from_static(USER),
    );
    Ok(reqwest::Client::builder()
        .default_headers(headers)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(120))
        .build()?)
}

/// GET `/sync` → 303 → GET of the signed URL, with the result checked.
pub async fn one_sync(client: &reqwest::Client, base: &str, work: &Workload) -> anyhow::Result<()> {
    let query = [("ID", work.id.as_str()), ("CIRCLE", work.circle.as_str())];
    work.check(&sync_download(client, base, &query).await?)
}

/// GET `/sync` with `query` → 303 → GET of the signed URL: the result's bytes.
pub async fn sync_download(
    client: &reqwest::Client,
    base: &str,
    query: &[(&str, &str)],
) -> anyhow::Result<bytes::Bytes> {
    let r = client
        .get(format!("{base}/sync"))
        .query(query)
        .send()
        .await?;
    anyhow::ensure!(r.status() == 303, "sync answered {}", r.status());
    let location = r
        .headers()
        .get("location")
        .context("303 without Location")?
        .to_str()?
        .to_owned();
    download(client, &location).await
}

/// GET of a result URL: its bytes.
async fn download(client: &reqwest::Client, url: &str) -> anyhow::Result<bytes::Bytes> {
    let r = client.get(url).send().await?;
    anyhow::ensure!(r.status() == 200, "result answered {}", r.status());
    Ok(r.bytes().await?)
}

async fn fetch_result(client: &reqwest::Client, url: &str, work: &Workload) -> anyhow::Result<()> {
    work.check(&download(client, url).await?)
}

/// `requests` sequential sync cutouts after a few uncounted ones; returns latencies and errors.
pub async fn sync_sequential(
    client: &reqwest::Client,
    base: &str,
    work: &Workload,
    requests: usize,
) -> (Stats, usize) {
    let mut samples = Vec::with_capacity(requests);
    let mut errors = 0;
    // The first few requests warm connections and caches; they are not counted.
    for i in 0..requests + 5 {
        let started = Instant::now();
        let outcome = one_sync(client, base, work).await;
        if i >= 5 {
            samples.push(started.elapsed());
            errors += usize::from(outcome.is_err());
        }
        if let Err(e) = outcome {
            eprintln!("sync request failed: {e:#}");
        }
    }
    (stats(samples), errors)
}

/// Throughput of a closed loop: `clients` tasks issue `requests` sync cutouts between them.
pub struct Throughput {
    pub per_second: f64,
    pub errors: usize,
}

pub async fn sync_concurrent(
    client: &reqwest::Client,
    base: &str,
    work: &Arc<Workload>,
    clients: usize,
    requests: usize,
) -> Throughput {
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients {
        let (client, base, work) = (client.clone(), base.to_owned(), work.clone());
        let (next, errors) = (next.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < requests {
                if let Err(e) = one_sync(&client, &base, &work).await
                    && errors.fetch_add(1, Ordering::Relaxed) < 5
                {
                    eprintln!("sync request failed: {e:#}");
                }
            }
        }));
    }
    for task in tasks {
        if task.await.is_err() {
            errors.fetch_add(1, Ordering::Relaxed);
        }
    }
    Throughput {
        per_second: requests as f64 / started.elapsed().as_secs_f64(),
        errors: errors.load(Ordering::Relaxed),
    }
}

/// Outcome of a batch of async jobs.
pub struct AsyncBatch {
    pub elapsed: Duration,
    pub completed: usize,
    /// Jobs that failed to be created, ended in another phase, or whose sampled result was wrong.
    pub errors: usize,
}

/// Creates `jobs` async jobs with `PHASE=RUN` from `clients` concurrent clients, then waits until
/// none is PENDING, QUEUED or EXECUTING; checks the results of `sample` of them.
pub async fn async_jobs(
    client: &reqwest::Client,
    base: &str,
    work: &Arc<Workload>,
    jobs: usize,
    clients: usize,
    sample: usize,
) -> anyhow::Result<AsyncBatch> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients {
        let (client, base, work, next) =
            (client.clone(), base.to_owned(), work.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            let mut errors = 0usize;
            while next.fetch_add(1, Ordering::Relaxed) < jobs {
                match create_job(&client, &base, &work.id, &work.circle).await {
                    Ok(id) => ids.push(id),
                    Err(e) => {
                        errors += 1;
                        if errors < 5 {
                            eprintln!("job creation failed: {e:#}");
                        }
                    }
                }
            }
            (ids, errors)
        }));
    }
    let mut ids = Vec::with_capacity(jobs);
    let mut errors = 0;
    for task in tasks {
        let (mut created, failed) = task.await.context("a submitting client panicked")?;
        ids.append(&mut created);
        errors += failed;
    }
    let active = [
        ("PHASE", "PENDING"),
        ("PHASE", "QUEUED"),
        ("PHASE", "EXECUTING"),
        ("LAST", "1"),
    ];
    let deadline = Instant::now() + Duration::from_secs(600 + jobs as u64 / 10);
    loop {
        let list = job_list(client, base, &active).await?;
        if !list.contains("<uws:jobref") {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "async jobs still active at the deadline"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed();
    // Sync cutouts are jobs too: only this batch's own jobs count.
    let mine: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
    let completed = job_list(client, base, &[("PHASE", "COMPLETED")])
        .await?
        .split("<uws:jobref id=\"")
        .skip(1)
        .filter_map(|r| r.split('"').next())
        .filter(|id| mine.contains(id))
        .count();
    errors += ids.len().saturating_sub(completed);
    let step = (ids.len() / sample.max(1)).max(1);
    for id in ids.iter().step_by(step).take(sample) {
        if let Err(e) = check_job(client, base, id, work).await {
            errors += 1;
            eprintln!("job {id}: {e:#}");
        }
    }
    Ok(AsyncBatch {
        elapsed,
        completed,
        errors,
    })
}

/// Creates and runs a cutout job of `id` and `circle`; returns its job ID.
pub(super) async fn create_job(
    client: &reqwest::Client,
    base: &str,
    id: &str,
    circle: &str,
) -> anyhow::Result<String> {
    let r = client
        .post(format!("{base}/jobs"))
        .form(&[("ID", id), ("CIRCLE", circle), ("PHASE", "RUN")])
        .send()
        .await?;
    anyhow::ensure!(r.status() == 303, "job creation answered {}", r.status());
    let location = r
        .headers()
        .get("location")
        .context("303 without Location")?
        .to_str()?;
    Ok(location.rsplit('/').next().unwrap_or_default().to_owned())
}

async fn job_list(
    client: &reqwest::Client,
    base: &str,
    query: &[(&str, &str)],
) -> anyhow::Result<String> {
    let r = client
        .get(format!("{base}/jobs"))
        .query(query)
        .send()
        .await?;
    anyhow::ensure!(r.status() == 200, "job list answered {}", r.status());
    Ok(r.text().await?)
}

/// The job is COMPLETED and its first result holds the floor's pixels.
async fn check_job(
    client: &reqwest::Client,
    base: &str,
    id: &str,
    work: &Workload,
) -> anyhow::Result<()> {
    let r = client.get(format!("{base}/jobs/{id}")).send().await?;
    anyhow::ensure!(r.status() == 200, "job answered {}", r.status());
    let doc = r.text().await?;
    anyhow::ensure!(
        doc.contains("<uws:phase>COMPLETED</uws:phase>"),
        "job is not COMPLETED"
    );
    let href = doc
        .split("<uws:result ")
        .nth(1)
        .and_then(|r| r.split("xlink:href=\"").nth(1))
        .and_then(|r| r.split('"').next())
        .context("job has no result")?
        .replace("&amp;", "&");
    fetch_result(client, &href, work).await
}

/// Latencies of `requests` sequential `GET /jobs?LAST=100`, after a few uncounted ones.
pub async fn list_latency(
    client: &reqwest::Client,
    base: &str,
    requests: usize,
) -> anyhow::Result<Stats> {
    let mut samples = Vec::with_capacity(requests);
    for i in 0..requests + 3 {
        let started = Instant::now();
        let doc = job_list(client, base, &[("LAST", "100")]).await?;
        let elapsed = started.elapsed();
        anyhow::ensure!(
            doc.matches("<uws:jobref").count() == 100,
            "LAST=100 did not list 100 jobs"
        );
        if i >= 3 {
            samples.push(elapsed);
        }
    }
    Ok(stats(samples))
}

/// A closed loop held for a long time: the rate of each window in order, so that a service
/// that slows down under its own churn shows it (the last window against the first).
pub struct Sustained {
    /// Completed requests per second in each window.
    pub windows: Vec<f64>,
    pub errors: usize,
}

/// `clients` tasks issue sync cutouts back to back for `duration`; the completions are counted
/// per `window` (the last window ends at `duration`, so every window is whole).
pub async fn sync_sustained(
    client: &reqwest::Client,
    base: &str,
    work: &Arc<Workload>,
    clients: usize,
    duration: Duration,
    window: Duration,
) -> Sustained {
    let window = window.min(duration).max(Duration::from_secs(1));
    let count = (duration.as_secs_f64() / window.as_secs_f64())
        .floor()
        .max(1.0) as u32;
    let started = Instant::now();
    let end = started + window * count;
    let done = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients {
        let (client, base, work) = (client.clone(), base.to_owned(), work.clone());
        let (done, errors) = (done.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < end {
                match one_sync(&client, &base, &work).await {
                    Ok(()) => {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        if errors.fetch_add(1, Ordering::Relaxed) < 5 {
                            eprintln!("sync request failed: {e:#}");
                        }
                    }
                }
            }
        }));
    }
    let mut windows = Vec::with_capacity(count as usize);
    let mut before = 0;
    for i in 1..=count {
        tokio::time::sleep_until((started + window * i).into()).await;
        let now = done.load(Ordering::Relaxed);
        windows.push((now - before) as f64 / window.as_secs_f64());
        eprintln!(
            "sustained: window {i}/{count}: {:.1} req/s",
            windows[windows.len() - 1]
        );
        before = now;
    }
    for task in tasks {
        if task.await.is_err() {
            errors.fetch_add(1, Ordering::Relaxed);
        }
    }
    Sustained {
        windows,
        errors: errors.load(Ordering::Relaxed),
    }
}

/// CPU seconds (user and system) a process has used so far, from `/proc/PID/stat` (whose
/// clock ticks are `USER_HZ`, 100 a second on Linux whatever the kernel's own tick).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses; the fields after it are plain numbers.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// The machine's busy and total CPU time so far, from `/proc/stat` (idle and I/O wait count
/// as not busy).
pub fn machine_cpu() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let values: Vec<u64> = line
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3)? + values.get(4)?;
    Some((total - idle, total))
}
