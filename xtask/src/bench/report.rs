//! The markdown report: one row per target, then the goals of issues 10 and 15 checked against
//! the proxy's rows.

use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use super::{
    CONNECTIONS, LARGE_POOL, LARGE_POOL_ROW, RUN, Row, SINGLE_RUN, STREAM_CHUNKS,
    TTFB_EVENT_DELAY_MS, TTFB_SAMPLES, UPSTREAM_KEYS, WORKERS,
};

/// What the report says about the run.
pub(super) struct RunInfo<'a> {
    pub(super) oha_version: &'a str,
    pub(super) nginx_version: Option<String>,
    pub(super) commit: String,
    /// `/proc/loadavg` (1, 5 and 15 minutes) before and after the runs: other work on the
    /// machine skews every number, ratios least.
    pub(super) load: (String, String),
}

/// Milliseconds with microsecond precision.
fn ms(duration: Duration) -> String {
    format!("{:.3} ms", duration.as_secs_f64() * 1e3)
}

/// A whole number with thousands separators.
fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Request counts per key and whether they are even; past a handful of keys, how many keys were
/// used and the least and most requests one got.
pub(super) fn split_text(split: &BTreeMap<String, u64>) -> String {
    let counts: Vec<u64> = split.values().copied().collect();
    let (min, max) = (
        counts.iter().min().copied().unwrap_or(0),
        counts.iter().max().copied().unwrap_or(0),
    );
    let spread = max - min;
    let verdict = if spread <= 1 {
        "even".to_owned()
    } else {
        format!("spread {spread}")
    };
    if counts.len() > UPSTREAM_KEYS.len() {
        return format!(
            "{} keys used, {min}–{max} requests each ({verdict})",
            thousands(counts.len() as f64)
        );
    }
    let listed: Vec<String> = counts.iter().map(u64::to_string).collect();
    format!("{} ({verdict})", listed.join(" / "))
}

/// Whether the mock saw every upstream key equally often (within one request).
pub(super) fn split_is_even(split: &BTreeMap<String, u64>) -> bool {
    let counts: Vec<u64> = split.values().copied().collect();
    counts.len() == UPSTREAM_KEYS.len()
        && counts.iter().max().unwrap_or(&0) - counts.iter().min().unwrap_or(&0) <= 1
}

/// The whole report: the header, the table, then the goals.
pub(super) fn render(rows: &[Row], info: &RunInfo<'_>) -> String {
    let mut out = String::new();
    let direct = rows.first();
    let _ = writeln!(
        out,
        "## cargo xtask bench ({commit})\n\n\
         Load: {oha}, {CONNECTIONS} connections × {run} s and 1 connection × {single} s, no warm-up; \
         streams: {STREAM_CHUNKS} chunks + `[DONE]` (back to back for req/s, {TTFB_EVENT_DELAY_MS} ms apart \
         for TTFB, median of {TTFB_SAMPLES}); server: `WORKERS={WORKERS}`, `LOG_LEVEL=warn`, one \
         OpenAI-compatible LLM config with {keys} keys (with {large} keys on the row that says so); \
         nginx: {nginx}. CPU and RSS are those of the \
         process in the middle (the mock itself on the direct row); everything shares this machine's \
         {cores} cores; load average before {load_before}, after {load_after}.\n",
        commit = info.commit,
        oha = info.oha_version,
        run = RUN.as_secs(),
        single = SINGLE_RUN.as_secs(),
        keys = UPSTREAM_KEYS.len(),
        large = thousands(LARGE_POOL as f64),
        nginx = info.nginx_version.as_deref().unwrap_or("not installed"),
        cores = std::thread::available_parallelism().map_or(0, usize::from),
        load_before = info.load.0,
        load_after = info.load.1,
    );
    out.push_str(
        "| target | req/s @64 | p50 @64 | p99 @64 | p50 @1 | added @1 vs direct | stream req/s @64 | stream TTFB p50 (end) | CPU µs/req | peak RSS | failed | key split (mock) |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for row in rows {
        let added = match direct {
            Some(direct) if !std::ptr::eq(direct, row) => format!(
                "{:+.0} µs",
                (row.single.p50.as_secs_f64() - direct.single.p50.as_secs_f64()) * 1e6
            ),
            _ => "—".into(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} ({}) | {} | {} | {} | {} |",
            row.name,
            thousands(row.loaded.rps),
            ms(row.loaded.p50),
            ms(row.loaded.p99),
            ms(row.single.p50),
            added,
            thousands(row.stream.rps),
            ms(row.ttfb_p50),
            ms(row.stream_total_p50),
            row.cpu_us_per_request
                .map_or("?".into(), |us| format!("{us:.1}")),
            row.peak_rss_kib
                .map_or("?".into(), |kib| format!("{:.1} MiB", kib as f64 / 1024.0)),
            row.loaded.failures + row.single.failures + row.stream.failures,
            row.split.as_ref().map_or("—".into(), split_text),
        );
    }
    out.push_str(&render_targets(rows));
    out
}

/// The goals of issue 10, checked against this run.
fn render_targets(rows: &[Row]) -> String {
    let find = |prefix: &str| rows.iter().find(|r| r.name.starts_with(prefix));
    let (Some(direct), Some(proxy)) = (find("direct"), find("proxy (lightweight)")) else {
        return String::new();
    };
    let nginx = find("nginx");
    let mut checks: Vec<(String, String, String, Option<bool>)> = Vec::new();
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    match nginx {
        Some(nginx) => {
            let r = ratio(proxy.loaded.rps, nginx.loaded.rps);
            checks.push((
                "non-streaming req/s vs nginx".into(),
                "≥ 1.00×".into(),
                format!("{r:.2}×"),
                Some(r >= 1.0),
            ));
            let r = ratio(proxy.stream.rps, nginx.stream.rps);
            checks.push((
                "streaming req/s vs nginx".into(),
                "≥ 1.00×".into(),
                format!("{r:.2}×"),
                Some(r >= 1.0),
            ));
        }
        None => checks.push((
            "req/s vs nginx".into(),
            "≥ 1.00×".into(),
            "nginx not installed".into(),
            None,
        )),
    }
    let added = (proxy.single.p50.as_secs_f64() - direct.single.p50.as_secs_f64()) * 1e6;
    checks.push((
        "added latency at 1 connection".into(),
        "≤ 50 µs".into(),
        format!("{added:.0} µs"),
        Some(added <= 50.0),
    ));
    if let Some(us) = proxy.cpu_us_per_request {
        checks.push((
            "server CPU per request".into(),
            "≤ 12 µs".into(),
            format!("{us:.1} µs"),
            Some(us <= 12.0),
        ));
    }
    if let Some(kib) = proxy.peak_rss_kib {
        let mb = kib as f64 / 1024.0;
        checks.push((
            "peak RSS".into(),
            "≤ 40 MiB".into(),
            format!("{mb:.1} MiB"),
            Some(mb <= 40.0),
        ));
    }
    if let Some(split) = &proxy.split {
        checks.push((
            "key split".into(),
            "exactly even".into(),
            split_text(split),
            Some(split_is_even(split)),
        ));
    }
    for row in rows
        .iter()
        .filter(|r| r.name.starts_with("proxy (enterprise"))
    {
        let r = ratio(row.loaded.rps, proxy.loaded.rps);
        checks.push((
            format!("{} req/s vs lightweight", row.name),
            "≥ 0.60×".into(),
            format!("{r:.2}×"),
            Some(r >= 0.6),
        ));
    }
    if let Some(large) = find(LARGE_POOL_ROW) {
        let r = ratio(large.loaded.rps, proxy.loaded.rps);
        checks.push((
            format!(
                "req/s with {} keys vs 3 keys (issue 15)",
                thousands(LARGE_POOL as f64)
            ),
            "≥ 0.80×".into(),
            format!("{r:.2}×"),
            Some(r >= 0.8),
        ));
    }
    let mut out =
        String::from("\n| goal (issues 10, 15) | target | measured | met |\n|---|---|---|---|\n");
    for (goal, target, measured, met) in checks {
        let met = match met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "—",
        };
        let _ = writeln!(out, "| {goal} | {target} | {measured} | {met} |");
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::bench::oha::OhaRun;

    fn row(name: &str, rps: f64, p50_single_us: u64, split: Option<[u64; 3]>) -> Row {
        let run = |rps| OhaRun {
            successes: 100,
            failures: 0,
            rps,
            p50: Duration::from_micros(500),
            p99: Duration::from_millis(2),
        };
        Row {
            name: name.into(),
            loaded: run(rps),
            single: OhaRun {
                p50: Duration::from_micros(p50_single_us),
                ..run(rps)
            },
            stream: run(rps / 2.0),
            ttfb_p50: Duration::from_micros(300),
            stream_total_p50: Duration::from_millis(50),
            cpu_us_per_request: Some(10.0),
            peak_rss_kib: Some(20 * 1024),
            split: split.map(|s| {
                UPSTREAM_KEYS
                    .iter()
                    .map(|k| (k.to_string(), 0))
                    .zip(s)
                    .map(|((k, _), n)| (k, n))
                    .collect()
            }),
        }
    }

    #[test]
    fn renders_the_table_and_the_goals() {
        let rows = [
            row("direct to mock", 40_000.0, 60, None),
            row("nginx pass-through", 20_000.0, 90, None),
            row("proxy (lightweight)", 25_000.0, 100, Some([10, 10, 11])),
            row(LARGE_POOL_ROW, 22_500.0, 110, None),
        ];
        let report = render(
            &rows,
            &RunInfo {
                oha_version: "oha 1.0",
                nginx_version: Some("nginx/1.22.1".into()),
                commit: "abc1234".into(),
                load: ("0.10 0.20 0.30".into(), "1.00 0.50 0.40".into()),
            },
        );

        assert!(
            report.contains(
                "| proxy (lightweight) | 25,000 | 0.500 ms | 2.000 ms | 0.100 ms | +40 µs |"
            ),
            "{report}"
        );
        assert!(report.contains("| direct to mock | 40,000 |"), "{report}");
        assert!(
            report.contains("| non-streaming req/s vs nginx | ≥ 1.00× | 1.25× | yes |"),
            "{report}"
        );
        assert!(
            report.contains("| added latency at 1 connection | ≤ 50 µs | 40 µs | yes |"),
            "{report}"
        );
        assert!(
            report.contains("| key split | exactly even | 10 / 11 / 10 (even) | yes |"),
            "{report}"
        );
        assert!(
            report.contains(
                "| req/s with 100,000 keys vs 3 keys (issue 15) | ≥ 0.80× | 0.90× | yes |"
            ),
            "{report}"
        );
    }

    #[test]
    fn a_large_split_is_summed_up() {
        let split: BTreeMap<String, u64> = (0..5_000)
            .map(|i| (format!("k{i}"), 1 + u64::from(i == 7)))
            .collect();
        assert_eq!(
            split_text(&split),
            "5,000 keys used, 1–2 requests each (even)"
        );
    }

    #[test]
    fn groups_thousands() {
        assert_eq!(thousands(0.4), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1234.0), "1,234");
        assert_eq!(thousands(1234567.0), "1,234,567");
    }
}
