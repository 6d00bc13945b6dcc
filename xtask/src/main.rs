//! Repository automation, run as `cargo xtask <task>`: one dispatcher here, one module per task
//! (`ci`, `dist`, `bench`; `openapi` reruns the app's OpenAPI test with `UPDATE_OPENAPI=1`).
//! It may depend on anything useful for tooling; no crate of the product depends on it.

#![allow(clippy::print_stdout, clippy::print_stderr)]

mod bench;
mod ci;
#[cfg(test)]
mod deploy_checks;
mod dist;
#[cfg(test)]
mod editions;
mod flags;
#[cfg(test)]
mod tidy;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, bail};

fn main() -> anyhow::Result<()> {
    let task = flags::Task::from_args(std::env::args().skip(1))?;
    match task {
        flags::Task::Ci => ci::run(),
        flags::Task::Dist { edition } => dist::run(edition),
        flags::Task::Bench => bench::run(),
        flags::Task::Openapi => run_with_env(
            "cargo",
            &["test", "-p", "app", "--lib", "--locked", "openapi::"],
            &[("UPDATE_OPENAPI", "1")],
        ),
        flags::Task::Help => {
            println!("{}", flags::USAGE);
            Ok(())
        }
    }
}

/// The workspace root (the parent of this crate).
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Runs a command at the workspace root, echoing it, and fails when it fails.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    run_with_env(program, args, &[])
}

/// [`run`] with extra environment variables.
pub fn run_with_env(program: &str, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<()> {
    let shown: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v} ")).collect();
    eprintln!("$ {}{program} {}", shown.concat(), args.join(" "));
    let status = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .current_dir(project_root())
        .status()
        .with_context(|| format!("cannot start {program}"))?;
    if !status.success() {
        bail!("`{program} {}` failed with {status}", args.join(" "));
    }
    Ok(())
}
