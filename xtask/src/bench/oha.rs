//! `oha`, the load generator: found on the `PATH` or in `$CARGO_HOME/bin`, installed with
//! `cargo install oha --locked` when missing, and its JSON report read into an [`OhaRun`].

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::Context;
use serde_json::Value;

/// `oha`, installed with `cargo install oha --locked` when it is not on the `PATH` (nor in
/// `$CARGO_HOME/bin`).
pub(super) fn ensure_oha() -> anyhow::Result<PathBuf> {
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
        .map(|home| home.join("bin").join("oha"));
    let works = |path: &Path| {
        Command::new(path)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if works(Path::new("oha")) {
        return Ok(PathBuf::from("oha"));
    }
    if let Some(path) = cargo_bin.as_deref().filter(|p| works(p)) {
        return Ok(path.to_owned());
    }
    eprintln!("oha not found: installing it");
    crate::run("cargo", &["install", "oha", "--locked"])?;
    [Some(PathBuf::from("oha")), cargo_bin]
        .into_iter()
        .flatten()
        .find(|p| works(p))
        .context("oha was installed but cannot be run: add $CARGO_HOME/bin to PATH")
}

/// What one `oha` run measured.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct OhaRun {
    /// 2xx responses.
    pub(super) successes: u64,
    /// Other responses and transport errors.
    pub(super) failures: u64,
    /// 2xx responses per second of the run.
    pub(super) rps: f64,
    /// Median latency.
    pub(super) p50: Duration,
    /// 99th percentile latency.
    pub(super) p99: Duration,
}

/// Reads `oha --output-format json`.
pub(super) fn parse_oha(text: &str) -> anyhow::Result<OhaRun> {
    let json: Value = serde_json::from_str(text).context("oha's output is not JSON")?;
    let mut successes = 0;
    let mut failures = 0;
    if let Some(statuses) = json["statusCodeDistribution"].as_object() {
        for (status, count) in statuses {
            let count = count.as_u64().unwrap_or(0);
            if status.starts_with('2') {
                successes += count;
            } else {
                failures += count;
            }
        }
    }
    if let Some(errors) = json["errorDistribution"].as_object() {
        failures += errors.values().filter_map(Value::as_u64).sum::<u64>();
    }
    let seconds = json["summary"]["total"]
        .as_f64()
        .context("no summary.total")?;
    let percentile = |name: &str| {
        json["latencyPercentiles"][name]
            .as_f64()
            .map(Duration::from_secs_f64)
            .unwrap_or_default()
    };
    Ok(OhaRun {
        successes,
        failures,
        rps: if seconds > 0.0 {
            successes as f64 / seconds
        } else {
            0.0
        },
        p50: percentile("p50"),
        p99: percentile("p99"),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// Trimmed from a real `oha --no-tui --output-format json` report.
    const OHA_JSON: &str = r#"{
      "summary": {"successRate": 0.997, "total": 0.5, "slowest": 0.004, "fastest": 0.0001,
                  "average": 0.0003, "requestsPerSec": 2006.0, "totalData": 291000,
                  "sizePerRequest": 291, "sizePerSec": 582000.0},
      "latencyPercentiles": {"p10": 0.0001, "p25": 0.0002, "p50": 0.00025, "p75": 0.0003,
                             "p90": 0.0005, "p95": 0.001, "p99": 0.002, "p99.9": 0.003,
                             "p99.99": 0.004},
      "statusCodeDistribution": {"200": 1000, "502": 1},
      "errorDistribution": {"connection closed before message completed": 2}
    }"#;

    #[test]
    fn reads_an_oha_json_report() {
        let run = parse_oha(OHA_JSON).unwrap();

        assert_eq!(run.successes, 1000);
        assert_eq!(run.failures, 3);
        assert!((run.rps - 1000.0 / 0.5).abs() < 1e-6, "{run:?}");
        assert_eq!(run.p50, Duration::from_micros(250));
        assert_eq!(run.p99, Duration::from_millis(2));
    }

    #[test]
    fn an_oha_report_without_a_summary_is_an_error() {
        assert!(parse_oha("{}").is_err());
        assert!(parse_oha("not json").is_err());
    }
}
