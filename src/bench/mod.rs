//! `skycut bench`: measures Skycut against its floor on this machine and prints one table.
//!
//! The floor is the cutout done in-process by `soda::cut_to_file` alone (cfitsio reads the
//! section and writes the result file): what any service must pay. Against it, in the same run
//! so that ratios mean something on a busy machine:
//!
//! - embedded mode: a real `skycut serve` in this process, driven over loopback HTTP (sync
//!   latency, sync throughput at several client counts, a batch of async jobs);
//! - distributed mode ([`cluster`]): wobbly, frontend and workers as child processes against
//!   PostgreSQL and Redis (the same figures, plus job-list latency with a million stored jobs and
//!   the peak memory of each process);
//! - optionally a worker under an address-space limit cutting from an image larger than it,
//!   and the S3 source cache ([`source_cache`]).
//!
//! Every result is checked against the floor's pixels ([`load`]).
//!
//! Three measurements replace this table with their own: `--light-curve` ([`light_curve`]),
//! `--bulk` ([`bulk`]: bulk stamp tables, embedded and distributed, against astropy and
//! astrocut) and `--control-plane` ([`control_plane`]: the cost per job of each distributed
//! component, and the most jobs a second the control plane carries).

mod bulk;
mod cluster;
mod control_plane;
mod light_curve;
mod load;
mod source_cache;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::config::Config;
use crate::serve;
use cluster::{Cluster, ClusterSpec};
use load::{Stats, Workload, stats};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Sequential sync requests (and floor repetitions) to time.
    #[arg(long, default_value_t = 200)]
    requests: usize,
    /// Side of the square float32 source image, in pixels.
    #[arg(long, default_value_t = 4096)]
    image_size: usize,
    /// Side of the square cutout, in pixels.
    #[arg(long, default_value_t = 100)]
    cutout_size: usize,
    /// Sync requests per throughput measurement (shared by the concurrent clients).
    #[arg(long, default_value_t = 2000)]
    throughput_requests: usize,
    /// Concurrent clients of each sync throughput measurement.
    #[arg(long, value_delimiter = ',', default_value = "16,64")]
    clients: Vec<usize>,
    /// Minutes of the sustained measurement: `--sustained-clients` clients issue sync cutouts
    /// back to back for this long, counted per `--sustained-window` (0 skips it).
    #[arg(long, default_value_t = 5.0)]
    sustained_minutes: f64,
    /// Concurrent clients of the sustained measurement.
    #[arg(long, default_value_t = 64)]
    sustained_clients: usize,
    /// Seconds of each window of the sustained measurement.
    #[arg(long, default_value_t = 30)]
    sustained_window: u64,
    /// Async jobs per batch (0 skips the async measurement).
    #[arg(long, default_value_t = 10_000)]
    jobs: usize,
    /// Concurrent clients submitting the async jobs.
    #[arg(long, default_value_t = 32)]
    submit_clients: usize,
    /// Async jobs whose results are fetched and checked against the floor's pixels.
    #[arg(long, default_value_t = 50)]
    check_jobs: usize,
    /// Require the distributed measurements (fail if PostgreSQL or Redis is unreachable)
    /// instead of skipping them.
    #[arg(long, conflicts_with = "embedded_only")]
    distributed: bool,
    /// Skip the distributed measurements.
    #[arg(long)]
    embedded_only: bool,
    /// PostgreSQL for the distributed topology (its `uws_job` table gets this run's rows, which
    /// are deleted at the end).
    #[arg(
        long,
        env = "BENCH_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    postgres_url: String,
    /// Redis for the distributed topology (keys under a prefix unique to the run).
    #[arg(
        long,
        env = "BENCH_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    redis_url: String,
    /// Workers of the distributed topology.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Jobs written into the store for the job-list measurement (0 skips it).
    #[arg(long, default_value_t = 1_000_000)]
    list_jobs: u64,
    /// Also time a worker limited to `--worker-memory-mib` of address space cutting out of a
    /// float32 image of this many GiB (written to a temporary directory first).
    #[arg(long)]
    big_image_gib: Option<f64>,
    /// Address-space limit (`ulimit -v`) of the worker of `--big-image-gib`, in MiB.
    #[arg(long, default_value_t = 1024)]
    worker_memory_mib: u64,
    /// Also leave a copy of the source image here (to time other tools on the same image; the
    /// stencil is the circle printed as `stencil:`).
    #[arg(long)]
    keep_image: Option<PathBuf>,
    /// Also measure source-cache hits and misses against the S3 server at this endpoint
    /// (`http://127.0.0.1:5000`); the bucket `skycut-bench` is created there.
    #[arg(long)]
    s3_endpoint: Option<String>,
    /// Also time the two cold source reads through a relay that holds each request to the S3
    /// server this many milliseconds (0 skips it).
    #[arg(long, default_value_t = 20)]
    s3_latency_ms: u64,
    /// Repetitions of each source-cache measurement (a miss downloads the whole image).
    #[arg(long, default_value_t = 20)]
    cache_requests: usize,
    /// Measure only the floor and the source cache (with `--s3-endpoint`): no service is
    /// started, neither embedded nor distributed.
    #[arg(long, requires = "s3_endpoint")]
    source_cache_only: bool,
    /// Measure the floor (and the masked floor) only, with no service started: the quick check
    /// of a change to the cutout itself.
    #[arg(long)]
    floor_only: bool,
    /// Measure light curves instead (DMS-REQ-0375): `--epochs` images of one field indexed and
    /// cut by one user and by `--users` at once, and lookups in a sky index of
    /// `--index-images` footprints in PostgreSQL.
    #[arg(long)]
    light_curve: bool,
    /// Epoch images of the light-curve field.
    #[arg(long, default_value_t = 800)]
    epochs: usize,
    /// Side of each square float32 epoch image, in pixels.
    #[arg(long, default_value_t = 2048)]
    epoch_size: usize,
    /// Side of each light-curve stamp, in pixels.
    #[arg(long, default_value_t = 51)]
    stamp: usize,
    /// Users asking for the light curve at once.
    #[arg(long, default_value_t = 10)]
    users: usize,
    /// Footprints written into the PostgreSQL sky index for the lookup measurement (0 skips it).
    #[arg(long, default_value_t = 1_000_000)]
    index_images: u64,
    /// Measure bulk cutouts instead (`POST /bulk`): `--bulk-images` images, a catalogue of
    /// `--bulk-stamps-per-image` positions in each, cut embedded and distributed into a stamp
    /// table, against astropy and astrocut on the same stamps ([`bulk`]).
    #[arg(long)]
    bulk: bool,
    /// Images of the bulk measurement.
    #[arg(long, default_value_t = 100)]
    bulk_images: usize,
    /// Side of each square float32 image of the bulk measurement, in pixels.
    #[arg(long, default_value_t = 2048)]
    bulk_image_size: usize,
    /// Random catalogue positions in each image of the bulk measurement.
    #[arg(long, default_value_t = 1000)]
    bulk_stamps_per_image: usize,
    /// Side of each bulk stamp (`SIZE`), in pixels.
    #[arg(long, default_value_t = 32)]
    bulk_stamp_size: usize,
    /// Bulk jobs timed per topology (the median is reported).
    #[arg(long, default_value_t = 3)]
    bulk_runs: usize,
    /// Stamps astrocut cuts (an even sample of the catalogue; it is slow), for its rate.
    #[arg(long, default_value_t = 5000)]
    bulk_baseline_stamps: usize,
    /// Random stamps of each topology's table checked against the source pixels.
    #[arg(long, default_value_t = 100)]
    bulk_check: usize,
    /// Python with astropy and astrocut for the bulk baselines (`scripts/bench-bulk` installs
    /// them into `.venv`).
    #[arg(long, default_value = ".venv/bin/python")]
    bulk_python: PathBuf,
    /// Measure the control plane instead ([`control_plane`]): the CPU and round trips each
    /// distributed component spends per sync, async and bulk job of a tiny image, then the most
    /// sync jobs a second with `--cp-workers` workers and each of `--cp-replicas` wobbly
    /// replicas and frontends.
    #[arg(long)]
    control_plane: bool,
    /// Side of the square float32 image of the control-plane measurement, in pixels.
    #[arg(long, default_value_t = 16)]
    cp_image_size: usize,
    /// Sync jobs, and async jobs, whose costs are measured.
    #[arg(long, default_value_t = 400)]
    cp_jobs: usize,
    /// Concurrent clients of the cost measurement (sync and async).
    #[arg(long, default_value_t = 4)]
    cp_cost_clients: usize,
    /// Bulk jobs whose costs are measured, one at a time (0 skips them).
    #[arg(long, default_value_t = 20)]
    cp_bulk_jobs: usize,
    /// Stamps (4×4 pixels) in each bulk job.
    #[arg(long, default_value_t = 5)]
    cp_bulk_stamps: usize,
    /// Worker processes of the control-plane measurement.
    #[arg(long, default_value_t = 20)]
    cp_workers: usize,
    /// Jobs each of those workers runs at once.
    #[arg(long, default_value_t = 2)]
    cp_worker_concurrency: usize,
    /// wobbly replicas (and as many frontends) of each simulation; the costs are measured on
    /// the first.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    cp_replicas: Vec<usize>,
    /// Concurrent clients of each step of the simulation (closed loops of sync jobs).
    #[arg(long, value_delimiter = ',', default_value = "8,32,96")]
    cp_clients: Vec<usize>,
    /// Seconds of each step of the simulation.
    #[arg(long, default_value_t = 10.0)]
    cp_seconds: f64,
    /// Seconds to wait before reading PostgreSQL's counters after a load: PostgreSQL 15 reports
    /// a busy backend's counters only after 10 s idle (less makes its figures incomplete).
    #[arg(long, default_value_t = 11.0)]
    cp_settle_seconds: f64,
}

/// One line of the table; a figure that does not apply is left out.
#[derive(Default)]
pub struct Row {
    measure: String,
    latency: Option<Stats>,
    /// Requests or jobs per second, and what is counted.
    rate: Option<(f64, &'static str)>,
    errors: Option<usize>,
    memory: Option<u64>,
    /// The figure over the floor's: a latency's median over the floor's median, a rate over
    /// the rate of one core doing the floor back to back. Set by [`Table::push`] for rows that
    /// measure cutouts (`vs_floor`), unless given.
    ratio: Option<f64>,
    vs_floor: bool,
}

impl Row {
    fn new(measure: impl Into<String>) -> Row {
        Row {
            measure: measure.into(),
            ..Row::default()
        }
    }

    /// A row that measures cutouts, so its figure is also shown over the floor's.
    fn cutout(measure: impl Into<String>) -> Row {
        Row {
            vs_floor: true,
            ..Row::new(measure)
        }
    }

    fn print(&self) {
        let latency = self.latency.as_ref();
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            self.measure,
            latency.map_or("".into(), |s| ms(s.median)),
            latency.map_or("".into(), |s| ms(s.p95)),
            self.rate
                .map_or("".into(), |(r, unit)| format!("{r:.1} {unit}")),
            self.errors.map_or("".into(), |e| e.to_string()),
            self.memory.map_or("".into(), |b| format!(
                "{:.1}",
                b as f64 / f64::from(1 << 20)
            )),
            self.ratio.map_or("".into(), |r| format!("{r:.2}")),
        );
    }
}

pub(crate) fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

/// The collected rows and the floor they are compared with.
struct Table {
    floor: Duration,
    rows: Vec<Row>,
}

impl Table {
    /// Records a row and shows it at once on stderr, so a long run shows progress and an error
    /// later on does not hide what was already measured.
    fn push(&mut self, mut row: Row) {
        let floor = self.floor.as_secs_f64().max(1e-9);
        if row.vs_floor && row.ratio.is_none() {
            row.ratio = match (&row.latency, row.rate) {
                (Some(s), _) => Some(s.median.as_secs_f64() / floor),
                (None, Some((rate, _))) => Some(rate * floor),
                _ => None,
            };
        }
        row.print_to_stderr();
        self.rows.push(row);
    }
}

impl Row {
    fn print_to_stderr(&self) {
        let latency = self.latency.as_ref();
        eprintln!(
            "measured: {}: median {} ms, p95 {} ms, rate {}, errors {}",
            self.measure,
            latency.map_or("-".into(), |s| ms(s.median)),
            latency.map_or("-".into(), |s| ms(s.p95)),
            self.rate
                .map_or("-".into(), |(r, unit)| format!("{r:.1} {unit}")),
            self.errors.map_or("-".into(), |e| e.to_string()),
        );
    }
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("skycut-bench-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("images"))?;
    let result = measure(&args, &dir).await;
    remove_reporting(&dir);
    result
}

/// Removes the bench's directory one top-level entry at a time, saying so on stderr: tens of
/// thousands of result files take minutes to delete, which must not look like a hang.
fn remove_reporting(dir: &Path) {
    let entries: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(_) => return,
    };
    let started = Instant::now();
    eprintln!("removing the bench's files in {}…", dir.display());
    for (i, entry) in entries.iter().enumerate() {
        let removed = if entry.is_dir() {
            std::fs::remove_dir_all(entry)
        } else {
            std::fs::remove_file(entry)
        };
        if let Err(e) = removed {
            eprintln!("cannot remove {}: {e}", entry.display());
        }
        eprintln!(
            "removed {} ({}/{}, {:.1} s)",
            entry.display(),
            i + 1,
            entries.len(),
            started.elapsed().as_secs_f64()
        );
    }
    std::fs::remove_dir(dir).ok();
}

const RA: f64 = 150.0;
const DEC: f64 = 2.0;
const SCALE: f64 = 0.2 / 3600.0;

async fn measure(args: &BenchArgs, dir: &Path) -> anyhow::Result<()> {
    if args.bulk {
        return bulk::measure(args, dir).await;
    }
    if args.control_plane {
        return control_plane::measure(args, dir).await;
    }
    let image = dir.join("images/bench.fits");
    eprintln!(
        "writing a {0}x{0} float32 image ({1} MiB)…",
        args.image_size,
        args.image_size * args.image_size * 4 / (1 << 20)
    );
    write_image(&image, args.image_size)?;
    // A circle of diameter N−1 pixels spans N pixel centres.
    let radius = (args.cutout_size as f64 - 1.0) / 2.0 * SCALE;
    let circle = format!("{RA} {DEC} {radius}");

    // Floor: the cutout alone, in this process.
    let stencil = soda::Stencil::parse_circle(&circle)?;
    let provenance = soda::Provenance {
        source_id: "butler://bench/bench".into(),
        stencil: stencil.to_string(),
        software: "bench".into(),
        time_utc: uws::timestamp::format(uws::timestamp::now()),
    };
    let out = dir.join("floor.fits");
    let mut floor = Vec::with_capacity(args.requests);
    let mut masked = Vec::with_capacity(args.requests);
    let mut shape = (0, 0);
    let mask = soda::CutOptions {
        mask: true,
        ..soda::CutOptions::default()
    };
    // Masked and plain cutouts alternate, so that both see the same machine load.
    for _ in 0..args.requests {
        let started = Instant::now();
        soda::cut_to_file_with(&image, &stencil, &provenance, &out, mask.clone())?;
        masked.push(started.elapsed());
        let started = Instant::now();
        let cut = soda::cut_to_file(&image, &stencil, &provenance, &out)?;
        floor.push(started.elapsed());
        shape = (cut.region.width(), cut.region.height());
    }
    let work = Arc::new(Workload {
        id: "butler://bench/bench".into(),
        circle: circle.clone(),
        expected_data: data_block(&out, shape)?,
    });
    let floor = stats(floor);
    let mut table = Table {
        floor: floor.median,
        rows: Vec::new(),
    };
    table.push(Row {
        latency: Some(floor),
        ..Row::cutout("floor: soda::cut_to_file in-process")
    });
    table.push(Row {
        latency: Some(stats(masked)),
        ..Row::cutout("soda::cut_to_file_with MASK=true in-process")
    });
    if args.light_curve {
        let mut notes = Vec::new();
        let lc = light_curve::LightCurveArgs {
            epochs: args.epochs,
            epoch_size: args.epoch_size,
            stamp: args.stamp,
            users: args.users,
            index_images: args.index_images,
            postgres_url: &args.postgres_url,
        };
        light_curve::measure(&lc, dir, &mut table, &mut notes).await?;
        println!("| measure | median ms | p95 ms | rate | errors | peak RSS MiB | / floor |");
        println!("|---|---|---|---|---|---|---|");
        for row in &table.rows {
            row.print();
        }
        for note in notes {
            println!("{note}");
        }
        return Ok(());
    }
    if args.floor_only {
        println!("stencil: CIRCLE {circle}");
        println!("| measure | median ms | p95 ms | rate | errors | peak RSS MiB | / floor |");
        println!("|---|---|---|---|---|---|---|");
        for row in &table.rows {
            row.print();
        }
        return Ok(());
    }
    if let Some(keep) = &args.keep_image {
        std::fs::copy(&image, keep)
            .with_context(|| format!("copying the image to {}", keep.display()))?;
    }
    if let Some(endpoint) = &args.s3_endpoint {
        for row in
            source_cache::measure_source_cache(args, endpoint, dir, &image, &stencil, &provenance)
                .await?
        {
            table.push(row);
        }
    }

    let client = load::client()?;
    let mut notes = Vec::new();
    if args.source_cache_only {
        notes.push("embedded and distributed: skipped (--source-cache-only)".to_owned());
    } else {
        embedded(args, dir, &client, &work, &mut table).await?;
        distributed_rows(args, dir, &client, &work, &mut table, &mut notes).await?;
    }

    println!(
        "cutout {}x{} of a {n}x{n} float32 image; {} sequential requests per latency; {} requests per throughput; {} async jobs from {} clients; sustained: {} clients for {} min in {} s windows",
        shape.0,
        shape.1,
        args.requests,
        args.throughput_requests,
        args.jobs,
        args.submit_clients,
        args.sustained_clients,
        args.sustained_minutes,
        args.sustained_window,
        n = args.image_size
    );
    println!("stencil: CIRCLE {circle}");
    println!("| measure | median ms | p95 ms | rate | errors | peak RSS MiB | / floor |");
    println!("|---|---|---|---|---|---|---|");
    for row in &table.rows {
        row.print();
    }
    println!(
        "/ floor: a latency's median over the floor's median; a rate times the floor's median (1.00 = one core cutting back to back)"
    );
    for note in notes {
        println!("{note}");
    }
    Ok(())
}

/// Whether the distributed rows run: not with `--embedded-only`, nor when PostgreSQL or Redis
/// is unreachable (a note says why), which is an error if `--distributed` asked for them.
fn distributed_wanted(args: &BenchArgs, notes: &mut Vec<String>) -> anyhow::Result<bool> {
    if args.embedded_only {
        notes.push("distributed: skipped (--embedded-only)".to_owned());
        return Ok(false);
    }
    if !cluster::reachable(&args.postgres_url) || !cluster::reachable(&args.redis_url) {
        anyhow::ensure!(
            !args.distributed,
            "--distributed: PostgreSQL ({}) or Redis ({}) is unreachable",
            redact(&args.postgres_url),
            args.redis_url
        );
        notes.push(format!(
            "distributed: skipped, PostgreSQL ({}) or Redis ({}) is unreachable",
            redact(&args.postgres_url),
            args.redis_url
        ));
        return Ok(false);
    }
    Ok(true)
}

/// The distributed rows, unless skipped (with a note saying why).
async fn distributed_rows(
    args: &BenchArgs,
    dir: &Path,
    client: &reqwest::Client,
    work: &Arc<Workload>,
    table: &mut Table,
    notes: &mut Vec<String>,
) -> anyhow::Result<()> {
    if distributed_wanted(args, notes)? {
        distributed(args, dir, client, work, table, notes).await?;
    }
    Ok(())
}

fn write_image(path: &Path, side: usize) -> anyhow::Result<()> {
    soda::write_synthetic_image(
        path,
        &soda::SyntheticImage {
            nx: side,
            ny: side,
            ra_deg: RA,
            dec_deg: DEC,
            pixel_scale_deg: SCALE,
        },
    )?;
    Ok(())
}

/// The data block (float32 pixels padded to the 2880-byte FITS record) that ends a result file
/// of a `shape` cutout.
fn data_block(file: &Path, shape: (usize, usize)) -> anyhow::Result<Vec<u8>> {
    let bytes = std::fs::read(file)?;
    let len = (shape.0 * shape.1 * 4).div_ceil(2880) * 2880;
    let start = bytes
        .len()
        .checked_sub(len)
        .context("floor result shorter than its data")?;
    Ok(bytes[start..].to_vec())
}

/// The same load against any running Skycut; `label` names the topology in each row, and
/// `service` the processes whose CPU use the sustained load reports (none: this process, which
/// then holds both the service and its clients).
async fn service_load(
    args: &BenchArgs,
    label: &str,
    base: &str,
    service: &[u32],
    client: &reqwest::Client,
    work: &Arc<Workload>,
    table: &mut Table,
) -> anyhow::Result<()> {
    let (latency, errors) = load::sync_sequential(client, base, work, args.requests).await;
    table.push(Row {
        latency: Some(latency),
        errors: Some(errors),
        ..Row::cutout(format!(
            "{label}: sync GET → 303 → GET signed URL, sequential"
        ))
    });
    for &clients in &args.clients {
        let t = load::sync_concurrent(client, base, work, clients, args.throughput_requests).await;
        table.push(Row {
            rate: Some((t.per_second, "req/s")),
            errors: Some(t.errors),
            ..Row::cutout(format!("{label}: sync throughput, {clients} clients"))
        });
    }
    if args.jobs > 0 {
        let batch = load::async_jobs(
            client,
            base,
            work,
            args.jobs,
            args.submit_clients,
            args.check_jobs,
        )
        .await?;
        table.push(Row {
            rate: Some((
                batch.completed as f64 / batch.elapsed.as_secs_f64(),
                "jobs/s",
            )),
            errors: Some(batch.errors),
            ..Row::cutout(format!(
                "{label}: {} async jobs submitted → all COMPLETED in {:.1} s",
                args.jobs,
                batch.elapsed.as_secs_f64()
            ))
        });
    }
    if args.sustained_minutes > 0.0 {
        sustained(args, label, base, service, client, work, table).await;
    }
    Ok(())
}

/// The sustained rows: the median of the windows' rates, the first and the last window, and the
/// CPU the service used meanwhile.
async fn sustained(
    args: &BenchArgs,
    label: &str,
    base: &str,
    service: &[u32],
    client: &reqwest::Client,
    work: &Arc<Workload>,
    table: &mut Table,
) {
    let own = [std::process::id()];
    let (pids, whose) = match service {
        [] => (&own[..], "bench process (service and clients)"),
        pids => (pids, "service processes"),
    };
    let cpu = || {
        pids.iter()
            .filter_map(|&p| load::cpu_seconds(p))
            .sum::<f64>()
    };
    let (cpu_before, machine_before) = (cpu(), load::machine_cpu());
    let started = Instant::now();
    let duration = Duration::from_secs_f64(args.sustained_minutes * 60.0);
    let window = Duration::from_secs(args.sustained_window);
    let clients = args.sustained_clients;
    let run = load::sync_sustained(client, base, work, clients, duration, window).await;
    let elapsed = started.elapsed().as_secs_f64();
    let cores = (cpu() - cpu_before) / elapsed;
    let busy = match (machine_before, load::machine_cpu()) {
        (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => {
            format!("{:.0} %", (b1 - b0) as f64 / (t1 - t0) as f64 * 100.0)
        }
        _ => "unknown".to_owned(),
    };
    let mut sorted = run.windows.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or_default();
    let first = run.windows.first().copied().unwrap_or_default();
    let last = run.windows.last().copied().unwrap_or_default();
    let what = format!(
        "{label}: sustained sync, {clients} clients for {} min",
        args.sustained_minutes
    );
    let seconds = window.min(duration).as_secs();
    table.push(Row {
        rate: Some((median, "req/s")),
        errors: Some(run.errors),
        ..Row::cutout(format!(
            "{what}, median of {} {seconds} s windows",
            run.windows.len()
        ))
    });
    table.push(Row {
        rate: Some((first, "req/s")),
        ..Row::cutout(format!("{what}, first {seconds} s window"))
    });
    table.push(Row {
        rate: Some((last, "req/s")),
        ..Row::cutout(format!(
            "{what}, last {seconds} s window ({:.2} of the first)",
            last / first.max(1e-9)
        ))
    });
    table.push(Row::new(format!(
        "{what}: CPU of the {whose} {cores:.2} cores, machine {busy} busy"
    )));
}

async fn embedded(
    args: &BenchArgs,
    dir: &Path,
    client: &reqwest::Client,
    work: &Arc<Workload>,
    table: &mut Table,
) -> anyhow::Result<()> {
    let loaded = Config::load(None)?;
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    let mut config = loaded.config;
    config.listen = "127.0.0.1:0".parse()?;
    config.data_dir = dir.join("data");
    config
        .repositories
        .insert("bench".into(), dir.join("images"));
    let running = serve::start(config, false).await?;
    let outcome = service_load(args, "embedded", &running.base, &[], client, work, table).await;
    running.stop().await?;
    outcome
}

async fn distributed(
    args: &BenchArgs,
    dir: &Path,
    client: &reqwest::Client,
    work: &Arc<Workload>,
    table: &mut Table,
    notes: &mut Vec<String>,
) -> anyhow::Result<()> {
    let mut repositories = vec![("bench".to_owned(), dir.join("images"))];
    let big = dir.join("big");
    if args.big_image_gib.is_some() {
        std::fs::create_dir_all(&big)?;
        repositories.push(("big".to_owned(), big.clone()));
    }
    let spec = ClusterSpec {
        postgres_url: args.postgres_url.clone(),
        redis_url: args.redis_url.clone(),
        repositories,
        data_dir: dir.join("cluster"),
    };
    let workers = args.workers;
    let mut cluster = tokio::task::block_in_place(|| Cluster::start(&spec, workers))?;
    let label = format!("distributed ({workers} workers)");
    let outcome = async {
        let service: Vec<u32> = (cluster.wobbly_pid().into_iter())
            .chain(cluster.frontend_pid())
            .chain(cluster.worker_pids())
            .collect();
        service_load(args, &label, &cluster.base, &service, client, work, table).await?;
        if let Some(pid) = cluster.frontend_pid() {
            table.push(Row {
                memory: cluster::peak_rss(pid),
                ..Row::new(format!("{label}: frontend after the load"))
            });
        }
        for (i, pid) in cluster.worker_pids().into_iter().enumerate() {
            table.push(Row {
                memory: cluster::peak_rss(pid),
                ..Row::new(format!("{label}: worker {} after the load", i + 1))
            });
        }
        if args.list_jobs > 0 {
            let store = JobRows::connect(&args.postgres_url, &cluster.scope).await?;
            let started = Instant::now();
            store.fill(args.list_jobs).await?;
            notes.push(format!(
                "job list: {} jobs written with one INSERT … generate_series in {:.1} s",
                args.list_jobs,
                started.elapsed().as_secs_f64()
            ));
            let latency = load::list_latency(client, &cluster.base, args.requests).await;
            store.delete().await?;
            table.push(Row {
                latency: Some(latency?),
                ..Row::new(format!(
                    "{label}: GET /jobs?LAST=100 with {} jobs stored",
                    args.list_jobs
                ))
            });
        }
        if let Some(gib) = args.big_image_gib {
            big_image(args, gib, &big, &mut cluster, client, table).await?;
        }
        anyhow::Ok(())
    }
    .await;
    // The run's jobs go with it, whatever happened.
    eprintln!("deleting this run's jobs from the job store…");
    if let Ok(store) = JobRows::connect(&args.postgres_url, &cluster.scope).await {
        store.delete().await.ok();
    }
    let streams = worker::redis::Streams::new(&cluster.scope);
    drop(cluster);
    // So are its Redis keys (the lane streams with their consumer group, the epoch marker).
    match worker::redis::delete_keys(&args.redis_url, &streams).await {
        Ok(n) => eprintln!("deleted this run's {n} Redis keys"),
        Err(e) => eprintln!(
            "could not delete this run's Redis keys: {}",
            worker::redis::describe(&e)
        ),
    }
    outcome
}

/// A worker under `ulimit -v` cutting 100×100 out of an image larger than that limit.
async fn big_image(
    args: &BenchArgs,
    gib: f64,
    dir: &Path,
    cluster: &mut Cluster,
    client: &reqwest::Client,
    table: &mut Table,
) -> anyhow::Result<()> {
    let side = ((gib * f64::from(1 << 30) / 4.0).sqrt()) as usize;
    let image = dir.join("big.fits");
    eprintln!("writing a {side}x{side} float32 image ({gib} GiB)…");
    write_image(&image, side)?;
    let size = std::fs::metadata(&image)?.len();
    let radius = (args.cutout_size as f64 - 1.0) / 2.0 * SCALE;
    let circle = format!("{RA} {DEC} {radius}");
    let stencil = soda::Stencil::parse_circle(&circle)?;
    let provenance = soda::Provenance {
        source_id: "butler://big/big".into(),
        stencil: stencil.to_string(),
        software: "bench".into(),
        time_utc: uws::timestamp::format(uws::timestamp::now()),
    };
    let out = dir.join("floor.fits");
    let mut floor = Vec::new();
    let mut shape = (0, 0);
    for _ in 0..20 {
        let started = Instant::now();
        let cut = soda::cut_to_file(&image, &stencil, &provenance, &out)?;
        floor.push(started.elapsed());
        shape = (cut.region.width(), cut.region.height());
    }
    let work = Workload {
        id: "butler://big/big".into(),
        circle,
        expected_data: data_block(&out, shape)?,
    };
    // Only the limited worker may take the job.
    cluster.stop_workers();
    let limit = args.worker_memory_mib << 20;
    let pid = tokio::task::block_in_place(|| cluster.start_worker(Some(limit)))?;
    let (latency, errors) = load::sync_sequential(client, &cluster.base, &work, 20).await;
    let name = format!(
        "worker under ulimit -v {} MiB, sync cutout of a {:.1} GiB image",
        args.worker_memory_mib,
        size as f64 / f64::from(1 << 30)
    );
    let floor = stats(floor);
    let ratio = latency.median.as_secs_f64() / floor.median.as_secs_f64().max(1e-9);
    table.push(Row {
        latency: Some(floor),
        ratio: Some(1.0),
        ..Row::new("floor on that image: soda::cut_to_file in-process")
    });
    table.push(Row {
        latency: Some(latency),
        errors: Some(errors),
        memory: cluster::peak_rss(pid),
        ratio: Some(ratio),
        ..Row::new(name)
    });
    Ok(())
}

/// This run's rows in the PostgreSQL job store.
struct JobRows {
    pool: sqlx::PgPool,
    service: String,
}

impl JobRows {
    async fn connect(url: &str, service: &str) -> anyhow::Result<JobRows> {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(url)
            .await
            .context("cannot connect to PostgreSQL")?;
        Ok(JobRows {
            pool,
            service: service.to_owned(),
        })
    }

    /// `n` COMPLETED jobs of the anonymous owner, one a millisecond back from now, in the
    /// encodings of `wobbly::SqlJobStore` (µs times, JSON parameters and results).
    async fn fill(&self, n: u64) -> anyhow::Result<()> {
        let now = uws::timestamp::to_micros(uws::timestamp::now());
        let week = 7 * 24 * 3600 * 1_000_000_i64;
        sqlx::query(
            r#"INSERT INTO uws_job (id, service, owner, run_id, phase, creation_time, start_time,
                 end_time, execution_duration, destruction, parameters, results)
               SELECT md5($1 || g::text), $1, 'anonymous', NULL, 'COMPLETED', $2 - g * 1000,
                 $2 - g * 1000 + 10, $2 - g * 1000 + 20, 600, $2 + $3,
                 '[{"name":"ID","value":"butler://bench/bench"},{"name":"CIRCLE","value":"150 2 0.0001"}]',
                 '[{"id":"cutout","key":"bench/' || md5($1 || g::text) || '.fits","mime_type":"application/fits","size":48960}]'
               FROM generate_series(1, $4) AS g"#,
        )
        .bind(&self.service)
        .bind(now)
        .bind(week)
        .bind(i64::try_from(n)?)
        .execute(&self.pool)
        .await
        .context("cannot fill the job store")?;
        sqlx::query("ANALYZE uws_job")
            .execute(&self.pool)
            .await
            .context("cannot analyze uws_job")?;
        Ok(())
    }

    async fn delete(&self) -> anyhow::Result<()> {
        sqlx::query("DELETE FROM uws_job WHERE service = $1")
            .bind(&self.service)
            .execute(&self.pool)
            .await
            .context("cannot delete the bench's jobs")?;
        Ok(())
    }
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://[redacted]{}", &url[..scheme], &url[at..])
        }
        _ => url.to_owned(),
    }
}
