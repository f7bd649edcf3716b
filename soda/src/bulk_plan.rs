//! A bulk job's plan: which stamps to cut from which image, in the order a worker cuts them.
//!
//! The frontend places every catalogue row on the images that cover it before the job exists,
//! and writes the plan as a text file stored beside the job's results; the worker reads it back
//! a group at a time, so its memory is bounded by one image's stamps, not by the catalogue.
//! The second line holds the totals (stamps, images) that the worker reports progress against.
//! Rows that no image can serve are listed first, as errors with the reason. Then come the
//! groups: an image ID, then its stamps, each a catalogue row number, position and extent
//! (`s` and a side in pixels for `SIZE`, `r` and a radius in degrees for `RADIUS`), in
//! catalogue order.
//!
//! ```text
//! # skycut bulk plan 2
//! T,2,1
//! E,17,no indexed image covers (10.5, -3.25)
//! I,butler://demo/image-1
//! S,0,10.01,-3.02,s32
//! S,4,10.03,-3.01,r0.002
//! ```
//!
//! Numbers are written in Rust's shortest round-trip form, so positions come back exactly.
//! A plan of version 1 (stored before stamps had extents of their own) has no extent on its
//! stamp lines: its reader is told the job's `SIZE` ([`PlanReader::with_default_extent`]).

use std::io::{BufRead, Write};

use crate::SodaError;
pub use crate::stamp::Extent;

const HEADER: &str = "# skycut bulk plan 2";
/// The header of plans without extents, still read.
const HEADER_1: &str = "# skycut bulk plan 1";

/// The object, beside the job's results, that holds the plan of bulk job `job`.
pub fn plan_key(job: &str) -> String {
    format!("{job}/bulk/plan.txt")
}

/// A stamp to cut: the catalogue row it serves, the position it is centred on (ICRS deg) and
/// how much of the image around it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlannedStamp {
    pub row: u64,
    pub ra: f64,
    pub dec: f64,
    pub extent: Extent,
}

/// How a stamp's extent is written in a plan: `s` and a side in pixels, `r` and a radius.
fn write_extent(extent: Extent) -> String {
    match extent {
        Extent::Size(side) => format!("s{side}"),
        Extent::Radius(degrees) => format!("r{degrees}"),
    }
}

fn read_extent(field: &str) -> Option<Extent> {
    if let Some(side) = field.strip_prefix('s') {
        return side.parse().ok().filter(|&s| s > 0).map(Extent::Size);
    }
    let radius: f64 = field.strip_prefix('r')?.parse().ok()?;
    (radius > 0.0 && radius <= 180.0).then_some(Extent::Radius(radius))
}

/// What a plan says, one item at a time.
#[derive(Debug, Clone, PartialEq)]
pub enum PlanItem {
    /// A catalogue row that gives no stamp, and why.
    Error { row: u64, reason: String },
    /// The stamps of one image.
    Image {
        id: String,
        stamps: Vec<PlannedStamp>,
    },
}

/// Writes a plan: every error first, then one group per image.
pub struct PlanWriter<W: Write> {
    out: W,
}

impl<W: Write> PlanWriter<W> {
    /// Starts a plan of `stamps` stamps from `images` images (its totals, which a worker
    /// reports its progress against).
    pub fn new(mut out: W, stamps: u64, images: u64) -> Result<PlanWriter<W>, SodaError> {
        writeln!(out, "{HEADER}")?;
        writeln!(out, "T,{stamps},{images}")?;
        Ok(PlanWriter { out })
    }

    pub fn error(&mut self, row: u64, reason: &str) -> Result<(), SodaError> {
        // One line per item: a reason never spans lines.
        let reason = reason.replace(['\r', '\n'], " ");
        writeln!(self.out, "E,{row},{reason}")?;
        Ok(())
    }

    pub fn image(&mut self, id: &str, stamps: &[PlannedStamp]) -> Result<(), SodaError> {
        if id.contains(['\r', '\n']) {
            return Err(SodaError::usage(format!("image ID {id:?} spans lines")));
        }
        writeln!(self.out, "I,{id}")?;
        for stamp in stamps {
            writeln!(
                self.out,
                "S,{},{},{},{}",
                stamp.row,
                stamp.ra,
                stamp.dec,
                write_extent(stamp.extent)
            )?;
        }
        Ok(())
    }

    pub fn finish(mut self) -> Result<W, SodaError> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Reads a plan back, an item at a time.
pub struct PlanReader<R: BufRead> {
    input: R,
    /// Stamps and images the plan holds.
    totals: (u64, u64),
    /// A line read ahead: the first line after a group's stamps.
    pending: Option<String>,
    /// A plan of version 1: its stamps have this extent (`None`: not yet told).
    version_1: Option<Option<Extent>>,
}

impl<R: BufRead> PlanReader<R> {
    /// Checks the header line and reads the totals.
    pub fn open(mut input: R) -> Result<PlanReader<R>, SodaError> {
        let mut line = String::new();
        input.read_line(&mut line)?;
        let version_1 = match line.trim_end() {
            HEADER => None,
            HEADER_1 => Some(None),
            _ => {
                return Err(SodaError::Fits(format!(
                    "not a bulk plan (first line {:?})",
                    line.trim_end()
                )));
            }
        };
        line.clear();
        input.read_line(&mut line)?;
        let totals = line
            .trim_end()
            .strip_prefix("T,")
            .and_then(|t| t.split_once(','))
            .and_then(|(s, i)| Some((s.parse().ok()?, i.parse().ok()?)))
            .ok_or_else(|| SodaError::Fits(format!("bad bulk plan totals {line:?}")))?;
        Ok(PlanReader {
            input,
            totals,
            pending: None,
            version_1,
        })
    }

    /// The extent of every stamp of a version 1 plan, whose lines have none (the job's `SIZE`);
    /// a plan of version 2 names each stamp's own.
    pub fn with_default_extent(mut self, extent: Option<Extent>) -> PlanReader<R> {
        if let Some(default) = self.version_1.as_mut() {
            *default = extent;
        }
        self
    }

    /// The stamps and images the plan holds.
    pub fn totals(&self) -> (u64, u64) {
        self.totals
    }

    fn line(&mut self) -> Result<Option<String>, SodaError> {
        if let Some(line) = self.pending.take() {
            return Ok(Some(line));
        }
        let mut line = String::new();
        if self.input.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        if !line.ends_with('\n') {
            return Err(SodaError::Fits("the bulk plan is cut short".to_owned()));
        }
        line.truncate(line.trim_end_matches(['\r', '\n']).len());
        Ok(Some(line))
    }

    /// The next item, or `None` at the end.
    pub fn next_item(&mut self) -> Result<Option<PlanItem>, SodaError> {
        let Some(line) = self.line()? else {
            return Ok(None);
        };
        let bad = |line: &str| SodaError::Fits(format!("bad bulk plan line {line:?}"));
        if let Some(rest) = line.strip_prefix("E,") {
            let (row, reason) = rest.split_once(',').ok_or_else(|| bad(&line))?;
            let row = row.parse().map_err(|_| bad(&line))?;
            return Ok(Some(PlanItem::Error {
                row,
                reason: reason.to_owned(),
            }));
        }
        let id = line
            .strip_prefix("I,")
            .ok_or_else(|| bad(&line))?
            .to_owned();
        let mut stamps = Vec::new();
        while let Some(next) = self.line()? {
            let Some(rest) = next.strip_prefix("S,") else {
                self.pending = Some(next);
                break;
            };
            let mut fields = rest.split(',');
            let mut field = || fields.next().ok_or_else(|| bad(&next));
            let row = field()?.parse().map_err(|_| bad(&next))?;
            let ra = field()?.parse().map_err(|_| bad(&next))?;
            let dec = field()?.parse().map_err(|_| bad(&next))?;
            let extent = match self.version_1 {
                None => read_extent(field()?).ok_or_else(|| bad(&next))?,
                Some(Some(extent)) => extent,
                Some(None) => {
                    return Err(SodaError::Fits(
                        "a bulk plan of version 1 needs the job's SIZE".to_owned(),
                    ));
                }
            };
            stamps.push(PlannedStamp {
                row,
                ra,
                dec,
                extent,
            });
        }
        Ok(Some(PlanItem::Image { id, stamps }))
    }
}

/// How big a shard of a bulk job may grow: a shard closes once it holds this many stamps or
/// images (an image's stamps are never split).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardLimits {
    pub stamps: u64,
    pub images: u64,
}

impl Default for ShardLimits {
    fn default() -> Self {
        ShardLimits {
            // Sharing costs a batch's trip through the bucket: only jobs of minutes are shared
            // (a 2-core worker cuts about 50,000 stamps of 32×32 a second).
            stamps: 200_000,
            images: 256,
        }
    }
}

/// The rule that splits a plan into shards, fed its images in plan order: the worker splits a
/// plan by it, and the frontend counts a job's shards by it when it writes the plan (for the
/// job's size and quote), so the two never disagree.
#[derive(Debug, Clone)]
pub struct ShardRule {
    limits: ShardLimits,
    /// Stamps and images of the shard being filled.
    stamps: u64,
    images: u64,
    shards: u64,
}

impl ShardRule {
    pub fn new(limits: ShardLimits) -> ShardRule {
        ShardRule {
            limits,
            stamps: 0,
            images: 0,
            shards: 0,
        }
    }

    /// Whether the shard being filled is full: the next image opens another.
    pub fn full(&self) -> bool {
        self.images > 0
            && (self.stamps >= self.limits.stamps.max(1)
                || self.images >= self.limits.images.max(1))
    }

    /// Places the plan's next image, of `stamps` stamps; true when it opens a shard (the first
    /// image does).
    pub fn add_image(&mut self, stamps: u64) -> bool {
        let opens = self.images == 0 || self.full();
        if opens {
            self.shards += 1;
            self.stamps = 0;
            self.images = 0;
        }
        self.stamps += stamps;
        self.images += 1;
        opens
    }

    /// The shards of the images placed so far.
    pub fn shards(&self) -> u64 {
        self.shards
    }
}

/// The shards of a plan whose images hold `stamps` stamps each, in plan order.
pub fn count_shards(stamps: impl IntoIterator<Item = u64>, limits: ShardLimits) -> u64 {
    let mut rule = ShardRule::new(limits);
    for n in stamps {
        rule.add_image(n);
    }
    rule.shards()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_lives_under_its_job_s_prefix_apart_from_its_results() {
        let key = plan_key("0123abcd");
        assert_eq!(key, "0123abcd/bulk/plan.txt");
        // The sweep of a job's prefix takes it; no attempt's results (`{job}/{hex}/…`) meet it.
        assert!(key.starts_with("0123abcd/"));
        assert_ne!(plan_key("0123abce"), key);
    }

    #[test]
    fn a_plan_reads_back_as_written() {
        let mut writer = PlanWriter::new(Vec::new(), 3, 2).unwrap();
        writer.error(3, "no indexed image covers\n(1, 2)").unwrap();
        let first = [
            PlannedStamp {
                row: 0,
                ra: 10.123456789012345,
                dec: -3.0,
                extent: Extent::Size(32),
            },
            PlannedStamp {
                row: 7,
                ra: 359.99999999999994,
                dec: 89.9,
                extent: Extent::Radius(0.0027777777777777775),
            },
        ];
        writer.image("butler://demo/a?ext=SCI", &first).unwrap();
        writer.image("butler://demo/b,c", &first[1..]).unwrap();
        let bytes = writer.finish().unwrap();
        let mut reader = PlanReader::open(bytes.as_slice()).unwrap();
        assert_eq!(reader.totals(), (3, 2));
        assert_eq!(
            reader.next_item().unwrap(),
            Some(PlanItem::Error {
                row: 3,
                reason: "no indexed image covers (1, 2)".to_owned()
            })
        );
        assert_eq!(
            reader.next_item().unwrap(),
            Some(PlanItem::Image {
                id: "butler://demo/a?ext=SCI".to_owned(),
                stamps: first.to_vec()
            })
        );
        assert_eq!(
            reader.next_item().unwrap(),
            Some(PlanItem::Image {
                id: "butler://demo/b,c".to_owned(),
                stamps: first[1..].to_vec()
            })
        );
        assert_eq!(reader.next_item().unwrap(), None);
    }

    #[test]
    fn a_plan_cut_short_is_an_error_not_fewer_stamps() {
        let mut writer = PlanWriter::new(Vec::new(), 1, 1).unwrap();
        writer
            .image(
                "butler://demo/a",
                &[PlannedStamp {
                    row: 12,
                    ra: 1.5,
                    dec: 2.5,
                    extent: Extent::Size(8),
                }],
            )
            .unwrap();
        let mut bytes = writer.finish().unwrap();
        bytes.truncate(bytes.len() - 3);
        let mut reader = PlanReader::open(bytes.as_slice()).unwrap();
        assert!(reader.next_item().is_err());
        assert!(PlanReader::open(&b"row,ra,dec\n"[..]).is_err());
    }

    #[test]
    fn a_plan_of_version_1_is_read_with_the_job_s_size() {
        let plan = "# skycut bulk plan 1\nT,1,1\nI,butler://demo/a\nS,3,1.5,2.5\n";
        let mut reader = PlanReader::open(plan.as_bytes())
            .unwrap()
            .with_default_extent(Some(Extent::Size(16)));
        assert_eq!(
            reader.next_item().unwrap(),
            Some(PlanItem::Image {
                id: "butler://demo/a".to_owned(),
                stamps: vec![PlannedStamp {
                    row: 3,
                    ra: 1.5,
                    dec: 2.5,
                    extent: Extent::Size(16)
                }]
            })
        );
        // Without the job's SIZE a version 1 plan cannot be cut, rather than cut wrong.
        let mut untold = PlanReader::open(plan.as_bytes()).unwrap();
        assert!(untold.next_item().is_err());
        // A plan of version 2 keeps its stamps' own extents whatever the job says.
        let mut writer = PlanWriter::new(Vec::new(), 1, 1).unwrap();
        let own = PlannedStamp {
            row: 0,
            ra: 1.0,
            dec: 2.0,
            extent: Extent::Radius(0.5),
        };
        writer.image("butler://demo/a", &[own]).unwrap();
        let bytes = writer.finish().unwrap();
        let mut reader = PlanReader::open(bytes.as_slice())
            .unwrap()
            .with_default_extent(Some(Extent::Size(16)));
        assert_eq!(
            reader.next_item().unwrap(),
            Some(PlanItem::Image {
                id: "butler://demo/a".to_owned(),
                stamps: vec![own]
            })
        );
    }

    #[test]
    fn a_stamp_line_without_a_usable_extent_is_refused() {
        for extent in ["", "s0", "s-3", "sx", "r0", "r-1", "r181", "rNaN", "q5"] {
            let plan = format!("# skycut bulk plan 2\nT,1,1\nI,a\nS,0,1,2,{extent}\n");
            let mut reader = PlanReader::open(plan.as_bytes()).unwrap();
            assert!(reader.next_item().is_err(), "{extent:?} was read");
        }
        let mut no_field =
            PlanReader::open(&b"# skycut bulk plan 2\nT,1,1\nI,a\nS,0,1,2\n"[..]).unwrap();
        assert!(no_field.next_item().is_err());
    }
}

#[cfg(test)]
mod shard_tests {
    use super::*;

    #[test]
    fn a_shard_closes_at_its_stamps_or_its_images_never_inside_an_image() {
        let limits = ShardLimits {
            stamps: 10,
            images: 3,
        };
        // Three images fill a shard; so does an image that reaches ten stamps (whole, even
        // past the limit).
        assert_eq!(count_shards([1, 1, 1, 1], limits), 2);
        assert_eq!(count_shards([4, 6, 1], limits), 2);
        assert_eq!(count_shards([25, 1], limits), 2);
        assert_eq!(count_shards([9, 1, 1], limits), 2);
        assert_eq!(count_shards([9], limits), 1);
        assert_eq!(count_shards([], limits), 0);
        // Limits of zero are read as one.
        let zero = ShardLimits {
            stamps: 0,
            images: 0,
        };
        assert_eq!(count_shards([1, 1, 1], zero), 3);
        let mut rule = ShardRule::new(limits);
        assert!(rule.add_image(5));
        assert!(!rule.full() && !rule.add_image(5));
        assert!(rule.full() && rule.add_image(1));
        assert_eq!(rule.shards(), 2);
    }
}
