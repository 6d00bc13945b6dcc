//! The markdown report: the medians of every row over the rounds, the per-round figures with
//! their spread, then the goals of issues 23 and 15, each computed within every round (a ratio
//! of two rows measured minutes apart at most) and judged on the median over the rounds.

use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use super::{
    CLIENT_KEY_RPM, CONNECTIONS, DISTURBANCE_LIMIT, Kind, LARGE_POOL, Measurement,
    QUIET_BUSY_SHARE, QUIET_WINDOW, REQUEST_LOG_MAX_ROWS, RUN, Row, SINGLE_RUN, STREAM_CHUNKS,
    TTFB_EVENT_DELAY_MS, TTFB_SAMPLES, UPSTREAM_KEYS, WORKERS, processes::NginxWorkers,
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

/// The median; the mean of the two middle values for an even count; `None` when empty.
fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    match sorted.len() {
        0 => None,
        n if n % 2 == 1 => sorted.get(mid).copied(),
        _ => Some((sorted.get(mid - 1)? + sorted.get(mid)?) / 2.0),
    }
}

/// The figures of every round, in round order, then their spread ((max − min) / median).
fn per_round(values: &[f64], format: impl Fn(f64) -> String) -> String {
    let listed: Vec<String> = values.iter().map(|v| format(*v)).collect();
    let max = values.iter().copied().fold(f64::NAN, f64::max);
    let min = values.iter().copied().fold(f64::NAN, f64::min);
    match median(values) {
        Some(mid) if mid > 0.0 && values.len() > 1 => format!(
            "{} (spread {:.1} %)",
            listed.join(" / "),
            (max - min) / mid * 100.0
        ),
        _ => listed.join(" / "),
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

impl Row {
    /// `metric` of every round that has it.
    fn each(&self, metric: impl Fn(&Measurement) -> Option<f64>) -> Vec<f64> {
        self.rounds.iter().filter_map(metric).collect()
    }

    fn median_of(&self, metric: impl Fn(&Measurement) -> Option<f64>) -> Option<f64> {
        median(&self.each(metric))
    }

    fn failures(&self) -> u64 {
        self.rounds
            .iter()
            .map(|m| m.loaded.failures + m.single.failures + m.stream.failures)
            .sum()
    }
}

fn rps(m: &Measurement) -> Option<f64> {
    Some(m.loaded.rps)
}

fn stream_rps(m: &Measurement) -> Option<f64> {
    Some(m.stream.rps)
}

fn cpu(m: &Measurement) -> Option<f64> {
    m.cpu_us_per_request
}

fn seconds(duration: Duration) -> Option<f64> {
    Some(duration.as_secs_f64())
}

/// The added latency at one connection of `row` over `direct`, in µs, round by round.
fn added_us(row: &Row, direct: &Row) -> Vec<f64> {
    row.rounds
        .iter()
        .zip(&direct.rounds)
        .map(|(r, d)| (r.single.p50.as_secs_f64() - d.single.p50.as_secs_f64()) * 1e6)
        .collect()
}

/// The whole report: the header, the tables, then the goals.
pub(super) fn render(rows: &[Row], info: &RunInfo<'_>) -> String {
    let mut out = header(rows, info);
    out.push_str(&medians_table(rows));
    out.push_str(&rounds_table(rows));
    out.push_str(&goals_table(&goals(rows)));
    out
}

fn header(rows: &[Row], info: &RunInfo<'_>) -> String {
    let rounds = rows.first().map_or(0, |r| r.rounds.len());
    format!(
        "## cargo xtask bench ({commit})\n\n\
         Load: {oha}, {CONNECTIONS} connections × {run} s and 1 connection × {single} s, no warm-up; \
         streams: {STREAM_CHUNKS} chunks + `[DONE]` (back to back for req/s, {TTFB_EVENT_DELAY_MS} ms \
         apart for TTFB, median of {TTFB_SAMPLES}).\n\
         {rounds} rounds, each measuring every row in the order of the table; the first table shows \
         medians over the rounds. Each row starts once the machine has been under {quiet:.0} % busy \
         for {window} ms (the longest wait was {waited:.1} s), so that what the row before left \
         running is not billed to it; a row during which the other servers' background work \
         used more than {disturbance} ms of CPU is measured again ({remeasured} times in this run).\n\
         Servers: `WORKERS={WORKERS}`, `LOG_LEVEL=warn`, request log on \
         (`REQUEST_LOG_MAX_ROWS={REQUEST_LOG_MAX_ROWS}`), requests sent with a client key (`rpm` {rpm}), \
         one OpenAI-compatible LLM config with {keys} keys ({large} keys on the row that says so, a \
         server of its own).\n\
         nginx: {nginx}, one process (`master_process off`) or a master and 2 workers.\n\
         CPU and RSS are those of the process in the middle, summed over an nginx master and its \
         workers (the mock itself on the direct row; RSS read after the last round); log drops are the \
         server's `akr_request_log_dropped_total` after the last round.\n\
         Everything shares this machine's {cores} cores; load average before {load_before}, after \
         {load_after}.\n\n",
        commit = info.commit,
        oha = info.oha_version,
        quiet = QUIET_BUSY_SHARE * 100.0,
        window = QUIET_WINDOW.as_millis(),
        waited = rows
            .iter()
            .flat_map(|row| &row.rounds)
            .map(|m| m.quiet_wait.as_secs_f64())
            .fold(0.0, f64::max),
        disturbance = DISTURBANCE_LIMIT.as_millis(),
        remeasured = rows
            .iter()
            .flat_map(|row| &row.rounds)
            .map(|m| m.remeasured)
            .sum::<u32>(),
        run = RUN.as_secs(),
        single = SINGLE_RUN.as_secs(),
        rpm = thousands(f64::from(CLIENT_KEY_RPM)),
        keys = UPSTREAM_KEYS.len(),
        large = thousands(LARGE_POOL as f64),
        nginx = info.nginx_version.as_deref().unwrap_or("not installed"),
        cores = std::thread::available_parallelism().map_or(0, usize::from),
        load_before = info.load.0,
        load_after = info.load.1,
    )
}

/// One line per row: the medians over the rounds, failures summed over them.
fn medians_table(rows: &[Row]) -> String {
    let direct = rows.iter().find(|r| r.kind == Kind::Direct);
    let mut out = String::from(
        "| target | req/s @64 | p50 @64 | p99 @64 | p50 @1 | added @1 vs direct | stream req/s @64 | stream TTFB p50 (end) | CPU µs/req | peak RSS | failed | log drops |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let time = |row: &Row, f: fn(&Measurement) -> Duration| {
        row.median_of(|m| seconds(f(m)))
            .map_or("?".into(), |s| ms(Duration::from_secs_f64(s)))
    };
    for row in rows {
        let added = match direct {
            Some(direct) if direct.kind != row.kind => {
                median(&added_us(row, direct)).map_or("?".into(), |us| format!("{us:+.0} µs"))
            }
            _ => "—".into(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} ({}) | {} | {} | {} | {} |",
            row.kind.name(),
            row.median_of(rps).map_or("?".into(), thousands),
            time(row, |m| m.loaded.p50),
            time(row, |m| m.loaded.p99),
            time(row, |m| m.single.p50),
            added,
            row.median_of(stream_rps).map_or("?".into(), thousands),
            time(row, |m| m.ttfb_p50),
            time(row, |m| m.stream_total_p50),
            row.median_of(cpu)
                .map_or("?".into(), |us| format!("{us:.1}")),
            row.peak_rss_kib.map_or("?".into(), mib),
            row.failures(),
            row.log_drops.map_or("—".into(), |n| n.to_string()),
        );
    }
    out
}

/// One line per row: every round's figures and their spread, and the key split of each round.
fn rounds_table(rows: &[Row]) -> String {
    let mut out = String::from(
        "\nPer round (rounds in order, then (max − min) / median):\n\n\
         | target | req/s @64 | stream req/s @64 | CPU µs/req | key split (mock) |\n\
         |---|---|---|---|---|\n",
    );
    for row in rows {
        let splits: Vec<String> = row
            .rounds
            .iter()
            .filter_map(|m| m.split.as_ref().map(split_text))
            .collect();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            row.kind.name(),
            per_round(&row.each(rps), thousands),
            per_round(&row.each(stream_rps), thousands),
            per_round(&row.each(cpu), |us| format!("{us:.1}")),
            if splits.is_empty() {
                "—".into()
            } else {
                splits.join("; ")
            },
        );
    }
    out
}

/// A goal's bound.
#[derive(Clone, Copy)]
enum Bound {
    AtLeast(f64),
    AtMost(f64),
    /// Shown for information, no verdict.
    Info,
}

impl Bound {
    fn target(self, unit: &str) -> String {
        match self {
            Bound::AtLeast(v) => format!("≥ {v:.2}{unit}"),
            Bound::AtMost(v) => format!("≤ {v:.2}{unit}"),
            Bound::Info => "(information)".into(),
        }
    }

    fn met(self, value: f64) -> Option<bool> {
        match self {
            Bound::AtLeast(v) => Some(value >= v),
            Bound::AtMost(v) => Some(value <= v),
            Bound::Info => None,
        }
    }
}

/// One line of the goals table.
struct Check {
    goal: String,
    target: String,
    per_round: String,
    measured: String,
    met: Option<bool>,
}

/// A ratio of `row` to `base` on `metric`, computed within each round.
struct RatioGoal<'a> {
    goal: String,
    row: &'a Row,
    base: &'a Row,
    metric: fn(&Measurement) -> Option<f64>,
    bound: Bound,
}

impl RatioGoal<'_> {
    fn check(self) -> Check {
        let ratios: Vec<Option<f64>> = self
            .row
            .rounds
            .iter()
            .zip(&self.base.rounds)
            .map(|(r, b)| match ((self.metric)(r), (self.metric)(b)) {
                (Some(r), Some(b)) if b > 0.0 => Some(r / b),
                _ => None,
            })
            .collect();
        let listed: Vec<String> = ratios
            .iter()
            .map(|r| r.map_or("?".into(), |r| format!("{r:.2}×")))
            .collect();
        let mid = median(&ratios.iter().flatten().copied().collect::<Vec<_>>());
        Check {
            goal: self.goal,
            target: self.bound.target("×"),
            per_round: listed.join(" / "),
            measured: mid.map_or("?".into(), |r| format!("{r:.2}×")),
            met: mid.and_then(|r| self.bound.met(r)),
        }
    }
}

/// The goals of issues 23 and 15 that the rows present allow.
fn goals(rows: &[Row]) -> Vec<Check> {
    let find = |kind: Kind| rows.iter().find(|r| r.kind == kind);
    let (Some(direct), Some(proxy)) = (find(Kind::Direct), find(Kind::Lightweight)) else {
        return Vec::new();
    };
    let mut checks = nginx_goals(proxy, find(Kind::Nginx(NginxWorkers::Two)));
    checks.extend(proxy_goals(rows, direct, proxy));
    for row in rows.iter() {
        let Kind::Enterprise { block } = row.kind else {
            continue;
        };
        checks.push(
            RatioGoal {
                goal: format!("{} req/s vs lightweight", row.kind.name()),
                row,
                base: proxy,
                metric: rps,
                bound: Bound::AtLeast(if block == 1 { 0.6 } else { 0.8 }),
            }
            .check(),
        );
    }
    if let Some(large) = find(Kind::LargePool) {
        checks.push(
            RatioGoal {
                goal: format!(
                    "req/s with {} keys vs 3 keys (issue 15)",
                    thousands(LARGE_POOL as f64)
                ),
                row: large,
                base: proxy,
                metric: rps,
                bound: Bound::AtLeast(0.8),
            }
            .check(),
        );
    }
    if let Some(nginx) = find(Kind::Nginx(NginxWorkers::One)) {
        checks.extend(versus_nginx(proxy, nginx, Bound::Info, Bound::Info));
    }
    if let Some(bare) = find(Kind::PassThrough) {
        checks.extend(bare_stack(
            proxy,
            bare,
            find(Kind::Nginx(NginxWorkers::Two)),
        ));
    }
    checks
}

/// For information: how the bare hyper pass-through compares with nginx (two workers), and how
/// much of it the lightweight proxy keeps, so a report shows what the HTTP stack alone allows.
fn bare_stack(proxy: &Row, bare: &Row, nginx: Option<&Row>) -> Vec<Check> {
    let info = |goal: &str, row, base, metric| {
        RatioGoal {
            goal: goal.into(),
            row,
            base,
            metric,
            bound: Bound::Info,
        }
        .check()
    };
    let mut checks = Vec::new();
    if let Some(nginx) = nginx {
        checks.push(info(
            "hyper pass-through req/s vs nginx (2 workers)",
            bare,
            nginx,
            rps,
        ));
        checks.push(info(
            "hyper pass-through CPU per request vs nginx (2 workers)",
            bare,
            nginx,
            cpu,
        ));
    }
    checks.push(info(
        "lightweight non-streaming req/s vs hyper pass-through",
        proxy,
        bare,
        rps,
    ));
    checks
}

/// Throughput and CPU per request of the lightweight proxy against nginx with two workers.
fn nginx_goals(proxy: &Row, nginx: Option<&Row>) -> Vec<Check> {
    match nginx {
        Some(nginx) => versus_nginx(proxy, nginx, Bound::AtLeast(1.0), Bound::AtMost(1.25)),
        None => vec![Check {
            goal: "req/s and CPU per request vs nginx (2 workers)".into(),
            target: "≥ 1.00×, ≤ 1.25×".into(),
            per_round: "—".into(),
            measured: "nginx not installed".into(),
            met: None,
        }],
    }
}

fn versus_nginx(proxy: &Row, nginx: &Row, speed: Bound, cpu_bound: Bound) -> Vec<Check> {
    let name = nginx.kind.name();
    let name = name.trim_start_matches("nginx ");
    let goal = |goal: String, metric, bound| {
        RatioGoal {
            goal,
            row: proxy,
            base: nginx,
            metric,
            bound,
        }
        .check()
    };
    vec![
        goal(
            format!("lightweight non-streaming req/s vs nginx {name}"),
            rps,
            speed,
        ),
        goal(
            format!("lightweight streaming req/s vs nginx {name}"),
            stream_rps,
            speed,
        ),
        goal(
            format!("lightweight server CPU per request vs nginx {name}"),
            cpu,
            cpu_bound,
        ),
    ]
}

/// Latency, memory, failures, fairness and the request log's drops.
fn proxy_goals(rows: &[Row], direct: &Row, proxy: &Row) -> Vec<Check> {
    let added = added_us(proxy, direct);
    let added_median = median(&added);
    let proxied: Vec<&Row> = rows.iter().filter(|r| r.kind.proxied()).collect();
    let failed: u64 = proxied.iter().map(|r| r.failures()).sum();
    let drops: u64 = proxied.iter().filter_map(|r| r.log_drops).sum();
    let unread = proxied.iter().filter(|r| r.log_drops.is_none()).count();
    let splits: Vec<&BTreeMap<String, u64>> = proxy
        .rounds
        .iter()
        .filter_map(|m| m.split.as_ref())
        .collect();
    let even = splits.iter().filter(|s| split_is_even(s)).count();
    let verdicts: Vec<&str> = splits
        .iter()
        .map(|s| if split_is_even(s) { "even" } else { "uneven" })
        .collect();
    vec![
        Check {
            goal: "lightweight added latency at 1 connection vs direct".into(),
            target: "≤ 30 µs".into(),
            per_round: per_round(&added, |us| format!("{us:+.0} µs")),
            measured: added_median.map_or("?".into(), |us| format!("{us:.0} µs")),
            met: added_median.map(|us| us <= 30.0),
        },
        Check {
            goal: "lightweight peak RSS".into(),
            target: "≤ 40 MiB".into(),
            per_round: "— (read after the last round)".into(),
            measured: proxy.peak_rss_kib.map_or("?".into(), mib),
            met: proxy.peak_rss_kib.map(|kib| kib as f64 / 1024.0 <= 40.0),
        },
        Check {
            goal: "failed requests, every proxy row and round".into(),
            target: "0".into(),
            per_round: "—".into(),
            measured: failed.to_string(),
            met: Some(failed == 0),
        },
        Check {
            goal: "lightweight key split, every round".into(),
            target: "exactly even".into(),
            per_round: verdicts.join(" / "),
            measured: format!("{even} of {} rounds even", proxy.rounds.len()),
            met: Some(even == proxy.rounds.len()),
        },
        Check {
            goal: "request log drops, every proxy row".into(),
            target: "0".into(),
            per_round: "—".into(),
            measured: if unread == 0 {
                drops.to_string()
            } else {
                format!("{drops}; unread on {unread} row(s)")
            },
            met: Some(drops == 0 && unread == 0),
        },
    ]
}

fn goals_table(checks: &[Check]) -> String {
    if checks.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "\n| goal (issues 23, 15) | target | per round | median | met |\n|---|---|---|---|---|\n",
    );
    for check in checks {
        let met = match check.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "—",
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {met} |",
            check.goal, check.target, check.per_round, check.measured
        );
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::bench::oha::OhaRun;

    /// What one round of a row measured: req/s at 64 connections (streams at half that),
    /// p50 at one connection, CPU per request.
    struct Figures {
        rps: f64,
        single_us: u64,
        cpu_us: f64,
    }

    fn measurement(f: &Figures, split: Option<[u64; 3]>) -> Measurement {
        let run = |rps| OhaRun {
            successes: 100,
            failures: 0,
            rps,
            p50: Duration::from_micros(500),
            p99: Duration::from_millis(2),
        };
        Measurement {
            loaded: run(f.rps),
            single: OhaRun {
                p50: Duration::from_micros(f.single_us),
                ..run(f.rps)
            },
            stream: run(f.rps / 2.0),
            ttfb_p50: Duration::from_micros(300),
            stream_total_p50: Duration::from_millis(50),
            cpu_us_per_request: Some(f.cpu_us),
            split: split.map(|s| {
                UPSTREAM_KEYS
                    .iter()
                    .zip(s)
                    .map(|(k, n)| ((*k).to_owned(), n))
                    .collect()
            }),
            quiet_wait: Duration::from_millis(300),
            remeasured: 1,
        }
    }

    /// A row of three rounds.
    fn row(kind: Kind, rounds: [(f64, u64, f64); 3], split: Option<[u64; 3]>) -> Row {
        Row {
            kind,
            rounds: rounds
                .iter()
                .map(|&(rps, single_us, cpu_us)| {
                    measurement(
                        &Figures {
                            rps,
                            single_us,
                            cpu_us,
                        },
                        split,
                    )
                })
                .collect(),
            peak_rss_kib: Some(20 * 1024),
            log_drops: kind.proxied().then_some(0),
        }
    }

    fn rows() -> Vec<Row> {
        vec![
            row(
                Kind::Direct,
                [
                    (40_000.0, 60, 5.0),
                    (41_000.0, 62, 5.0),
                    (39_000.0, 58, 5.0),
                ],
                None,
            ),
            row(
                Kind::Nginx(NginxWorkers::One),
                [
                    (15_000.0, 80, 8.0),
                    (16_000.0, 82, 8.0),
                    (14_000.0, 78, 8.0),
                ],
                None,
            ),
            row(
                Kind::Nginx(NginxWorkers::Two),
                [
                    (20_000.0, 90, 8.0),
                    (21_000.0, 92, 8.0),
                    (20_000.0, 88, 8.0),
                ],
                None,
            ),
            row(
                Kind::Lightweight,
                [
                    (22_000.0, 85, 9.0),
                    (20_000.0, 90, 11.0),
                    (21_000.0, 80, 10.0),
                ],
                Some([10, 10, 11]),
            ),
            row(
                Kind::LargePool,
                [
                    (19_800.0, 90, 10.0),
                    (18_000.0, 95, 12.0),
                    (18_900.0, 85, 11.0),
                ],
                None,
            ),
            row(
                Kind::Enterprise { block: 1 },
                [
                    (11_000.0, 150, 20.0),
                    (13_000.0, 150, 20.0),
                    (12_600.0, 150, 20.0),
                ],
                Some([7, 7, 7]),
            ),
            row(
                Kind::Enterprise { block: 32 },
                [
                    (17_600.0, 120, 15.0),
                    (16_000.0, 120, 15.0),
                    (16_800.0, 120, 15.0),
                ],
                Some([32, 32, 0]),
            ),
        ]
    }

    fn info() -> RunInfo<'static> {
        RunInfo {
            oha_version: "oha 1.0",
            nginx_version: Some("nginx/1.22.1".into()),
            commit: "abc1234".into(),
            load: ("0.10 0.20 0.30".into(), "1.00 0.50 0.40".into()),
        }
    }

    #[test]
    fn renders_the_medians_of_the_rounds() {
        let report = render(&rows(), &info());

        assert!(
            report.contains(
                "| proxy (lightweight) | 21,000 | 0.500 ms | 2.000 ms | 0.085 ms | +25 µs | 10,500 \
                 | 0.300 ms (50.000 ms) | 10.0 | 20.0 MiB | 0 | 0 |\n"
            ),
            "{report}"
        );
        assert!(
            report.contains(
                "| nginx (2 workers) | 20,000 | 0.500 ms | 2.000 ms | 0.090 ms | +30 µs | 10,000 \
                 | 0.300 ms (50.000 ms) | 8.0 | 20.0 MiB | 0 | — |\n"
            ),
            "{report}"
        );
        assert!(
            report.contains("| direct to mock | 40,000 | 0.500 ms | 2.000 ms | 0.060 ms | — |"),
            "{report}"
        );
        assert!(
            report.contains("3 rounds, each measuring every row"),
            "{report}"
        );
        assert!(
            report.contains("under 10 % busy for 250 ms (the longest wait was 0.3 s)"),
            "{report}"
        );
        assert!(
            report.contains("more than 500 ms of CPU is measured again (21 times in this run)"),
            "{report}"
        );
    }

    #[test]
    fn renders_every_round_with_its_spread() {
        let report = render(&rows(), &info());

        assert!(
            report.contains(
                "| proxy (lightweight) | 22,000 / 20,000 / 21,000 (spread 9.5 %) \
                 | 11,000 / 10,000 / 10,500 (spread 9.5 %) | 9.0 / 11.0 / 10.0 (spread 20.0 %) \
                 | 10 / 11 / 10 (even); 10 / 11 / 10 (even); 10 / 11 / 10 (even) |\n"
            ),
            "{report}"
        );
        assert!(
            report.contains("| nginx (1 worker) | 15,000 / 16,000 / 14,000 (spread 13.3 %) |"),
            "{report}"
        );
    }

    #[test]
    fn judges_each_goal_on_the_median_of_the_per_round_ratios() {
        let report = render(&rows(), &info());

        for line in [
            "| lightweight non-streaming req/s vs nginx (2 workers) | ≥ 1.00× | 1.10× / 0.95× / 1.05× | 1.05× | yes |",
            "| lightweight streaming req/s vs nginx (2 workers) | ≥ 1.00× | 1.10× / 0.95× / 1.05× | 1.05× | yes |",
            "| lightweight server CPU per request vs nginx (2 workers) | ≤ 1.25× | 1.12× / 1.38× / 1.25× | 1.25× | yes |",
            "| lightweight added latency at 1 connection vs direct | ≤ 30 µs | +25 µs / +28 µs / +22 µs (spread 24.0 %) | 25 µs | yes |",
            "| lightweight peak RSS | ≤ 40 MiB | — (read after the last round) | 20.0 MiB | yes |",
            "| failed requests, every proxy row and round | 0 | — | 0 | yes |",
            "| lightweight key split, every round | exactly even | even / even / even | 3 of 3 rounds even | yes |",
            "| request log drops, every proxy row | 0 | — | 0 | yes |",
            "| proxy (enterprise, block 1) req/s vs lightweight | ≥ 0.60× | 0.50× / 0.65× / 0.60× | 0.60× | yes |",
            "| proxy (enterprise, block 32) req/s vs lightweight | ≥ 0.80× | 0.80× / 0.80× / 0.80× | 0.80× | yes |",
            "| req/s with 100,000 keys vs 3 keys (issue 15) | ≥ 0.80× | 0.90× / 0.90× / 0.90× | 0.90× | yes |",
            "| lightweight non-streaming req/s vs nginx (1 worker) | (information) | 1.47× / 1.25× / 1.50× | 1.47× | — |",
        ] {
            assert!(report.contains(&format!("{line}\n")), "{line}\n{report}");
        }
    }

    #[test]
    fn a_goal_missed_in_the_median_is_flagged() {
        let mut rows = rows();
        rows[3].rounds[1].split = Some(
            UPSTREAM_KEYS
                .iter()
                .zip([9, 10, 12])
                .map(|(k, n)| ((*k).to_owned(), n))
                .collect(),
        );
        rows[3].rounds[0].loaded.failures = 2;
        rows[6].log_drops = Some(5);
        rows[5].log_drops = None;
        rows[2].rounds[0].loaded.rps = 30_000.0;
        rows[2].rounds[1].loaded.rps = 30_000.0;

        let report = render(&rows, &info());

        for line in [
            "| lightweight non-streaming req/s vs nginx (2 workers) | ≥ 1.00× | 0.73× / 0.67× / 1.05× | 0.73× | **no** |",
            "| failed requests, every proxy row and round | 0 | — | 2 | **no** |",
            "| lightweight key split, every round | exactly even | even / uneven / even | 2 of 3 rounds even | **no** |",
            "| request log drops, every proxy row | 0 | — | 5; unread on 1 row(s) | **no** |",
        ] {
            assert!(report.contains(&format!("{line}\n")), "{line}\n{report}");
        }
        assert!(
            report.contains("| proxy (enterprise, block 32) | 16,800 |"),
            "{report}"
        );
        assert!(report.contains(" | 0 | 5 |\n"), "{report}");
        assert!(
            report.contains(" | 0 | — |\n| proxy (enterprise, block 32)"),
            "{report}"
        );
    }

    #[test]
    fn the_bare_pass_through_is_compared_for_information() {
        let mut rows = rows();
        rows.push(row(
            Kind::PassThrough,
            [
                (50_000.0, 40, 10.0),
                (40_000.0, 40, 12.0),
                (45_000.0, 40, 11.0),
            ],
            None,
        ));
        let report = render(&rows, &info());
        assert!(
            report.contains("| hyper pass-through req/s vs nginx (2 workers) | (information) |"),
            "{report}"
        );
        assert!(
            report.contains(
                "| lightweight non-streaming req/s vs hyper pass-through | (information) |"
            ),
            "{report}"
        );
        assert!(
            report.contains("| hyper pass-through (thread per core) |"),
            "{report}"
        );
    }

    #[test]
    fn without_nginx_the_nginx_goals_say_so() {
        let rows: Vec<Row> = rows()
            .into_iter()
            .filter(|r| !matches!(r.kind, Kind::Nginx(_)))
            .collect();

        let report = render(&rows, &info());

        assert!(
            report.contains(
                "| req/s and CPU per request vs nginx (2 workers) | ≥ 1.00×, ≤ 1.25× | — | nginx not installed | — |\n"
            ),
            "{report}"
        );
        assert!(!report.contains("nginx (1 worker) |"), "{report}");
    }

    #[test]
    fn medians_of_even_counts_are_the_mean_of_the_middle_two() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
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
