//! The two cfitsio calls that a raw pixel copy needs and fitsio does not wrap: switching off an
//! HDU's BSCALE/BZERO scaling, so pixels are read and written as stored, and copying header
//! cards verbatim, so a cutout declares the very scaling its source does.
//!
//! This is the one module of the workspace allowed `unsafe` (`tests/tidy.rs` checks it): every
//! call goes through [`FitsFile::as_raw`], whose pointer lives as long as the `&mut FitsFile`
//! that each function borrows, and cfitsio reports failure through `status`.
#![allow(unsafe_code)]

use std::ffi::{CString, c_char, c_int};

use fitsio::FitsFile;
use fitsio::hdu::FitsHdu;
use fitsio::sys;

use crate::SodaError;

/// cfitsio's "keyword not found" status.
const KEY_NO_EXIST: c_int = 202;

/// Bytes of a header card and its terminating NUL (cfitsio's `FLEN_CARD`).
const CARD_BUFFER: usize = 81;

/// Turns BSCALE/BZERO scaling off for `hdu` of `file` (made the current HDU): until the header
/// is parsed again, pixels are read and written as stored. For a file open for writing, the
/// header is finished and parsed first (cfitsio would otherwise parse it, and restore the
/// header's scaling, at the first pixel write), so call this after the last header keyword.
///
/// The setting lives in cfitsio's file structure, which all handles to one file share: callers
/// hold [`crate::cutout::lock_source`] for reads of a source file.
pub(crate) fn disable_scaling(file: &mut FitsFile, hdu: &FitsHdu) -> Result<(), SodaError> {
    let number = hdu_number(hdu)?;
    let mut status = 0;
    // SAFETY: `fptr` is the live handle owned by `file`, borrowed mutably for this block; the
    // other arguments are plain values or a pointer to a local.
    unsafe {
        let fptr = file.as_raw();
        sys::ffmahd(fptr, number, std::ptr::null_mut(), &mut status);
        // Rewrites END and re-reads the header of a writable file; a no-op on a read-only one.
        sys::ffrdef(fptr, &mut status);
        sys::ffpscl(fptr, 1.0, 0.0, &mut status);
    }
    check(status, "switching off pixel scaling")
}

/// Appends to `dst_hdu` of `dst` the cards of `src_hdu` of `src` named `names`, byte for byte
/// (value, its exact text, and comment); a name that `src_hdu` lacks is skipped. Returns the
/// names that were copied.
pub(crate) fn copy_cards<'a>(
    src: &mut FitsFile,
    src_hdu: &FitsHdu,
    dst: &mut FitsFile,
    dst_hdu: &FitsHdu,
    names: &[&'a str],
) -> Result<Vec<&'a str>, SodaError> {
    let (from, to) = (hdu_number(src_hdu)?, hdu_number(dst_hdu)?);
    let mut copied = Vec::new();
    for &name in names {
        let key = CString::new(name)
            .map_err(|_| SodaError::Fits(format!("keyword {name:?} holds a NUL")))?;
        let mut card = [0 as c_char; CARD_BUFFER];
        let mut status = 0;
        // SAFETY: `fptr` is the live handle owned by `src`, borrowed mutably for this block;
        // `key` is NUL-terminated and `card` has the FLEN_CARD bytes cfitsio writes at most.
        unsafe {
            let fptr = src.as_raw();
            sys::ffmahd(fptr, from, std::ptr::null_mut(), &mut status);
            sys::ffgcrd(fptr, key.as_ptr(), card.as_mut_ptr(), &mut status);
        }
        if status == KEY_NO_EXIST {
            continue;
        }
        check(status, &format!("reading keyword {name}"))?;
        // SAFETY: as above for `dst`; `card` is the NUL-terminated card cfitsio just wrote.
        unsafe {
            let fptr = dst.as_raw();
            sys::ffmahd(fptr, to, std::ptr::null_mut(), &mut status);
            sys::ffprec(fptr, card.as_ptr(), &mut status);
        }
        check(status, &format!("writing keyword {name}"))?;
        copied.push(name);
    }
    Ok(copied)
}

/// cfitsio's 1-based number of `hdu`.
fn hdu_number(hdu: &FitsHdu) -> Result<c_int, SodaError> {
    c_int::try_from(hdu.number + 1)
        .map_err(|_| SodaError::Fits(format!("HDU {} is out of range", hdu.number)))
}

fn check(status: c_int, what: &str) -> Result<(), SodaError> {
    if status == 0 {
        Ok(())
    } else {
        Err(SodaError::Fits(format!(
            "{what} failed: cfitsio status {status}"
        )))
    }
}
