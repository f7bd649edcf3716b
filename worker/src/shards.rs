//! Shards of a bulk job: how its plan is split so that any number of workers can cut it, and the
//! file a shard's cut stamps travel in.
//!
//! The worker that runs a bulk job (its *coordinator*) splits the plan into shards of whole
//! images, stores each shard's plan beside the job and queues a message per shard on the bulk
//! lane. Any worker that takes such a message cuts the shard into a *batch* (the stamps as cut,
//! not yet packaged) and stores it at a key fixed by the shard's name. The coordinator cuts
//! shards too, from the last one back, skipping those already stored; when it has met the
//! others every batch exists, and it packages them in plan order into the job's results. So a
//! shard's work is never lost with its worker (the coordinator does it, or the next attempt
//! finds it stored), no stamp is packaged twice, and the results are the same whoever cut what.
//!
//! A shard's name is its number and a digest of its plan: a later attempt that splits the same
//! plan the same way finds the batches of an earlier one, and a differently split plan (another
//! configuration) never mistakes them for its own.
//!
//! A batch is a binary file: a magic line, then per image its ID, its planned stamps and either
//! the reason it could not be read or its WCS and one stamp (pixels, or the reason there is
//! none) per planned stamp, then an end record with the image count, so a batch cut short is
//! never taken for a whole one.

use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
/// How big a shard may grow: the rule lives with the plan ([`soda::bulk_plan::ShardRule`]), where
/// the frontend counts a job's shards by it too.
pub use soda::bulk_plan::ShardLimits;
use soda::bulk_plan::{Extent, PlanItem, PlanReader, PlanWriter, PlannedStamp, ShardRule};
use uws::{ErrorCode, JobError};

use crate::cutouts::internal;

/// One shard of a plan, written to a local file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Shard {
    /// `shard-{number}-{digest}`.
    pub name: String,
    pub plan: PathBuf,
    pub stamps: u64,
    pub images: u64,
}

/// Where the plan of shard `name` of bulk job `job` is stored, beside the job's own plan.
pub(crate) fn plan_key(job: &str, name: &str) -> String {
    format!("{job}/bulk/{name}.plan")
}

/// Where the batch of shard `name` is stored (the format's version in the name: a batch of
/// another version is never read as this one).
pub(crate) fn batch_key(job: &str, name: &str) -> String {
    format!("{job}/bulk/{name}.batch2")
}

/// Whether `name` is a shard name as [`split`] makes them (`shard-{5 digits}-{16 hex digits}`):
/// a name from a queue message becomes part of object keys only if it is.
pub(crate) fn is_shard_name(name: &str) -> bool {
    let Some((number, digest)) = name
        .strip_prefix("shard-")
        .and_then(|rest| rest.split_once('-'))
    else {
        return false;
    };
    number.len() >= 5
        && number.bytes().all(|b| b.is_ascii_digit())
        && digest.len() == 16
        && digest
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A plan split into shards: the rows no image serves, the shards in plan order, and the one
/// size of all its stamps if they have one (`SIZE`, no per-row sizes).
#[derive(Debug, Default)]
pub(crate) struct Split {
    pub errors: Vec<(u64, String)>,
    pub shards: Vec<Shard>,
    pub one_size: Option<usize>,
}

/// Reads a plan and writes its images into shard plans, `file(n)` being the path of shard `n`;
/// on failure no shard plan is left. Blocking.
pub(crate) fn split<R: BufRead>(
    reader: PlanReader<R>,
    limits: ShardLimits,
    mut file: impl FnMut(usize) -> PathBuf,
) -> Result<Split, JobError> {
    let mut written = Vec::new();
    let split = split_into(reader, limits, |n| {
        let path = file(n);
        written.push(path.clone());
        path
    });
    if split.is_err() {
        for path in written {
            std::fs::remove_file(path).ok();
        }
    }
    split
}

fn split_into<R: BufRead>(
    mut reader: PlanReader<R>,
    limits: ShardLimits,
    mut file: impl FnMut(usize) -> PathBuf,
) -> Result<Split, JobError> {
    let unreadable = |e: soda::SodaError| internal(format!("the bulk plan is unreadable: {e}"));
    let mut split = Split::default();
    let mut groups: Vec<(String, Vec<PlannedStamp>)> = Vec::new();
    let mut stamps = 0u64;
    let mut sizes_differ = false;
    let mut rule = ShardRule::new(limits);
    loop {
        let item = reader.next_item().map_err(unreadable)?;
        if (item.is_none() || rule.full()) && !groups.is_empty() {
            let n = split.shards.len();
            let shard = write_shard(n, &std::mem::take(&mut groups), stamps, file(n))?;
            split.shards.push(shard);
            stamps = 0;
        }
        match item {
            None => {
                if sizes_differ {
                    split.one_size = None;
                }
                return Ok(split);
            }
            Some(PlanItem::Error { row, reason }) => split.errors.push((row, reason)),
            Some(PlanItem::Image { id, stamps: group }) => {
                for stamp in &group {
                    match stamp.extent {
                        Extent::Size(size) if split.one_size.is_none_or(|one| one == size) => {
                            split.one_size = Some(size);
                        }
                        _ => sizes_differ = true,
                    }
                }
                rule.add_image(group.len() as u64);
                stamps += group.len() as u64;
                groups.push((id, group));
            }
        }
    }
}

fn write_shard(
    n: usize,
    groups: &[(String, Vec<PlannedStamp>)],
    stamps: u64,
    path: PathBuf,
) -> Result<Shard, JobError> {
    let failed = |e: soda::SodaError| internal(format!("writing a shard plan failed: {e}"));
    let mut writer = PlanWriter::new(Vec::new(), stamps, groups.len() as u64).map_err(failed)?;
    for (id, group) in groups {
        writer.image(id, group).map_err(failed)?;
    }
    let bytes = writer.finish().map_err(failed)?;
    let digest = Sha256::digest(&bytes);
    std::fs::write(&path, &bytes)
        .map_err(|e| internal(format!("writing a shard plan failed: {e}")))?;
    Ok(Shard {
        name: format!("shard-{n:05}-{}", hex::encode(&digest[..8])),
        plan: path,
        stamps,
        images: groups.len() as u64,
    })
}

/// The stamps of one image as cut: its WCS (to which each stamp's `crpix` applies) and one
/// stamp, or the reason there is none, per planned stamp.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CutImage {
    pub crpix: (f64, f64),
    pub mjd: Option<f64>,
    pub wcs_cards: Vec<String>,
    pub stamps: Vec<Result<soda::Stamp, JobError>>,
}

impl CutImage {
    pub(crate) fn from_soda(cut: soda::ImageStamps) -> CutImage {
        CutImage {
            crpix: cut.crpix,
            mjd: cut.mjd,
            wcs_cards: cut.wcs_cards,
            stamps: cut
                .stamps
                .into_iter()
                .map(|s| s.map_err(crate::cutouts::job_error))
                .collect(),
        }
    }
}

/// One image of a batch: its ID, its planned stamps, and what cutting them gave.
pub(crate) type BatchImage = (String, Vec<PlannedStamp>, Result<CutImage, JobError>);

const MAGIC: &[u8] = b"skycut stamp batch 2\n";
const IMAGE: u8 = b'I';
const END: u8 = b'Z';

/// Writes a batch, an image at a time.
pub(crate) struct BatchWriter<W: Write> {
    out: W,
    images: u64,
}

impl<W: Write> BatchWriter<W> {
    pub(crate) fn new(mut out: W) -> std::io::Result<BatchWriter<W>> {
        out.write_all(MAGIC)?;
        Ok(BatchWriter { out, images: 0 })
    }

    pub(crate) fn image(
        &mut self,
        id: &str,
        planned: &[PlannedStamp],
        cut: &Result<CutImage, JobError>,
    ) -> std::io::Result<()> {
        let out = &mut self.out;
        out.write_all(&[IMAGE])?;
        put_str(out, id)?;
        put_u64(out, planned.len() as u64)?;
        for stamp in planned {
            put_u64(out, stamp.row)?;
            put_f64(out, stamp.ra)?;
            put_f64(out, stamp.dec)?;
            match stamp.extent {
                Extent::Size(size) => {
                    out.write_all(b"s")?;
                    put_u64(out, size as u64)?;
                }
                Extent::Radius(radius) => {
                    out.write_all(b"r")?;
                    put_f64(out, radius)?;
                }
            }
        }
        match cut {
            Err(error) => {
                out.write_all(&[0])?;
                put_error(out, error)?;
            }
            Ok(cut) => {
                out.write_all(&[1])?;
                put_f64(out, cut.crpix.0)?;
                put_f64(out, cut.crpix.1)?;
                put_f64(out, cut.mjd.unwrap_or(f64::NAN))?;
                put_u64(out, cut.wcs_cards.len() as u64)?;
                for card in &cut.wcs_cards {
                    put_str(out, card)?;
                }
                put_u64(out, cut.stamps.len() as u64)?;
                for stamp in &cut.stamps {
                    match stamp {
                        Err(error) => {
                            out.write_all(&[0])?;
                            put_error(out, error)?;
                        }
                        Ok(stamp) => {
                            out.write_all(&[1])?;
                            put_u64(out, stamp.window.x0 as u64)?;
                            put_u64(out, stamp.window.y0 as u64)?;
                            put_u64(out, stamp.window.width as u64)?;
                            put_u64(out, stamp.window.height as u64)?;
                            put_f64(out, stamp.pixel.0)?;
                            put_f64(out, stamp.pixel.1)?;
                            put_u64(out, stamp.pixels.len() as u64)?;
                            let mut bytes = Vec::with_capacity(stamp.pixels.len() * 4);
                            for p in &stamp.pixels {
                                bytes.extend_from_slice(&p.to_le_bytes());
                            }
                            out.write_all(&bytes)?;
                        }
                    }
                }
            }
        }
        self.images += 1;
        Ok(())
    }

    pub(crate) fn finish(mut self) -> std::io::Result<W> {
        self.out.write_all(&[END])?;
        put_u64(&mut self.out, self.images)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Reads a batch back, an image at a time.
pub(crate) struct BatchReader<R: Read> {
    input: R,
    images: u64,
    done: bool,
}

/// Larger than any count a batch can hold (a stamp of 2^31 pixels is refused long before):
/// a corrupt count fails instead of allocating without bound.
const MOST: u64 = 1 << 31;

fn corrupt(what: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("not a stamp batch: {what}"),
    )
}

impl<R: Read> BatchReader<R> {
    pub(crate) fn open(mut input: R) -> std::io::Result<BatchReader<R>> {
        let mut magic = vec![0; MAGIC.len()];
        input.read_exact(&mut magic)?;
        if magic != MAGIC {
            return Err(corrupt("bad first line"));
        }
        Ok(BatchReader {
            input,
            images: 0,
            done: false,
        })
    }

    /// The next image, or `None` after the last.
    pub(crate) fn next_image(&mut self) -> std::io::Result<Option<BatchImage>> {
        if self.done {
            return Ok(None);
        }
        let input = &mut self.input;
        let mut tag = [0u8];
        input.read_exact(&mut tag)?;
        match tag[0] {
            END => {
                if get_u64(input)? != self.images {
                    return Err(corrupt("image count differs"));
                }
                self.done = true;
                return Ok(None);
            }
            IMAGE => {}
            _ => return Err(corrupt("bad record")),
        }
        let id = get_str(input)?;
        let n = get_count(input)?;
        let mut planned = Vec::with_capacity(n.min(1 << 16) as usize);
        for _ in 0..n {
            let (row, ra, dec) = (get_u64(input)?, get_f64(input)?, get_f64(input)?);
            let mut kind = [0u8];
            input.read_exact(&mut kind)?;
            let extent = match kind[0] {
                b's' => Extent::Size(get_count(input)? as usize),
                b'r' => Extent::Radius(get_f64(input)?),
                _ => return Err(corrupt("bad extent")),
            };
            planned.push(PlannedStamp {
                row,
                ra,
                dec,
                extent,
            });
        }
        let cut = if get_flag(input)? {
            let crpix = (get_f64(input)?, get_f64(input)?);
            let mjd = Some(get_f64(input)?).filter(|m| !m.is_nan());
            let cards = get_count(input)?;
            let wcs_cards = (0..cards)
                .map(|_| get_str(input))
                .collect::<std::io::Result<_>>()?;
            let count = get_count(input)?;
            let mut stamps = Vec::with_capacity(count.min(1 << 16) as usize);
            for _ in 0..count {
                stamps.push(if get_flag(input)? {
                    let window = soda::Window {
                        x0: get_u64(input)? as i64,
                        y0: get_u64(input)? as i64,
                        width: get_count(input)? as usize,
                        height: get_count(input)? as usize,
                    };
                    let pixel = (get_f64(input)?, get_f64(input)?);
                    let len = get_count(input)? as usize;
                    let mut bytes = vec![0u8; len * 4];
                    input.read_exact(&mut bytes)?;
                    let pixels = bytes
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect();
                    Ok(soda::Stamp {
                        window,
                        pixel,
                        pixels,
                    })
                } else {
                    Err(get_error(input)?)
                });
            }
            Ok(CutImage {
                crpix,
                mjd,
                wcs_cards,
                stamps,
            })
        } else {
            Err(get_error(input)?)
        };
        self.images += 1;
        Ok(Some((id, planned, cut)))
    }
}

fn put_u64(out: &mut impl Write, v: u64) -> std::io::Result<()> {
    out.write_all(&v.to_le_bytes())
}

fn put_f64(out: &mut impl Write, v: f64) -> std::io::Result<()> {
    out.write_all(&v.to_le_bytes())
}

fn put_str(out: &mut impl Write, s: &str) -> std::io::Result<()> {
    put_u64(out, s.len() as u64)?;
    out.write_all(s.as_bytes())
}

fn put_error(out: &mut impl Write, error: &JobError) -> std::io::Result<()> {
    put_str(out, error.code.as_str())?;
    put_str(out, &error.message)
}

fn get_u64(input: &mut impl Read) -> std::io::Result<u64> {
    let mut b = [0u8; 8];
    input.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

fn get_count(input: &mut impl Read) -> std::io::Result<u64> {
    let n = get_u64(input)?;
    if n > MOST {
        return Err(corrupt("count out of range"));
    }
    Ok(n)
}

fn get_f64(input: &mut impl Read) -> std::io::Result<f64> {
    Ok(f64::from_bits(get_u64(input)?))
}

fn get_flag(input: &mut impl Read) -> std::io::Result<bool> {
    let mut b = [0u8];
    input.read_exact(&mut b)?;
    match b[0] {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(corrupt("bad flag")),
    }
}

fn get_str(input: &mut impl Read) -> std::io::Result<String> {
    let len = get_count(input)? as usize;
    let mut bytes = vec![0u8; len];
    input.read_exact(&mut bytes)?;
    String::from_utf8(bytes).map_err(|_| corrupt("text is not UTF-8"))
}

fn get_error(input: &mut impl Read) -> std::io::Result<JobError> {
    let code = get_str(input)?;
    let code = ErrorCode::parse(&code).ok_or_else(|| corrupt("unknown error code"))?;
    Ok(JobError::new(code, get_str(input)?))
}

/// Opens the batch at `path`. Blocking.
pub(crate) fn open_batch(
    path: &Path,
) -> std::io::Result<BatchReader<std::io::BufReader<std::fs::File>>> {
    BatchReader::open(std::io::BufReader::with_capacity(
        1 << 20,
        std::fs::File::open(path)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planned(rows: std::ops::Range<u64>) -> Vec<PlannedStamp> {
        rows.map(|row| PlannedStamp {
            row,
            ra: 10.0 + row as f64 * 1e-3,
            dec: -3.0 - row as f64 * 1e-3,
            // Every seventh row a radius, so both kinds travel through shards and batches.
            extent: if row % 7 == 3 {
                Extent::Radius(1e-3 * row as f64)
            } else {
                Extent::Size(16)
            },
        })
        .collect()
    }

    /// A plan of `images` images of `per_image` stamps each, after one error row.
    fn plan(images: u64, per_image: u64) -> Vec<u8> {
        let mut writer = PlanWriter::new(Vec::new(), images * per_image, images).unwrap();
        writer.error(999, "no indexed image covers (1, 2)").unwrap();
        for n in 0..images {
            let rows = n * per_image..(n + 1) * per_image;
            writer
                .image(&format!("butler://t/img{n}"), &planned(rows))
                .unwrap();
        }
        writer.finish().unwrap()
    }

    fn split_plan(bytes: &[u8], limits: ShardLimits, dir: &Path) -> Split {
        let reader = PlanReader::open(bytes).unwrap();
        split(reader, limits, |n| dir.join(format!("s{n}"))).unwrap()
    }

    fn images_of(shard: &Shard) -> Vec<(String, Vec<PlannedStamp>)> {
        let bytes = std::fs::read(&shard.plan).unwrap();
        let mut reader = PlanReader::open(bytes.as_slice()).unwrap();
        assert_eq!(reader.totals(), (shard.stamps, shard.images));
        let mut images = Vec::new();
        while let Some(item) = reader.next_item().unwrap() {
            match item {
                PlanItem::Image { id, stamps } => images.push((id, stamps)),
                PlanItem::Error { .. } => panic!("a shard plan holds no error"),
            }
        }
        images
    }

    #[test]
    fn a_plan_splits_into_shards_of_whole_images_in_plan_order() {
        let dir = tempfile::tempdir().unwrap();
        let limits = ShardLimits {
            stamps: 25,
            images: 64,
        };
        // 7 images of 10 stamps: a shard closes once it holds 25 stamps or more.
        let split = split_plan(&plan(7, 10), limits, dir.path());
        assert_eq!(
            split.errors,
            [(999, "no indexed image covers (1, 2)".to_owned())]
        );
        let counts: Vec<(u64, u64)> = split.shards.iter().map(|s| (s.stamps, s.images)).collect();
        assert_eq!(counts, [(30, 3), (30, 3), (10, 1)]);
        let all: Vec<(String, Vec<PlannedStamp>)> =
            split.shards.iter().flat_map(images_of).collect();
        let expected: Vec<(String, Vec<PlannedStamp>)> = (0..7)
            .map(|n| (format!("butler://t/img{n}"), planned(n * 10..(n + 1) * 10)))
            .collect();
        assert_eq!(all, expected);
    }

    #[test]
    fn a_plan_has_one_size_only_when_every_stamp_has_the_same_size() {
        let dir = tempfile::tempdir().unwrap();
        let one_size = |extents: &[Extent]| {
            let mut writer = PlanWriter::new(Vec::new(), extents.len() as u64, 2).unwrap();
            let stamps: Vec<PlannedStamp> = extents
                .iter()
                .enumerate()
                .map(|(row, &extent)| PlannedStamp {
                    row: row as u64,
                    ra: 1.0,
                    dec: 2.0,
                    extent,
                })
                .collect();
            // Split over two images, so a difference between groups counts too.
            let (a, b) = stamps.split_at(1);
            writer.image("butler://t/a", a).unwrap();
            writer.image("butler://t/b", b).unwrap();
            split_plan(
                &writer.finish().unwrap(),
                ShardLimits::default(),
                dir.path(),
            )
            .one_size
        };
        use Extent::{Radius, Size};
        assert_eq!(one_size(&[Size(16), Size(16), Size(16)]), Some(16));
        assert_eq!(one_size(&[Size(16), Size(16), Size(8)]), None);
        assert_eq!(one_size(&[Size(16), Radius(0.01)]), None);
        assert_eq!(one_size(&[Radius(0.01), Size(16), Size(16)]), None);
    }

    #[test]
    fn a_shard_closes_at_its_image_limit() {
        let dir = tempfile::tempdir().unwrap();
        let limits = ShardLimits {
            stamps: 1_000,
            images: 2,
        };
        let split = split_plan(&plan(5, 1), limits, dir.path());
        let images: Vec<u64> = split.shards.iter().map(|s| s.images).collect();
        assert_eq!(images, [2, 2, 1]);
    }

    #[test]
    fn the_split_makes_as_many_shards_as_the_frontend_counts() {
        let dir = tempfile::tempdir().unwrap();
        // Images of uneven sizes, errors in between: the worker's split and the frontend's
        // count (`count_shards` over the stamps of each image) agree for every limit.
        let sizes = [3u64, 12, 1, 1, 7, 30, 2, 2, 2, 9, 1];
        let total: u64 = sizes.iter().sum();
        let mut writer = PlanWriter::new(Vec::new(), total, sizes.len() as u64).unwrap();
        let mut row = 0;
        for (n, size) in sizes.iter().enumerate() {
            writer.error(1000 + n as u64, "no image").unwrap();
            writer
                .image(&format!("butler://t/img{n}"), &planned(row..row + size))
                .unwrap();
            row += size;
        }
        let bytes = writer.finish().unwrap();
        for stamps in [0, 1, 2, 5, 10, 12, 13, 40, 1000] {
            for images in [0, 1, 2, 3, 4, 11, 64] {
                let limits = ShardLimits { stamps, images };
                let split = split_plan(&bytes, limits, dir.path());
                assert_eq!(
                    split.shards.len() as u64,
                    soda::bulk_plan::count_shards(sizes, limits),
                    "{limits:?}"
                );
            }
        }
    }

    #[test]
    fn the_same_plan_split_the_same_way_gives_the_same_names_and_another_split_other_names() {
        let dir = tempfile::tempdir().unwrap();
        let limits = ShardLimits {
            stamps: 20,
            images: 64,
        };
        let names =
            |split: Split| -> Vec<String> { split.shards.into_iter().map(|s| s.name).collect() };
        let first = names(split_plan(&plan(4, 10), limits, dir.path()));
        let again = names(split_plan(&plan(4, 10), limits, dir.path()));
        assert_eq!(first, again);
        assert_eq!(first.len(), 2);
        assert!(first[0].starts_with("shard-00000-"), "{first:?}");
        assert_ne!(first[0], first[1]);
        let other = names(split_plan(
            &plan(4, 10),
            ShardLimits {
                stamps: 30,
                images: 64,
            },
            dir.path(),
        ));
        assert!(
            other.iter().all(|n| !first.contains(n)),
            "{first:?} {other:?}"
        );
    }

    #[test]
    fn only_names_split_makes_are_shard_names() {
        let dir = tempfile::tempdir().unwrap();
        let split = split_plan(&plan(2, 1), ShardLimits::default(), dir.path());
        assert!(
            is_shard_name(&split.shards[0].name),
            "{}",
            split.shards[0].name
        );
        for bad in [
            "",
            "shard-",
            "shard-00001",
            "shard-0001-0123456789abcdef",
            "shard-00001-0123456789abcde",
            "shard-00001-0123456789abcdeF",
            "shard-00001-../../../etc/pass",
            "shard-0000a-0123456789abcdef",
            "plan-00001-0123456789abcdef",
        ] {
            assert!(!is_shard_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn shard_objects_live_under_the_job_s_bulk_prefix_apart_from_each_other() {
        assert_eq!(
            plan_key("abc", "shard-00001-ff"),
            "abc/bulk/shard-00001-ff.plan"
        );
        assert_eq!(
            batch_key("abc", "shard-00001-ff"),
            "abc/bulk/shard-00001-ff.batch2"
        );
    }

    fn cut_image() -> CutImage {
        CutImage {
            crpix: (256.5, -12.25),
            mjd: Some(60_000.125),
            wcs_cards: vec![format!("{:<80}", "CTYPE1  = 'RA---TAN'")],
            stamps: vec![
                Ok(soda::Stamp {
                    window: soda::Window {
                        x0: -3,
                        y0: 40,
                        width: 2,
                        height: 2,
                    },
                    pixel: (-1.5, 41.0),
                    pixels: vec![1.0, f32::NAN, -0.0, 3.4e38],
                }),
                Err(JobError::new(
                    ErrorCode::NoData,
                    "the stamp misses the image",
                )),
            ],
        }
    }

    fn same_pixels(a: &[f32], b: &[f32]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
    }

    #[test]
    fn a_batch_reads_back_bit_for_bit_as_written() {
        let mut writer = BatchWriter::new(Vec::new()).unwrap();
        let stamps = planned(4..6);
        writer
            .image("butler://t/a", &stamps, &Ok(cut_image()))
            .unwrap();
        let unreadable = Err(JobError::new(
            ErrorCode::Unavailable,
            "the image server is down",
        ));
        writer
            .image("butler://t/b,\"odd\"", &stamps[..1], &unreadable)
            .unwrap();
        let mut no_mjd = cut_image();
        no_mjd.mjd = None;
        writer.image("butler://t/c", &stamps, &Ok(no_mjd)).unwrap();
        let bytes = writer.finish().unwrap();

        let mut reader = BatchReader::open(bytes.as_slice()).unwrap();
        let (id, back, cut) = reader.next_image().unwrap().unwrap();
        assert_eq!(
            (id.as_str(), back.as_slice()),
            ("butler://t/a", stamps.as_slice())
        );
        let cut = cut.unwrap();
        let expected = cut_image();
        assert_eq!(
            (cut.crpix, cut.mjd, &cut.wcs_cards),
            (expected.crpix, expected.mjd, &expected.wcs_cards)
        );
        let (Ok(got), Ok(want)) = (&cut.stamps[0], &expected.stamps[0]) else {
            panic!("the first stamp was cut");
        };
        assert_eq!((got.window, got.pixel), (want.window, want.pixel));
        assert!(same_pixels(&got.pixels, &want.pixels), "{:?}", got.pixels);
        assert_eq!(cut.stamps[1], expected.stamps[1]);
        let (id, back, cut) = reader.next_image().unwrap().unwrap();
        assert_eq!(
            (id.as_str(), back.as_slice()),
            ("butler://t/b,\"odd\"", &stamps[..1])
        );
        assert_eq!(cut, unreadable);
        let (_, _, cut) = reader.next_image().unwrap().unwrap();
        assert_eq!(cut.unwrap().mjd, None);
        assert!(reader.next_image().unwrap().is_none());
        assert!(reader.next_image().unwrap().is_none());
    }

    #[test]
    fn a_batch_cut_short_or_damaged_is_refused_not_taken_for_a_smaller_one() {
        let mut writer = BatchWriter::new(Vec::new()).unwrap();
        writer
            .image("butler://t/a", &planned(0..2), &Ok(cut_image()))
            .unwrap();
        writer
            .image("butler://t/b", &planned(2..4), &Ok(cut_image()))
            .unwrap();
        let bytes = writer.finish().unwrap();
        let read_all = |bytes: &[u8]| -> std::io::Result<usize> {
            let mut reader = BatchReader::open(bytes)?;
            let mut n = 0;
            while reader.next_image()?.is_some() {
                n += 1;
            }
            Ok(n)
        };
        assert_eq!(read_all(&bytes).unwrap(), 2);
        for cut in [
            1,
            MAGIC.len() + 1,
            bytes.len() / 2,
            bytes.len() - 9,
            bytes.len() - 1,
        ] {
            assert!(
                read_all(&bytes[..cut]).is_err(),
                "cut at {cut} of {}",
                bytes.len()
            );
        }
        // An end record whose count disagrees: an image was lost.
        let mut wrong = bytes.clone();
        let at = wrong.len() - 8;
        wrong[at] = 1;
        assert!(read_all(&wrong).is_err());
        let mut not_a_batch = bytes;
        not_a_batch[0] = b'X';
        assert!(read_all(&not_a_batch).is_err());
    }
}
