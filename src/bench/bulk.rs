//! `skycut bench --bulk`: bulk cutouts (`POST /bulk`) on this machine, against astropy and
//! astrocut cutting the same stamps in the same run.
//!
//! The bench writes `--bulk-images` synthetic float32 images on a grid of the sky (no two overlap, so each
//! catalogue row lies on exactly one image) and one CSV catalogue of `--bulk-stamps-per-image`
//! random positions inside each (fixed seed), then, `--bulk-runs` times for each topology, POSTs
//! the catalogue, waits for COMPLETED and downloads the stamp table:
//!
//! - embedded: `skycut serve` as a child process, rows placed on images by its sky index (the
//!   bench waits until the index holds every image);
//! - distributed: wobbly, frontend and `--workers` workers ([`super::cluster`]), rows placed by
//!   an `id` column (that frontend has no sky index).
//!
//! Each topology's last table is checked: one row per catalogue row, each once, and
//! `--bulk-check` random stamps equal to the source window their `CRPIX` places (NaN off the
//! image), from the image their row lies on. The baselines run `scripts/bench_bulk_baselines.py`
//! (built into this binary) with `--bulk-python` over the same files and catalogue.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::light_curve::{Random, tangent_to_sky};
use super::{BenchArgs, JobRows, cluster, load};

/// The baselines' script, written next to the images at run time.
const BASELINES: &str = include_str!("../../scripts/bench_bulk_baselines.py");

/// Pixel scale of the images, degrees.
const SCALE: f64 = super::SCALE;

/// Polls of the job's phase (between blocking `WAIT`s) and of the sky index.
const POLL: Duration = Duration::from_millis(200);

/// One catalogue row: where it is on the sky, and the image and 1-based pixel it was drawn at.
struct Position {
    ra: f64,
    dec: f64,
    image: usize,
    x: f64,
    y: f64,
}

/// The bench's images and catalogue.
struct Field {
    images: PathBuf,
    side: usize,
    positions: Vec<Position>,
    /// The catalogue body without `id` (embedded) and with it (distributed).
    by_sky: Vec<u8>,
    by_id: Vec<u8>,
}

fn image_name(image: usize) -> String {
    format!("img{image:04}")
}

fn image_id(image: usize) -> String {
    format!("butler://bulk/{}", image_name(image))
}

/// One line of the bulk table.
struct BulkRow {
    measure: String,
    stamps: usize,
    seconds: f64,
    bytes: u64,
    memory: Option<u64>,
    errors: Option<usize>,
    /// Whether this row's rate is the one divided by the baselines' (Skycut end to end).
    compared: bool,
}

impl BulkRow {
    fn stamps_per_second(&self) -> f64 {
        self.stamps as f64 / self.seconds.max(1e-9)
    }
}

pub(super) async fn measure(args: &BenchArgs, dir: &Path) -> anyhow::Result<()> {
    let field = write_field(args, dir)?;
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    notes.push(format!(
        "{} images of {1}x{1} float32, {2} random positions in each (seed fixed): {3} stamps of {4}x{4}; median of {5} runs; load average before: {6}",
        args.bulk_images,
        field.side,
        args.bulk_stamps_per_image,
        field.positions.len(),
        args.bulk_stamp_size,
        args.bulk_runs,
        load_average()
    ));
    let client = load::client()?;

    embedded(args, dir, &field, &client, &mut rows, &mut notes).await?;
    if super::distributed_wanted(args, &mut notes)? {
        distributed(args, dir, &field, &client, &mut rows, &mut notes).await?;
    }
    baselines(args, dir, &field, &mut rows, &mut notes)?;
    notes.push(format!("load average after: {}", load_average()));
    print_table(&rows, &notes);
    Ok(())
}

/// Writes the images and the catalogue.
fn write_field(args: &BenchArgs, dir: &Path) -> anyhow::Result<Field> {
    let images = dir.join("bulk");
    std::fs::create_dir_all(&images)?;
    let side = args.bulk_image_size;
    let n = args.bulk_images;
    anyhow::ensure!(
        n > 0 && side > 0,
        "--bulk-images and --bulk-image-size must be positive"
    );
    eprintln!(
        "writing {n} images of {side}x{side} float32 ({:.1} GiB)…",
        (n * side * side * 4) as f64 / f64::from(1 << 30)
    );
    let started = Instant::now();
    // A square grid, images 1.4 sides apart: a row lies on one image only.
    let columns = (n as f64).sqrt().ceil() as usize;
    let spacing = side as f64 * SCALE * 1.4;
    let centre = |image: usize| {
        let (column, row) = ((image % columns) as f64, (image / columns) as f64);
        let dec = super::DEC + row * spacing;
        (super::RA + column * spacing / dec.to_radians().cos(), dec)
    };
    // Each image written whole: a copy with edited keys would keep the first CRVAL cards
    // (cfitsio's write_key appends a card), placing every copy where the first is.
    for image in 0..n {
        let (ra, dec) = centre(image);
        soda::write_synthetic_image(
            &images.join(format!("{}.fits", image_name(image))),
            &soda::SyntheticImage {
                nx: side,
                ny: side,
                ra_deg: ra,
                dec_deg: dec,
                pixel_scale_deg: SCALE,
            },
        )?;
    }
    eprintln!("images written in {:.1} s", started.elapsed().as_secs_f64());

    // Positions uniform over each image's pixels, edges included (1-based pixel coordinates
    // from 1 to side: a stamp there hangs over the edge).
    let crpix = (side as f64 + 1.0) / 2.0;
    let mut random = Random(0x0b01_c0de_5eed_0015);
    let mut positions = Vec::with_capacity(n * args.bulk_stamps_per_image);
    for image in 0..n {
        for _ in 0..args.bulk_stamps_per_image {
            let x = 1.0 + random.unit() * (side as f64 - 1.0);
            let y = 1.0 + random.unit() * (side as f64 - 1.0);
            // The images' CD matrix: −SCALE on x (east left), SCALE on y.
            let (ra, dec) =
                tangent_to_sky(centre(image), -(x - crpix) * SCALE, (y - crpix) * SCALE);
            positions.push(Position {
                ra,
                dec,
                image,
                x,
                y,
            });
        }
    }
    let mut body = String::with_capacity(positions.len() * 48);
    for p in &positions {
        body.push_str(&format!(
            "{:.10},{:.10},{}\n",
            p.ra,
            p.dec,
            image_id(p.image)
        ));
    }
    let by_sky = format!("ra,dec,image\n{body}").into_bytes();
    let by_id = format!("ra,dec,id\n{body}").into_bytes();
    std::fs::write(dir.join("catalogue.csv"), &by_sky)?;
    Ok(Field {
        images,
        side,
        positions,
        by_sky,
        by_id,
    })
}

/// `skycut serve` as a child process, killed on drop.
struct Serve {
    child: Child,
    base: String,
}

impl Serve {
    fn start(dir: &Path, images: &Path) -> anyhow::Result<Serve> {
        let exe = std::env::current_exe().context("cannot find the skycut executable")?;
        let mut command = Command::new(exe);
        command
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.join("serve"))
            .arg("--repository")
            .arg(format!("bulk={}", images.display()))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // The caller's own SKYCUT_* settings would change what is measured.
        for (k, _) in std::env::vars() {
            if k.starts_with("SKYCUT_") {
                command.env_remove(k);
            }
        }
        let mut child = command.spawn().context("cannot start skycut serve")?;
        let mut reader = BufReader::new(child.stdout.take().context("serve has no stdout")?);
        let mut line = String::new();
        let read = reader.read_line(&mut line);
        let base = line
            .split_once(" listening on ")
            .map(|(_, url)| url.trim().to_owned());
        let serve = Serve {
            child,
            base: base.unwrap_or_default(),
        };
        read.context("cannot read serve's first line")?;
        anyhow::ensure!(!serve.base.is_empty(), "serve did not start: {line:?}");
        // Keep draining stdout so serve never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sink = String::new();
            while reader.read_line(&mut sink).is_ok_and(|n| n > 0) {
                sink.clear();
            }
        });
        Ok(serve)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn embedded(
    args: &BenchArgs,
    dir: &Path,
    field: &Field,
    client: &reqwest::Client,
    rows: &mut Vec<BulkRow>,
    notes: &mut Vec<String>,
) -> anyhow::Result<()> {
    let serve = tokio::task::block_in_place(|| Serve::start(dir, &field.images))?;
    let started = Instant::now();
    wait_for_index(client, &serve.base, field).await?;
    notes.push(format!(
        "embedded: the sky index held all {} images {:.1} s after serve started",
        args.bulk_images,
        started.elapsed().as_secs_f64()
    ));
    let label = "Skycut embedded (serve, sky index)";
    let runs = runs(args, client, &serve.base, &field.by_sky, label).await?;
    let errors = check_table(
        &runs.last_table,
        field,
        args.bulk_stamp_size,
        args.bulk_check,
    )?;
    push_runs(
        rows,
        label,
        &runs,
        errors,
        cluster::peak_rss(serve.child.id()),
    );
    notes.push(format!(
        "each topology's last table: every catalogue row once, and {} random stamps compared with their source windows (errors: stamps that differ); embedded peak RSS is serve's (frontend, worker and index in one process)",
        args.bulk_check.min(field.positions.len())
    ));
    Ok(())
}

async fn distributed(
    args: &BenchArgs,
    dir: &Path,
    field: &Field,
    client: &reqwest::Client,
    rows: &mut Vec<BulkRow>,
    notes: &mut Vec<String>,
) -> anyhow::Result<()> {
    let spec = cluster::ClusterSpec {
        postgres_url: args.postgres_url.clone(),
        redis_url: args.redis_url.clone(),
        repositories: vec![("bulk".to_owned(), field.images.clone())],
        data_dir: dir.join("cluster"),
    };
    let workers = args.workers;
    let cluster = tokio::task::block_in_place(|| cluster::Cluster::start(&spec, workers))?;
    let label = format!("Skycut distributed ({workers} workers, id column)");
    let outcome = async {
        let runs = runs(args, client, &cluster.base, &field.by_id, &label).await?;
        let errors = check_table(
            &runs.last_table,
            field,
            args.bulk_stamp_size,
            args.bulk_check,
        )?;
        let peaks: Vec<u64> = cluster
            .worker_pids()
            .into_iter()
            .filter_map(cluster::peak_rss)
            .collect();
        push_runs(rows, &label, &runs, errors, peaks.iter().max().copied());
        notes.push(format!(
            "distributed: peak RSS is the larger worker's; workers {}; frontend {}",
            peaks
                .iter()
                .map(|b| format!("{:.1} MiB", *b as f64 / f64::from(1 << 20)))
                .collect::<Vec<_>>()
                .join(", "),
            cluster.frontend_pid().and_then(cluster::peak_rss).map_or(
                "unknown".to_owned(),
                |b| format!("{:.1} MiB", b as f64 / f64::from(1 << 20))
            )
        ));
        anyhow::Ok(())
    }
    .await;
    // The run's jobs and Redis keys go with it, whatever happened.
    if let Ok(store) = JobRows::connect(&args.postgres_url, &cluster.scope).await {
        store.delete().await.ok();
    }
    let streams = worker::redis::Streams::new(&cluster.scope);
    drop(cluster);
    if let Err(e) = worker::redis::delete_keys(&args.redis_url, &streams).await {
        eprintln!(
            "could not delete this run's Redis keys: {}",
            worker::redis::describe(&e)
        );
    }
    outcome
}

/// Waits until an SIA query over the whole grid answers every image.
async fn wait_for_index(client: &reqwest::Client, base: &str, field: &Field) -> anyhow::Result<()> {
    let images: HashSet<usize> = field.positions.iter().map(|p| p.image).collect();
    let (ra, dec) = field
        .positions
        .iter()
        .fold((0.0, 0.0), |(a, b), p| (a + p.ra, b + p.dec));
    let n = field.positions.len() as f64;
    let (ra, dec) = (ra / n, dec / n);
    let radius = field
        .positions
        .iter()
        .map(|p| (p.ra - ra).abs().max((p.dec - dec).abs()))
        .fold(0.0, f64::max)
        * 1.5
        + 0.1;
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        let r = client
            .get(format!("{base}/sia/query"))
            .query(&[
                ("POS", format!("CIRCLE {ra} {dec} {radius}")),
                ("MAXREC", "100000".to_owned()),
            ])
            .send()
            .await?;
        let text = r.text().await?;
        let found = images
            .iter()
            .filter(|&&i| text.contains(&format!("{}<", image_id(i))))
            .count();
        if found == images.len() {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the sky index holds {found} of {} images after 30 min",
            images.len()
        );
        tokio::time::sleep(POLL).await;
    }
}

/// The timed runs of one topology.
struct Runs {
    /// POST → COMPLETED, and the download, of each run.
    end_to_end: Vec<Duration>,
    download: Vec<Duration>,
    stamps: usize,
    bytes: u64,
    last_table: Vec<u8>,
}

async fn runs(
    args: &BenchArgs,
    client: &reqwest::Client,
    base: &str,
    catalogue: &[u8],
    label: &str,
) -> anyhow::Result<Runs> {
    let mut runs = Runs {
        end_to_end: Vec::new(),
        download: Vec::new(),
        stamps: 0,
        bytes: 0,
        last_table: Vec::new(),
    };
    for run in 0..args.bulk_runs.max(1) {
        let started = Instant::now();
        let id = post(client, base, catalogue, args.bulk_stamp_size).await?;
        let doc = wait_completed(client, base, &id).await?;
        let end_to_end = started.elapsed();
        let href = result_href(&doc, "stamps")
            .context("the job has no result \"stamps\" (a part size under the table's?)")?;
        let started = Instant::now();
        let table = download(client, &href).await?;
        let fetched = started.elapsed();
        if let Some(errors) = result_href(&doc, "errors") {
            let text = download(client, &errors).await?;
            anyhow::bail!(
                "{label}: rows that gave no stamp: {}",
                String::from_utf8_lossy(&text[..text.len().min(500)])
            );
        }
        eprintln!(
            "{label}, run {}: COMPLETED in {:.2} s, {} bytes downloaded in {:.2} s",
            run + 1,
            end_to_end.as_secs_f64(),
            table.len(),
            fetched.as_secs_f64()
        );
        runs.end_to_end.push(end_to_end);
        runs.download.push(fetched);
        runs.bytes = table.len() as u64;
        runs.stamps = table_rows(&table)?;
        runs.last_table = table;
        // Each run stores about 400 MB of results: gone before the next.
        client.delete(format!("{base}/jobs/{id}")).send().await.ok();
    }
    Ok(runs)
}

fn push_runs(
    rows: &mut Vec<BulkRow>,
    label: &str,
    runs: &Runs,
    errors: usize,
    memory: Option<u64>,
) {
    let median = |samples: &[Duration]| load::stats(samples.to_vec()).median.as_secs_f64();
    rows.push(BulkRow {
        measure: format!("{label}: POST → COMPLETED (stamp table stored)"),
        stamps: runs.stamps,
        seconds: median(&runs.end_to_end),
        bytes: runs.bytes,
        memory,
        errors: Some(errors),
        compared: true,
    });
    rows.push(BulkRow {
        measure: format!("{label}: download of the table"),
        stamps: runs.stamps,
        seconds: median(&runs.download),
        bytes: runs.bytes,
        memory: None,
        errors: None,
        compared: false,
    });
}

/// POSTs the catalogue as a bulk job that runs at once; returns the job's ID.
pub(super) async fn post(
    client: &reqwest::Client,
    base: &str,
    catalogue: &[u8],
    size: usize,
) -> anyhow::Result<String> {
    let boundary = format!("skycutbench{:032x}", rand::random::<u128>());
    let mut body = Vec::with_capacity(catalogue.len() + 1024);
    for (name, value) in [
        ("UPLOAD", "cat,param:cat"),
        ("SIZE", &size.to_string()),
        ("PHASE", "RUN"),
    ] {
        write!(
            body,
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
        )?;
    }
    write!(
        body,
        "--{boundary}\r\nContent-Disposition: form-data; name=\"cat\"; filename=\"catalogue.csv\"\r\nContent-Type: text/csv\r\n\r\n"
    )?;
    body.extend_from_slice(catalogue);
    write!(body, "\r\n--{boundary}--\r\n")?;
    let r = client
        .post(format!("{base}/bulk"))
        .header(
            reqwest::header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await?;
    let status = r.status();
    let location = r
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .map(str::to_owned);
    match location {
        Some(l) if status == 303 => Ok(l.rsplit('/').next().unwrap_or_default().to_owned()),
        _ => anyhow::bail!("POST /bulk answered {status}: {}", r.text().await?),
    }
}

/// Waits (blocking `WAIT`s) until the job is COMPLETED; returns its document.
async fn wait_completed(client: &reqwest::Client, base: &str, id: &str) -> anyhow::Result<String> {
    let job = format!("{base}/jobs/{id}");
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        let doc = client.get(&job).send().await?.text().await?;
        if doc.contains("<uws:phase>COMPLETED</uws:phase>") {
            return Ok(doc);
        }
        anyhow::ensure!(
            !["ERROR", "ABORTED", "ARCHIVED"]
                .iter()
                .any(|p| doc.contains(&format!("<uws:phase>{p}</uws:phase>"))),
            "bulk job {id} did not complete: {doc}"
        );
        anyhow::ensure!(
            Instant::now() < deadline,
            "bulk job {id} still running after an hour"
        );
        // Returns when the phase changes (or after 10 s); the short sleep bounds a busy loop
        // on a service that answers WAIT at once.
        client
            .get(&job)
            .query(&[("WAIT", "10")])
            .send()
            .await?
            .text()
            .await?;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The `xlink:href` of the job's result `id`.
fn result_href(doc: &str, id: &str) -> Option<String> {
    doc.split("<uws:result ")
        .skip(1)
        .find(|r| r.starts_with(&format!("id=\"{id}\"")) || r.contains(&format!(" id=\"{id}\"")))
        .and_then(|r| r.split("xlink:href=\"").nth(1))
        .and_then(|r| r.split('"').next())
        .map(|h| h.replace("&amp;", "&"))
}

/// GET of a result, following one redirect.
async fn download(client: &reqwest::Client, url: &str) -> anyhow::Result<Vec<u8>> {
    let mut r = client.get(url).send().await?;
    if r.status().is_redirection() {
        let to = r
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .context("redirect without Location")?
            .to_owned();
        r = client.get(to).send().await?;
    }
    anyhow::ensure!(r.status() == 200, "result answered {}", r.status());
    Ok(r.bytes().await?.to_vec())
}

/// One header-and-data unit of a FITS file.
struct Hdu {
    cards: Vec<(String, String)>,
    data: std::ops::Range<usize>,
}

impl Hdu {
    fn value(&self, key: &str) -> Option<&str> {
        self.cards
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn number(&self, key: &str) -> anyhow::Result<usize> {
        self.value(key)
            .with_context(|| format!("no {key} card"))?
            .parse()
            .with_context(|| format!("{key} is not a count"))
    }

    /// A binary-table column: byte offset in the row, repeat count and type letter.
    fn column(&self, name: &str) -> anyhow::Result<(usize, usize, char)> {
        let mut offset = 0;
        for n in 1..=self.number("TFIELDS")? {
            let form = self
                .value(&format!("TFORM{n}"))
                .with_context(|| format!("no TFORM{n}"))?;
            let split = form
                .find(|c: char| c.is_ascii_alphabetic())
                .context("TFORM")?;
            let repeat: usize = if split == 0 {
                1
            } else {
                form[..split].parse()?
            };
            let letter = form[split..].chars().next().context("TFORM")?;
            let width = match letter {
                'L' | 'B' | 'A' => 1,
                'I' => 2,
                'J' | 'E' => 4,
                'K' | 'D' | 'C' | 'P' => 8,
                'M' | 'Q' => 16,
                other => anyhow::bail!("TFORM{n} {other} is not handled"),
            };
            if self.value(&format!("TTYPE{n}")) == Some(name) {
                return Ok((offset, repeat, letter));
            }
            offset += repeat * width;
        }
        anyhow::bail!("no column {name}")
    }
}

fn hdus(bytes: &[u8]) -> anyhow::Result<Vec<Hdu>> {
    let mut hdus = Vec::new();
    let mut at = 0;
    while at + 2880 <= bytes.len() {
        let mut cards = Vec::new();
        let mut end = None;
        for (i, card) in bytes[at..].chunks(80).enumerate() {
            let text = String::from_utf8_lossy(card);
            let key = text.get(..8).unwrap_or_default().trim().to_owned();
            if key == "END" {
                end = Some(at + (i + 1) * 80);
                break;
            }
            if text.get(8..10) == Some("= ") {
                let value = text[10..].trim();
                let value = if let Some(quoted) = value.strip_prefix('\'') {
                    quoted
                        .split('\'')
                        .next()
                        .unwrap_or_default()
                        .trim_end()
                        .to_owned()
                } else {
                    value
                        .split('/')
                        .next()
                        .unwrap_or_default()
                        .trim()
                        .to_owned()
                };
                cards.push((key, value));
            }
        }
        let header_end = end.context("a header without END")?.div_ceil(2880) * 2880;
        let mut hdu = Hdu {
            cards,
            data: header_end..header_end,
        };
        let naxis = hdu.number("NAXIS")?;
        let len = if naxis == 0 {
            0
        } else {
            let bitpix: i64 = hdu.value("BITPIX").context("no BITPIX")?.parse()?;
            let mut len = (bitpix.unsigned_abs() / 8) as usize;
            for n in 1..=naxis {
                len *= hdu.number(&format!("NAXIS{n}"))?;
            }
            len + hdu.value("PCOUNT").map_or(Ok(0), str::parse::<usize>)?
        };
        hdu.data = header_end..header_end + len;
        at = header_end + len.div_ceil(2880) * 2880;
        hdus.push(hdu);
    }
    Ok(hdus)
}

fn table<'a>(hdus: &'a [Hdu], name: &str) -> anyhow::Result<&'a Hdu> {
    hdus.iter()
        .find(|h| h.value("EXTNAME") == Some(name))
        .with_context(|| format!("no {name} table"))
}

fn table_rows(bytes: &[u8]) -> anyhow::Result<usize> {
    table(&hdus(bytes)?, "STAMPS")?.number("NAXIS2")
}

/// Checks the stamp table against the catalogue and the source images; returns the stamps
/// that failed (each said on stderr), and fails outright on a table that is not whole.
fn check_table(bytes: &[u8], field: &Field, size: usize, sample: usize) -> anyhow::Result<usize> {
    let hdus = hdus(bytes)?;
    let stamps = table(&hdus, "STAMPS")?;
    let images = table(&hdus, "IMAGES")?;
    let (width, n) = (stamps.number("NAXIS1")?, stamps.number("NAXIS2")?);
    anyhow::ensure!(bytes.len() >= stamps.data.end, "the table is cut short");
    let at =
        |row: usize, (offset, _, _): (usize, usize, char)| stamps.data.start + row * width + offset;
    let be8 = |i: usize| -> [u8; 8] { bytes[i..i + 8].try_into().unwrap_or_default() };
    let (c_row, c_image) = (stamps.column("ROW")?, stamps.column("IMAGE")?);
    let (c_x, c_y) = (stamps.column("X")?, stamps.column("Y")?);
    let (c_crpix1, c_crpix2) = (stamps.column("CRPIX1")?, stamps.column("CRPIX2")?);
    let c_stamp = stamps.column("STAMP")?;
    anyhow::ensure!(
        c_stamp.1 == size * size && c_stamp.2 == 'E',
        "STAMP is not {size}x{size} float32"
    );
    // Every catalogue row once.
    let mut seen = vec![false; field.positions.len()];
    for row in 0..n {
        let r = i64::from_be_bytes(be8(at(row, c_row)));
        let r = usize::try_from(r).ok().filter(|&r| r < seen.len());
        let r = r.with_context(|| format!("table row {row} names no catalogue row"))?;
        anyhow::ensure!(!seen[r], "catalogue row {r} has two stamps");
        seen[r] = true;
    }
    anyhow::ensure!(
        n == field.positions.len(),
        "{n} stamps for {} catalogue rows",
        field.positions.len()
    );
    let (id_offset, id_width, _) = images.column("ID")?;
    let image_width = images.number("NAXIS1")?;
    let image_id_at = |i: usize| {
        let start = images.data.start + i * image_width + id_offset;
        String::from_utf8_lossy(&bytes[start..start + id_width])
            .trim_end_matches(['\0', ' '])
            .to_owned()
    };
    let crpix = (field.side as f64 + 1.0) / 2.0;
    let mut random = Random(0xc4ec_0015);
    let mut failed = 0;
    for _ in 0..sample.min(n) {
        let row = (random.unit() * n as f64) as usize;
        let r = i64::from_be_bytes(be8(at(row, c_row))) as usize;
        let p = &field.positions[r];
        let f64_at = |c| f64::from_be_bytes(be8(at(row, c)));
        let image = i32::from_be_bytes(bytes[at(row, c_image)..at(row, c_image) + 4].try_into()?);
        let stamp: Vec<f32> = bytes[at(row, c_stamp)..at(row, c_stamp) + 4 * size * size]
            .chunks(4)
            .map(|b| f32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let (x0, y0) = (crpix - f64_at(c_crpix1), crpix - f64_at(c_crpix2));
        let problem = if usize::try_from(image).map(image_id_at).ok() != Some(image_id(p.image)) {
            Some(format!("image {image} is not {}", image_id(p.image)))
        } else if (f64_at(c_x) - p.x).abs() > 1e-3 || (f64_at(c_y) - p.y).abs() > 1e-3 {
            Some(format!(
                "centre ({}, {}) is not ({}, {})",
                f64_at(c_x),
                f64_at(c_y),
                p.x,
                p.y
            ))
        } else if x0.fract() != 0.0 || y0.fract() != 0.0 {
            Some(format!("CRPIX places the window at ({x0}, {y0})"))
        } else if !(x0 < p.x && p.x <= x0 + size as f64 && y0 < p.y && p.y <= y0 + size as f64) {
            Some(format!("the window at ({x0}, {y0}) misses the centre"))
        } else {
            let path = field.images.join(format!("{}.fits", image_name(p.image)));
            compare_window(&path, field.side, (x0 as i64, y0 as i64), size, &stamp)?
        };
        if let Some(problem) = problem {
            failed += 1;
            eprintln!("stamp of catalogue row {r} (table row {row}): {problem}");
        }
    }
    Ok(failed)
}

/// Compares a stamp with the source window whose first pixel (0-based) is `(x0, y0)`: the
/// source's pixels where the window is on the image, NaN elsewhere.
fn compare_window(
    path: &Path,
    side: usize,
    (x0, y0): (i64, i64),
    size: usize,
    stamp: &[f32],
) -> anyhow::Result<Option<String>> {
    let side_i = side as i64;
    let (lo, hi) = (y0.max(0), (y0 + size as i64).min(side_i));
    let mut file = fitsio::FitsFile::open(path)?;
    let hdu = file.primary_hdu()?;
    let band: Vec<f32> = if lo < hi {
        hdu.read_section(&mut file, (lo * side_i) as usize, (hi * side_i) as usize)?
    } else {
        Vec::new()
    };
    for j in 0..size as i64 {
        for i in 0..size as i64 {
            let (x, y) = (x0 + i, y0 + j);
            let got = stamp[(j * size as i64 + i) as usize];
            let want = if (0..side_i).contains(&x) && (lo..hi).contains(&y) {
                band[((y - lo) * side_i + x) as usize]
            } else {
                f32::NAN
            };
            if !(got == want || (got.is_nan() && want.is_nan())) {
                return Ok(Some(format!(
                    "pixel ({i}, {j}) is {got}, the source's {want}"
                )));
            }
        }
    }
    Ok(None)
}

/// Runs the baselines' script over the same images and catalogue.
fn baselines(
    args: &BenchArgs,
    dir: &Path,
    field: &Field,
    rows: &mut Vec<BulkRow>,
    notes: &mut Vec<String>,
) -> anyhow::Result<()> {
    let script = dir.join("bench_bulk_baselines.py");
    std::fs::write(&script, BASELINES)?;
    let out = dir.join("baselines");
    std::fs::create_dir_all(&out)?;
    eprintln!(
        "baselines: astropy over all {} stamps, astrocut over {}…",
        field.positions.len(),
        args.bulk_baseline_stamps.min(field.positions.len())
    );
    let output = Command::new(&args.bulk_python)
        .arg(&script)
        .arg("--images")
        .arg(&field.images)
        .arg("--catalogue")
        .arg(dir.join("catalogue.csv"))
        .args(["--size", &args.bulk_stamp_size.to_string()])
        .args(["--astrocut-stamps", &args.bulk_baseline_stamps.to_string()])
        .arg("--out")
        .arg(&out)
        .stderr(Stdio::inherit())
        .output();
    let output = match output {
        Ok(o) if o.status.success() => o,
        Ok(o) => {
            notes.push(format!(
                "baselines: {} failed ({})",
                args.bulk_python.display(),
                o.status
            ));
            return Ok(());
        }
        Err(e) => {
            notes.push(format!(
                "baselines: skipped, cannot run {}: {e}",
                args.bulk_python.display()
            ));
            return Ok(());
        }
    };
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["measured", tool, stamps, seconds, bytes, version] => {
                let what = match *tool {
                    "astropy" => format!(
                        "astropy {version} Cutout2D (mode=partial), each image opened once, stacked into one FITS cube"
                    ),
                    _ => format!(
                        "{tool} {version} fits_cut, one call per stamp, stacked into one FITS cube (sample)"
                    ),
                };
                rows.push(BulkRow {
                    measure: what,
                    stamps: stamps.parse()?,
                    seconds: seconds.parse()?,
                    bytes: bytes.parse()?,
                    memory: None,
                    errors: None,
                    compared: false,
                });
            }
            ["skipped", tool, reason @ ..] => {
                notes.push(format!("{tool}: skipped, {}", reason.join(" ")));
            }
            _ => eprintln!("baselines: {line}"),
        }
    }
    Ok(())
}

fn print_table(rows: &[BulkRow], notes: &[String]) {
    let rate_of = |tool: &str| {
        rows.iter()
            .find(|r| r.measure.starts_with(tool))
            .map(BulkRow::stamps_per_second)
    };
    let (astrocut, astropy) = (rate_of("astrocut"), rate_of("astropy"));
    println!(
        "| measure | stamps | median s | stamps/s | MB/s written | errors | peak RSS MiB | / astrocut | / astropy |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for row in rows {
        let ratio = |base: Option<f64>| match base {
            Some(b) if row.compared => format!("{:.1}", row.stamps_per_second() / b.max(1e-9)),
            _ => String::new(),
        };
        println!(
            "| {} | {} | {:.2} | {:.0} | {:.1} | {} | {} | {} | {} |",
            row.measure,
            row.stamps,
            row.seconds,
            row.stamps_per_second(),
            row.bytes as f64 / 1e6 / row.seconds.max(1e-9),
            row.errors.map_or(String::new(), |e| e.to_string()),
            row.memory.map_or(String::new(), |b| format!(
                "{:.1}",
                b as f64 / f64::from(1 << 20)
            )),
            ratio(astrocut),
            ratio(astropy),
        );
    }
    for note in notes {
        println!("{note}");
    }
}

/// `/proc/loadavg`'s three averages.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A field of one 64×64 image and four positions (two hanging over its edges), and the
    /// stamp table soda makes of them.
    fn table_of_a_small_field(dir: &Path) -> (Field, Vec<u8>) {
        let side = 64;
        let path = dir.join(format!("{}.fits", image_name(0)));
        let centre = (super::super::RA, super::super::DEC);
        soda::write_synthetic_image(
            &path,
            &soda::SyntheticImage {
                nx: side,
                ny: side,
                ra_deg: centre.0,
                dec_deg: centre.1,
                pixel_scale_deg: SCALE,
            },
        )
        .expect("image");
        let crpix = (side as f64 + 1.0) / 2.0;
        let positions: Vec<Position> = [(10.3, 20.7), (1.0, 1.0), (64.0, 33.2), (40.5, 50.5)]
            .into_iter()
            .map(|(x, y)| {
                let (ra, dec) = tangent_to_sky(centre, -(x - crpix) * SCALE, (y - crpix) * SCALE);
                Position {
                    ra,
                    dec,
                    image: 0,
                    x,
                    y,
                }
            })
            .collect();
        let sky: Vec<(f64, f64, soda::Extent)> = positions
            .iter()
            .map(|p| (p.ra, p.dec, soda::Extent::Size(8)))
            .collect();
        let cut = soda::cut_stamps(&path, &image_id(0), None, &sky, None).expect("stamps");
        let table = soda::stamp_table::StampTable::Square { size: 8 };
        let mut rows = Vec::new();
        for (n, stamp) in cut.stamps.iter().enumerate() {
            let p = &positions[n];
            table
                .encode(
                    &soda::stamp_table::StampRow {
                        row: n as u64,
                        ra: p.ra,
                        dec: p.dec,
                        image: 0,
                        mjd: f64::NAN,
                        source_crpix: cut.crpix,
                        stamp: stamp.as_ref().expect("a stamp"),
                    },
                    &mut rows,
                )
                .expect("row");
        }
        let part = dir.join("part");
        std::fs::write(&part, &rows).expect("part");
        let out = dir.join("stamps.fits");
        table
            .assemble(
                &out,
                &[part],
                &[soda::stamp_table::TableImage {
                    id: image_id(0),
                    wcs_cards: cut.wcs_cards.clone(),
                }],
            )
            .expect("table");
        let field = Field {
            images: dir.to_owned(),
            side,
            positions,
            by_sky: Vec::new(),
            by_id: Vec::new(),
        };
        (field, std::fs::read(out).expect("read"))
    }

    #[test]
    fn a_table_of_the_source_windows_passes_the_check() {
        let dir = tempfile::tempdir().expect("dir");
        let (field, table) = table_of_a_small_field(dir.path());
        assert_eq!(check_table(&table, &field, 8, 100).expect("whole"), 0);
    }

    #[test]
    fn a_stamp_pixel_that_differs_from_its_source_fails_the_check() {
        let dir = tempfile::tempdir().expect("dir");
        let (field, mut table) = table_of_a_small_field(dir.path());
        let hdus = hdus(&table).expect("hdus");
        let stamps = table_of(&hdus);
        let width = stamps.number("NAXIS1").expect("width");
        let (offset, _, _) = stamps.column("STAMP").expect("STAMP");
        // The middle pixel of every row's stamp, so that any sample sees one.
        for row in 0..4 {
            let at = stamps.data.start + row * width + offset + 4 * (4 * 8 + 4);
            table[at..at + 4].copy_from_slice(&(-1.0f32).to_be_bytes());
        }
        assert!(check_table(&table, &field, 8, 100).expect("whole") > 0);
    }

    #[test]
    fn a_catalogue_row_with_two_stamps_fails_the_check() {
        let dir = tempfile::tempdir().expect("dir");
        let (field, mut table) = table_of_a_small_field(dir.path());
        let hdus = hdus(&table).expect("hdus");
        let stamps = table_of(&hdus);
        let width = stamps.number("NAXIS1").expect("width");
        // Row 1 claims to be catalogue row 0.
        let at = stamps.data.start + width;
        table[at..at + 8].copy_from_slice(&0i64.to_be_bytes());
        let error = check_table(&table, &field, 8, 100).expect_err("a duplicate");
        assert!(error.to_string().contains("two stamps"), "{error}");
    }

    fn table_of(hdus: &[Hdu]) -> &Hdu {
        table(hdus, "STAMPS").expect("STAMPS")
    }
}
