//! `skycut bench --light-curve`: Rubin's DMS-REQ-0375 on this machine. Stamps of every epoch
//! of one object within 10 s, for 10 users at once, with more than 800 epochs per field.
//!
//! The bench writes `--epochs` images of one field (dithered by a few arcseconds, one MJD
//! apart), indexes them (the indexing rate), starts `skycut serve` on that index, and times
//! light curves over HTTP: a sync request with a position and no `ID`, answered by the
//! multi-extension file of every epoch, downloaded whole. Every answer is checked to hold one
//! extension per epoch. It then fills a PostgreSQL sky index with `--index-images` footprints
//! spread over the sky and times the lookup a light curve starts with (the images whose outline
//! holds a point), as the frontend does it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use uws::sky_index::{CellQuery, FileStamp, ImageContent, ImageIndex, ImageLocation, IndexedImage};

use super::load::{self, stats};
use super::{Row, SCALE, Table};
use crate::config::Config;
use crate::serve;

/// The field's centre: the bench's usual position.
const RA: f64 = super::RA;
const DEC: f64 = super::DEC;

/// Light curves timed back to back for one user (after one uncounted).
const ONE_USER_RUNS: usize = 5;
/// Rounds of `--users` concurrent light curves.
const CONCURRENT_ROUNDS: usize = 2;
/// Points looked up in the large index.
const LOOKUPS: usize = 1000;
/// Images written to the large index per transaction.
const LOOKUP_BATCH: usize = 5000;

pub(super) struct LightCurveArgs<'a> {
    pub epochs: usize,
    pub epoch_size: usize,
    pub stamp: usize,
    pub users: usize,
    pub index_images: u64,
    pub postgres_url: &'a str,
}

pub(super) async fn measure(
    args: &LightCurveArgs<'_>,
    dir: &Path,
    table: &mut Table,
    notes: &mut Vec<String>,
) -> anyhow::Result<()> {
    let field = dir.join("field");
    std::fs::create_dir_all(&field)?;
    eprintln!(
        "writing {} epochs of a {1}x{1} float32 image ({2:.1} GiB)…",
        args.epochs,
        args.epoch_size,
        (args.epochs * args.epoch_size * args.epoch_size * 4) as f64 / f64::from(1 << 30)
    );
    let written = Instant::now();
    tokio::task::block_in_place(|| write_epochs(&field, args.epochs, args.epoch_size))?;
    notes.push(format!(
        "{} epoch images written in {:.1} s",
        args.epochs,
        written.elapsed().as_secs_f64()
    ));

    // Indexing: the store serve will use, filled by the same scan as `skycut index`.
    let mut config = Config::load(None)?.config;
    config.listen = "127.0.0.1:0".parse()?;
    config.data_dir = dir.join("data");
    std::fs::create_dir_all(&config.data_dir)?;
    config.repositories = BTreeMap::from([("field".to_owned(), field.clone())]);
    config.index.max_epochs = config.index.max_epochs.max(args.epochs);
    let store = wobbly::SqlJobStore::connect(&config.database_url(), &config.service_name, 4)
        .await
        .context("opening the bench's job store")?;
    let index: Arc<dyn ImageIndex> = Arc::new(store.sky_index());
    let report =
        crate::index::scan(&index, &config.repositories, None, config.index.concurrency).await?;
    anyhow::ensure!(
        report.images_located == args.epochs as u64,
        "indexing located {} of {} epochs",
        report.images_located,
        args.epochs
    );
    table.push(Row {
        rate: Some((report.images_per_second(), "images/s")),
        ..Row::new(format!(
            "index {} images of {2}x{2} (SQLite, concurrency {})",
            args.epochs, config.index.concurrency, args.epoch_size
        ))
    });
    let again =
        crate::index::scan(&index, &config.repositories, None, config.index.concurrency).await?;
    notes.push(format!("re-index of the unchanged field: {again}"));
    drop((index, store));

    let running = serve::start(config, false).await?;
    let outcome = light_curves(args, &running.base, table).await;
    running.stop().await?;
    outcome?;

    if args.index_images > 0 {
        if super::cluster::reachable(args.postgres_url) {
            lookups(args, table).await?;
        } else {
            notes.push(format!(
                "index lookups: skipped, PostgreSQL ({}) is unreachable",
                super::redact(args.postgres_url)
            ));
        }
    }
    Ok(())
}

/// The first epoch is written whole; the others are copies with their own time and pointing.
fn write_epochs(dir: &Path, epochs: usize, side: usize) -> anyhow::Result<()> {
    for epoch in 0..epochs {
        let path = dir.join(format!("e{epoch:04}.fits"));
        // Dithers of up to ±5 arcsec, so epochs differ as real visits do. Each epoch is written
        // whole: fitsio's `write_key` appends a card, so a copy's CRVAL could not be changed
        // (the index would read the first one).
        let dither = |k: usize| ((epoch * k) % 11) as f64 - 5.0;
        soda::write_synthetic_image(
            &path,
            &soda::SyntheticImage {
                nx: side,
                ny: side,
                ra_deg: RA + dither(7) / 3600.0,
                dec_deg: DEC + dither(3) / 3600.0,
                pixel_scale_deg: SCALE,
            },
        )?;
        let mut file = fitsio::FitsFile::edit(&path)?;
        let hdu = file.primary_hdu()?;
        hdu.write_key(&mut file, "MJD-OBS", 60_000.0 + epoch as f64)?;
        hdu.write_key(&mut file, "EXPTIME", 30.0)?;
    }
    Ok(())
}

/// One user's light curves back to back, then `users` at once.
async fn light_curves(
    args: &LightCurveArgs<'_>,
    base: &str,
    table: &mut Table,
) -> anyhow::Result<()> {
    let client = load::client()?;
    // A circle of diameter N−1 pixels spans N pixel centres.
    let circle = format!("{RA} {DEC} {}", (args.stamp as f64 - 1.0) / 2.0 * SCALE);
    let mut samples = Vec::new();
    for run in 0..=ONE_USER_RUNS {
        let started = Instant::now();
        let bytes = one_light_curve(&client, base, &circle, args.epochs).await?;
        if run > 0 {
            samples.push(started.elapsed());
        } else {
            eprintln!("light curve: {} epochs, {bytes} bytes", args.epochs);
        }
    }
    let worst = samples.iter().max().copied().unwrap_or_default();
    table.push(Row {
        latency: Some(stats(samples)),
        ..Row::new(format!(
            "light curve, 1 user: {} epochs of {2}x{2}, sync → 303 → GET (worst {:.2} s)",
            args.epochs,
            worst.as_secs_f64(),
            args.stamp
        ))
    });

    let mut samples = Vec::new();
    let mut errors = 0;
    for _ in 0..CONCURRENT_ROUNDS {
        let tasks: Vec<_> = (0..args.users)
            .map(|_| {
                let (client, base, circle) = (client.clone(), base.to_owned(), circle.clone());
                let epochs = args.epochs;
                tokio::spawn(async move {
                    let started = Instant::now();
                    one_light_curve(&client, &base, &circle, epochs)
                        .await
                        .map(|_| started.elapsed())
                })
            })
            .collect();
        for task in tasks {
            match task.await? {
                Ok(elapsed) => samples.push(elapsed),
                Err(e) => {
                    eprintln!("light curve failed: {e:#}");
                    errors += 1;
                }
            }
        }
    }
    let worst = samples.iter().max().copied().unwrap_or_default();
    table.push(Row {
        latency: Some(stats(samples)),
        errors: Some(errors),
        ..Row::new(format!(
            "light curve, {} users at once: each user's time (worst {:.2} s)",
            args.users,
            worst.as_secs_f64()
        ))
    });
    Ok(())
}

/// A sync light curve, its multi-extension file downloaded and checked: a primary HDU and one
/// extension per epoch.
async fn one_light_curve(
    client: &reqwest::Client,
    base: &str,
    circle: &str,
    epochs: usize,
) -> anyhow::Result<usize> {
    let body = load::sync_download(client, base, &[("CIRCLE", circle)]).await?;
    let extensions = body
        .chunks(2880)
        .filter(|block| block.starts_with(b"XTENSION= 'IMAGE   '"))
        .count();
    anyhow::ensure!(
        extensions == epochs,
        "the light curve holds {extensions} extensions, not {epochs}"
    );
    Ok(body.len())
}

/// Fills a PostgreSQL sky index with `index_images` footprints over the whole sky, times the
/// lookup of random points, and forgets them.
async fn lookups(args: &LightCurveArgs<'_>, table: &mut Table) -> anyhow::Result<()> {
    let store = wobbly::SqlJobStore::connect(args.postgres_url, "bench", 8).await?;
    let index: Arc<dyn ImageIndex> = Arc::new(store.sky_index());
    let collection = format!("bench-{}", std::process::id());
    let outcome = async {
        let started = Instant::now();
        let mut random = Random(0x5eed_1234_5678_9abc);
        let mut written = 0u64;
        while written < args.index_images {
            let n = LOOKUP_BATCH.min(usize::try_from(args.index_images - written)?);
            let files: Vec<(String, Vec<IndexedImage>)> = (0..n)
                .map(|i| {
                    let file = format!("f{}.fits", written + i as u64);
                    let image = survey_image(&collection, &file, &mut random);
                    (file, vec![image])
                })
                .collect();
            index.replace_files(&collection, files).await?;
            written += n as u64;
            if written.is_multiple_of(100_000) {
                eprintln!(
                    "sky index: {written}/{} images ({:.0}/s)",
                    args.index_images,
                    written as f64 / started.elapsed().as_secs_f64()
                );
            }
        }
        // As `skycut index` does after a large scan.
        index.settle().await?;
        let rate = written as f64 / started.elapsed().as_secs_f64();
        table.push(Row {
            rate: Some((rate, "images/s")),
            ..Row::new(format!(
                "sky index: write {written} footprints (PostgreSQL, {LOOKUP_BATCH} per transaction)"
            ))
        });
        let mut samples = Vec::with_capacity(LOOKUPS);
        let mut found = 0usize;
        for _ in 0..LOOKUPS {
            let (ra, dec) = random.sky();
            let started = Instant::now();
            let candidates = index
                .candidates(&CellQuery {
                    cells: soda::sky::point_cells(ra, dec),
                    collections: vec![collection.clone()],
                    limit: 5000,
                    ..CellQuery::default()
                })
                .await?;
            found += candidates
                .iter()
                .filter(|image| match &image.content {
                    ImageContent::Located(l) => soda::sky::outline_contains(&l.corners, ra, dec),
                    ImageContent::Unusable(_) => false,
                })
                .count();
            samples.push(started.elapsed());
        }
        table.push(Row {
            latency: Some(stats(samples)),
            ..Row::new(format!(
                "sky index: images covering a point, {written} indexed (PostgreSQL; {:.2} found per point)",
                found as f64 / LOOKUPS as f64
            ))
        });
        anyhow::Ok(())
    }
    .await;
    let forgotten = index.forget_collection(&collection).await;
    outcome?;
    forgotten?;
    Ok(())
}

/// A survey-like image: a 0.11° square (2048 pixels of 0.2") centred at a random position.
fn survey_image(collection: &str, file: &str, random: &mut Random) -> IndexedImage {
    let center = random.sky();
    let half = 1024.0 * SCALE;
    let corners: Vec<(f64, f64)> = [(-half, -half), (half, -half), (half, half), (-half, half)]
        .iter()
        .map(|&(x, y)| tangent_to_sky(center, x, y))
        .collect();
    let footprint = soda::Footprint {
        size: (2048, 2048),
        center,
        radius_deg: half * std::f64::consts::SQRT_2,
        corners: [corners[0], corners[1], corners[2], corners[3]],
        band: None,
        time: None,
        pol: Vec::new(),
    };
    let mjd = 60_000.0 + random.unit() * 3650.0;
    IndexedImage {
        id: format!("butler://{collection}/{}", file.trim_end_matches(".fits")),
        collection: collection.to_owned(),
        file: file.to_owned(),
        stamp: FileStamp { size: 1, mtime: 1 },
        content: ImageContent::Located(ImageLocation {
            size: (2048, 2048),
            center,
            radius_deg: footprint.radius_deg,
            cells: soda::sky::footprint_cells(&footprint),
            corners,
            time: Some((mjd, mjd + 30.0 / 86_400.0)),
            band: None,
        }),
    }
}

/// The sky position of the gnomonic (TAN) offsets `x`, `y` (degrees) from `center`.
pub(super) fn tangent_to_sky(center: (f64, f64), x: f64, y: f64) -> (f64, f64) {
    let (ra0, dec0) = (center.0.to_radians(), center.1.to_radians());
    let (x, y) = (x.to_radians(), y.to_radians());
    let rho = (x * x + y * y).sqrt();
    let c = rho.atan();
    let dec = if rho == 0.0 {
        dec0
    } else {
        (c.cos() * dec0.sin() + y * c.sin() * dec0.cos() / rho).asin()
    };
    let ra = ra0 + (x * c.sin()).atan2(rho * dec0.cos() * c.cos() - y * dec0.sin() * c.sin());
    (ra.to_degrees().rem_euclid(360.0), dec.to_degrees())
}

/// A small deterministic generator (xorshift64*), so that runs index the same sky.
pub(super) struct Random(pub(super) u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [0, 1).
    pub(super) fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform on the sphere.
    fn sky(&mut self) -> (f64, f64) {
        let ra = self.unit() * 360.0;
        let dec = (2.0 * self.unit() - 1.0).asin().to_degrees();
        (ra, dec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tangent_offsets_keep_their_distance_from_the_centre() {
        for center in [(10.0, 0.0), (359.99, 45.0), (180.0, -89.9)] {
            let (ra, dec) = tangent_to_sky(center, 0.1, -0.05);
            let (a, b) = (center, (ra, dec));
            let hav = |x: f64| (x.to_radians() / 2.0).sin().powi(2);
            let h =
                hav(b.1 - a.1) + a.1.to_radians().cos() * b.1.to_radians().cos() * hav(b.0 - a.0);
            let d = (2.0 * h.sqrt().asin()).to_degrees();
            let expected = (0.1f64.to_radians().hypot(0.05f64.to_radians()))
                .atan()
                .to_degrees();
            assert!((d - expected).abs() < 1e-9, "{center:?}: {d} vs {expected}");
        }
    }

    #[test]
    fn random_sky_positions_stay_on_the_sky() {
        let mut random = Random(1);
        for _ in 0..10_000 {
            let (ra, dec) = random.sky();
            assert!((0.0..360.0).contains(&ra) && (-90.0..=90.0).contains(&dec));
        }
    }
}
