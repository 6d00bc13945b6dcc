//! The binary's command line (clap): `--help`, `--version` (with the edition), and the
//! subcommands. No subcommand means `serve`, so the original backend's way of starting the
//! server (no argument at all) keeps working; an unknown argument or subcommand is refused with
//! the usage and a non-zero exit.

use clap::{Parser, Subcommand};

/// API Key Rotator: keeps pools of upstream API keys, hands clients proxy keys and rotates the
/// real keys on every request. Configured through environment variables (see `.env.example`).
#[derive(Debug, Parser)]
#[command(name = "api-key-rotator", version = crate::wiring::VERSION_WITH_EDITION)]
pub struct Cli {
    /// What to do; without one the server starts.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The binary's subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (also what no subcommand does).
    Serve,
    /// Encrypt, re-encrypt or decrypt the stored upstream keys (ENCRYPTION_KEY).
    #[command(subcommand)]
    Keys(crate::key_migration::KeysCommand),
    /// Import the configs and keys of the original Go backend's database into the configured
    /// store (DATABASE_PATH / DATABASE_URL); given the configured database itself, upgrade it in
    /// place, keeping the original tables under backup names. Safe to run again.
    ImportOriginal {
        /// The original database: a SQLite file path, a mysql:// URL or the original's Go DSN
        /// (user:pass@tcp(host:3306)/db).
        source: String,
    },
}

impl Cli {
    /// The command to run: `serve` when none was given.
    pub fn command_or_serve(self) -> Command {
        self.command.unwrap_or(Command::Serve)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use clap::{CommandFactory, error::ErrorKind};

    use super::*;

    #[test]
    fn no_subcommand_serves() {
        let cli = Cli::try_parse_from(["api-key-rotator"]).unwrap();
        assert!(matches!(cli.command_or_serve(), Command::Serve));
    }

    #[test]
    fn serve_is_a_subcommand() {
        let cli = Cli::try_parse_from(["api-key-rotator", "serve"]).unwrap();
        assert!(matches!(cli.command_or_serve(), Command::Serve));
    }

    #[test]
    fn unknown_arguments_and_subcommands_are_refused() {
        for args in [
            vec!["api-key-rotator", "--port", "1"],
            vec!["api-key-rotator", "launch"],
            vec!["api-key-rotator", "serve", "extra"],
        ] {
            let error = Cli::try_parse_from(&args).unwrap_err();
            assert_ne!(error.kind(), ErrorKind::DisplayHelp, "{args:?}");
            assert_eq!(error.exit_code(), 2, "{args:?}");
        }
    }

    #[test]
    fn import_original_takes_one_source() {
        let cli = Cli::try_parse_from(["api-key-rotator", "import-original", "./old.db"]).unwrap();
        assert!(
            matches!(cli.command_or_serve(), Command::ImportOriginal { source } if source == "./old.db")
        );
        let missing = Cli::try_parse_from(["api-key-rotator", "import-original"]).unwrap_err();
        assert_eq!(missing.exit_code(), 2);
    }

    #[test]
    fn help_and_version_are_answered() {
        let help = Cli::try_parse_from(["api-key-rotator", "--help"]).unwrap_err();
        assert_eq!(help.kind(), ErrorKind::DisplayHelp);
        let version = Cli::try_parse_from(["api-key-rotator", "--version"]).unwrap_err();
        assert_eq!(version.kind(), ErrorKind::DisplayVersion);
        <Cli as CommandFactory>::command().debug_assert();
    }
}
