//! The command line of `cargo xtask`.

use anyhow::bail;

/// Shown by `cargo xtask help`.
pub const USAGE: &str = "\
usage: cargo xtask <task>

tasks:
  ci     fmt check, clippy -D warnings over all targets and features, the whole test suite
  help   this text";

/// A task to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// The checks CI runs.
    Ci,
    /// Usage.
    Help,
}

impl Task {
    /// Parses the arguments after `cargo xtask`.
    pub fn from_args(mut args: impl Iterator<Item = String>) -> anyhow::Result<Self> {
        let task = match args.next().as_deref() {
            Some("ci") => Task::Ci,
            None | Some("help" | "-h" | "--help") => Task::Help,
            Some(other) => bail!("unknown task `{other}`\n\n{USAGE}"),
        };
        if let Some(extra) = args.next() {
            bail!("unexpected argument `{extra}`\n\n{USAGE}");
        }
        Ok(task)
    }
}
