//! Micro-benchmarks of the science path of one cutout: SODA parameter parsing, stencil
//! geometry (sky → pixel box), the cutout copy and masking, on a 4096×4096 float32 image.
//!
//! Run with `cargo bench -p soda`; CI only builds them (`cargo clippy --all-targets`).

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use soda::request::CutoutRequest;
use soda::{CutOptions, ImageGeometry, Provenance, Stencil, SyntheticImage};

const RA: f64 = 150.0;
const DEC: f64 = 2.0;
const SCALE: f64 = 0.2 / 3600.0;
const SIDE: usize = 4096;

/// A circle whose bounding box is `side` × `side` pixels.
fn circle(side: usize) -> String {
    format!("{RA} {DEC} {}", (side as f64 - 1.0) / 2.0 * SCALE)
}

fn parsing(c: &mut Criterion) {
    let c100 = circle(100);
    let cases: [(&str, [(&str, &str); 2]); 3] = [
        (
            "CIRCLE",
            [("ID", "butler://bench/bench"), ("CIRCLE", &c100)],
        ),
        (
            "POLYGON",
            [
                ("ID", "butler://bench/bench"),
                ("POLYGON", "149.99 1.99 150.01 1.99 150.01 2.01 149.99 2.01"),
            ],
        ),
        (
            "POS=RANGE",
            [
                ("ID", "butler://bench/bench"),
                ("POS", "RANGE 149.99 150.01 1.99 2.01"),
            ],
        ),
    ];
    let mut group = c.benchmark_group("CutoutRequest::from_parameters");
    for (name, params) in &cases {
        group.bench_function(*name, |b| {
            b.iter(|| CutoutRequest::from_parameters(black_box(params).iter().copied()))
        });
    }
    group.finish();
}

fn image(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("bench.fits");
    soda::write_synthetic_image(
        &path,
        &SyntheticImage {
            nx: SIDE,
            ny: SIDE,
            ra_deg: RA,
            dec_deg: DEC,
            pixel_scale_deg: SCALE,
        },
    )
    .expect("synthetic image");
    path
}

fn geometry(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let geometry = ImageGeometry::read(&image(dir.path())).expect("geometry");
    let stencils = [
        ("CIRCLE 100 px", Stencil::parse_circle(&circle(100))),
        ("CIRCLE 2000 px", Stencil::parse_circle(&circle(2000))),
        (
            "POLYGON 4 vertices",
            Stencil::parse_polygon("149.997 1.997 150.003 1.997 150.003 2.003 149.997 2.003"),
        ),
        (
            "RANGE",
            Stencil::parse_pos("RANGE 149.997 150.003 1.997 2.003"),
        ),
    ];
    let mut group = c.benchmark_group("ImageGeometry::pixel_box");
    for (name, stencil) in stencils {
        let stencil = stencil.expect("stencil");
        group.bench_function(name, |b| b.iter(|| geometry.pixel_box(black_box(&stencil))));
    }
    group.finish();
}

fn cutout(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = image(dir.path());
    let out = dir.path().join("out.fits");
    let mut group = c.benchmark_group("cut_to_file");
    for side in [100, 1000] {
        let stencil = Stencil::parse_circle(&circle(side)).expect("stencil");
        let provenance = Provenance {
            source_id: "butler://bench/bench".to_owned(),
            stencil: stencil.to_string(),
            software: "bench".to_owned(),
            time_utc: "2025-01-02T03:04:05Z".to_owned(),
        };
        for (name, mask) in [("copy", false), ("MASK=true", true)] {
            group.bench_function(format!("{side}x{side} {name}"), |b| {
                b.iter(|| {
                    soda::cut_to_file_with(
                        &source,
                        black_box(&stencil),
                        &provenance,
                        &out,
                        CutOptions {
                            mask,
                            ..CutOptions::default()
                        },
                    )
                    .expect("cutout")
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, parsing, geometry, cutout);
criterion_main!(benches);
