//! Conventions as tests: every Rust source file starts with a `//!` module doc saying why it
//! exists (rust-analyzer's tidy rule), `unsafe` is allowed in one module only, the pure
//! libraries (`uws`, `soda`) depend on no crate that opens connections, and the modules of
//! `soda` import one another without a cycle.

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

/// The crates `uws` and `soda` must not use to stay pure (ARCHITECTURE.md): no HTTP server or
/// client, no database, no Redis, no object store.
const IMPURE: [&str; 5] = ["axum", "sqlx", "fred", "reqwest", "object_store"];

/// The names of the crates a manifest's `[dependencies]` (and target-specific dependencies)
/// name, as published: a renamed dependency counts by its `package`.
fn dependencies(manifest: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(manifest).expect("manifest");
    let manifest: toml::Table = text.parse().expect("a TOML manifest");
    let mut tables = vec![manifest.get("dependencies")];
    if let Some(toml::Value::Table(targets)) = manifest.get("target") {
        for target in targets.values() {
            tables.push(target.get("dependencies"));
        }
    }
    let mut names = Vec::new();
    for table in tables.into_iter().flatten() {
        let toml::Value::Table(table) = table else {
            continue;
        };
        for (key, value) in table {
            let package = value.get("package").and_then(toml::Value::as_str);
            names.push(package.unwrap_or(key).to_owned());
        }
    }
    names
}

/// `uws` and `soda` are libraries of pure logic: they never depend on the crates that open
/// connections. They depend on no other workspace crate but `uws` (`soda` for `ErrorCode`),
/// so checking both manifests covers what they pull in from the workspace too.
#[test]
fn uws_and_soda_never_depend_on_http_sql_redis_or_object_stores() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for crate_name in ["uws", "soda"] {
        let names = dependencies(&root.join(crate_name).join("Cargo.toml"));
        assert!(!names.is_empty(), "{crate_name} lists no dependencies");
        let impure: Vec<&String> = names
            .iter()
            .filter(|n| IMPURE.contains(&n.as_str()))
            .collect();
        assert!(
            impure.is_empty(),
            "{crate_name} depends on {impure:?}, which its architecture invariant rules out"
        );
        let workspace: Vec<&String> = names
            .iter()
            .filter(|n| root.join(n.as_str()).join("Cargo.toml").exists())
            .filter(|n| !["uws", "soda"].contains(&n.as_str()))
            .collect();
        assert!(
            workspace.is_empty(),
            "{crate_name} depends on the workspace crates {workspace:?}, which this test does not check"
        );
    }
}

/// The modules of `soda/src` that one module's code (not its tests) names through `crate::`,
/// a name re-exported at the crate root counting as the module it comes from.
fn soda_imports(
    src: &Path,
) -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let modules: std::collections::BTreeSet<String> = std::fs::read_dir(src)
        .expect("soda/src")
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".rs")
                .map(str::to_owned)
        })
        .filter(|m| m != "lib")
        .collect();
    let code = |module: &str| -> String {
        let text = std::fs::read_to_string(src.join(format!("{module}.rs"))).expect("module");
        let text = text
            .split("#[cfg(test)]")
            .next()
            .unwrap_or_default()
            .to_owned();
        text.lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    // `crate::NAME` or `crate::{A, B::C}`: the first segment of each path.
    let names = |text: &str| -> Vec<String> {
        let mut found = Vec::new();
        for (at, _) in text.match_indices("crate::") {
            let rest = &text[at + "crate::".len()..];
            let group = match rest.strip_prefix('{') {
                Some(inner) => inner.split('}').next().unwrap_or_default(),
                None => rest,
            };
            for path in group.split(',') {
                let name: String = path
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                found.push(name);
                if !rest.starts_with('{') {
                    break;
                }
            }
        }
        found
    };
    // `pub use MODULE::{A, B};` and `pub use MODULE::A;` at the root.
    let mut exported = std::collections::BTreeMap::new();
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("lib.rs");
    for item in lib.split(';') {
        let Some(rest) = item.trim().strip_prefix("pub use ") else {
            continue;
        };
        let Some((module, names)) = rest.split_once("::") else {
            continue;
        };
        for name in names.trim_matches(|c| c == '{' || c == '}').split(',') {
            exported.insert(name.trim().to_owned(), module.to_owned());
        }
    }
    let mut graph = std::collections::BTreeMap::new();
    for module in &modules {
        let mut deps = std::collections::BTreeSet::new();
        for name in names(&code(module)) {
            let target = if modules.contains(&name) {
                Some(name)
            } else {
                exported.get(&name).cloned()
            };
            if let Some(target) = target.filter(|t| t != module) {
                deps.insert(target);
            }
        }
        graph.insert(module.clone(), deps);
    }
    graph
}

/// ARCHITECTURE.md: the modules of `soda` import one another without a cycle, so each can be
/// read (and tested) on top of the ones it uses; `region` is pure geometry and opens no file.
#[test]
fn soda_modules_import_one_another_without_a_cycle() {
    let graph = soda_imports(&Path::new(env!("CARGO_MANIFEST_DIR")).join("soda/src"));
    assert!(
        graph["cutout"].contains("image"),
        "the parser lost `use crate::image`"
    );
    assert!(!graph["region"].contains("image") && !graph["region"].contains("cutout"));
    // Peel off modules that import nothing left; whatever remains lies on a cycle or imports
    // a module that does.
    let mut left = graph.clone();
    loop {
        let leaves: Vec<String> = left
            .iter()
            .filter(|(_, deps)| deps.iter().all(|d| !left.contains_key(d)))
            .map(|(m, _)| m.clone())
            .collect();
        if leaves.is_empty() {
            break;
        }
        for leaf in leaves {
            left.remove(&leaf);
        }
    }
    assert!(
        left.is_empty(),
        "soda modules on an import cycle, or importing one: {left:?}"
    );
}
