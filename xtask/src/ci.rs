//! `cargo xtask ci`: the checks a change must pass, in the order that fails fastest.

use crate::run as sh;

/// The test command README documents and `.ci/run` executes.
pub const TEST_ARGS: &[&str] = &["test", "--workspace", "--all-features", "--locked"];

/// Runs fmt check, clippy with warnings denied, then the whole test suite.
pub fn run() -> anyhow::Result<()> {
    sh("cargo", &["fmt", "--all", "--", "--check"])?;
    sh(
        "cargo",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--locked",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    sh("cargo", TEST_ARGS)
}
