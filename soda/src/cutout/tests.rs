//! Cutouts of real files written by cfitsio: the pixels and header a cutout copies for every
//! BITPIX, scaling, mask, stamp, cube axis and HDU choice, compared with the source read
//! independently, and the plan of a cutout compared with what the cut then does.

use std::path::PathBuf;

use fitsio::hdu::HduInfo;
use fitsio::images::ImageType;

use super::*;
use crate::celestial::CelestialWcs;
use crate::demo::{SyntheticImage, write_synthetic_image};
use crate::header::WcsKeywords;
use crate::plan::{cutout_bytes, cutout_reads, cutout_size};
use crate::stamp::Extent;

const SCALE: f64 = 1.0 / 3600.0;
const NX: usize = 300;
const NY: usize = 200;

fn synthetic(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("src.fits");
    let image = SyntheticImage {
        nx: NX,
        ny: NY,
        ra_deg: 10.0,
        dec_deg: 41.0,
        pixel_scale_deg: SCALE,
    };
    write_synthetic_image(&path, &image).unwrap();
    path
}

fn provenance(stencil: &Stencil) -> Provenance {
    Provenance {
        source_id: "butler://demo/src".to_owned(),
        stencil: stencil.to_string(),
        software: "skycut 0.1.0".to_owned(),
        time_utc: "2025-01-02T03:04:05Z".to_owned(),
    }
}

fn wcs_of(path: &Path, hdu: usize) -> CelestialWcs {
    let mut f = FitsFile::open(path).unwrap();
    let h = f.hdu(hdu).unwrap();
    let HduInfo::ImageInfo { shape, .. } = &h.info else {
        panic!("not an image")
    };
    let (ny, nx) = (shape[0], shape[1]);
    CelestialWcs::new(nx, ny, &WcsKeywords::read(&mut f, &h).unwrap()).unwrap()
}

/// A circle of `radius_px` pixels centred on source pixel (`x`, `y`).
fn circle_at(source: &Path, x: f64, y: f64, radius_px: f64) -> Stencil {
    let (ra, dec) = wcs_of(source, 0).pixel_to_sky(x, y).unwrap();
    Stencil::parse_circle(&format!("{ra} {dec} {}", radius_px * SCALE)).unwrap()
}

#[test]
fn image_geometry_locates_the_box_that_cut_to_file_copies() {
    let dir = tempfile::tempdir().unwrap();
    let source = synthetic(dir.path());
    let geometry = crate::ImageGeometry::read(&source).unwrap();
    for (x, y, r) in [
        (80.0, 120.0, 20.0),
        (5.0, 190.0, 30.0),
        (150.0, 100.0, 400.0),
    ] {
        let stencil = circle_at(&source, x, y, r);
        let out = dir.path().join("out.fits");
        let cutout = cut_to_file(&source, &stencil, &provenance(&stencil), &out).unwrap();
        assert_eq!(geometry.pixel_box(&stencil), Some(cutout.region));
    }
    let far = Stencil::parse_circle("200 -30 0.01").unwrap();
    assert_eq!(geometry.pixel_box(&far), None);
}

#[test]
fn cutout_bytes_is_what_the_cutout_copies_without_cutting() {
    let dir = tempfile::tempdir().unwrap();
    let source = synthetic(dir.path());
    let stencil = circle_at(&source, 80.0, 120.0, 20.0);
    let planned = cutout_bytes(&source, &stencil, &CutOptions::default()).unwrap();
    let out = dir.path().join("out.fits");
    let cutout = cut_to_file(&source, &stencil, &provenance(&stencil), &out).unwrap();
    assert_eq!(planned, cutout.source_bytes);
    let r = cutout.region;
    assert_eq!(planned, (r.width() * r.height() * 4) as u64);
    let off = circle_at(&source, -500.0, -500.0, 5.0);
    assert!(matches!(
        cutout_bytes(&source, &off, &CutOptions::default()),
        Err(SodaError::NoOverlap { .. })
    ));
}

/// The header of `options`' cutout of `source` by `stencil`: (as `header_to_file` writes
/// it, as the cutout file has it).
fn both_headers(source: &Path, stencil: &Stencil, options: CutOptions) -> (String, String) {
    let dir = source.parent().unwrap();
    let (text, fits) = (dir.join("h.txt"), dir.join("c.fits"));
    let size = header_to_file(
        source,
        stencil,
        &provenance(stencil),
        &text,
        options.clone(),
    )
    .unwrap();
    let header = std::fs::read_to_string(&text).unwrap();
    assert_eq!(size, header.len() as u64);
    cut_to_file_with(source, stencil, &provenance(stencil), &fits, options).unwrap();
    let cut = extension_header_text(&std::fs::read(&fits).unwrap(), &[]).unwrap();
    (header, cut)
}

#[test]
fn header_only_is_the_cutouts_header_card_for_card() {
    let dir = tempfile::tempdir().unwrap();
    let source = synthetic(dir.path());
    let stencil = circle_at(&source, 80.0, 120.0, 20.0);
    for mask in [false, true] {
        let options = CutOptions {
            mask,
            ..CutOptions::default()
        };
        let (header, cut) = both_headers(&source, &stencil, options);
        assert_eq!(header, cut, "mask {mask}");
        assert!(header.lines().all(|l| l.len() == 80), "{header}");
        assert!(
            header.contains("NAXIS1  =                   41"),
            "{header}"
        );
        assert!(header.ends_with(&format!("{:<80}\n", "END")), "{header}");
    }
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("cube.fits");
    cube(&source);
    let mut f = FitsFile::open(&source).unwrap();
    let h = f.hdu(1).unwrap();
    let wcs = CelestialWcs::new(64, 48, &WcsKeywords::read(&mut f, &h).unwrap()).unwrap();
    drop(f);
    let (ra, dec) = wcs.pixel_to_sky(20.0, 30.0).unwrap();
    let stencil = Stencil::parse_circle(&format!("{ra} {dec} {}", 5.0 * SCALE)).unwrap();
    let options = CutOptions {
        band: Some((515e-9, 545e-9)),
        extension: Some("CUBE".to_owned()),
        ..CutOptions::default()
    };
    let (header, cut) = both_headers(&source, &stencil, options);
    assert_eq!(header, cut);
    assert!(
        header.contains("NAXIS3  =                    3"),
        "{header}"
    );
}

#[test]
fn header_only_reads_no_pixel() {
    let dir = tempfile::tempdir().unwrap();
    let source = synthetic(dir.path());
    let stencil = circle_at(&source, 80.0, 120.0, 20.0);
    // Keep the header blocks only: a pixel read would run off the end of the file.
    let bytes = std::fs::read(&source).unwrap();
    let end = bytes
        .chunks_exact(80)
        .position(|c| c.starts_with(b"END     "))
        .unwrap();
    let header_len = ((end + 1) * 80).div_ceil(2880) * 2880;
    std::fs::write(&source, &bytes[..header_len]).unwrap();
    let out = dir.path().join("h.txt");
    let provenance = provenance(&stencil);
    header_to_file(&source, &stencil, &provenance, &out, CutOptions::default()).unwrap();
    assert!(
        cut_to_file(&source, &stencil, &provenance, &dir.path().join("c.fits")).is_err(),
        "the cutout should have needed the missing pixels"
    );
}

#[test]
fn cutout_copies_source_pixels_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let source = synthetic(dir.path());
    let stencil = circle_at(&source, 80.0, 120.0, 20.0);
    let out = dir.path().join("out.fits");
    let cutout = cut_to_file(&source, &stencil, &provenance(&stencil), &out).unwrap();
    let r = cutout.region;
    assert_eq!((r.x0, r.x1, r.y0, r.y1), (60, 100, 100, 140), "{r:?}");
    assert_eq!(cutout.bytes, std::fs::metadata(&out).unwrap().len());

    let mut f = FitsFile::open(&out).unwrap();
    assert_eq!(f.num_hdus().unwrap(), 2);
    let primary = f.primary_hdu().unwrap();
    assert!(matches!(&primary.info, HduInfo::ImageInfo { shape, .. } if shape.is_empty()));
    let hdu = f.hdu("CUTOUT").unwrap();
    let HduInfo::ImageInfo { shape, image_type } = &hdu.info else {
        panic!("not an image")
    };
    assert_eq!(
        (shape.as_slice(), *image_type),
        (&[r.height(), r.width()][..], ImageType::Float)
    );
    let pixels: Vec<f32> = hdu.read_image(&mut f).unwrap();
    for j in 0..r.height() {
        for i in 0..r.width() {
            let expected = ((r.y0 + j) * NX + r.x0 + i) as f32;
            assert_eq!(
                pixels[j * r.width() + i],
                expected,
                "cutout pixel ({i}, {j})"
            );
        }
    }
    let mut src = FitsFile::open(&source).unwrap();
    let src_hdu = src.primary_hdu().unwrap();
    let section: Vec<f32> = src_hdu
        .read_region(&mut src, &[&(r.x0..r.x1 + 1), &(r.y0..r.y1 + 1)])
        .unwrap();
    assert_eq!(section, pixels);
}

/// The (1-based) keyword `name` of HDU 1 of `path`.
fn key_of(path: &Path, name: &str) -> f64 {
    let mut f = FitsFile::open(path).unwrap();
    let hdu = f.hdu(1).unwrap();
    hdu.read_key::<f64>(&mut f, name).unwrap()
}

fn stamp_options(size: usize) -> CutOptions {
    CutOptions {
        size: Some(size),
        ..CutOptions::default()
    }
}

#[test]
fn size_cuts_a_stamp_of_exactly_that_size_around_the_centre() {
    let dir = tempfile::tempdir().unwrap();
    let source = synthetic(dir.path());
    // A radius far smaller than the stamp: SIZE decides the box, not the circle.
    let stencil = circle_at(&source, 80.3, 120.6, 2.0);
    let out = dir.path().join("out.fits");
    let provenance = provenance(&stencil);
    let cutout = cut_to_file_with(&source, &stencil, &provenance, &out, stamp_options(32)).unwrap();
    // astropy's Cutout2D starts at ceil(position - size / 2).
    let r = cutout.region;
    assert_eq!((r.x0, r.x1, r.y0, r.y1), (65, 96, 105, 136), "{r:?}");
    let mut f = FitsFile::open(&out).unwrap();
    let hdu = f.hdu(1).unwrap();
    let pixels: Vec<f32> = hdu.read_image(&mut f).unwrap();
    assert_eq!(pixels.len(), 32 * 32);
    for j in 0..32 {
        for i in 0..32 {
            assert_eq!(pixels[j * 32 + i], ((105 + j) * NX + 65 + i) as f32);
        }
    }
    assert!(hdu.read_key::<i64>(&mut f, "BLANK").is_err());
    let planned = cutout_size(&source, &stencil, &stamp_options(32)).unwrap();
    assert_eq!(planned.pixels, 32 * 32);
}

#[test]
fn a_stamp_over_the_edge_is_blank_there_and_keeps_every_pixels_sky_position() {
    let dir = tempfile::tempdir().unwrap();
    let source = synthetic(dir.path());
    let stencil = circle_at(&source, 2.0, 198.4, 1.0);
    let out = dir.path().join("out.fits");
    let provenance = provenance(&stencil);
    let cutout = cut_to_file_with(&source, &stencil, &provenance, &out, stamp_options(16)).unwrap();
    // The window starts at (-6, 191); only its part inside the image is read.
    let r = cutout.region;
    assert_eq!((r.x0, r.x1, r.y0, r.y1), (0, 9, 191, 199), "{r:?}");
    assert_eq!(cutout.source_bytes, 10 * 9 * 4);
    let mut f = FitsFile::open(&out).unwrap();
    let hdu = f.hdu(1).unwrap();
    let HduInfo::ImageInfo { shape, .. } = &hdu.info else {
        panic!("not an image")
    };
    assert_eq!(shape.as_slice(), &[16, 16]);
    let pixels: Vec<f32> = hdu.read_image(&mut f).unwrap();
    for j in 0..16i64 {
        for i in 0..16i64 {
            let (x, y) = (i - 6, j + 191);
            let got = pixels[(j * 16 + i) as usize];
            if (0..NX as i64).contains(&x) && (0..NY as i64).contains(&y) {
                assert_eq!(got, (y as usize * NX + x as usize) as f32, "({i}, {j})");
            } else {
                assert!(got.is_nan(), "({i}, {j}) off the image holds {got}");
            }
        }
    }
    assert_eq!(key_of(&out, "SKYCX0"), -5.0);
    assert_eq!(key_of(&out, "SKYCY0"), 192.0);
    let (src_wcs, out_wcs) = (wcs_of(&source, 0), wcs_of(&out, 1));
    for (i, j) in [(0, 0), (15, 15), (6, 0), (3, 12)] {
        let a = out_wcs.pixel_to_sky(i as f64, j as f64).unwrap();
        let b = src_wcs
            .pixel_to_sky(i as f64 - 6.0, j as f64 + 191.0)
            .unwrap();
        assert!(
            (a.0 - b.0).abs() < 1e-9 && (a.1 - b.1).abs() < 1e-9,
            "{a:?} {b:?}"
        );
    }
    // The header-only answer describes the same stamp.
    let (header, _) = both_headers(&source, &stencil, stamp_options(16));
    assert!(
        header.contains("NAXIS1  =                   16"),
        "{header}"
    );
}

#[test]
fn a_stamp_of_an_integer_image_over_the_edge_declares_and_uses_a_blank() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("int.fits");
    integer_image_with_blank(&source, ImageType::Short, 0, |v| v as i16, None);
    let (ra, dec) = wcs_of(&source, 1).pixel_to_sky(62.0, 1.0).unwrap();
    let stencil = Stencil::parse_circle(&format!("{ra} {dec} {SCALE}")).unwrap();
    let out = dir.path().join("out.fits");
    let provenance = provenance(&stencil);
    cut_to_file_with(&source, &stencil, &provenance, &out, stamp_options(5)).unwrap();
    let mut f = FitsFile::open(&out).unwrap();
    let hdu = f.hdu(1).unwrap();
    assert_eq!(hdu.read_key::<i64>(&mut f, "BLANK").unwrap(), -32768);
    let pixels: Vec<i64> = hdu.read_image(&mut f).unwrap();
    // Window x 60..=64 (64 is off a 64-wide image), y -1..=3 (row -1 is off).
    for j in 0..5i64 {
        for i in 0..5i64 {
            let (x, y) = (60 + i, j - 1);
            let expected = if x < 64 && y >= 0 {
                1000 * y + x
            } else {
                -32768
            };
            assert_eq!(pixels[(j * 5 + i) as usize], expected, "({i}, {j})");
        }
    }
}

#[test]
fn a_stamp_that_misses_the_image_is_no_overlap() {
    let dir = tempfile::tempdir().unwrap();
    let source = synthetic(dir.path());
    let stencil = circle_at(&source, -40.0, 50.0, 1.0);
    let out = dir.path().join("out.fits");
    let provenance = provenance(&stencil);
    let got = cut_to_file_with(&source, &stencil, &provenance, &out, stamp_options(16));
    assert!(matches!(got, Err(SodaError::NoOverlap { .. })), "{got:?}");
}

#[test]
fn many_stamps_of_one_image_hold_what_single_stamp_cutouts_hold() {
    let dir = tempfile::tempdir().unwrap();
    let source = synthetic(dir.path());
    let wcs = wcs_of(&source, 0);
    let spots = [(80.3, 120.6), (2.0, 198.4), (299.4, 0.2), (150.0, 100.0)];
    let mut positions: Vec<(f64, f64)> = spots
        .iter()
        .map(|&(x, y)| wcs.pixel_to_sky(x, y).unwrap())
        .collect();
    positions.push(wcs.pixel_to_sky(-400.0, 50.0).unwrap());
    let stamps: Vec<(f64, f64, Extent)> = positions
        .iter()
        .map(|&(ra, dec)| (ra, dec, Extent::Size(16)))
        .collect();
    let got = crate::stamp::cut_stamps(&source, "butler://demo/src", None, &stamps, None).unwrap();
    assert_eq!(got.stamps.len(), 5);
    assert!(matches!(got.stamps[4], Err(SodaError::NoOverlap { .. })));
    assert_eq!(
        got.crpix,
        ((NX as f64 + 1.0) / 2.0, (NY as f64 + 1.0) / 2.0)
    );
    assert!(
        got.wcs_cards
            .iter()
            .any(|c| c.starts_with("CTYPE1  = 'RA---TAN'"))
    );
    assert!(got.wcs_cards.iter().all(|c| c.len() == 80));
    for (n, &(x, y)) in spots.iter().enumerate() {
        let stamp = got.stamps[n].as_ref().unwrap();
        assert!((stamp.pixel.0 - (x + 1.0)).abs() < 1e-6, "{stamp:?}");
        assert!((stamp.pixel.1 - (y + 1.0)).abs() < 1e-6, "{stamp:?}");
        let (ra, dec) = positions[n];
        let stencil = Stencil::parse_circle(&format!("{ra} {dec} {SCALE}")).unwrap();
        let out = dir.path().join(format!("{n}.fits"));
        let provenance = provenance(&stencil);
        cut_to_file_with(&source, &stencil, &provenance, &out, stamp_options(16)).unwrap();
        let mut f = FitsFile::open(&out).unwrap();
        let hdu = f.hdu(1).unwrap();
        let single: Vec<f32> = hdu.read_image(&mut f).unwrap();
        let same = single
            .iter()
            .zip(&stamp.pixels)
            .all(|(a, b)| a == b || (a.is_nan() && b.is_nan()));
        assert!(same, "stamp {n}");
        assert_eq!(key_of(&out, "CRPIX1"), stamp.crpix(got.crpix).0);
        assert_eq!(key_of(&out, "CRPIX2"), stamp.crpix(got.crpix).1);
    }
}

#[test]
fn a_radius_stamp_holds_what_a_circle_cutout_holds() {
    let dir = tempfile::tempdir().unwrap();
    let source = synthetic(dir.path());
    let wcs = wcs_of(&source, 0);
    // Inside, across an edge, a corner, a wide circle, and one that misses the image.
    let spots = [
        (80.3, 120.6, 5.0),
        (2.0, 100.4, 7.5),
        (299.4, 0.2, 3.2),
        (150.0, 100.0, 40.0),
        (-400.0, 50.0, 5.0),
    ];
    let stamps: Vec<(f64, f64, Extent)> = spots
        .iter()
        .map(|&(x, y, r)| {
            let (ra, dec) = wcs.pixel_to_sky(x, y).unwrap();
            (ra, dec, Extent::Radius(r * SCALE))
        })
        .collect();
    let got = crate::stamp::cut_stamps(&source, "butler://demo/src", None, &stamps, None).unwrap();
    assert!(matches!(got.stamps[4], Err(SodaError::NoOverlap { .. })));
    for (n, &(ra, dec, extent)) in stamps.iter().enumerate().take(4) {
        let Extent::Radius(radius) = extent else {
            unreachable!()
        };
        let stamp = got.stamps[n].as_ref().unwrap();
        let stencil = Stencil::circle(ra, dec, radius).unwrap();
        let out = dir.path().join(format!("r{n}.fits"));
        let cutout = cut_to_file(&source, &stencil, &provenance(&stencil), &out).unwrap();
        let r = cutout.region;
        assert_eq!(
            (stamp.window.x0, stamp.window.y0),
            (r.x0 as i64, r.y0 as i64),
            "stamp {n}"
        );
        assert_eq!(
            (stamp.window.width, stamp.window.height),
            (r.width(), r.height()),
            "stamp {n}"
        );
        let mut f = FitsFile::open(&out).unwrap();
        let hdu = f.hdu(1).unwrap();
        let single: Vec<f32> = hdu.read_image(&mut f).unwrap();
        assert_eq!(single.len(), stamp.pixels.len(), "stamp {n}");
        assert!(
            single.iter().zip(&stamp.pixels).all(|(a, b)| a == b),
            "stamp {n}"
        );
        assert_eq!(key_of(&out, "CRPIX1"), stamp.crpix(got.crpix).0);
        assert_eq!(key_of(&out, "CRPIX2"), stamp.crpix(got.crpix).1);
    }
    // Clipped at the edge, so not square.
    let edge = got.stamps[1].as_ref().unwrap();
    assert!(edge.window.width < edge.window.height, "{:?}", edge.window);
    // Past the limit a side, a radius stamp is refused alone, before its pixels are read.
    let wide = stamps[3].2;
    let limited = crate::stamp::cut_stamps(
        &source,
        "butler://demo/src",
        None,
        &[stamps[0], stamps[3]],
        Some(60),
    )
    .unwrap();
    assert!(limited.stamps[0].is_ok());
    assert!(
        matches!(&limited.stamps[1], Err(SodaError::Usage(m)) if m.contains("max_stamp_size")),
        "{wide:?}: {:?}",
        limited.stamps[1]
    );
}

#[test]
fn stamps_hold_physical_values_with_blank_pixels_as_nan() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("scaled.fits");
    integer_image_with_blank(&source, ImageType::Short, 0, |v| v as i16, Some(2021));
    {
        let mut f = FitsFile::edit(&source).unwrap();
        let hdu = f.hdu(1).unwrap();
        hdu.write_key(&mut f, "BSCALE", 0.5).unwrap();
        hdu.write_key(&mut f, "BZERO", 10.0).unwrap();
    }
    let (ra, dec) = wcs_of(&source, 1).pixel_to_sky(21.0, 2.0).unwrap();
    let got = crate::stamp::cut_stamps(
        &source,
        "s",
        Some("SCI"),
        &[(ra, dec, Extent::Size(3))],
        None,
    )
    .unwrap();
    let stamp = got.stamps[0].as_ref().unwrap();
    // Rows 1..=3, columns 20..=22; stored 1000 y + x, and 2021 is BLANK.
    let expected: Vec<f32> = (1..=3)
        .flat_map(|y| (20..=22).map(move |x| (1000 * y + x) as f32 * 0.5 + 10.0))
        .collect();
    for (n, (a, b)) in stamp.pixels.iter().zip(&expected).enumerate() {
        if n == 4 {
            assert!(a.is_nan(), "the BLANK pixel gave {a}");
        } else {
            assert_eq!(a, b, "pixel {n}");
        }
    }
}

#[test]
fn cutout_keeps_sky_position_of_every_pixel() {
    let dir = tempfile::tempdir().unwrap();
    let source = synthetic(dir.path());
    let stencil = circle_at(&source, 250.0, 30.0, 40.0);
    let out = dir.path().join("out.fits");
    let r = cut_to_file(&source, &stencil, &provenance(&stencil), &out)
        .unwrap()
        .region;
    let (src_wcs, out_wcs) = (wcs_of(&source, 0), wcs_of(&out, 1));
    for (i, j) in [
        (0, 0),
        (r.width() - 1, 0),
        (0, r.height() - 1),
        (17, 23),
        (40, 40),
    ] {
        let a = out_wcs.pixel_to_sky(i as f64, j as f64).unwrap();
        let b = src_wcs
            .pixel_to_sky((r.x0 + i) as f64, (r.y0 + j) as f64)
            .unwrap();
        assert!(
            (a.0 - b.0).abs() < 1e-9 && (a.1 - b.1).abs() < 1e-9,
            "{a:?} {b:?}"
        );
    }
}

#[test]
fn cutout_header_carries_provenance() {
    let dir = tempfile::tempdir().unwrap();
    let source = synthetic(dir.path());
    let (ra, dec) = wcs_of(&source, 0).pixel_to_sky(150.0, 100.0).unwrap();
    let d = 10.0 * SCALE;
    // A long polygon stencil, which does not fit on one header card.
    let stencil = Stencil::parse_polygon(&format!(
        "{} {} {} {} {} {} {} {}",
        ra - d,
        dec - d,
        ra + d,
        dec - d,
        ra + d,
        dec + d,
        ra - d,
        dec + d
    ))
    .unwrap();
    let out = dir.path().join("out.fits");
    let r = cut_to_file(&source, &stencil, &provenance(&stencil), &out)
        .unwrap()
        .region;

    let mut f = FitsFile::open(&out).unwrap();
    let hdu = f.hdu(1).unwrap();
    let text = |f: &mut FitsFile, k: &str| hdu.read_key::<String>(f, k).unwrap();
    assert_eq!(text(&mut f, "EXTNAME"), "CUTOUT");
    assert_eq!(text(&mut f, "SKYCSRC"), "butler://demo/src");
    assert_eq!(text(&mut f, "DATE"), "2025-01-02T03:04:05");
    assert_eq!(text(&mut f, "CREATOR"), "skycut 0.1.0");
    assert_eq!(text(&mut f, "RADESYS"), "ICRS");
    assert_eq!(text(&mut f, "CTYPE1"), "RA---TAN");
    assert_eq!(
        hdu.read_key::<i64>(&mut f, "SKYCX0").unwrap(),
        r.x0 as i64 + 1
    );
    assert_eq!(
        hdu.read_key::<i64>(&mut f, "SKYCY0").unwrap(),
        r.y0 as i64 + 1
    );
    let mut stencil_text = text(&mut f, "SKYCSTCL");
    for i in 1.. {
        match hdu.read_key::<String>(&mut f, &format!("SKYCST{i:02}")) {
            Ok(part) => stencil_text.push_str(&part),
            Err(_) => break,
        }
    }
    assert!(stencil.to_string().len() > 68);
    assert_eq!(stencil_text, stencil.to_string());
}

#[test]
fn cutout_header_carries_the_observation_time() {
    let dir = tempfile::tempdir().unwrap();
    let source = synthetic(dir.path());
    {
        let mut f = FitsFile::edit(&source).unwrap();
        let hdu = f.hdu(0).unwrap();
        hdu.write_key(&mut f, "DATE-OBS", "2024-03-01T04:05:06.5")
            .unwrap();
        hdu.write_key(&mut f, "TIMESYS", "TAI").unwrap();
        hdu.write_key(&mut f, "MJD-BEG", 60370.17).unwrap();
        hdu.write_key(&mut f, "EXPTIME", 30.0).unwrap();
    }
    let stencil = circle_at(&source, 40.0, 30.0, 5.0);
    let out = dir.path().join("out.fits");
    cut_to_file(&source, &stencil, &provenance(&stencil), &out).unwrap();

    let mut f = FitsFile::open(&out).unwrap();
    let hdu = f.hdu(1).unwrap();
    let text = |f: &mut FitsFile, k: &str| hdu.read_key::<String>(f, k).unwrap();
    assert_eq!(text(&mut f, "DATE-OBS"), "2024-03-01T04:05:06.5");
    assert_eq!(text(&mut f, "TIMESYS"), "TAI");
    assert_eq!(hdu.read_key::<f64>(&mut f, "MJD-BEG").unwrap(), 60370.17);
    assert_eq!(hdu.read_key::<f64>(&mut f, "EXPTIME").unwrap(), 30.0);
}

#[test]
fn a_malformed_observation_date_does_not_stop_a_cutout() {
    let dir = tempfile::tempdir().unwrap();
    let source = synthetic(dir.path());
    {
        let mut f = FitsFile::edit(&source).unwrap();
        let hdu = f.hdu(0).unwrap();
        hdu.write_key(&mut f, "DATE-OBS", "last tuesday").unwrap();
    }
    let stencil = circle_at(&source, 40.0, 30.0, 5.0);
    let out = dir.path().join("out.fits");
    cut_to_file(&source, &stencil, &provenance(&stencil), &out).unwrap();
    let mut f = FitsFile::open(&out).unwrap();
    let hdu = f.hdu(1).unwrap();
    assert_eq!(
        hdu.read_key::<String>(&mut f, "DATE-OBS").unwrap(),
        "last tuesday"
    );
}

#[test]
fn stencil_off_the_image_is_no_overlap() {
    let dir = tempfile::tempdir().unwrap();
    let source = synthetic(dir.path());
    let stencil = Stencil::parse_circle("200 -41 0.1").unwrap();
    let out = dir.path().join("out.fits");
    let error = cut_to_file(&source, &stencil, &provenance(&stencil), &out).unwrap_err();
    assert_eq!(
        error,
        SodaError::NoOverlap {
            source: "butler://demo/src".to_owned()
        }
    );
    assert!(!out.exists());
}

#[test]
fn existing_output_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let source = synthetic(dir.path());
    let out = dir.path().join("out.fits");
    std::fs::write(&out, b"old").unwrap();
    let stencil = circle_at(&source, 10.0, 10.0, 5.0);
    let cutout = cut_to_file(&source, &stencil, &provenance(&stencil), &out).unwrap();
    assert!(cutout.bytes >= 2 * 2880);
}

/// Writes a 64 x 48 integer image in an IMAGE extension after an empty primary, with
/// pixel (x, y) = 1000 * y + x + offset.
fn integer_image<T: WriteImage>(
    path: &Path,
    data_type: ImageType,
    offset: i64,
    cast: fn(i64) -> T,
) {
    integer_image_with_blank(path, data_type, offset, cast, Some(-1));
}

fn integer_image_with_blank<T: WriteImage>(
    path: &Path,
    data_type: ImageType,
    offset: i64,
    cast: fn(i64) -> T,
    blank: Option<i64>,
) {
    let mut f = FitsFile::create(path).open().unwrap();
    let hdu = f
        .create_image(
            "SCI",
            &ImageDescription {
                data_type,
                dimensions: &[48, 64],
            },
        )
        .unwrap();
    write_test_wcs(&mut f, &hdu);
    if let Some(blank) = blank {
        hdu.write_key(&mut f, "BLANK", blank).unwrap();
    }
    let data: Vec<T> = (0..48)
        .flat_map(|y| (0..64).map(move |x| cast(1000 * y + x + offset)))
        .collect();
    hdu.write_image(&mut f, &data).unwrap();
}

/// The TAN WCS of the 64 x 48 test images: 1 arcsec pixels around (83.8, -5.4).
fn write_test_wcs(f: &mut FitsFile, hdu: &FitsHdu) {
    for (k, v) in [
        ("CTYPE1", "RA---TAN"),
        ("CTYPE2", "DEC--TAN"),
        ("RADESYS", "ICRS"),
    ] {
        hdu.write_key(f, k, v).unwrap();
    }
    for (k, v) in [
        ("CRPIX1", 32.5),
        ("CRPIX2", 24.5),
        ("CRVAL1", 83.8),
        ("CRVAL2", -5.4),
        ("CDELT1", -SCALE),
        ("CDELT2", SCALE),
        ("PC1_1", 1.0),
        ("PC2_2", 1.0),
    ] {
        hdu.write_key(f, k, v).unwrap();
    }
}

fn check_integer_cutout<T>(data_type: ImageType, offset: i64, cast: fn(i64) -> T)
where
    T: WriteImage + PartialEq + std::fmt::Debug,
    Vec<T>: ReadImage,
{
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("int.fits");
    integer_image(&source, data_type, offset, cast);
    let (ra, dec) = wcs_of(&source, 1).pixel_to_sky(20.0, 30.0).unwrap();
    let stencil = Stencil::parse_circle(&format!("{ra} {dec} {}", 5.0 * SCALE)).unwrap();
    let out = dir.path().join("out.fits");
    let r = cut_to_file(&source, &stencil, &provenance(&stencil), &out)
        .unwrap()
        .region;
    assert_eq!((r.x0, r.x1, r.y0, r.y1), (15, 25, 25, 35));
    let mut f = FitsFile::open(&out).unwrap();
    let hdu = f.hdu(1).unwrap();
    assert!(matches!(&hdu.info, HduInfo::ImageInfo { image_type, .. } if *image_type == data_type));
    let blank = hdu.read_key::<i64>(&mut f, "BLANK").ok();
    let integer = !matches!(data_type, ImageType::Float | ImageType::Double);
    assert_eq!(blank, integer.then_some(-1));
    let pixels: Vec<T> = hdu.read_image(&mut f).unwrap();
    let expected: Vec<T> = (r.y0..=r.y1)
        .flat_map(|y| (r.x0..=r.x1).map(move |x| cast(1000 * y as i64 + x as i64 + offset)))
        .collect();
    assert_eq!(pixels, expected);
}

#[test]
fn integer_images_are_copied_exactly() {
    check_integer_cutout(ImageType::Short, -20_000, |v| v as i16);
    check_integer_cutout(ImageType::UnsignedShort, 20_000, |v| v as u16);
    check_integer_cutout(ImageType::Long, 2_000_000_000, |v| v as i32);
    check_integer_cutout(ImageType::Double, 0, |v| v as f64 + 0.25);
}

/// A 64 x 48 integer image stored with real scaling: `bitpix`'s type, BSCALE and BZERO
/// (written as the given card values), BLANK, and stored pixel (x, y) = `stored(x, y)`
/// except at the [`BLANK_PIXELS`], which hold BLANK.
struct Scaled {
    bitpix: Bitpix,
    bscale: &'static str,
    bzero: &'static str,
    blank: i64,
    stored: fn(i64, i64) -> i64,
}

/// Source pixels holding BLANK, inside the 11 x 11 box around (20, 30) that the tests cut.
const BLANK_PIXELS: [(i64, i64); 2] = [(18, 28), (22, 33)];

/// Every BITPIX, with the unsigned-16 and signed-byte conventions and real scalings.
fn scaled_images() -> Vec<Scaled> {
    vec![
        // Signed bytes: stored 0..255 is -128..127.
        Scaled {
            bitpix: Bitpix::U8,
            bscale: "1",
            bzero: "-128",
            blank: 0,
            stored: |x, y| (7 * x + 13 * y) % 255 + 1,
        },
        Scaled {
            bitpix: Bitpix::U8,
            bscale: "0.1",
            bzero: "-3.25",
            blank: 255,
            stored: |x, y| (3 * x + 5 * y) % 250,
        },
        // Unsigned 16: stored -32768..32767 is 0..65535.
        Scaled {
            bitpix: Bitpix::I16,
            bscale: "1",
            bzero: "32768",
            blank: -32768,
            stored: |x, y| 1000 * y + x - 20_000,
        },
        Scaled {
            bitpix: Bitpix::I16,
            bscale: "0.0123",
            bzero: "-300.5",
            blank: -1,
            stored: |x, y| 1000 * y + x - 30_000,
        },
        Scaled {
            bitpix: Bitpix::I32,
            bscale: "2.5E-3",
            bzero: "100000.75",
            blank: i64::from(i32::MIN),
            stored: |x, y| 40_000_000 * (y - 24) + x,
        },
        Scaled {
            bitpix: Bitpix::I64,
            bscale: "1.0E-6",
            bzero: "3.0",
            blank: -1,
            stored: |x, y| (1 << 60) + 1000 * y + x,
        },
    ]
}

fn scaled_image(path: &Path, image: &Scaled) {
    let mut f = FitsFile::create(path).open().unwrap();
    let hdu = f
        .create_image(
            "SCI",
            &ImageDescription {
                data_type: image.bitpix.image_type(),
                dimensions: &[48, 64],
            },
        )
        .unwrap();
    write_test_wcs(&mut f, &hdu);
    let bscale: f64 = image.bscale.parse().unwrap();
    let bzero: f64 = image.bzero.parse().unwrap();
    hdu.write_key(&mut f, "BSCALE", bscale).unwrap();
    hdu.write_key(&mut f, "BZERO", bzero).unwrap();
    hdu.write_key(&mut f, "BLANK", image.blank).unwrap();
    // Write the stored values themselves: cfitsio converts i64 to the BITPIX exactly.
    unscaled::disable_scaling(&mut f, &hdu).unwrap();
    let data: Vec<i64> = (0..48)
        .flat_map(|y| {
            (0..64).map(move |x| {
                if BLANK_PIXELS.contains(&(x, y)) {
                    image.blank
                } else {
                    (image.stored)(x, y)
                }
            })
        })
        .collect();
    hdu.write_image(&mut f, &data).unwrap();
}

/// The stored values of the 11 x 11 box at `(x0, y0)` of `hdu` (all of it when `box_at` is
/// `None`), with scaling off.
fn stored_values(path: &Path, hdu: usize, box_at: Option<(usize, usize)>) -> Vec<i64> {
    let mut f = FitsFile::open(path).unwrap();
    let hdu = f.hdu(hdu).unwrap();
    unscaled::disable_scaling(&mut f, &hdu).unwrap();
    match box_at {
        Some((x0, y0)) => hdu
            .read_region(&mut f, &[&(x0..x0 + 11), &(y0..y0 + 11)])
            .unwrap(),
        None => hdu.read_image(&mut f).unwrap(),
    }
}

/// The physical values (cfitsio applies BSCALE and BZERO) of the same pixels.
fn physical_values(path: &Path, hdu: usize, box_at: Option<(usize, usize)>) -> Vec<f64> {
    let mut f = FitsFile::open(path).unwrap();
    let hdu = f.hdu(hdu).unwrap();
    match box_at {
        Some((x0, y0)) => hdu
            .read_region(&mut f, &[&(x0..x0 + 11), &(y0..y0 + 11)])
            .unwrap(),
        None => hdu.read_image(&mut f).unwrap(),
    }
}

fn cut_scaled(image: &Scaled, dir: &Path, mask: bool) -> (PathBuf, PathBuf) {
    let source = dir.join("scaled.fits");
    if source.exists() {
        std::fs::remove_file(&source).unwrap();
    }
    scaled_image(&source, image);
    let (ra, dec) = wcs_of(&source, 1).pixel_to_sky(20.0, 30.0).unwrap();
    let stencil = Stencil::parse_circle(&format!("{ra} {dec} {}", 5.0 * SCALE)).unwrap();
    let out = dir.join("out.fits");
    let options = CutOptions {
        mask,
        ..CutOptions::default()
    };
    let r = cut_to_file_with(&source, &stencil, &provenance(&stencil), &out, options)
        .unwrap()
        .region;
    assert_eq!((r.x0, r.y0, r.width(), r.height()), (15, 25, 11, 11));
    (source, out)
}

#[test]
fn scaled_integer_images_keep_stored_values_and_scaling_keywords_for_every_bitpix() {
    let dir = tempfile::tempdir().unwrap();
    for image in scaled_images() {
        let what = format!(
            "{:?} BSCALE {} BZERO {}",
            image.bitpix, image.bscale, image.bzero
        );
        let (source, out) = cut_scaled(&image, dir.path(), false);
        let mut f = FitsFile::open(&out).unwrap();
        let hdu = f.hdu(1).unwrap();
        let mut s = FitsFile::open(&source).unwrap();
        let src = s.hdu(1).unwrap();
        for key in ["BITPIX", "BSCALE", "BZERO", "BLANK"] {
            // The value text, so that a copy through f64 that altered it would show.
            let text = |f: &mut FitsFile, h: &FitsHdu| h.read_key::<String>(f, key).unwrap();
            assert_eq!(text(&mut f, &hdu), text(&mut s, &src), "{key} of {what}");
        }
        let stored = stored_values(&out, 1, None);
        assert_eq!(stored, stored_values(&source, 1, Some((15, 25))), "{what}");
        // Both BLANK pixels were copied as BLANK, and the others are not BLANK.
        let blanks: Vec<usize> = (0..stored.len())
            .filter(|&i| stored[i] == image.blank)
            .collect();
        assert_eq!(blanks, [3 * 11 + 3, 8 * 11 + 7], "{what}");
        let physical = physical_values(&out, 1, None);
        assert_eq!(
            physical,
            physical_values(&source, 1, Some((15, 25))),
            "{what}"
        );
        let (bscale, bzero): (f64, f64) =
            (image.bscale.parse().unwrap(), image.bzero.parse().unwrap());
        let expected = (image.stored)(16, 26) as f64 * bscale + bzero;
        assert!(
            (physical[11 + 1] - expected).abs() <= expected.abs() * 1e-12,
            "{what}: {} != {expected}",
            physical[11 + 1]
        );
    }
}

#[test]
fn mask_on_scaled_integer_images_writes_blank_in_stored_units() {
    let dir = tempfile::tempdir().unwrap();
    for image in scaled_images() {
        let what = format!(
            "{:?} BSCALE {} BZERO {}",
            image.bitpix, image.bscale, image.bzero
        );
        let (source, out) = cut_scaled(&image, dir.path(), true);
        let mut f = FitsFile::open(&out).unwrap();
        let hdu = f.hdu(1).unwrap();
        assert_eq!(hdu.read_key::<i64>(&mut f, "BLANK").unwrap(), image.blank);
        let stored = stored_values(&out, 1, None);
        let source = stored_values(&source, 1, Some((15, 25)));
        // The corner is outside the circle, the centre inside.
        assert_eq!(stored[0], image.blank, "{what}");
        assert_eq!(stored[5 * 11 + 5], source[5 * 11 + 5], "{what}");
        assert_eq!(stored[5 * 11 + 5], (image.stored)(20, 30), "{what}");
    }
}

#[test]
fn a_tile_compressed_scaled_integer_image_cuts_like_the_plain_one() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.fits");
    let packed = dir.path().join("packed.fits.fz");
    // cfitsio writes the unsigned values through BZERO 32768, compressing the second file.
    let unsigned = |v: i64| v as u16;
    integer_image(&plain, ImageType::UnsignedShort, 20_000, unsigned);
    let spec = format!("{}[compress GZIP 16,16]", packed.display());
    integer_image(Path::new(&spec), ImageType::UnsignedShort, 20_000, unsigned);
    let mut f = FitsFile::open(&packed).unwrap();
    let hdu = f.hdu(1).unwrap();
    assert_eq!(hdu.read_key::<i64>(&mut f, "ZBITPIX").unwrap(), 16);
    assert_eq!(hdu.read_key::<i64>(&mut f, "BZERO").unwrap(), 32768);
    drop(f);
    let (ra, dec) = wcs_of(&plain, 1).pixel_to_sky(20.0, 30.0).unwrap();
    let stencil = Stencil::parse_circle(&format!("{ra} {dec} {}", 5.0 * SCALE)).unwrap();
    let cut = |source: &Path, name: &str| {
        let out = dir.path().join(name);
        cut_to_file(source, &stencil, &provenance(&stencil), &out).unwrap();
        let mut f = FitsFile::open(&out).unwrap();
        let hdu = f.hdu(1).unwrap();
        assert_eq!(hdu.read_key::<String>(&mut f, "BZERO").unwrap(), "32768");
        (stored_values(&out, 1, None), physical_values(&out, 1, None))
    };
    let (stored, physical) = cut(&packed, "b.fits");
    assert_eq!((stored.clone(), physical.clone()), cut(&plain, "a.fits"));
    // Pixel (20, 30), the centre of the 11 x 11 box.
    assert_eq!(physical[5 * 11 + 5], (1000 * 30 + 20 + 20_000) as f64);
    assert_eq!(stored[5 * 11 + 5], 1000 * 30 + 20 + 20_000 - 32768);
}

#[test]
fn image_without_celestial_wcs_is_bad_image() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("nowcs.fits");
    let description = ImageDescription {
        data_type: ImageType::Float,
        dimensions: &[10, 10],
    };
    let mut f = FitsFile::create(&source)
        .with_custom_primary(&description)
        .open()
        .unwrap();
    f.primary_hdu()
        .unwrap()
        .write_image(&mut f, &[0.0_f32; 100])
        .unwrap();
    drop(f);
    let stencil = Stencil::parse_circle("10 10 1").unwrap();
    let out = dir.path().join("out.fits");
    let error = cut_to_file(&source, &stencil, &provenance(&stencil), &out).unwrap_err();
    assert!(matches!(error, SodaError::BadImage(_)), "{error:?}");
}

#[test]
fn missing_source_is_a_fits_error() {
    let dir = tempfile::tempdir().unwrap();
    let stencil = Stencil::parse_circle("10 10 1").unwrap();
    let error = cut_to_file(
        &dir.path().join("absent.fits"),
        &stencil,
        &provenance(&stencil),
        &dir.path().join("out.fits"),
    )
    .unwrap_err();
    assert!(matches!(error, SodaError::Fits(_)), "{error:?}");
}

#[test]
fn many_threads_can_cut_the_same_source_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let source = synthetic(dir.path());
    let stencil = circle_at(&source, 150.0, 100.0, 60.0);
    let provenance = provenance(&stencil);
    let outputs: Vec<Vec<f32>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let (source, stencil, provenance) = (&source, &stencil, &provenance);
                let out = dir.path().join(format!("out{i}.fits"));
                scope.spawn(move || {
                    cut_to_file(source, stencil, provenance, &out).unwrap();
                    let mut f = FitsFile::open(&out).unwrap();
                    let hdu = f.hdu(1).unwrap();
                    hdu.read_image::<Vec<f32>>(&mut f).unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(outputs.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(outputs[0].len(), 121 * 121);
}

/// The source locks are taken only where cfitsio makes readers of one file share its buffers;
/// this cfitsio (thread-safe, 4.x) gives each read-only handle its own, and attaches only handles
/// opened for writing, which the probe must see too.
#[test]
fn readers_of_one_source_have_a_file_structure_each() {
    let dir = tempfile::tempdir().unwrap();
    let source = synthetic(dir.path());
    assert!(!unscaled::readers_share_files(&source).unwrap());
    assert!(crate::image::lock_source(&source).is_none());
    let mut first = FitsFile::edit(&source).unwrap();
    let mut second = FitsFile::edit(&source).unwrap();
    assert!(unscaled::same_structure(&mut first, &mut second));
}

/// Where the locks are taken, one file takes one lock whatever the spelling of its path, and
/// files spread over all of them.
#[test]
fn every_spelling_of_a_source_s_path_takes_the_same_lock() {
    let dir = tempfile::tempdir().unwrap();
    let source = synthetic(dir.path());
    let detour = dir.path().join(".").join("src.fits");
    assert_eq!(
        crate::image::lock_index(&source),
        crate::image::lock_index(&detour)
    );
    let used: std::collections::HashSet<usize> = (0..2_000)
        .map(|i| crate::image::lock_index(Path::new(&format!("/data/image-{i}.fits"))))
        .collect();
    assert_eq!(used.len(), 64);
}

/// Unlocked readers of one scaled source in many threads: cutouts (which switch scaling off on
/// their handle) and plain readers (which keep it on) each see exactly what they see alone.
#[test]
fn many_threads_cut_and_read_one_scaled_source_each_as_if_alone() {
    let dir = tempfile::tempdir().unwrap();
    let image = &scaled_images()[3];
    let source = dir.path().join("scaled.fits");
    scaled_image(&source, image);
    let wcs = wcs_of(&source, 1);
    let stencils: Vec<Stencil> = [(20.0, 30.0, 5.0), (40.0, 10.0, 8.0), (5.0, 40.0, 12.0)]
        .iter()
        .map(|&(x, y, r)| {
            let (ra, dec) = wcs.pixel_to_sky(x, y).unwrap();
            Stencil::parse_circle(&format!("{ra} {dec} {}", r * SCALE)).unwrap()
        })
        .collect();
    let cut = |n: usize, out: &Path| {
        let options = CutOptions {
            mask: n % 2 == 1,
            ..CutOptions::default()
        };
        let stencil = &stencils[n % stencils.len()];
        cut_to_file_with(&source, stencil, &provenance(stencil), out, options).unwrap();
        stored_values(out, 1, None)
    };
    let alone: Vec<Vec<i64>> = (0..6)
        .map(|n| cut(n, &dir.path().join(format!("alone{n}.fits"))))
        .collect();
    let physical = physical_values(&source, 1, None);
    std::thread::scope(|scope| {
        for t in 0..8 {
            let (cut, alone, physical, source) = (&cut, &alone, &physical, &source);
            let out = dir.path().join(format!("thread{t}.fits"));
            scope.spawn(move || {
                for round in 0..12 {
                    if t % 4 == 3 {
                        assert_eq!(&physical_values(source, 1, None), physical, "reader {t}");
                    } else {
                        let n = t + round;
                        assert_eq!(&cut(n % 6, &out), &alone[n % 6], "thread {t} round {round}");
                    }
                }
            });
        }
    });
}

#[test]
fn mask_blanks_float_pixels_outside_the_stencil_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let source = synthetic(dir.path());
    let stencil = circle_at(&source, 80.0, 120.0, 20.0);
    let out = dir.path().join("out.fits");
    let options = CutOptions {
        mask: true,
        ..CutOptions::default()
    };
    let r = cut_to_file_with(&source, &stencil, &provenance(&stencil), &out, options)
        .unwrap()
        .region;
    let wcs = wcs_of(&source, 0);
    let mut f = FitsFile::open(&out).unwrap();
    let hdu = f.hdu(1).unwrap();
    let pixels: Vec<f32> = hdu.read_image(&mut f).unwrap();
    let (mut kept, mut blanked) = (0, 0);
    for j in 0..r.height() {
        for i in 0..r.width() {
            let (x, y) = (r.x0 + i, r.y0 + j);
            let (ra, dec) = wcs.pixel_to_sky(x as f64, y as f64).unwrap();
            let value = pixels[j * r.width() + i];
            if stencil.contains(ra, dec) {
                assert_eq!(value, (y * NX + x) as f32);
                kept += 1;
            } else {
                assert!(value.is_nan(), "({i}, {j}) = {value}");
                blanked += 1;
            }
        }
    }
    // A disc of radius 20 px in a 41 x 41 square: about pi/4 of it is kept.
    assert!(
        (1200..1330).contains(&kept),
        "{kept} kept, {blanked} blanked"
    );
    assert!(hdu.read_key::<i64>(&mut f, "BLANK").is_err());
}

#[test]
fn mask_uses_the_blank_value_of_integer_images() {
    let dir = tempfile::tempdir().unwrap();
    for (data_type, offset, blank) in [
        (ImageType::Short, -20_000, -1_i64),
        (ImageType::UnsignedShort, 100, 32767),
        (ImageType::Long, 100, -1),
    ] {
        let source = dir.path().join("int.fits");
        if source.exists() {
            std::fs::remove_file(&source).unwrap();
        }
        integer_image(&source, data_type, offset, |v| v as i32);
        let (ra, dec) = wcs_of(&source, 1).pixel_to_sky(20.0, 30.0).unwrap();
        let stencil = Stencil::parse_circle(&format!("{ra} {dec} {}", 5.0 * SCALE)).unwrap();
        let out = dir.path().join("out.fits");
        let options = CutOptions {
            mask: true,
            ..CutOptions::default()
        };
        cut_to_file_with(&source, &stencil, &provenance(&stencil), &out, options).unwrap();
        let mut f = FitsFile::open(&out).unwrap();
        let hdu = f.hdu(1).unwrap();
        assert_eq!(hdu.read_key::<i64>(&mut f, "BLANK").unwrap(), -1);
        let pixels: Vec<i64> = hdu.read_image(&mut f).unwrap();
        // 11 x 11 box; the corner is outside the circle, the centre inside.
        assert_eq!(pixels[0], blank, "{data_type:?}");
        assert_eq!(pixels[5 * 11 + 5], 1000 * 30 + 20 + offset, "{data_type:?}");
    }
}

#[test]
fn mask_declares_a_blank_for_integer_images_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("int.fits");
    integer_image_with_blank(&source, ImageType::Short, 0, |v| v as i16, None);
    let (ra, dec) = wcs_of(&source, 1).pixel_to_sky(20.0, 30.0).unwrap();
    let stencil = Stencil::parse_circle(&format!("{ra} {dec} {}", 5.0 * SCALE)).unwrap();
    let out = dir.path().join("out.fits");
    let options = CutOptions {
        mask: true,
        ..CutOptions::default()
    };
    cut_to_file_with(&source, &stencil, &provenance(&stencil), &out, options).unwrap();
    let mut f = FitsFile::open(&out).unwrap();
    let hdu = f.hdu(1).unwrap();
    assert_eq!(hdu.read_key::<i64>(&mut f, "BLANK").unwrap(), -32768);
    let pixels: Vec<i16> = hdu.read_image(&mut f).unwrap();
    assert_eq!(pixels[0], i16::MIN);
}

/// Writes a 64 x 48 x 6 float cube (NAXIS3 a wavelength axis, 500, 510, ... 550 nm) with
/// pixel (x, y, k) = 100000 * k + 1000 * y + x.
fn cube(path: &Path) {
    let mut f = FitsFile::create(path).open().unwrap();
    let hdu = f
        .create_image(
            "CUBE",
            &ImageDescription {
                data_type: ImageType::Float,
                dimensions: &[6, 48, 64],
            },
        )
        .unwrap();
    for (k, v) in [
        ("CTYPE1", "RA---TAN"),
        ("CTYPE2", "DEC--TAN"),
        ("CTYPE3", "WAVE"),
        ("CUNIT3", "nm"),
    ] {
        hdu.write_key(&mut f, k, v).unwrap();
    }
    for (k, v) in [
        ("CRPIX1", 32.5),
        ("CRPIX2", 24.5),
        ("CRVAL1", 83.8),
        ("CRVAL2", -5.4),
        ("CDELT1", -SCALE),
        ("CDELT2", SCALE),
        ("CRPIX3", 1.0),
        ("CRVAL3", 500.0),
        ("CDELT3", 10.0),
    ] {
        hdu.write_key(&mut f, k, v).unwrap();
    }
    let data: Vec<f32> = (0..6)
        .flat_map(|k| {
            (0..48).flat_map(move |y| (0..64).map(move |x| (100_000 * k + 1000 * y + x) as f32))
        })
        .collect();
    hdu.write_image(&mut f, &data).unwrap();
}

/// Cuts the cube with a 5-pixel circle around (20, 30) and `options`; returns the output
/// shape (C order), its pixels and its CRPIX3.
fn cut_cube(options: CutOptions) -> Result<(Vec<usize>, Vec<f32>, f64, PixelBox), SodaError> {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("cube.fits");
    cube(&source);
    let mut f = FitsFile::open(&source).unwrap();
    let h = f.hdu(1).unwrap();
    let wcs = CelestialWcs::new(64, 48, &WcsKeywords::read(&mut f, &h).unwrap()).unwrap();
    let (ra, dec) = wcs.pixel_to_sky(20.0, 30.0).unwrap();
    let stencil = Stencil::parse_circle(&format!("{ra} {dec} {}", 5.0 * SCALE)).unwrap();
    let out = dir.path().join("out.fits");
    let r = cut_to_file_with(&source, &stencil, &provenance(&stencil), &out, options)?.region;
    let mut f = FitsFile::open(&out).unwrap();
    let hdu = f.hdu(1).unwrap();
    let HduInfo::ImageInfo { shape, .. } = &hdu.info else {
        panic!("not an image")
    };
    let shape = shape.clone();
    let crpix3 = hdu.read_key::<f64>(&mut f, "CRPIX3").unwrap();
    assert_eq!(hdu.read_key::<String>(&mut f, "CTYPE3").unwrap(), "WAVE");
    Ok((shape, hdu.read_image(&mut f).unwrap(), crpix3, r))
}

/// Cuts `source` twice: from the file, and from a copy of its size holding only the headers
/// the `layout` walk names and the bytes `cutout_reads` plans (the rest zeros, as in a
/// sparse file's holes, never the source's values); both outputs must be byte-identical, and
/// the planned bytes few.
fn cut_from_planned_bytes(source: &Path, stencil: &Stencil, options: CutOptions) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(source).unwrap();
    let size = bytes.len() as u64;
    let crate::layout::Walk::Found(hdus) =
        crate::layout::walk(&[(0, &bytes[..])], size, options.extension.as_deref())
    else {
        panic!("the walk found no image");
    };
    let holey = dir.path().join("holey.fits");
    let mut copy = vec![0u8; bytes.len()];
    for hdu in &hdus {
        let r = hdu.header.start as usize..hdu.header.end as usize;
        copy[r.clone()].copy_from_slice(&bytes[r]);
    }
    std::fs::write(&holey, &copy).unwrap();
    let plan = cutout_reads(&holey, stencil, &options, "holey").unwrap();
    let image = hdus.last().unwrap();
    assert_eq!(plan.hdu, image.index);
    let mut planned = 0;
    for r in plan.byte_ranges(image.data_start) {
        planned += r.end - r.start;
        let r = r.start as usize..r.end as usize;
        copy[r.clone()].copy_from_slice(&bytes[r]);
    }
    std::fs::write(&holey, &copy).unwrap();
    let (a, b) = (dir.path().join("a.fits"), dir.path().join("b.fits"));
    let p = provenance(stencil);
    let cut = cut_to_file_with(source, stencil, &p, &a, options.clone()).unwrap();
    cut_to_file_with(&holey, stencil, &p, &b, options).unwrap();
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    assert!(planned >= cut.source_bytes);
    planned
}

#[test]
fn a_copy_holding_only_headers_and_planned_rows_cuts_like_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let source = synthetic(dir.path());
    // Inside, at a corner, and masked.
    let inside = circle_at(&source, 150.0, 100.0, 10.0);
    assert_eq!(
        cut_from_planned_bytes(&source, &inside, CutOptions::default()),
        21 * 21 * 4
    );
    let corner = circle_at(&source, 0.0, 0.0, 12.0);
    cut_from_planned_bytes(&source, &corner, CutOptions::default());
    let far_corner = circle_at(&source, NX as f64 - 1.0, NY as f64 - 1.0, 12.0);
    let masked = CutOptions {
        mask: true,
        ..CutOptions::default()
    };
    cut_from_planned_bytes(&source, &far_corner, masked);
    // A cube extension with and without BAND: every plane's rows, or the band's.
    let cube_path = dir.path().join("cube.fits");
    cube(&cube_path);
    let mut f = FitsFile::open(&cube_path).unwrap();
    let h = f.hdu(1).unwrap();
    let wcs = CelestialWcs::new(64, 48, &WcsKeywords::read(&mut f, &h).unwrap()).unwrap();
    let (ra, dec) = wcs.pixel_to_sky(20.0, 30.0).unwrap();
    let stencil = Stencil::parse_circle(&format!("{ra} {dec} {}", 5.0 * SCALE)).unwrap();
    let all = cut_from_planned_bytes(&cube_path, &stencil, CutOptions::default());
    assert_eq!(all, 6 * 11 * 11 * 4);
    let band = CutOptions {
        band: Some((515e-9, 540e-9)),
        extension: Some("cube".to_owned()),
        ..CutOptions::default()
    };
    assert_eq!(
        cut_from_planned_bytes(&cube_path, &stencil, band),
        3 * 11 * 11 * 4
    );
    // Scaled integers of every BITPIX, in a named extension.
    for (n, image) in scaled_images().iter().enumerate() {
        let path = dir.path().join(format!("scaled-{n}.fits"));
        scaled_image(&path, image);
        let mut f = FitsFile::open(&path).unwrap();
        let h = f.hdu(1).unwrap();
        let wcs = CelestialWcs::new(64, 48, &WcsKeywords::read(&mut f, &h).unwrap()).unwrap();
        let (ra, dec) = wcs.pixel_to_sky(20.0, 30.0).unwrap();
        let stencil = Stencil::parse_circle(&format!("{ra} {dec} {}", 5.0 * SCALE)).unwrap();
        let options = CutOptions {
            extension: Some("SCI".to_owned()),
            ..CutOptions::default()
        };
        cut_from_planned_bytes(&path, &stencil, options);
    }
}

#[test]
fn cube_keeps_every_plane_of_the_extra_axis() {
    let (shape, pixels, crpix3, r) = cut_cube(CutOptions::default()).unwrap();
    assert_eq!(shape, vec![6, 11, 11]);
    assert_eq!(crpix3, 1.0);
    let (w, h) = (r.width(), r.height());
    for k in 0..6 {
        for j in 0..h {
            for i in 0..w {
                let expected = 100_000 * k + 1000 * (r.y0 + j) + r.x0 + i;
                assert_eq!(pixels[(k * h + j) * w + i], expected as f32);
            }
        }
    }
}

#[test]
fn band_keeps_the_planes_whose_wavelength_it_holds() {
    // 515 to 540 nm: planes 2, 3 and 4 (520, 530, 540 nm).
    let options = CutOptions {
        band: Some((515e-9, 540e-9)),
        mask: true,
        ..CutOptions::default()
    };
    let (shape, pixels, crpix3, r) = cut_cube(options).unwrap();
    assert_eq!(shape, vec![3, 11, 11]);
    // Plane 0 of the cutout is source plane 2: its wavelength stays 520 nm.
    assert_eq!(crpix3, -1.0);
    let (w, h) = (r.width(), r.height());
    let centre = |k: usize| pixels[(k * h + 5) * w + 5];
    assert_eq!(centre(0), (200_000 + 1000 * 30 + 20) as f32);
    assert_eq!(centre(2), (400_000 + 1000 * 30 + 20) as f32);
    // The mask blanks the same corner pixel in every plane.
    assert!((0..3).all(|k| pixels[k * h * w].is_nan()));
}

#[test]
fn band_outside_the_cube_is_no_overlap() {
    let options = CutOptions {
        band: Some((600e-9, f64::INFINITY)),
        ..CutOptions::default()
    };
    assert!(matches!(
        cut_cube(options),
        Err(SodaError::NoOverlap { .. })
    ));
}

#[test]
fn band_on_an_image_without_wavelength_axis_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let source = synthetic(dir.path());
    let stencil = circle_at(&source, 50.0, 50.0, 5.0);
    let options = CutOptions {
        band: Some((1e-7, 1e-6)),
        ..CutOptions::default()
    };
    let out = dir.path().join("out.fits");
    let error =
        cut_to_file_with(&source, &stencil, &provenance(&stencil), &out, options).unwrap_err();
    assert!(matches!(error, SodaError::Usage(_)), "{error:?}");
}

/// A 16 x 12 x 4 x 3 cube: RA, Dec, Stokes I Q U V, and three exposures one hour apart from
/// MJD 60000 (TIME in seconds from MJDREF); every pixel of plane (s, t) holds 10 t + s.
fn stokes_time_cube(path: &Path) {
    let mut f = FitsFile::create(path)
        .with_custom_primary(&ImageDescription {
            data_type: ImageType::Float,
            dimensions: &[3, 4, 12, 16],
        })
        .open()
        .unwrap();
    let hdu = f.primary_hdu().unwrap();
    for (k, v) in [
        ("CTYPE1", "RA---TAN"),
        ("CTYPE2", "DEC--TAN"),
        ("CTYPE3", "STOKES"),
        ("CTYPE4", "TIME"),
        ("CUNIT4", "s"),
    ] {
        hdu.write_key(&mut f, k, v).unwrap();
    }
    for (k, v) in [
        ("CRPIX1", 8.5),
        ("CRPIX2", 6.5),
        ("CRVAL1", 83.8),
        ("CRVAL2", -5.4),
        ("CDELT1", -SCALE),
        ("CDELT2", SCALE),
        ("CRPIX3", 1.0),
        ("CRVAL3", 1.0),
        ("CDELT3", 1.0),
        ("CRPIX4", 1.0),
        ("CRVAL4", 0.0),
        ("CDELT4", 3600.0),
        ("MJDREF", 60000.0),
    ] {
        hdu.write_key(&mut f, k, v).unwrap();
    }
    let data: Vec<f32> = (0..3)
        .flat_map(|t| (0..4).flat_map(move |s| (0..12 * 16).map(move |_| (10 * t + s) as f32)))
        .collect();
    hdu.write_image(&mut f, &data).unwrap();
}

/// Cuts the whole Stokes-time cube with `options`: the output shape (C order), the plane
/// numbers it holds in order, and its CRPIX3 and CRPIX4.
fn cut_stokes_time(options: CutOptions) -> Result<(Vec<usize>, Vec<f32>, f64, f64), SodaError> {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("stokes.fits");
    stokes_time_cube(&source);
    let stencil = Stencil::parse_circle(&format!("83.8 -5.4 {}", 20.0 * SCALE)).unwrap();
    let out = dir.path().join("out.fits");
    cut_to_file_with(&source, &stencil, &provenance(&stencil), &out, options)?;
    let mut f = FitsFile::open(&out).unwrap();
    let hdu = f.hdu(1).unwrap();
    let HduInfo::ImageInfo { shape, .. } = &hdu.info else {
        panic!("not an image")
    };
    let shape = shape.clone();
    let pixels: Vec<f32> = hdu.read_image(&mut f).unwrap();
    let plane = shape[2] * shape[3];
    let planes = pixels.chunks(plane).map(|p| p[0]).collect();
    let mut crpix = |n: &str| hdu.read_key::<f64>(&mut f, n).unwrap();
    Ok((shape, planes, crpix("CRPIX3"), crpix("CRPIX4")))
}

#[test]
fn time_keeps_the_planes_of_the_time_axis_it_holds() {
    let hour = 1.0 / 24.0;
    let options = CutOptions {
        time: Some((60000.0 + 0.5 * hour, f64::INFINITY)),
        ..CutOptions::default()
    };
    let (shape, planes, crpix3, crpix4) = cut_stokes_time(options).unwrap();
    assert_eq!(shape, vec![2, 4, 12, 16]);
    assert_eq!(planes, [10.0, 11.0, 12.0, 13.0, 20.0, 21.0, 22.0, 23.0]);
    assert_eq!((crpix3, crpix4), (1.0, 0.0));
    let options = CutOptions {
        time: Some((f64::NEG_INFINITY, 59999.0)),
        ..CutOptions::default()
    };
    assert!(matches!(
        cut_stokes_time(options),
        Err(SodaError::NoOverlap { .. })
    ));
}

#[test]
fn pol_keeps_the_span_of_the_states_asked_for_in_axis_order() {
    // V and Q asked for, in that order: Q U V kept, as the axis holds them.
    let options = CutOptions {
        pol: vec![4, 2],
        time: Some((60000.0, 60000.0)),
        ..CutOptions::default()
    };
    let (shape, planes, crpix3, crpix4) = cut_stokes_time(options).unwrap();
    assert_eq!(shape, vec![1, 3, 12, 16]);
    assert_eq!(planes, [1.0, 2.0, 3.0]);
    // Plane 1 of the cutout is Q (code 2): CRVAL3 + (1 - CRPIX3) = 2.
    assert_eq!((crpix3, crpix4), (0.0, 1.0));
    let circular = CutOptions {
        pol: vec![-1, -2],
        ..CutOptions::default()
    };
    assert!(matches!(
        cut_stokes_time(circular),
        Err(SodaError::NoOverlap { .. })
    ));
}

#[test]
fn pol_or_time_on_an_image_without_the_axis_or_a_date_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let source = synthetic(dir.path());
    let stencil = circle_at(&source, 50.0, 50.0, 5.0);
    let out = dir.path().join("out.fits");
    for (options, problem) in [
        (
            CutOptions {
                pol: vec![1],
                ..CutOptions::default()
            },
            "no polarization axis",
        ),
        (
            CutOptions {
                time: Some((0.0, 1.0)),
                ..CutOptions::default()
            },
            "neither a time axis nor an observation time",
        ),
    ] {
        let error =
            cut_to_file_with(&source, &stencil, &provenance(&stencil), &out, options).unwrap_err();
        assert!(
            matches!(&error, SodaError::Usage(m) if m.contains(problem)),
            "{error:?}"
        );
    }
}

#[test]
fn time_keeps_or_rejects_a_2d_image_by_its_observation_interval() {
    let dir = tempfile::tempdir().unwrap();
    let source = synthetic(dir.path());
    {
        let mut f = FitsFile::edit(&source).unwrap();
        let hdu = f.primary_hdu().unwrap();
        // 2023-06-15T06:00:00 is MJD 60110.25; a 2-hour exposure.
        hdu.write_key(&mut f, "DATE-OBS", "2023-06-15T06:00:00")
            .unwrap();
        hdu.write_key(&mut f, "EXPTIME", 7200.0).unwrap();
    }
    let stencil = circle_at(&source, 50.0, 50.0, 5.0);
    let out = dir.path().join("out.fits");
    let cut = |time: (f64, f64)| {
        let options = CutOptions {
            time: Some(time),
            ..CutOptions::default()
        };
        cut_to_file_with(&source, &stencil, &provenance(&stencil), &out, options)
    };
    assert!(cut((60110.3, 60110.3)).is_ok());
    assert!(cut((f64::NEG_INFINITY, 60110.25)).is_ok());
    assert!(cut((60110.33, f64::INFINITY)).is_ok());
    for miss in [(60110.34, f64::INFINITY), (0.0, 60110.2)] {
        assert!(
            matches!(cut(miss), Err(SodaError::NoOverlap { .. })),
            "{miss:?}"
        );
    }
}

#[test]
fn cutouts_combine_into_one_multi_extension_file() {
    let dir = tempfile::tempdir().unwrap();
    let source = synthetic(dir.path());
    let mut parts = Vec::new();
    for (n, (x, y)) in [(50.0, 50.0), (200.0, 100.0)].into_iter().enumerate() {
        let stencil = circle_at(&source, x, y, 10.0 + n as f64);
        let out = dir.path().join(format!("part{n}.fits"));
        cut_to_file(&source, &stencil, &provenance(&stencil), &out).unwrap();
        parts.push(out);
    }
    let out = dir.path().join("all.fits");
    let paths: Vec<&Path> = parts.iter().map(|p| p.as_path()).collect();
    let bytes = combine_to_file(&paths, &out).unwrap();
    assert_eq!(bytes, std::fs::metadata(&out).unwrap().len());
    let mut f = FitsFile::open(&out).unwrap();
    assert_eq!(f.num_hdus().unwrap(), 3);
    for (n, part) in parts.iter().enumerate() {
        let hdu = f.hdu(n + 1).unwrap();
        assert_eq!(hdu.read_key::<String>(&mut f, "EXTNAME").unwrap(), "CUTOUT");
        assert_eq!(hdu.read_key::<i64>(&mut f, "EXTVER").unwrap(), n as i64 + 1);
        let pixels: Vec<f32> = hdu.read_image(&mut f).unwrap();
        let mut p = FitsFile::open(part).unwrap();
        let original: Vec<f32> = p.hdu(1).unwrap().read_image(&mut p).unwrap();
        assert_eq!(pixels, original);
    }
}

fn copy_as_extension(source: &Path, out: &Path, extname: &str, compress: bool) {
    copy_as_extensions(source, out, &[(extname, 1.0)], compress);
}

/// Writes the pixels (times a factor) and WCS of `source` (a synthetic image) as named image
/// extensions of a new file at `out`, after an empty primary HDU, tile-compressed
/// losslessly when `compress` (cfitsio's `[compress]` file-name syntax, GZIP without
/// quantising the floats).
fn copy_as_extensions(source: &Path, out: &Path, extensions: &[(&str, f32)], compress: bool) {
    let mut src = FitsFile::open(source).unwrap();
    let hdu = src.primary_hdu().unwrap();
    let pixels: Vec<f32> = hdu.read_image(&mut src).unwrap();
    let name = if compress {
        format!("{}[compress GZIP 64,64; q 0]", out.display())
    } else {
        out.display().to_string()
    };
    let mut dst = FitsFile::create(name).open().unwrap();
    let description = ImageDescription {
        data_type: ImageType::Float,
        dimensions: &[NY, NX],
    };
    for &(extname, factor) in extensions {
        let ext = dst.create_image(extname, &description).unwrap();
        for key in ["CTYPE1", "CTYPE2", "CUNIT1", "CUNIT2", "RADESYS"] {
            let value: String = hdu.read_key(&mut src, key).unwrap();
            ext.write_key(&mut dst, key, value).unwrap();
        }
        for key in [
            "CRPIX1", "CRPIX2", "CRVAL1", "CRVAL2", "CD1_1", "CD1_2", "CD2_1", "CD2_2", "EQUINOX",
        ] {
            let value: f64 = hdu.read_key(&mut src, key).unwrap();
            ext.write_key(&mut dst, key, value).unwrap();
        }
        let scaled: Vec<f32> = pixels.iter().map(|p| p * factor).collect();
        ext.write_image(&mut dst, &scaled).unwrap();
    }
}

fn cut_pixels(source: &Path, stencil: &Stencil, out: &Path) -> (PixelBox, Vec<f32>) {
    let cutout = cut_to_file(source, stencil, &provenance(stencil), out).unwrap();
    let mut f = FitsFile::open(out).unwrap();
    let hdu = f.hdu("CUTOUT").unwrap();
    (cutout.region, hdu.read_image(&mut f).unwrap())
}

#[test]
fn a_tile_compressed_image_cuts_to_the_same_pixels_as_the_plain_one() {
    let dir = tempfile::tempdir().unwrap();
    let source = synthetic(dir.path());
    let packed = dir.path().join("src.fits.fz");
    copy_as_extension(&source, &packed, "COMPRESSED_IMAGE", true);
    // The file really is tile-compressed: its image lives in a binary table.
    let mut f = FitsFile::open(&packed).unwrap();
    let hdu = f.hdu(1).unwrap();
    assert_eq!(
        hdu.read_key::<String>(&mut f, "XTENSION").unwrap(),
        "BINTABLE"
    );
    drop(f);
    // Across tile boundaries (64 px) and an image edge.
    let stencil = circle_at(&source, 100.0, 60.0, 40.0);
    let plain = cut_pixels(&source, &stencil, &dir.path().join("a.fits"));
    let compressed = cut_pixels(&packed, &stencil, &dir.path().join("b.fits"));
    assert_eq!(plain, compressed);
    assert!(plain.1.len() > 64 * 64);
}

#[test]
fn an_empty_primary_hdu_makes_the_first_image_extension_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let source = synthetic(dir.path());
    let mef = dir.path().join("mef.fits");
    copy_as_extension(&source, &mef, "SCI", false);
    let stencil = circle_at(&source, 30.0, 150.0, 12.0);
    let plain = cut_pixels(&source, &stencil, &dir.path().join("a.fits"));
    let extension = cut_pixels(&mef, &stencil, &dir.path().join("b.fits"));
    assert_eq!(plain, extension);
}

#[test]
fn an_id_extension_chooses_the_hdu_by_extname_and_an_unknown_one_is_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let source = synthetic(dir.path());
    let mef = dir.path().join("mef.fits");
    // SCI, the second extension, has every pixel doubled.
    copy_as_extensions(&source, &mef, &[("VAR", 1.0), ("SCI", 2.0)], false);
    let stencil = circle_at(&source, 80.0, 90.0, 8.0);
    let cut = |extension: Option<&str>| {
        let out = dir.path().join("out.fits");
        let options = CutOptions {
            extension: extension.map(str::to_owned),
            ..CutOptions::default()
        };
        cut_to_file_with(&mef, &stencil, &provenance(&stencil), &out, options).map(|_| {
            let mut f = FitsFile::open(&out).unwrap();
            let hdu = f.hdu("CUTOUT").unwrap();
            hdu.read_image::<Vec<f32>>(&mut f).unwrap()
        })
    };
    let first = cut(None).unwrap();
    assert_eq!(cut(Some("var")).unwrap(), first);
    let sci = cut(Some("SCI")).unwrap();
    assert_eq!(sci, first.iter().map(|p| p * 2.0).collect::<Vec<_>>());
    assert!(matches!(cut(Some("DQ")), Err(SodaError::UnknownImage(_))));
}

/// `cut_to_memory` against `cut_to_file_with` on one source, stencil and options.
fn assert_memory_is_file(source: &Path, stencil: &Stencil, options: CutOptions, what: &str) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.fits");
    let provenance = provenance(stencil);
    let on_disk = cut_to_file_with(source, stencil, &provenance, &out, options.clone()).unwrap();
    let size = cutout_size(source, stencil, &options).unwrap().bytes;
    let (bytes, in_memory) = cut_to_memory(source, stencil, &provenance, options.clone(), size)
        .unwrap()
        .unwrap();
    assert!(
        cut_to_memory(source, stencil, &provenance, options, size - 1)
            .unwrap()
            .is_none(),
        "{what}: over the limit by a byte"
    );
    assert_eq!(in_memory, on_disk, "{what}");
    assert_eq!(bytes.len() % 2880, 0, "{what}");
    assert!(
        bytes == std::fs::read(&out).unwrap(),
        "{what}: the bytes differ"
    );
}

#[test]
fn a_cutout_in_memory_is_the_file_cut_to_disk_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let source = synthetic(dir.path());
    let circle = circle_at(&source, 150.0, 100.0, 20.0);
    assert_memory_is_file(&source, &circle, CutOptions::default(), "float circle");
    let masked = CutOptions {
        mask: true,
        ..CutOptions::default()
    };
    assert_memory_is_file(&source, &circle, masked.clone(), "float circle, MASK");
    let edge = circle_at(&source, 2.0, 3.0, 4.0);
    assert_memory_is_file(&source, &edge, stamp_options(31), "stamp over the edge");
    // A whole image of 300 x 200 float32 pixels: the buffer grows many times over.
    let all = circle_at(&source, 150.0, 100.0, 400.0);
    assert_memory_is_file(&source, &all, CutOptions::default(), "the whole image");
    for image in scaled_images() {
        let what = format!("{:?} BSCALE {}", image.bitpix, image.bscale);
        let (scaled, _) = cut_scaled(&image, dir.path(), false);
        let (ra, dec) = wcs_of(&scaled, 1).pixel_to_sky(20.0, 30.0).unwrap();
        let stencil = Stencil::parse_circle(&format!("{ra} {dec} {}", 5.0 * SCALE)).unwrap();
        assert_memory_is_file(&scaled, &stencil, CutOptions::default(), &what);
        assert_memory_is_file(&scaled, &stencil, masked.clone(), &format!("{what}, MASK"));
    }
}

#[test]
fn a_cutout_in_memory_fails_as_the_file_does() {
    let dir = tempfile::tempdir().unwrap();
    let source = synthetic(dir.path());
    let off = Stencil::parse_circle("200 -30 0.01").unwrap();
    let cut = |source: &Path| {
        cut_to_memory(
            source,
            &off,
            &provenance(&off),
            CutOptions::default(),
            u64::MAX,
        )
    };
    let error = cut(&source);
    assert!(
        matches!(error, Err(SodaError::NoOverlap { .. })),
        "{error:?}"
    );
    let error = cut(&dir.path().join("missing.fits"));
    assert!(error.is_err());
}
