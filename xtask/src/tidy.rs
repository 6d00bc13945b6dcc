//! Repository checks that run as ordinary tests: the dependency direction of the hexagon and the
//! documentation every source file owes its reader.

#![allow(clippy::expect_used)]

use std::{fs, path::Path};

use crate::project_root;

/// Crates `domain` must never depend on: I/O, frameworks, runtimes.
const FORBIDDEN_IN_DOMAIN: &[&str] = &[
    "actix-web",
    "actix-rt",
    "awc",
    "hyper",
    "reqwest",
    "sea-orm",
    "sea-orm-migration",
    "sqlx",
    "fred",
    "redis",
    "quick_cache",
    "figment",
    "tracing-subscriber",
    "tokio",
    "async-std",
];

fn manifest(path: &Path) -> toml::Table {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.parse()
        .unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

#[test]
fn domain_depends_on_no_io_or_framework_crate() {
    let manifest = manifest(&project_root().join("crates/domain/Cargo.toml"));
    let deps = manifest
        .get("dependencies")
        .and_then(toml::Value::as_table)
        .cloned()
        .unwrap_or_default();
    let forbidden: Vec<&String> = deps
        .keys()
        .filter(|name| FORBIDDEN_IN_DOMAIN.contains(&name.as_str()))
        .collect();
    assert!(
        forbidden.is_empty(),
        "domain must stay free of I/O crates, found {forbidden:?}"
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

/// Crates that must not be in a lightweight build: MySQL drivers and Redis clients.
const ENTERPRISE_ONLY: &[&str] = &[
    "sqlx-mysql",
    "mysql_async",
    "mysql",
    "fred",
    "redis",
    "storage-mysql",
    "cache-redis",
];

#[test]
fn a_lightweight_build_contains_no_mysql_driver_and_no_redis_client() {
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
