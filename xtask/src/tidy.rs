//! Repository checks that run as ordinary tests: the dependency direction of the hexagon and the
//! documentation every source file owes its reader.

#![allow(clippy::expect_used)]

use std::{fs, path::Path};

use crate::project_root;

/// Everything `domain` may depend on: pure, runtime-free crates (no I/O, HTTP, database, cache
/// or async runtime crate), so a downstream team can build adapters against it alone. A new
/// dependency is added here deliberately, never by accident.
const DOMAIN_DEPENDENCIES: &[&str] = &[
    "aho-corasick",
    "async-trait",
    "chrono",
    "futures-core",
    "futures-util",
    "httpdate",
    "mockall",
    "serde",
    "subtle",
    "thiserror",
    "url",
];

/// Everything `llm-adapters` may depend on: the format conversions are pure functions over
/// bytes, with no HTTP client, server or runtime.
const LLM_ADAPTER_DEPENDENCIES: &[&str] = &[
    "bytes",
    "domain",
    "memchr",
    "serde",
    "serde_json",
    "thiserror",
];

fn manifest(path: &Path) -> toml::Table {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.parse()
        .unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

/// The normal dependencies of a crate that are not in `allowed`.
fn dependencies_outside(crate_dir: &str, allowed: &[&str]) -> Vec<String> {
    let manifest = manifest(&project_root().join(crate_dir).join("Cargo.toml"));
    manifest
        .get("dependencies")
        .and_then(toml::Value::as_table)
        .map(|deps| {
            deps.keys()
                .filter(|name| !allowed.contains(&name.as_str()))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn domain_depends_only_on_pure_crates() {
    let extra = dependencies_outside("crates/domain", DOMAIN_DEPENDENCIES);
    assert!(
        extra.is_empty(),
        "domain must stay free of I/O, HTTP and runtime crates; not in the allowlist: {extra:?}"
    );
}

#[test]
fn llm_adapters_depend_only_on_pure_crates() {
    let extra = dependencies_outside("crates/llm-adapters", LLM_ADAPTER_DEPENDENCIES);
    assert!(
        extra.is_empty(),
        "llm-adapters must stay free of I/O, HTTP and runtime crates; not in the allowlist: {extra:?}"
    );
}

/// The only places a `cfg(feature = ...)` gate may stand in production code: the app's wiring
/// (the editions), and the opt-in test exports of `domain` that CONVENTIONS prescribes (its
/// `mocks` and `contract-tests` features).
const FEATURE_GATES: &[(&str, &str)] = &[
    ("crates/app/src/wiring.rs", ""),
    ("crates/domain/src/lib.rs", "contract-tests"),
    ("crates/domain/src/ports.rs", "mocks"),
    ("crates/domain/src/clock.rs", "mocks"),
    // The SQL store's encryption suite, exported for its two adapters' tests like the contract
    // suites.
    ("crates/storage-sql/src/lib.rs", "encryption-tests"),
];

#[test]
fn feature_gates_stand_only_in_the_app_wiring() {
    let root = project_root();
    let mut misplaced = Vec::new();
    let crates = root.join("crates");
    for dir in crate_dirs().into_iter().filter(|d| d.starts_with(&crates)) {
        for file in rust_files(&dir.join("src")) {
            let text = fs::read_to_string(&file).expect("read a source file");
            let relative = file
                .strip_prefix(&root)
                .unwrap_or(&file)
                .to_string_lossy()
                .replace('\\', "/");
            for line in text.lines().map(str::trim_start) {
                let is_gate = !line.starts_with("//")
                    && (line.contains("cfg(feature") || line.contains("feature = \""));
                let allowed = FEATURE_GATES.iter().any(|(path, feature)| {
                    *path == relative && line.contains(&format!("feature = \"{feature}"))
                });
                if is_gate && !allowed {
                    misplaced.push(format!("{relative}: {line}"));
                }
            }
        }
    }
    assert!(
        misplaced.is_empty(),
        "cfg(feature) belongs in crates/app/src/wiring.rs only: {misplaced:#?}"
    );
}

#[test]
fn every_crate_uses_the_workspace_lints() {
    for dir in crate_dirs() {
        let manifest = manifest(&dir.join("Cargo.toml"));
        let workspace_lints = manifest
            .get("lints")
            .and_then(|l| l.get("workspace"))
            .and_then(toml::Value::as_bool);
        assert_eq!(
            workspace_lints,
            Some(true),
            "{} lacks `[lints] workspace = true`",
            dir.display()
        );
    }
}

#[test]
fn every_lib_and_module_file_starts_with_a_doc_paragraph() {
    let mut missing = Vec::new();
    for dir in crate_dirs() {
        for file in rust_files(&dir.join("src")) {
            let text = fs::read_to_string(&file).unwrap_or_default();
            let first = text
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or_default();
            if !first.starts_with("//!") {
                missing.push(
                    file.strip_prefix(project_root())
                        .unwrap_or(&file)
                        .display()
                        .to_string(),
                );
            }
        }
    }
    assert!(
        missing.is_empty(),
        "files without a leading `//!` paragraph: {missing:#?}"
    );
}

/// Crates that must not be in a lightweight build: network database drivers (MySQL,
/// PostgreSQL) and Redis clients, and the adapters that use them.
const ENTERPRISE_ONLY: &[&str] = &[
    "sqlx-mysql",
    "mysql_async",
    "mysql",
    "sqlx-postgres",
    "tokio-postgres",
    "postgres",
    "postgres-protocol",
    "fred",
    "redis",
    "storage-mysql",
    "storage-postgres",
    "cache-redis",
];

#[test]
fn a_lightweight_build_contains_no_network_database_driver_and_no_redis_client() {
    let output =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "tree",
                "-p",
                "app",
                "--no-default-features",
                "--features",
                "lightweight",
                "--edges",
                "normal",
                "--prefix",
                "none",
                "--format",
                "{p}",
            ])
            .current_dir(project_root())
            .output()
            .expect("cargo tree runs");
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tree = String::from_utf8_lossy(&output.stdout);
    let found: Vec<&str> = tree
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| ENTERPRISE_ONLY.contains(name))
        .collect();
    assert!(
        found.is_empty(),
        "the lightweight edition pulls in {found:?}"
    );
    assert!(
        tree.lines().any(|l| l.starts_with("storage-sqlite ")),
        "the tree was read: {tree}"
    );
}

/// What the example downstream adapter may depend on: `domain` and pure crates.
const EXAMPLE_ADAPTER_DEPENDENCIES: &[&str] = &[
    "domain",
    "async-trait",
    "chrono",
    "serde",
    "serde_json",
    "thiserror",
];

#[test]
fn the_example_adapter_depends_on_domain_alone() {
    let manifest = manifest(&project_root().join("crates/example-json-store/Cargo.toml"));
    let deps = manifest
        .get("dependencies")
        .and_then(toml::Value::as_table)
        .cloned()
        .unwrap_or_default();
    let extra: Vec<&String> = deps
        .keys()
        .filter(|name| !EXAMPLE_ADAPTER_DEPENDENCIES.contains(&name.as_str()))
        .collect();
    assert!(
        extra.is_empty(),
        "example-json-store must build against domain alone, found {extra:?}"
    );
    assert!(deps.contains_key("domain"));
}

fn crate_dirs() -> Vec<std::path::PathBuf> {
    let root = project_root();
    let mut dirs: Vec<_> = fs::read_dir(root.join("crates"))
        .map(|entries| entries.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    dirs.retain(|d| d.join("Cargo.toml").exists());
    dirs.push(root.join("xtask"));
    dirs.sort();
    dirs
}

fn rust_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return files;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}
