//! Conventions as tests: every Rust source file starts with a `//!` module doc saying why it
//! exists (rust-analyzer's tidy rule), and `unsafe` is allowed in one module only.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if path.is_dir() && name != "target" && !name.to_string_lossy().starts_with('.') {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_rust_file_starts_with_a_module_doc() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(root, &mut files);
    assert!(files.len() > 20, "found only {} files", files.len());
    let missing: Vec<_> = files
        .iter()
        .filter(|f| {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            !text.starts_with("//!")
        })
        .collect();
    assert!(
        missing.is_empty(),
        "files without a leading //! doc: {missing:?}"
    );
}

/// The workspace denies `unsafe_code`; `soda/src/unscaled.rs` (the cfitsio calls that fitsio
/// does not wrap) and `soda/src/wcslib.rs` (the wrapper around wcslib) are the only files that
/// may allow it.
#[test]
fn unsafe_code_is_allowed_only_in_soda_unscaled_and_wcslib() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(root, &mut files);
    let mut allowed = vec![
        root.join("soda/src/unscaled.rs"),
        root.join("soda/src/wcslib.rs"),
    ];
    allowed.sort();
    let mut allowing: Vec<_> = files
        .into_iter()
        .filter(|f| {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            // Split so that this file does not match itself.
            text.contains(concat!("allow(unsafe", "_code)"))
        })
        .collect();
    allowing.sort();
    assert_eq!(allowing, allowed);
}
