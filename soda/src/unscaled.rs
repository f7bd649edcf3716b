//! The cfitsio calls that fitsio does not wrap: the two a raw pixel copy needs (switching off an
//! HDU's BSCALE/BZERO scaling, so pixels are read and written as stored, and copying header
//! cards verbatim, so a cutout declares the very scaling its source does), reading a header's
//! keywords in one pass ([`HeaderValues`]), and the check of whether readers of one file may run
//! at once ([`readers_share_files`]).
//!
//! This is the one module of the workspace allowed `unsafe` (`tests/tidy.rs` checks it): every
//! call goes through [`FitsFile::as_raw`], whose pointer lives as long as the `&mut FitsFile`
//! that each function borrows, and cfitsio reports failure through `status`.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::ffi::{CStr, CString, c_char, c_int};
use std::path::Path;

use fitsio::FitsFile;
use fitsio::hdu::FitsHdu;
use fitsio::sys;

use crate::SodaError;

/// cfitsio's "keyword not found" status.
const KEY_NO_EXIST: c_int = 202;

/// Bytes of a header card and its terminating NUL (cfitsio's `FLEN_CARD`).
const CARD_BUFFER: usize = 81;

/// Bytes of a keyword name and its NUL (`FLEN_KEYWORD`), of a value (`FLEN_VALUE`) and of a
/// comment (`FLEN_COMMENT`).
const NAME_BUFFER: usize = 75;
const VALUE_BUFFER: usize = 71;
const COMMENT_BUFFER: usize = 73;

// The C allocator, which cfitsio grows a memory file with; and cfitsio's conversions of a value
// as written on a card, which `ffgkys` and `ffgkyd` apply after finding the card (exported by
// the library, not declared by fitsio's bindings).
unsafe extern "C" {
    fn malloc(size: usize) -> *mut std::ffi::c_void;
    fn realloc(p: *mut std::ffi::c_void, size: usize) -> *mut std::ffi::c_void;
    fn free(p: *mut std::ffi::c_void);
    fn ffc2s(instr: *const c_char, outstr: *mut c_char, status: *mut c_int) -> c_int;
    fn ffc2d(cval: *const c_char, dval: *mut f64, status: *mut c_int) -> c_int;
}

/// The keyword values of one HDU's header, read in one pass over its cards.
///
/// Looking a keyword up by name (`ffgcrd`, under fitsio's `read_key`) reads the header card by
/// card until the name turns up, and to its end for a name that is absent; the WCS reader asks
/// for some 150 names, most of them absent, so every cutout parsed its image's header 150 times.
/// Here each card is parsed once, and the values are converted as cfitsio converts them for
/// `read_key` (`ffc2s` for text, `ffc2d` for numbers), so what is read does not change. Where a
/// name appears twice, the first card counts.
pub(crate) struct HeaderValues {
    values: HashMap<String, CString>,
}

impl HeaderValues {
    /// Reads every card of `hdu` of `file` (made the current HDU).
    pub(crate) fn read(file: &mut FitsFile, hdu: &FitsHdu) -> Result<HeaderValues, SodaError> {
        let cards = header_cards(file, hdu)?;
        let mut status = 0;
        let mut values = HashMap::with_capacity(usize::try_from(cards).unwrap_or(0));
        for n in 1..=cards {
            let mut card = [0 as c_char; CARD_BUFFER];
            let mut name = [0 as c_char; NAME_BUFFER];
            let mut value = [0 as c_char; VALUE_BUFFER];
            let mut comment = [0 as c_char; COMMENT_BUFFER];
            let mut length: c_int = 0;
            // SAFETY: as above; each buffer has the FLEN_* bytes cfitsio writes at most into it,
            // and `card` is the NUL-terminated card `ffgrec` wrote before the others read it.
            unsafe {
                sys::ffgrec(file.as_raw(), n, card.as_mut_ptr(), &mut status);
                sys::ffgknm(
                    card.as_mut_ptr(),
                    name.as_mut_ptr(),
                    &mut length,
                    &mut status,
                );
                sys::ffpsvc(
                    card.as_mut_ptr(),
                    value.as_mut_ptr(),
                    comment.as_mut_ptr(),
                    &mut status,
                );
            }
            if status != 0 {
                // A card cfitsio cannot parse is one no keyword lookup would have found.
                status = 0;
                continue;
            }
            // SAFETY: cfitsio NUL-terminates what it writes, within the buffers' sizes.
            let (name, value) = unsafe {
                (
                    CStr::from_ptr(name.as_ptr()),
                    CStr::from_ptr(value.as_ptr()),
                )
            };
            let name = name.to_string_lossy().trim_end().to_ascii_uppercase();
            values.entry(name).or_insert_with(|| value.to_owned());
        }
        Ok(HeaderValues { values })
    }

    /// The text value of keyword `name`, without its quotes, as `read_key::<String>` gives it.
    pub(crate) fn text(&self, name: &str) -> Option<String> {
        let value = self.values.get(name)?;
        let mut text = [0 as c_char; VALUE_BUFFER];
        let mut status = 0;
        // SAFETY: `value` is NUL-terminated and at most FLEN_VALUE bytes with its NUL (ffpsvc
        // wrote it), and `text` has the FLEN_VALUE bytes the unquoted string can take.
        unsafe { ffc2s(value.as_ptr(), text.as_mut_ptr(), &mut status) };
        if status != 0 {
            return None;
        }
        // SAFETY: ffc2s NUL-terminates its output within the buffer.
        let text = unsafe { CStr::from_ptr(text.as_ptr()) };
        text.to_str().ok().map(str::to_owned)
    }

    /// The numeric value of keyword `name`, as `read_key::<f64>` gives it.
    pub(crate) fn real(&self, name: &str) -> Option<f64> {
        let value = self.values.get(name)?;
        let mut real = 0.0;
        let mut status = 0;
        // SAFETY: `value` is NUL-terminated (ffpsvc wrote it); `real` is a local.
        unsafe { ffc2d(value.as_ptr(), &mut real, &mut status) };
        (status == 0).then_some(real)
    }
}

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

/// Makes `hdu` the current HDU of `file` and answers how many cards its header holds (`END`
/// not counted).
fn header_cards(file: &mut FitsFile, hdu: &FitsHdu) -> Result<c_int, SodaError> {
    let number = hdu_number(hdu)?;
    let mut status = 0;
    let mut cards: c_int = 0;
    // SAFETY: `fptr` is the live handle owned by `file`, borrowed mutably for this block; the
    // other arguments are pointers to locals.
    unsafe {
        let fptr = file.as_raw();
        sys::ffmahd(fptr, number, std::ptr::null_mut(), &mut status);
        sys::ffghsp(fptr, &mut cards, std::ptr::null_mut(), &mut status);
    }
    check(status, "reading the header's size")?;
    Ok(cards)
}

/// A hash of every card of `hdu`'s header, as written: two headers with the same hash say the
/// same (to the odds of a 64-bit collision). Reads the cards without parsing them.
pub(crate) fn header_hash(file: &mut FitsFile, hdu: &FitsHdu) -> Result<u64, SodaError> {
    use std::hash::{Hash, Hasher};
    let number = hdu_number(hdu)?;
    let cards = header_cards(file, hdu)?;
    let mut status = 0;
    let mut hasher = std::hash::DefaultHasher::new();
    number.hash(&mut hasher);
    for n in 1..=cards {
        let mut card = [0 as c_char; CARD_BUFFER];
        // SAFETY: as above; `card` has the FLEN_CARD bytes `ffgrec` writes at most.
        unsafe { sys::ffgrec(file.as_raw(), n, card.as_mut_ptr(), &mut status) };
        check(status, "reading a header card")?;
        // SAFETY: cfitsio NUL-terminates the card within the buffer.
        unsafe { CStr::from_ptr(card.as_ptr()) }.hash(&mut hasher);
    }
    Ok(hasher.finish())
}

/// One FITS block: a memory file starts at this size and grows by it.
const BLOCK: usize = 2880;

/// A new FITS file that cfitsio writes into memory (`fits_create_memfile`), for a cutout that
/// is served from memory and so needs no file.
pub(crate) struct MemoryFits {
    // Declared before `memory`, so dropped (closed, which may still write into the buffer)
    // before the buffer is freed.
    file: FitsFile,
    memory: MemoryBuffer,
}

/// The buffer of a [`MemoryFits`]. cfitsio keeps the addresses of the buffer pointer and of its
/// size, and moves the buffer with `realloc` as the file grows: both live in boxes of their own,
/// which stay put however the value moves. The buffer is the C allocator's, freed on drop.
struct MemoryBuffer {
    buffer: Box<*mut std::ffi::c_void>,
    size: Box<usize>,
}

impl Drop for MemoryBuffer {
    fn drop(&mut self) {
        // SAFETY: the buffer was allocated by `malloc` or moved by cfitsio with `realloc`, and
        // the file that wrote into it is closed (`MemoryFits` drops it first).
        unsafe { free(*self.buffer) };
    }
}

impl MemoryFits {
    /// An empty memory file, open for writing.
    pub(crate) fn create() -> Result<MemoryFits, SodaError> {
        // SAFETY: a plain allocation, checked for failure below.
        let mut memory = MemoryBuffer {
            buffer: Box::new(unsafe { malloc(BLOCK) }),
            size: Box::new(BLOCK),
        };
        if memory.buffer.is_null() {
            return Err(SodaError::Fits("no memory for a FITS file".into()));
        }
        let mut fptr = std::ptr::null_mut();
        let mut status = 0;
        // SAFETY: `buffer` and `size` are boxed (their addresses outlive the file, which is
        // closed before they are dropped) and describe a live allocation of `size` bytes made
        // by the allocator whose `realloc` cfitsio is given.
        unsafe {
            sys::ffimem(
                &mut fptr,
                &mut *memory.buffer,
                &mut *memory.size,
                BLOCK,
                Some(realloc),
                &mut status,
            );
        }
        check(status, "creating a FITS file in memory")?;
        // SAFETY: `fptr` is the handle cfitsio just opened, owned from here by the `FitsFile`.
        let mut file = unsafe { FitsFile::from_raw(fptr, fitsio::FileOpenMode::READWRITE) }?;
        // The empty primary HDU that `FitsFile::create` writes (an 8-bit image of no axes), so
        // that what follows is an extension, as in a file.
        // SAFETY: `fptr` is the live handle owned by `file`; no axes, so no axis array.
        unsafe {
            sys::ffphps(file.as_raw(), 8, 0, std::ptr::null_mut(), &mut status);
        }
        check(
            status,
            "writing the primary header of a FITS file in memory",
        )?;
        Ok(MemoryFits { file, memory })
    }

    /// The file, to write into.
    pub(crate) fn file(&mut self) -> &mut FitsFile {
        &mut self.file
    }

    /// Closes the file and returns its bytes: every HDU with its padding, and nothing of the
    /// buffer beyond (cfitsio grows it a block at a time, and may have grown it further).
    pub(crate) fn into_bytes(self) -> Result<Vec<u8>, SodaError> {
        let MemoryFits { mut file, memory } = self;
        let (mut hdus, mut end, mut status) = (0, 0, 0);
        // SAFETY: `fptr` is the live handle owned by `file`, borrowed mutably for this block;
        // the other arguments are pointers to locals. `ffrdef` finishes the last HDU's header
        // and structure, after which its end (`ffghadll`'s `dataend`, padding included) is the
        // end of the file.
        unsafe {
            let fptr = file.as_raw();
            sys::ffthdu(fptr, &mut hdus, &mut status);
            sys::ffmahd(fptr, hdus, std::ptr::null_mut(), &mut status);
            sys::ffrdef(fptr, &mut status);
            sys::ffghadll(
                fptr,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                &mut end,
                &mut status,
            );
        }
        check(status, "finishing a FITS file in memory")?;
        // Closing writes cfitsio's buffers into the memory buffer.
        drop(file);
        let length = usize::try_from(end).unwrap_or(usize::MAX);
        if length > *memory.size || memory.buffer.is_null() {
            return Err(SodaError::Fits(format!(
                "a FITS file in memory ends at byte {end} of a buffer of {}",
                memory.size
            )));
        }
        // SAFETY: the buffer is a live allocation of `size` bytes, of which the first `length`
        // were written by cfitsio, and the file that wrote them is closed.
        let bytes = unsafe { std::slice::from_raw_parts((*memory.buffer).cast::<u8>(), length) };
        Ok(bytes.to_vec())
    }
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

    /// Appends `cards` verbatim to the primary HDU of a new file at `path`.
    fn file_with_cards(path: &Path, cards: &[&str]) {
        let mut file = FitsFile::create(path).open().unwrap();
        for card in cards {
            let card = CString::new(*card).unwrap();
            let mut status = 0;
            // SAFETY: the live handle of `file`; `card` is NUL-terminated.
            unsafe { sys::ffprec(file.as_raw(), card.as_ptr(), &mut status) };
            assert_eq!(status, 0, "{card:?}");
        }
    }

    #[test]
    fn a_header_read_in_one_pass_gives_what_a_lookup_by_name_gives() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cards.fits");
        let cards = [
            "CTYPE1  = 'RA---TAN-SIP'       / quoted text",
            "CUNIT1  = 'deg     '           / trailing blanks kept by both",
            "OBJECT  = 'O''Brien'           / an escaped quote",
            "CRVAL1  =   1.5D+02            / a D exponent",
            "CRPIX1  =                  512 / an integer read as a real",
            "NAXISX  =                    T / a logical",
            "CDELT1  = '-2.5E-4'            / a number written as text",
            "EMPTY   =                      / no value",
            "DUP     =                  1.0 / the first of two",
            "DUP     =                  2.0 / the second",
            "HISTORY not a keyword with a value",
            "COMMENT   nor this",
            "junk    = 'lower-case name'",
            "PV2_1   = 45.0",
        ];
        file_with_cards(&path, &cards);
        let mut file = FitsFile::open(&path).unwrap();
        let hdu = file.hdu(0).unwrap();
        let header = HeaderValues::read(&mut file, &hdu).unwrap();
        // Not DUP: which of two cards a lookup by name finds depends on where the previous
        // lookup left cfitsio in the header; here the first always counts (asserted below).
        let names = [
            "CTYPE1", "CUNIT1", "OBJECT", "CRVAL1", "CRPIX1", "NAXISX", "CDELT1", "EMPTY",
            "HISTORY", "COMMENT", "JUNK", "PV2_1", "SIMPLE", "BITPIX", "NAXIS", "ABSENT",
        ];
        for name in names {
            assert_eq!(
                header.text(name),
                hdu.read_key::<String>(&mut file, name).ok(),
                "text of {name}"
            );
            assert_eq!(
                header.real(name),
                hdu.read_key::<f64>(&mut file, name).ok(),
                "value of {name}"
            );
        }
        // And what that is, for the cards a WCS reader depends on.
        assert_eq!(header.text("OBJECT").as_deref(), Some("O'Brien"));
        assert_eq!(header.real("CRVAL1"), Some(150.0));
        assert_eq!(header.real("CDELT1"), Some(-2.5e-4));
        assert_eq!(header.real("DUP"), Some(1.0));
        assert_eq!(header.real("EMPTY"), None);
        assert_eq!(header.text("ABSENT"), None);
    }

    #[test]
    fn a_memory_file_holds_what_the_same_writes_put_in_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.fits");
        let write = |file: &mut FitsFile| {
            let description = fitsio::images::ImageDescription {
                data_type: fitsio::images::ImageType::Double,
                dimensions: &[70, 90],
            };
            let hdu = file.create_image("ONE", &description).unwrap();
            let pixels: Vec<f64> = (0..70 * 90).map(f64::from).collect();
            hdu.write_image(file, &pixels).unwrap();
            hdu.write_key(file, "AFTER", "the data").unwrap();
        };
        write(&mut FitsFile::create(&path).open().unwrap());
        let mut memory = MemoryFits::create().unwrap();
        write(memory.file());
        let bytes = memory.into_bytes().unwrap();
        // A primary HDU, a header and 50,400 bytes of data padded to whole blocks.
        assert_eq!(bytes.len(), 2880 + 2880 + 18 * 2880);
        assert!(bytes == std::fs::read(&path).unwrap());
    }
}
