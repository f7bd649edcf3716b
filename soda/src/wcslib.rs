//! A safe wrapper around the few wcslib calls Skycut needs: parse a celestial header
//! (`wcspih`, which also reads SIP and TPV distortion), set it up (`wcsset`), and map pixel
//! coordinates to world coordinates and back (`wcsp2s`, `wcss2p`).
//!
//! wcslib is the reference implementation of FITS WCS (astropy, DS9 and CASA use it), so every
//! projection of WCS Paper II, oblique reference points with their LONPOLE/LATPOLE defaults, and
//! SIP with or without its inverse coefficients map exactly as they do there.
//!
//! `struct wcsprm` is treated as opaque: `wcspih` allocates it and `wcsvfree` frees it, and the
//! header handed to `wcspih` has one coordinate description only, so only the first element of
//! the array it returns is ever used, and no field is read from Rust.
//!
//! Sharing: wcslib writes into a `wcsprm` during `wcsset` and also during every transformation
//! (the linear and distortion steps keep scratch arrays in it), so a [`Wcs`] is `Send` but not
//! `Sync`, and every call takes `&mut self`; `celestial::CelestialWcs` keeps its one `Wcs` behind
//! a mutex.
//!
//! This module and `soda::unscaled` are the only code of the workspace allowed `unsafe`
//! (`tests/tidy.rs` checks it).
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int};

/// wcslib's `struct wcsprm`, whose layout this module never needs.
#[repr(C)]
struct WcsPrm {
    _opaque: [u8; 0],
}

// The declarations of wcslib 7 (`wcslib/wcshdr.h`, `wcslib/wcs.h`); the library is linked by
// `build.rs` through pkg-config.
unsafe extern "C" {
    fn wcspih(
        header: *mut c_char,
        nkeyrec: c_int,
        relax: c_int,
        ctrl: c_int,
        nreject: *mut c_int,
        nwcs: *mut c_int,
        wcs: *mut *mut WcsPrm,
    ) -> c_int;
    fn wcsset(wcs: *mut WcsPrm) -> c_int;
    fn wcsp2s(
        wcs: *mut WcsPrm,
        ncoord: c_int,
        nelem: c_int,
        pixcrd: *const f64,
        imgcrd: *mut f64,
        phi: *mut f64,
        theta: *mut f64,
        world: *mut f64,
        stat: *mut c_int,
    ) -> c_int;
    fn wcss2p(
        wcs: *mut WcsPrm,
        ncoord: c_int,
        nelem: c_int,
        world: *const f64,
        phi: *mut f64,
        theta: *mut f64,
        imgcrd: *mut f64,
        pixcrd: *mut f64,
        stat: *mut c_int,
    ) -> c_int;
    fn wcsvfree(nwcs: *mut c_int, wcs: *mut *mut WcsPrm) -> c_int;
}

/// `WCSHDR_all`: accept every informal extension the header parser knows (EPOCH, RADECSYS,
/// PROJPn, CROTA with a CD matrix...), as astropy does.
const WCSHDR_ALL: c_int = 0x000F_FFFF;

/// The status `wcsp2s`/`wcss2p` return when only some coordinates were invalid (each one then
/// has its own `stat`).
const WCSERR_BAD_PIX: c_int = 8;
const WCSERR_BAD_WORLD: c_int = 9;

/// wcslib's status messages (`wcs_errmsg` in `wcs.c`), for the statuses its functions return.
fn status_message(status: c_int) -> &'static str {
    match status {
        1 => "null wcsprm pointer passed",
        2 => "memory allocation failed",
        3 => "linear transformation matrix is singular",
        4 => "inconsistent or unrecognized coordinate axis type",
        5 => "invalid parameter value",
        6 => "unrecognized coordinate transformation parameter",
        7 => "ill-conditioned coordinate transformation parameter",
        8 => "one or more of the pixel coordinates were invalid",
        9 => "one or more of the world coordinates were invalid",
        10 => "invalid world coordinate",
        11 => "no solution found in the specified interval",
        12 => "invalid subimage specification",
        13 => "non-separable subimage coordinate system",
        14 => "wcsprm struct is unset",
        _ => "unknown wcslib status",
    }
}

/// Why a header could not be turned into a usable WCS.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct WcsError(pub(crate) String);

/// One set-up two-axis celestial WCS (axis 1 longitude, axis 2 latitude).
pub(crate) struct Wcs {
    /// The array of one `wcsprm` that `wcspih` allocated.
    prm: *mut WcsPrm,
    nwcs: c_int,
}

// SAFETY: a `wcsprm` holds only memory that wcslib allocated for it (no thread-local state, no
// pointers into other structures), so it may move to another thread; it is not `Sync`, because
// every call may write to it.
unsafe impl Send for Wcs {}

impl std::fmt::Debug for Wcs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Wcs")
    }
}

impl Wcs {
    /// Parses `cards` (80-character header cards, without END) that describe exactly one
    /// two-axis WCS, and sets it up.
    pub(crate) fn from_cards(cards: &[String]) -> Result<Wcs, WcsError> {
        let mut header = Vec::with_capacity(cards.len() * 80 + 1);
        for card in cards {
            if card.len() != 80 || !card.is_ascii() {
                return Err(WcsError(format!(
                    "header card {card:?} is not 80 ASCII bytes"
                )));
            }
            header.extend_from_slice(card.as_bytes());
        }
        header.push(0);
        let nkeyrec =
            c_int::try_from(cards.len()).map_err(|_| WcsError("header too long".to_owned()))?;
        let (mut nreject, mut nwcs) = (0, 0);
        let mut prm: *mut WcsPrm = std::ptr::null_mut();
        // SAFETY: `header` is a NUL-terminated buffer of `nkeyrec` 80-byte cards that wcspih may
        // modify (it does so only for ctrl < -10); the out-pointers point to locals. On success
        // wcspih allocates `nwcs` structs at `prm`, which `Wcs::drop` frees.
        let status = unsafe {
            wcspih(
                header.as_mut_ptr().cast(),
                nkeyrec,
                WCSHDR_ALL,
                0,
                &mut nreject,
                &mut nwcs,
                &mut prm,
            )
        };
        if status != 0 {
            return Err(WcsError(format!(
                "wcslib could not parse the header (wcspih status {status})"
            )));
        }
        let wcs = Wcs { prm, nwcs };
        if nwcs < 1 || prm.is_null() {
            return Err(WcsError("no WCS found in the header".to_owned()));
        }
        // SAFETY: `prm` points to the first of `nwcs >= 1` structs that wcspih initialised.
        let status = unsafe { wcsset(wcs.prm) };
        if status != 0 {
            return Err(WcsError(status_message(status).to_owned()));
        }
        Ok(wcs)
    }

    /// World (longitude, latitude) in degrees of each 1-based pixel position in `pixels`, `None`
    /// where the position lies outside the projection's domain.
    pub(crate) fn pixel_to_world(&mut self, pixels: &[[f64; 2]]) -> Vec<Option<[f64; 2]>> {
        self.many(pixels, Wcs::p2s)
    }

    /// [`Wcs::pixel_to_world`] of one position, without allocating.
    pub(crate) fn pixel_to_world_one(&mut self, pixel: [f64; 2]) -> Option<[f64; 2]> {
        self.one(pixel, Wcs::p2s)
    }

    /// 1-based pixel position of each world (longitude, latitude) in degrees in `world`, `None`
    /// where the projection does not reach the position.
    pub(crate) fn world_to_pixel(&mut self, world: &[[f64; 2]]) -> Vec<Option<[f64; 2]>> {
        self.many(world, Wcs::s2p)
    }

    /// [`Wcs::world_to_pixel`] of one position, without allocating.
    pub(crate) fn world_to_pixel_one(&mut self, world: [f64; 2]) -> Option<[f64; 2]> {
        self.one(world, Wcs::s2p)
    }

    /// Runs `transform` on `coords` with scratch arrays on the heap.
    fn many(&mut self, coords: &[[f64; 2]], transform: Transform) -> Vec<Option<[f64; 2]>> {
        let mut buffers = Buffers::new(coords.len());
        let mut out = buffers.scratch();
        transform(self, coords, &mut out);
        (0..coords.len()).map(|i| out.result(i)).collect()
    }

    /// Runs `transform` on one coordinate with scratch arrays on the stack.
    fn one(&mut self, coord: [f64; 2], transform: Transform) -> Option<[f64; 2]> {
        let (mut imgcrd, mut coords) = ([[0.0; 2]], [[0.0; 2]]);
        let (mut phi, mut theta, mut stat) = ([0.0], [0.0], [0]);
        let mut out = Scratch {
            imgcrd: &mut imgcrd,
            coords: &mut coords,
            phi: &mut phi,
            theta: &mut theta,
            stat: &mut stat,
        };
        transform(self, &[coord], &mut out);
        out.result(0)
    }

    /// Runs `wcsp2s` on `pixels`, leaving the world coordinates in `out.coords` and marking
    /// every failed coordinate in `out.stat`.
    fn p2s(&mut self, pixels: &[[f64; 2]], out: &mut Scratch<'_>) {
        let Ok(ncoord) = c_int::try_from(pixels.len()) else {
            out.stat.fill(1);
            return;
        };
        if ncoord == 0 {
            return;
        }
        // SAFETY: `self.prm` is set up (`from_cards`) and borrowed mutably; `Scratch` holds
        // `ncoord` coordinates of `nelem` = 2 elements in `imgcrd` and `coords`, and one value
        // per coordinate in `phi`, `theta` and `stat`, as wcsp2s requires.
        let status = unsafe {
            wcsp2s(
                self.prm,
                ncoord,
                2,
                pixels.as_ptr().cast(),
                out.imgcrd.as_mut_ptr().cast(),
                out.phi.as_mut_ptr(),
                out.theta.as_mut_ptr(),
                out.coords.as_mut_ptr().cast(),
                out.stat.as_mut_ptr(),
            )
        };
        if status != 0 && status != WCSERR_BAD_PIX {
            out.stat.fill(status);
        }
    }

    /// Runs `wcss2p` on `world`, leaving the pixel coordinates in `out.coords` and marking every
    /// failed coordinate in `out.stat`.
    fn s2p(&mut self, world: &[[f64; 2]], out: &mut Scratch<'_>) {
        let Ok(ncoord) = c_int::try_from(world.len()) else {
            out.stat.fill(1);
            return;
        };
        if ncoord == 0 {
            return;
        }
        // SAFETY: as in `p2s`, with the roles of the world and pixel arrays swapped.
        let status = unsafe {
            wcss2p(
                self.prm,
                ncoord,
                2,
                world.as_ptr().cast(),
                out.phi.as_mut_ptr(),
                out.theta.as_mut_ptr(),
                out.imgcrd.as_mut_ptr().cast(),
                out.coords.as_mut_ptr().cast(),
                out.stat.as_mut_ptr(),
            )
        };
        if status != 0 && status != WCSERR_BAD_WORLD {
            out.stat.fill(status);
        }
    }
}

/// `Wcs::p2s` or `Wcs::s2p`.
type Transform = fn(&mut Wcs, &[[f64; 2]], &mut Scratch<'_>);

/// The output and intermediate arrays of one wcslib transformation of `n` coordinates, all of
/// length `n` (their owner makes sure).
struct Scratch<'a> {
    imgcrd: &'a mut [[f64; 2]],
    coords: &'a mut [[f64; 2]],
    phi: &'a mut [f64],
    theta: &'a mut [f64],
    stat: &'a mut [c_int],
}

impl Scratch<'_> {
    /// The result for coordinate `i`, if wcslib computed one.
    fn result(&self, i: usize) -> Option<[f64; 2]> {
        let c = self.coords[i];
        (self.stat[i] == 0 && c[0].is_finite() && c[1].is_finite()).then_some(c)
    }
}

/// Heap storage for a [`Scratch`] of many coordinates.
struct Buffers {
    imgcrd: Vec<[f64; 2]>,
    coords: Vec<[f64; 2]>,
    phi: Vec<f64>,
    theta: Vec<f64>,
    stat: Vec<c_int>,
}

impl Buffers {
    fn new(n: usize) -> Buffers {
        Buffers {
            imgcrd: vec![[0.0; 2]; n],
            coords: vec![[0.0; 2]; n],
            phi: vec![0.0; n],
            theta: vec![0.0; n],
            stat: vec![0; n],
        }
    }

    fn scratch(&mut self) -> Scratch<'_> {
        Scratch {
            imgcrd: &mut self.imgcrd,
            coords: &mut self.coords,
            phi: &mut self.phi,
            theta: &mut self.theta,
            stat: &mut self.stat,
        }
    }
}

impl Drop for Wcs {
    fn drop(&mut self) {
        if !self.prm.is_null() {
            // SAFETY: `prm` and `nwcs` are what wcspih returned, freed exactly once here.
            unsafe {
                wcsvfree(&mut self.nwcs, &mut self.prm);
            }
        }
    }
}

/// Quotes `s` as a FITS string value (single quotes doubled).
fn quoted(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// An 80-character header card `NAME = value` for a string value, or `None` if it does not fit
/// or is not ASCII.
pub(crate) fn text_card(name: &str, value: &str) -> Option<String> {
    card(name, &quoted(value))
}

/// An 80-character header card for a real value (exact: 17 significant digits).
pub(crate) fn real_card(name: &str, value: f64) -> Option<String> {
    value.is_finite().then_some(())?;
    card(name, &format!("{value:.16E}"))
}

/// An 80-character header card for an integer value.
pub(crate) fn integer_card(name: &str, value: i64) -> Option<String> {
    card(name, &value.to_string())
}

fn card(name: &str, value: &str) -> Option<String> {
    let text = format!("{name:<8}= {value}");
    (name.len() <= 8 && text.len() <= 80 && text.is_ascii()).then(|| format!("{text:<80}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cards(list: &[(&str, &str)]) -> Vec<String> {
        list.iter().map(|(k, v)| card(k, v).unwrap()).collect()
    }

    #[test]
    fn a_tan_header_maps_both_ways() {
        let mut wcs = Wcs::from_cards(&cards(&[
            ("NAXIS", "2"),
            ("CTYPE1", "'RA---TAN'"),
            ("CTYPE2", "'DEC--TAN'"),
            ("CRPIX1", "50.5"),
            ("CRPIX2", "50.5"),
            ("CRVAL1", "10.0"),
            ("CRVAL2", "20.0"),
            ("CDELT1", "-0.001"),
            ("CDELT2", "0.001"),
        ]))
        .unwrap();
        let world = wcs.pixel_to_world(&[[50.5, 50.5], [1.0, 1.0]]);
        let w0 = world[0].unwrap();
        assert!((w0[0] - 10.0).abs() < 1e-12 && (w0[1] - 20.0).abs() < 1e-12);
        let w1 = world[1].unwrap();
        let back = wcs.world_to_pixel(&[w1])[0].unwrap();
        assert!((back[0] - 1.0).abs() < 1e-9 && (back[1] - 1.0).abs() < 1e-9);
        // The far hemisphere of a TAN projection has no pixel.
        assert_eq!(wcs.world_to_pixel(&[[190.0, -20.0]]), [None]);
    }

    #[test]
    fn an_unknown_projection_is_an_error() {
        let error = Wcs::from_cards(&cards(&[
            ("NAXIS", "2"),
            ("CTYPE1", "'RA---XYZ'"),
            ("CTYPE2", "'DEC--XYZ'"),
        ]))
        .unwrap_err();
        assert!(error.0.contains("axis type"), "{error:?}");
    }

    #[test]
    fn cards_are_80_characters_and_exact() {
        let c = real_card("CRVAL1", 0.1 + 0.2).unwrap();
        assert_eq!(c.len(), 80);
        let value: f64 = c[10..].trim().parse().unwrap();
        assert_eq!(value, 0.1 + 0.2);
        assert_eq!(
            text_card("CTYPE1", "it's").unwrap().trim_end(),
            "CTYPE1  = 'it''s'"
        );
        assert_eq!(text_card("CTYPE1", &"x".repeat(80)), None);
    }
}
