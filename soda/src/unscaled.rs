//! The cfitsio calls that fitsio does not wrap: the two a raw pixel copy needs (switching off an
//! HDU's BSCALE/BZERO scaling, so pixels are read and written as stored, and copying header
//! cards verbatim, so a cutout declares the very scaling its source does), and the check of
//! whether readers of one file may run at once ([`readers_share_files`]).
//!
//! This is the one module of the workspace allowed `unsafe` (`tests/tidy.rs` checks it): every
//! call goes through [`FitsFile::as_raw`], whose pointer lives as long as the `&mut FitsFile`
//! that each function borrows, and cfitsio reports failure through `status`.
#![allow(unsafe_code)]

use std::ffi::{CString, c_char, c_int};
use std::path::Path;

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
/// The setting lives in cfitsio's file structure, which handles to one file may share (see
/// [`readers_share_files`]): callers hold [`crate::image::lock_source`] for reads of a source
/// file.
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

/// Whether handles that open the file at `path` read-only share cfitsio's file structure (its
/// I/O buffers, current HDU and scaling), so that readers in different threads must take turns.
///
/// A cfitsio built without thread support shares everything: then `true` without looking. A
/// thread-safe one (4.x as Debian builds it) opens the file again for each read-only handle,
/// and only handles opened for writing attach to one structure; older versions attached every
/// handle. Which of these this process links is seen, not assumed: `path` is opened twice and
/// the two handles' structures compared.
pub(crate) fn readers_share_files(path: &Path) -> Result<bool, SodaError> {
    // SAFETY: a plain query of a compile-time setting of the library.
    if unsafe { sys::fits_is_reentrant() } == 0 {
        return Ok(true);
    }
    let mut first = FitsFile::open(path)?;
    let mut second = FitsFile::open(path)?;
    Ok(same_structure(&mut first, &mut second))
}

/// Whether two handles read and write through one cfitsio file structure.
pub(crate) fn same_structure(first: &mut FitsFile, second: &mut FitsFile) -> bool {
    // SAFETY: both pointers are the live handles owned by `first` and `second`, borrowed
    // mutably for this block, and point to cfitsio's `fitsfile`, whose layout `Handle` copies
    // (fitsio's binding keeps it opaque); the structure pointers are compared, not followed.
    unsafe {
        let (a, b) = (
            first.as_raw().cast::<Handle>(),
            second.as_raw().cast::<Handle>(),
        );
        (*a).file == (*b).file
    }
}

/// cfitsio's `fitsfile` as `fitsio.h` declares it: the HDU a handle is at, and the file
/// structure it reads through, which handles may share.
#[repr(C)]
struct Handle {
    hdu_position: c_int,
    file: *const std::ffi::c_void,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handle_layout_is_cfitsio_s() {
        assert_eq!(
            std::mem::size_of::<Handle>(),
            std::mem::size_of::<sys::fitsfile>()
        );
    }
}
