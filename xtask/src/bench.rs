//! `cargo xtask bench`: the load benchmark of issue 10, in one run on this machine.
//!
//! It builds the release binaries (`mock-upstream`, and `app` in the lightweight edition, plus
//! the enterprise edition when `TEST_MYSQL_URL` and `TEST_REDIS_URL` are set), starts the mock
//! upstream, an nginx pass-through in front of it when `nginx` is installed, and the server
//! configured through its admin API with one OpenAI-compatible LLM config of three keys (and, in
//! the lightweight edition, a second one of 100 000 keys, to show that a request's cost does not
//! grow with the pool), then drives each of them with `oha` (installed with `cargo install oha --locked` when missing) at
//! fixed concurrency and durations. It prints a markdown table, also written to
//! `<target>/bench/report.md`: req/s, p50/p99 at 64 connections, p50 at one connection and the
//! overhead versus going straight to the mock, streaming req/s and time to first byte, CPU time
//! per request and peak RSS of the process in the middle, and the key split the mock saw.
//!
//! Everything listens on and talks to 127.0.0.1 only; every child process is killed when the
//! task ends, on success or error ([`Child`] guards). Logs of the children stay in
//! `<target>/bench/` for a post-mortem.

mod http;
mod oha;
mod processes;
mod report;

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use self::{
    http::Http,
    oha::{OhaRun, ensure_oha, parse_oha},
    processes::{
        Child, clock_ticks_per_second, cpu_ticks, peak_rss_kib, start_mock, start_nginx,
        start_server, which,
    },
    report::{RunInfo, render},
};
use crate::{dist::target_dir, flags::Edition, project_root};

/// Connections of the throughput runs.
const CONNECTIONS: u32 = 64;
/// Length of each throughput run (no warm-up: the sanity request opens the pools).
const RUN: Duration = Duration::from_secs(5);
/// Length of the one-connection latency run.
const SINGLE_RUN: Duration = Duration::from_secs(3);
/// Chunks of a streamed answer before `[DONE]`.
const STREAM_CHUNKS: u32 = 5;
/// Delay between events in the time-to-first-byte probe: large enough that a proxy that
/// buffers the stream shows it (its first byte would come after `STREAM_CHUNKS` × this).
const TTFB_EVENT_DELAY_MS: u32 = 10;
/// Sequential requests of the time-to-first-byte probe.
const TTFB_SAMPLES: usize = 20;
/// Server workers (`WORKERS`): one per core of this 2-core machine.
const WORKERS: &str = "2";

const ADMIN_PASSWORD: &str = "bench-admin-password";
const JWT_SECRET: &str = "bench-jwt-secret-0123456789abcdef0123456789";
const PROXY_KEY: &str = "bench-proxy-key";
const UPSTREAM_KEYS: [&str; 3] = ["sk-bench-one", "sk-bench-two", "sk-bench-three"];
/// Keys of the large pool (issue 15: pools of tens of thousands of keys are a real use).
const LARGE_POOL: usize = 100_000;
/// Its row in the report.
const LARGE_POOL_ROW: &str = "proxy (lightweight, 100 000 keys)";
/// Keys per batch import request: 10 000 keys are about 250 KB of JSON, far under
/// `MAX_BODY_BYTES`.
const IMPORT_BATCH: usize = 10_000;
/// The key used when the mock is called directly or through nginx.
const DIRECT_KEY: &str = "sk-bench-direct";

const CHAT_BODY: &str =
    r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello"}]}"#;
const STREAM_BODY: &str =
    r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello"}],"stream":true}"#;

/// Enterprise block sizes measured (`ROTATION_BLOCK_SIZE`; 1 = exact fairness).
const ENTERPRISE_BLOCK_SIZES: [u32; 2] = [1, 32];

/// Runs the benchmark and writes the report.
///
/// # Errors
/// A failed build, a child that does not start, a failed sanity request or load run.
pub fn run() -> anyhow::Result<()> {
    let root = project_root();
    let target = target_dir(&root);
    let out = target.join("bench");
    fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let enterprise = enterprise_services();
    let binaries = build(&target, &out, enterprise.is_some())?;
    let oha = ensure_oha()?;
    let load_before = load_average();
    let clock_ticks = clock_ticks_per_second();
    let http = Http::new();

    let mock = start_mock(&binaries.mock, &out)?;
    let mock_base = format!("http://127.0.0.1:{}", mock.port);
    let bench = Bench {
        oha: &oha,
        http: &http,
        mock_base: &mock_base,
        clock_ticks,
    };
    let mut rows = Vec::new();

    eprintln!("== direct to the mock");
    let direct = Endpoint {
        name: "direct to mock".into(),
        chat_url: format!("{mock_base}/v1/chat/completions"),
        bearer: DIRECT_KEY.into(),
        pid: mock.child.id(),
        proxied: false,
    };
    rows.push(bench.measure(&direct)?);

    match which("nginx") {
        Some(nginx) => {
            eprintln!("== nginx pass-through");
            let server = start_nginx(&nginx, &out, mock.port)?;
            let endpoint = Endpoint {
                name: "nginx pass-through".into(),
                chat_url: format!("http://127.0.0.1:{}/v1/chat/completions", server.port),
                bearer: DIRECT_KEY.into(),
                pid: server.child.id(),
                proxied: false,
            };
            rows.push(bench.measure(&endpoint)?);
        }
        None => eprintln!("== nginx not installed: no pass-through row"),
    }

    eprintln!("== proxy, lightweight edition");
    let data = out.join("data-lightweight");
    let server = start_server(
        &binaries.lightweight,
        "lightweight",
        &out,
        &data,
        &[(
            "DATABASE_PATH".into(),
            data.join("bench.db").display().to_string(),
        )],
    )?;
    let config = bench.configure(&server, "bench", &UPSTREAM_KEYS.map(str::to_owned))?;
    rows.push(bench.measure(&config.endpoint("proxy (lightweight)", &server))?);
    eprintln!("== proxy, lightweight edition, {LARGE_POOL} keys");
    let pool: Vec<String> = (0..LARGE_POOL)
        .map(|i| format!("sk-bench-pool-{i:06}"))
        .collect();
    let large = bench.configure(&server, "bench-pool", &pool)?;
    rows.push(bench.measure(&large.endpoint(LARGE_POOL_ROW, &server))?);
    drop(server);

    if let (Some((mysql, redis)), Some(binary)) = (&enterprise, &binaries.enterprise) {
        for block in ENTERPRISE_BLOCK_SIZES {
            eprintln!("== proxy, enterprise edition, ROTATION_BLOCK_SIZE={block}");
            let unique = format!("{}-{}-{block}", std::process::id(), unix_seconds());
            let data = out.join(format!("data-enterprise-{block}"));
            let server = start_server(
                binary,
                &format!("enterprise-{block}"),
                &out,
                &data,
                &[
                    ("DATABASE_URL".into(), mysql.clone()),
                    ("REDIS_URL".into(), redis.clone()),
                    ("REDIS_NAMESPACE".into(), format!("akr-bench-{unique}")),
                    ("ROTATION_BLOCK_SIZE".into(), block.to_string()),
                ],
            )?;
            let config = bench.configure(
                &server,
                &format!("bench-{unique}"),
                &UPSTREAM_KEYS.map(str::to_owned),
            )?;
            let measured = bench
                .measure(&config.endpoint(&format!("proxy (enterprise, block {block})"), &server));
            // The database is shared with the test suite: leave no config behind.
            let deleted = http.delete(
                &format!("{}/admin/proxy-configs/{}", server.base(), config.id),
                &config.token,
            );
            rows.push(measured?);
            deleted?;
        }
    } else {
        eprintln!("== TEST_MYSQL_URL/TEST_REDIS_URL unset: no enterprise rows");
    }
    drop(mock);

    let report = render(
        &rows,
        &RunInfo {
            oha_version: &command_line_output(&oha, &["--version"]),
            nginx_version: which("nginx").map(|n| {
                let version = command_line_output(&n, &["-v"]);
                version
                    .strip_prefix("nginx version: ")
                    .map_or(version.clone(), str::to_owned)
            }),
            load: (load_before, load_average()),
            commit: command_line_output(
                Path::new("git"),
                &[
                    "-C",
                    &root.display().to_string(),
                    "describe",
                    "--always",
                    "--dirty",
                ],
            ),
        },
    );
    let path = out.join("report.md");
    fs::write(&path, &report).with_context(|| format!("cannot write {}", path.display()))?;
    println!("{report}");
    eprintln!("report written to {}", path.display());
    Ok(())
}

/// The 1, 5 and 15 minute load averages, or `?`.
fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|| "?".into())
}

/// `TEST_MYSQL_URL` and `TEST_REDIS_URL`, when both are set.
fn enterprise_services() -> Option<(String, String)> {
    let get = |name| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    Some((get("TEST_MYSQL_URL")?, get("TEST_REDIS_URL")?))
}

/// The binaries under test, copied out of the target directory so that the two editions of
/// `app` can sit side by side.
struct Binaries {
    mock: PathBuf,
    lightweight: PathBuf,
    enterprise: Option<PathBuf>,
}

fn build(target: &Path, out: &Path, enterprise: bool) -> anyhow::Result<Binaries> {
    let target_env = target.display().to_string();
    let env = [("CARGO_TARGET_DIR", target_env.as_str())];
    let bin = out.join("bin");
    fs::create_dir_all(&bin)?;
    crate::run_with_env(
        "cargo",
        &["build", "--release", "-p", "mock-upstream"],
        &env,
    )?;
    let mock = copy_binary(target, "mock-upstream", &bin.join("mock-upstream"))?;
    let build_app = |edition: Edition| -> anyhow::Result<PathBuf> {
        let mut args = vec!["build", "--release", "-p", "app"];
        args.extend_from_slice(edition.cargo_features());
        crate::run_with_env("cargo", &args, &env)?;
        copy_binary(target, "app", &bin.join(format!("app-{edition}")))
    };
    let lightweight = build_app(Edition::Lightweight)?;
    let enterprise = if enterprise {
        Some(build_app(Edition::Enterprise)?)
    } else {
        None
    };
    Ok(Binaries {
        mock,
        lightweight,
        enterprise,
    })
}

fn copy_binary(target: &Path, name: &str, to: &Path) -> anyhow::Result<PathBuf> {
    let from = target.join("release").join(name);
    // Unlinked first: a copy of an earlier run may still be running, and overwriting a running
    // executable fails (ETXTBSY) where replacing it does not.
    if to.exists() {
        fs::remove_file(to).with_context(|| format!("cannot replace {}", to.display()))?;
    }
    fs::copy(&from, to)
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    Ok(to.to_owned())
}

/// What one row drives: a chat completions URL, the bearer token it needs, and the process
/// whose CPU time and memory are reported.
struct Endpoint {
    name: String,
    chat_url: String,
    bearer: String,
    pid: u32,
    /// Whether requests go through the key rotation (then the mock's key split is reported).
    proxied: bool,
}

/// The LLM config made on a server for the bench.
struct BenchConfig {
    id: i64,
    slug: String,
    token: String,
}

impl BenchConfig {
    fn endpoint(&self, name: &str, server: &Child) -> Endpoint {
        Endpoint {
            name: name.into(),
            chat_url: format!("{}/llm/{}/v1/chat/completions", server.base(), self.slug),
            bearer: PROXY_KEY.into(),
            pid: server.child.id(),
            proxied: true,
        }
    }
}

/// One row of the report.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    name: String,
    /// 64 connections, non-streaming.
    loaded: OhaRun,
    /// One connection, non-streaming.
    single: OhaRun,
    /// 64 connections, streaming.
    stream: OhaRun,
    /// Median time to the first body byte of a stream whose events are 10 ms apart.
    ttfb_p50: Duration,
    /// Median time to its end.
    stream_total_p50: Duration,
    /// CPU time of the process in the middle per request of the 64-connection run.
    cpu_us_per_request: Option<f64>,
    /// VmHWM of that process at the end of its runs, in KiB.
    peak_rss_kib: Option<u64>,
    /// Requests per upstream key seen by the mock (proxied rows only).
    split: Option<BTreeMap<String, u64>>,
}

struct Bench<'a> {
    oha: &'a Path,
    http: &'a Http,
    mock_base: &'a str,
    clock_ticks: f64,
}

impl Bench<'_> {
    /// Logs in, creates the OpenAI-compatible LLM config `slug` pointing at the mock, adds
    /// `keys` (in batches of [`IMPORT_BATCH`]).
    fn configure(
        &self,
        server: &Child,
        slug: &str,
        keys: &[String],
    ) -> anyhow::Result<BenchConfig> {
        let base = server.base();
        let (status, body) = self.http.post_json(
            &format!("{base}/admin/login"),
            None,
            &json!({"username": "admin", "password": ADMIN_PASSWORD}),
        )?;
        let token = parse_field(status, &body, "access_token", "login")?;
        let (status, body) = self.http.post_json(
            &format!("{base}/admin/proxy-configs"),
            Some(&token),
            &json!({
                "name": slug, "slug": slug, "config_type": "LLM",
                "target_base_url": format!("{}/v1", self.mock_base),
                "api_format": "openai_compatible",
            }),
        )?;
        let id: Value = serde_json::from_str(&parse_field(status, &body, "id", "create config")?)?;
        let id = id.as_i64().context("config id is not a number")?;
        for batch in keys.chunks(IMPORT_BATCH) {
            let (status, body) = self.http.post_json(
                &format!("{base}/admin/proxy-configs/{id}/keys/batch"),
                Some(&token),
                &json!({ "keys": batch }),
            )?;
            if !(200..300).contains(&status) {
                bail!("adding keys answered {status}: {body}");
            }
        }
        Ok(BenchConfig {
            id,
            slug: slug.to_owned(),
            token,
        })
    }

    fn measure(&self, endpoint: &Endpoint) -> anyhow::Result<Row> {
        let mock_reset = format!("{}/__reset", self.mock_base);
        if endpoint.proxied {
            self.http.post_json(&mock_reset, None, &json!({}))?;
        }
        let (status, body) = self.http.post_json(
            &endpoint.chat_url,
            Some(&endpoint.bearer),
            &serde_json::from_str(CHAT_BODY)?,
        )?;
        if status != 200 || !body.contains("chat.completion") {
            bail!(
                "{}: the sanity request answered {status}: {body}",
                endpoint.name
            );
        }
        let cpu_before = cpu_ticks(endpoint.pid);
        let loaded = self.oha(endpoint, CONNECTIONS, RUN, false)?;
        let cpu_after = cpu_ticks(endpoint.pid);
        let single = self.oha(endpoint, 1, SINGLE_RUN, false)?;
        let stream = self.oha(endpoint, CONNECTIONS, RUN, true)?;
        let ttfb_url = format!(
            "{}?chunks={STREAM_CHUNKS}&delay_ms={TTFB_EVENT_DELAY_MS}",
            endpoint.chat_url
        );
        let mut firsts = Vec::with_capacity(TTFB_SAMPLES);
        let mut totals = Vec::with_capacity(TTFB_SAMPLES);
        for _ in 0..TTFB_SAMPLES {
            let (first, total) = self.http.time_stream(&ttfb_url, &endpoint.bearer)?;
            firsts.push(first);
            totals.push(total);
        }
        let cpu_us_per_request = match (cpu_before, cpu_after) {
            (Some(before), Some(after)) if loaded.successes > 0 => Some(
                after.saturating_sub(before) as f64 / self.clock_ticks * 1e6
                    / loaded.successes as f64,
            ),
            _ => None,
        };
        let split = if endpoint.proxied {
            let (_, stats) = self.http.get(&format!("{}/__stats", self.mock_base))?;
            Some(parse_split(&stats)?)
        } else {
            None
        };
        let row = Row {
            name: endpoint.name.clone(),
            loaded,
            single,
            stream,
            ttfb_p50: median(&mut firsts),
            stream_total_p50: median(&mut totals),
            cpu_us_per_request,
            peak_rss_kib: peak_rss_kib(endpoint.pid),
            split,
        };
        eprintln!("{row:?}");
        Ok(row)
    }

    fn oha(
        &self,
        endpoint: &Endpoint,
        connections: u32,
        duration: Duration,
        stream: bool,
    ) -> anyhow::Result<OhaRun> {
        let url = if stream {
            format!("{}?chunks={STREAM_CHUNKS}&delay_ms=0", endpoint.chat_url)
        } else {
            endpoint.chat_url.clone()
        };
        let output = Command::new(self.oha)
            .args(["--no-tui", "--output-format", "json"])
            .args(["-z", &format!("{}s", duration.as_secs())])
            .args(["-c", &connections.to_string()])
            .arg("--wait-ongoing-requests-after-deadline")
            .args(["-m", "POST", "-H", "content-type: application/json"])
            .args(["-H", &format!("authorization: Bearer {}", endpoint.bearer)])
            .args(["-d", if stream { STREAM_BODY } else { CHAT_BODY }])
            .arg(&url)
            .stdin(Stdio::null())
            .output()
            .context("cannot run oha")?;
        if !output.status.success() {
            bail!(
                "oha failed against {url}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let run = parse_oha(&String::from_utf8_lossy(&output.stdout))
            .with_context(|| format!("cannot read oha's report for {url}"))?;
        if run.successes == 0 {
            bail!("no request to {url} succeeded: {run:?}");
        }
        Ok(run)
    }
}

/// `field` of a JSON answer, as text; fails with the body when the status is not 2xx.
fn parse_field(status: u16, body: &str, field: &str, what: &str) -> anyhow::Result<String> {
    if !(200..300).contains(&status) {
        bail!("{what} answered {status}: {body}");
    }
    let json: Value = serde_json::from_str(body).with_context(|| format!("{what}: {body}"))?;
    match &json[field] {
        Value::String(text) => Ok(text.clone()),
        Value::Null => bail!("{what}: no `{field}` in {body}"),
        other => Ok(other.to_string()),
    }
}

/// The mock's `/__stats` keys.
fn parse_split(text: &str) -> anyhow::Result<BTreeMap<String, u64>> {
    let json: Value = serde_json::from_str(text).context("the mock's stats are not JSON")?;
    let keys = json["keys"].as_object().context("no keys in the stats")?;
    Ok(keys
        .iter()
        .map(|(key, count)| (key.clone(), count.as_u64().unwrap_or(0)))
        .collect())
}

fn median(values: &mut [Duration]) -> Duration {
    values.sort();
    values.get(values.len() / 2).copied().unwrap_or_default()
}

fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The first line a command prints (stdout, else stderr), or `?`.
fn command_line_output(program: &Path, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .and_then(|o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8(text)
                .ok()?
                .lines()
                .next()
                .map(|l| l.trim().to_owned())
        })
        .unwrap_or_else(|| "?".into())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::bench::report::{split_is_even, split_text};

    #[test]
    fn reads_the_mock_key_split() {
        let split = parse_split(r#"{"total":7,"keys":{"sk-a":3,"sk-b":2,"sk-c":2}}"#).unwrap();
        assert_eq!(split_text(&split), "3 / 2 / 2 (even)");
        assert!(split_is_even(&split));
        let uneven = parse_split(r#"{"total":7,"keys":{"a":5,"b":1,"c":1}}"#).unwrap();
        assert_eq!(split_text(&uneven), "5 / 1 / 1 (spread 4)");
        assert!(!split_is_even(&uneven));
    }
}
