//! The command line of `cargo xtask`, and the one place where an edition becomes Cargo features.

use std::{fmt, str::FromStr};

use anyhow::bail;

/// Shown by `cargo xtask help`.
pub const USAGE: &str = "\
usage: cargo xtask <task>

tasks:
  ci                                         fmt check, clippy -D warnings over all targets and
                                             features, the whole test suite
  dist --edition <lightweight|enterprise>    release build of that edition, staged in
                                             target/dist/<edition>/ and archived as
                                             target/dist/api-key-rotator-<version>-<edition>-<target>.tar.gz
                                             with a .sha256 file
  openapi                                    regenerate docs/openapi.json from the admin handlers
  bench                                      release build, then load benchmark of the proxy against
                                             a mock upstream and nginx with oha; writes
                                             target/bench/report.md (enterprise rows when
                                             TEST_MYSQL_URL and TEST_REDIS_URL are set)
  help                                       this text";

/// A task to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// The checks CI runs.
    Ci,
    /// A release archive of one edition.
    Dist {
        /// The edition to build.
        edition: Edition,
    },
    /// Regenerate the committed OpenAPI document.
    Openapi,
    /// The load benchmark (issue 10).
    Bench,
    /// Usage.
    Help,
}

impl Task {
    /// Parses the arguments after `cargo xtask`.
    pub fn from_args(mut args: impl Iterator<Item = String>) -> anyhow::Result<Self> {
        let task = match args.next().as_deref() {
            Some("ci") => Task::Ci,
            Some("dist") => Task::Dist {
                edition: edition_flag(&mut args)?,
            },
            Some("openapi") => Task::Openapi,
            Some("bench") => Task::Bench,
            None | Some("help" | "-h" | "--help") => Task::Help,
            Some(other) => bail!("unknown task `{other}`\n\n{USAGE}"),
        };
        if let Some(extra) = args.next() {
            bail!("unexpected argument `{extra}`\n\n{USAGE}");
        }
        Ok(task)
    }
}

/// `--edition <name>` or `--edition=<name>`.
fn edition_flag(args: &mut impl Iterator<Item = String>) -> anyhow::Result<Edition> {
    let value = match args.next() {
        Some(flag) if flag == "--edition" => args.next(),
        Some(flag) if flag.starts_with("--edition=") => {
            flag.strip_prefix("--edition=").map(str::to_owned)
        }
        Some(other) => bail!("unexpected argument `{other}`: dist needs --edition\n\n{USAGE}"),
        None => None,
    };
    match value {
        Some(name) => name.parse(),
        None => bail!("dist needs --edition <lightweight|enterprise>\n\n{USAGE}"),
    }
}

/// A product edition: which backends the `app` binary is built with (SPEC §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Edition {
    /// SQLite and the in-process cache only.
    Lightweight,
    /// Adds MySQL/MariaDB and Redis.
    Enterprise,
}

impl Edition {
    /// Every edition, in the order the docs list them.
    pub const ALL: [Edition; 2] = [Edition::Lightweight, Edition::Enterprise];

    /// The name on the command line, in archive names and in `api-key-rotator --version`.
    pub const fn name(self) -> &'static str {
        match self {
            Edition::Lightweight => "lightweight",
            Edition::Enterprise => "enterprise",
        }
    }

    /// The Cargo feature flags that build this edition of `app`: the only mapping from an
    /// edition to features in the repository's tooling.
    pub const fn cargo_features(self) -> &'static [&'static str] {
        match self {
            Edition::Lightweight => &["--no-default-features", "--features", "lightweight"],
            Edition::Enterprise => &["--features", "enterprise"],
        }
    }
}

impl fmt::Display for Edition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Edition {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<Self> {
        match Edition::ALL.into_iter().find(|e| e.name() == text) {
            Some(edition) => Ok(edition),
            None => bail!("unknown edition `{text}`: use lightweight or enterprise"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(args: &[&str]) -> anyhow::Result<Task> {
        Task::from_args(args.iter().map(|a| (*a).to_owned()))
    }

    #[test]
    fn dist_takes_an_edition_in_either_spelling() {
        assert_eq!(
            parse(&["dist", "--edition", "enterprise"]).unwrap(),
            Task::Dist {
                edition: Edition::Enterprise
            }
        );
        assert_eq!(
            parse(&["dist", "--edition=lightweight"]).unwrap(),
            Task::Dist {
                edition: Edition::Lightweight
            }
        );
    }

    #[test]
    fn dist_refuses_a_missing_or_unknown_edition() {
        assert!(parse(&["dist"]).is_err());
        assert!(parse(&["dist", "--edition"]).is_err());
        assert!(parse(&["dist", "--edition", "premium"]).is_err());
        assert!(parse(&["dist", "--edition", "enterprise", "extra"]).is_err());
    }

    #[test]
    fn bench_takes_no_argument() {
        assert_eq!(parse(&["bench"]).unwrap(), Task::Bench);
        assert!(parse(&["bench", "--quick"]).is_err());
    }

    #[test]
    fn editions_map_to_the_app_features() {
        assert_eq!(
            Edition::Lightweight.cargo_features(),
            ["--no-default-features", "--features", "lightweight"]
        );
        assert_eq!(
            Edition::Enterprise.cargo_features(),
            ["--features", "enterprise"]
        );
        for edition in Edition::ALL {
            assert_eq!(edition.name().parse::<Edition>().unwrap(), edition);
        }
    }
}
