//! `cargo xtask bench`: the load benchmark of issue 23 (after issues 10 and 15), in one run on
//! this machine.
//!
//! It builds the release binaries (`mock-upstream` and `bench-passthrough`, and `app` in the
//! lightweight edition, plus the enterprise edition when `TEST_MYSQL_URL` and `TEST_REDIS_URL`
//! are set), then starts every target once: the mock upstream; two nginx pass-throughs in front
//! of it when `nginx` is installed, one worker without a master (`master_process off`) and a
//! master with two workers (one per core, as the server has); the bare hyper pass-through (a
//! thread per core, nothing but the HTTP stack: what the stack alone allows, for information);
//! the lightweight server with one OpenAI-compatible LLM
//! config of three keys, a second lightweight server whose config has 100 000 keys (a request's
//! cost must not grow with the pool), and one enterprise server per `ROTATION_BLOCK_SIZE`. Each
//! server is configured through its admin API, and its rows send a client key (an `rpm` limit
//! far above the load, so its checks run on every request) with the request log on
//! (`REQUEST_LOG_MAX_ROWS` at its default).
//!
//! Then [`ROUNDS`] rounds (`BENCH_ROUNDS` overrides) each measure every row, in the same order,
//! with `oha` (installed with `cargo install oha --locked` when missing) at fixed concurrency and
//! durations, so that drift on the machine hits every row alike; each row starts on a quiet
//! machine, and is measured again when the other servers' periodic chores (request-log prune,
//! key re-probe), which come due together, used more than [`DISTURBANCE_LIMIT`] of CPU during
//! it. Peak RSS and each server's
//! `akr_request_log_dropped_total` (from `/metrics`) are read after the last round. It prints a
//! markdown report, also written to `<target>/bench/report.md`: per row the median over the
//! rounds of req/s, p50/p99 at 64 connections, p50 at one connection and the overhead versus
//! going straight to the mock, streaming req/s and time to first byte, CPU time per request
//! (summed over an nginx master and its workers), peak RSS, failed requests and request-log
//! drops; the per-round figures with their spread and the key split the mock saw each round;
//! and the goals of issues 23 and 15, each computed as a ratio within every round and judged on
//! the median.
//!
//! Everything listens on and talks to 127.0.0.1 only; every child process is stopped when the
//! task ends, on success or error ([`Child`] guards), and what the bench made in the shared
//! enterprise database is deleted. Logs of the children stay in `<target>/bench/` for a
//! post-mortem.

mod http;
mod oha;
mod processes;
mod report;

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use self::{
    http::Http,
    oha::{OhaRun, ensure_oha, parse_oha},
    processes::{
        Child, MachineCpu, NginxWorkers, ProcessTree, clock_ticks_per_second, start_mock,
        start_nginx, start_passthrough, start_server, which,
    },
    report::{RunInfo, render},
};
use crate::{dist::target_dir, flags::Edition, project_root};

/// Rounds of the run (`BENCH_ROUNDS` overrides): every row is measured once per round.
const ROUNDS: usize = 3;
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
/// The nginx baselines: the old one-process row, and a master with a worker per core.
const NGINX_WORKERS: [NginxWorkers; 2] = [NginxWorkers::One, NginxWorkers::Two];

const ADMIN_PASSWORD: &str = "bench-admin-password";
const JWT_SECRET: &str = "bench-jwt-secret-0123456789abcdef0123456789";
/// The operator's key (`GLOBAL_PROXY_KEYS`), set so that none is generated; the rows send a
/// client key instead.
const PROXY_KEY: &str = "bench-proxy-key";
/// `METRICS_TOKEN` of the servers, sent to read their request-log drop counter.
const METRICS_TOKEN: &str = "bench-metrics-token";
/// `REQUEST_LOG_MAX_ROWS`: its default, set explicitly so that the request log is visibly on.
const REQUEST_LOG_MAX_ROWS: &str = "1000000";
/// `rpm` of the client key: the largest the admin API accepts (`MAX_CLIENT_RATE`). Its GCRA
/// admits a burst of 1 000 000 requests, then one every 60 µs; each server has one row, which
/// sends a few hundred thousand requests in a round of about 15 s and then idles while the other
/// rows run, so the limit never refuses a request (a 429 would show as a failed request).
const CLIENT_KEY_RPM: u32 = 1_000_000;
/// Before each row the machine must have been at most this busy (a share of all its cores)
/// over [`QUIET_WINDOW`], so that what the previous row left running (a request log still
/// writing its batches, the database taking them) is not billed to the next row.
const QUIET_BUSY_SHARE: f64 = 0.10;
const QUIET_WINDOW: Duration = Duration::from_millis(250);
/// Longest wait for a quiet machine; the row is then measured anyway, with a warning.
const QUIET_WAIT_LIMIT: Duration = Duration::from_secs(20);
/// CPU time the other servers of the bench may spend while a row is measured. They are idle
/// then but for their periodic chores (request-log prune, key re-probe), which all come due
/// together since the servers start within a minute; a row they disturb more is measured again.
const DISTURBANCE_LIMIT: Duration = Duration::from_millis(500);
/// Most times a disturbed row is measured again; the last measurement stands.
const MAX_REMEASURES: u32 = 2;
/// Pause before the drop counters are read (a few request-log batch intervals).
const LOG_SETTLE: Duration = Duration::from_secs(2);
const UPSTREAM_KEYS: [&str; 3] = ["sk-bench-one", "sk-bench-two", "sk-bench-three"];
/// Keys of the large pool (issue 15: pools of tens of thousands of keys are a real use).
const LARGE_POOL: usize = 100_000;
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
/// A failed build, a child that does not start, a failed sanity request or load run, a bad
/// `BENCH_ROUNDS`.
pub fn run() -> anyhow::Result<()> {
    let rounds = parse_rounds(std::env::var("BENCH_ROUNDS").ok().as_deref())?;
    let root = project_root();
    let target = target_dir(&root);
    let out = target.join("bench");
    fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let enterprise = enterprise_services();
    let binaries = build(&target, &out, enterprise.is_some())?;
    let oha = ensure_oha()?;
    let load_before = load_average();
    let http = Http::new();

    let mock = start_mock(&binaries.mock, &out)?;
    let bench = Bench {
        oha: &oha,
        http: &http,
        mock_base: &mock.base(),
        clock_ticks: clock_ticks_per_second(),
        out: &out,
    };
    let mut lab = Lab::default();
    let rows = lab
        .start(&bench, &binaries, enterprise.as_ref(), &mock)
        .and_then(|()| bench.measure_rounds(&lab.endpoints, rounds))
        .map(|measured| bench.rows(&lab.endpoints, measured));
    // The enterprise database is shared with the test suite: leave no config behind, whatever
    // happened.
    let cleaned = lab.clean_up(&http);
    let rows = rows?;
    cleaned?;
    drop(lab);
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

/// The number of rounds: `BENCH_ROUNDS` when set, else [`ROUNDS`].
fn parse_rounds(value: Option<&str>) -> anyhow::Result<usize> {
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(ROUNDS);
    };
    match value.parse::<usize>() {
        Ok(rounds) if rounds >= 1 => Ok(rounds),
        _ => bail!("BENCH_ROUNDS is {value:?}: set it to a whole number of rounds, at least 1"),
    }
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
    passthrough: PathBuf,
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
    let passthrough = copy_binary(target, "bench-passthrough", &bin.join("bench-passthrough"))?;
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
        passthrough,
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

/// What a row measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The mock upstream itself.
    Direct,
    /// nginx passing requests through to the mock.
    Nginx(NginxWorkers),
    /// `bench-passthrough`: hyper passing requests through, a thread per core, nothing else.
    PassThrough,
    /// The lightweight edition with [`UPSTREAM_KEYS`].
    Lightweight,
    /// The lightweight edition with [`LARGE_POOL`] keys.
    LargePool,
    /// The enterprise edition with this `ROTATION_BLOCK_SIZE`.
    Enterprise { block: u32 },
}

impl Kind {
    fn name(self) -> String {
        match self {
            Kind::Direct => "direct to mock".into(),
            Kind::Nginx(NginxWorkers::One) => "nginx (1 worker)".into(),
            Kind::Nginx(NginxWorkers::Two) => "nginx (2 workers)".into(),
            Kind::PassThrough => "hyper pass-through (thread per core)".into(),
            Kind::Lightweight => "proxy (lightweight)".into(),
            Kind::LargePool => "proxy (lightweight, 100 000 keys)".into(),
            Kind::Enterprise { block } => format!("proxy (enterprise, block {block})"),
        }
    }

    /// Whether requests go through the key rotation (then the mock's key split is reported).
    fn proxied(self) -> bool {
        matches!(
            self,
            Kind::Lightweight | Kind::LargePool | Kind::Enterprise { .. }
        )
    }
}

/// What one row drives: a chat completions URL, the bearer token it needs, and the process
/// (with its children) whose CPU time and memory are reported.
struct Endpoint {
    kind: Kind,
    chat_url: String,
    bearer: String,
    pid: u32,
    /// The server's admin side, on proxy rows.
    server: Option<ProxySetup>,
}

/// What the bench made on a proxy server: an LLM config and a client key.
struct ProxySetup {
    base: String,
    admin_token: String,
    config_id: i64,
    client_key_id: i64,
    /// Whether the database outlives the bench (the enterprise one, shared with the test
    /// suite): then the config and the client key are deleted at the end.
    shared_database: bool,
}

/// Where a proxy server keeps its state.
enum Backend<'a> {
    /// A fresh SQLite file in the server's data directory.
    Sqlite,
    /// The shared MySQL and Redis, with this `ROTATION_BLOCK_SIZE`.
    Shared {
        mysql: &'a str,
        redis: &'a str,
        block: u32,
    },
}

/// A proxy server to start and configure.
struct ProxyPlan<'a> {
    kind: Kind,
    binary: &'a Path,
    /// Names its log and data directory.
    label: String,
    backend: Backend<'a>,
    keys: Vec<String>,
}

/// The servers under test, started once, and the rows that drive them.
#[derive(Default)]
struct Lab {
    servers: Vec<Child>,
    endpoints: Vec<Endpoint>,
}

impl Lab {
    /// Starts every target: the mock's own row, both nginx baselines when nginx is installed,
    /// the lightweight servers (3 keys and [`LARGE_POOL`] keys), and the enterprise ones (one
    /// per block size) when MySQL and Redis are given. They all stay up for every round.
    fn start(
        &mut self,
        bench: &Bench<'_>,
        binaries: &Binaries,
        enterprise: Option<&(String, String)>,
        mock: &Child,
    ) -> anyhow::Result<()> {
        self.endpoints.push(Endpoint {
            kind: Kind::Direct,
            chat_url: format!("{}/v1/chat/completions", mock.base()),
            bearer: DIRECT_KEY.into(),
            pid: mock.child.id(),
            server: None,
        });
        self.start_nginx(bench, mock)?;
        self.start_passthrough(bench, &binaries.passthrough, mock)?;
        let three = UPSTREAM_KEYS.map(str::to_owned).to_vec();
        self.start_proxy(
            bench,
            ProxyPlan {
                kind: Kind::Lightweight,
                binary: &binaries.lightweight,
                label: "lightweight".into(),
                backend: Backend::Sqlite,
                keys: three.clone(),
            },
        )?;
        self.start_proxy(
            bench,
            ProxyPlan {
                kind: Kind::LargePool,
                binary: &binaries.lightweight,
                label: "lightweight-pool".into(),
                backend: Backend::Sqlite,
                keys: (0..LARGE_POOL)
                    .map(|i| format!("sk-bench-pool-{i:06}"))
                    .collect(),
            },
        )?;
        let (Some((mysql, redis)), Some(binary)) = (enterprise, &binaries.enterprise) else {
            eprintln!("== TEST_MYSQL_URL/TEST_REDIS_URL unset: no enterprise rows");
            return Ok(());
        };
        for block in ENTERPRISE_BLOCK_SIZES {
            self.start_proxy(
                bench,
                ProxyPlan {
                    kind: Kind::Enterprise { block },
                    binary,
                    label: format!("enterprise-{block}"),
                    backend: Backend::Shared {
                        mysql,
                        redis,
                        block,
                    },
                    keys: three.clone(),
                },
            )?;
        }
        Ok(())
    }

    fn start_nginx(&mut self, bench: &Bench<'_>, mock: &Child) -> anyhow::Result<()> {
        let Some(nginx) = which("nginx") else {
            eprintln!("== nginx not installed: no nginx rows");
            return Ok(());
        };
        for workers in NGINX_WORKERS {
            eprintln!("== starting nginx, {} worker(s)", workers.count());
            let server = start_nginx(&nginx, bench.out, mock.port, workers)?;
            self.add_pass_through(Kind::Nginx(workers), server);
        }
        Ok(())
    }

    /// The bare HTTP stack's row: what hyper alone costs, laid out like nginx's workers.
    fn start_passthrough(
        &mut self,
        bench: &Bench<'_>,
        binary: &Path,
        mock: &Child,
    ) -> anyhow::Result<()> {
        eprintln!("== starting {}", Kind::PassThrough.name());
        let server = start_passthrough(binary, bench.out, mock.port)?;
        self.add_pass_through(Kind::PassThrough, server);
        Ok(())
    }

    /// A row for `server`, which passes requests to the mock as they come, with the mock's own
    /// key (nginx, the bare pass-through); the server stays up for every round.
    fn add_pass_through(&mut self, kind: Kind, server: Child) {
        self.endpoints.push(Endpoint {
            kind,
            chat_url: format!("{}/v1/chat/completions", server.base()),
            bearer: DIRECT_KEY.into(),
            pid: server.child.id(),
            server: None,
        });
        self.servers.push(server);
    }

    fn start_proxy(&mut self, bench: &Bench<'_>, plan: ProxyPlan<'_>) -> anyhow::Result<()> {
        eprintln!("== starting {}", plan.kind.name());
        let data = bench.out.join(format!("data-{}", plan.label));
        let unique = format!("{}-{}-{}", std::process::id(), unix_seconds(), plan.label);
        let env: Vec<(String, String)> = match plan.backend {
            Backend::Sqlite => vec![(
                "DATABASE_PATH".into(),
                data.join("bench.db").display().to_string(),
            )],
            Backend::Shared {
                mysql,
                redis,
                block,
            } => vec![
                ("DATABASE_URL".into(), mysql.to_owned()),
                ("REDIS_URL".into(), redis.to_owned()),
                ("REDIS_NAMESPACE".into(), format!("akr-bench-{unique}")),
                ("ROTATION_BLOCK_SIZE".into(), block.to_string()),
            ],
        };
        let server = start_server(plan.binary, &plan.label, bench.out, &data, &env)?;
        let endpoint = bench.configure(
            &server,
            &plan,
            &format!("bench-{unique}"),
            matches!(plan.backend, Backend::Shared { .. }),
        )?;
        self.endpoints.push(endpoint);
        self.servers.push(server);
        Ok(())
    }

    /// Deletes what the bench made in a shared database; every deletion is tried.
    fn clean_up(&self, http: &Http) -> anyhow::Result<()> {
        let mut outcome = Ok(());
        for setup in self
            .endpoints
            .iter()
            .filter_map(|e| e.server.as_ref())
            .filter(|s| s.shared_database)
        {
            for path in [
                format!("proxy-configs/{}", setup.config_id),
                format!("client-keys/{}", setup.client_key_id),
            ] {
                let url = format!("{}/admin/{path}", setup.base);
                if let Err(error) = http.delete(&url, &setup.admin_token) {
                    eprintln!("cannot clean up: {error:#}");
                    outcome = Err(error);
                }
            }
        }
        outcome
    }
}

/// What one round measured on one row.
#[derive(Debug, Clone, PartialEq)]
struct Measurement {
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
    /// CPU time of the process in the middle (with its children) per request of the
    /// 64-connection run.
    cpu_us_per_request: Option<f64>,
    /// Requests per upstream key seen by the mock (proxied rows only).
    split: Option<BTreeMap<String, u64>>,
    /// How long the row waited for a quiet machine before it started.
    quiet_wait: Duration,
    /// How many earlier measurements of this row in this round were dropped because other
    /// servers' background work used more than [`DISTURBANCE_LIMIT`] during them.
    remeasured: u32,
}

/// One row of the report: every round's figures, then what is read once at the end.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    kind: Kind,
    /// One per round, in round order.
    rounds: Vec<Measurement>,
    /// VmHWM of the process in the middle (summed over its children) after the last round,
    /// in KiB.
    peak_rss_kib: Option<u64>,
    /// `akr_request_log_dropped_total` after the last round (proxied rows only).
    log_drops: Option<u64>,
}

struct Bench<'a> {
    oha: &'a Path,
    http: &'a Http,
    mock_base: &'a str,
    clock_ticks: f64,
    out: &'a Path,
}

impl Bench<'_> {
    /// Logs in, creates the OpenAI-compatible LLM config `slug` pointing at the mock with the
    /// plan's keys (in batches of [`IMPORT_BATCH`]) and a client key, and returns the row that
    /// drives it with that client key.
    fn configure(
        &self,
        server: &Child,
        plan: &ProxyPlan<'_>,
        slug: &str,
        shared_database: bool,
    ) -> anyhow::Result<Endpoint> {
        let base = server.base();
        let (status, body) = self.http.post_json(
            &format!("{base}/admin/login"),
            None,
            &json!({"username": "admin", "password": ADMIN_PASSWORD}),
        )?;
        let token = parse_field(status, &body, "access_token", "login")?;
        let config_id = self.create_config(&base, &token, slug)?;
        for batch in plan.keys.chunks(IMPORT_BATCH) {
            let (status, body) = self.http.post_json(
                &format!("{base}/admin/proxy-configs/{config_id}/keys/batch"),
                Some(&token),
                &json!({ "keys": batch }),
            )?;
            if !(200..300).contains(&status) {
                bail!("adding keys answered {status}: {body}");
            }
        }
        let (status, body) = self.http.post_json(
            &format!("{base}/admin/client-keys"),
            Some(&token),
            &json!({"name": slug, "rpm": CLIENT_KEY_RPM}),
        )?;
        let client_key_id = parse_id(status, &body, "create client key")?;
        let secret = parse_field(status, &body, "secret", "create client key")?;
        Ok(Endpoint {
            kind: plan.kind,
            chat_url: format!("{base}/llm/{slug}/v1/chat/completions"),
            bearer: secret,
            pid: server.child.id(),
            server: Some(ProxySetup {
                base,
                admin_token: token,
                config_id,
                client_key_id,
                shared_database,
            }),
        })
    }

    fn create_config(&self, base: &str, token: &str, slug: &str) -> anyhow::Result<i64> {
        let (status, body) = self.http.post_json(
            &format!("{base}/admin/proxy-configs"),
            Some(token),
            &json!({
                "name": slug, "slug": slug, "config_type": "LLM",
                "target_base_url": format!("{}/v1", self.mock_base),
                "api_format": "openai_compatible",
            }),
        )?;
        parse_id(status, &body, "create config")
    }

    /// Measures every row once per round, rows in the same order each round, so that whatever
    /// drifts on the machine during the run hits every row alike.
    fn measure_rounds(
        &self,
        endpoints: &[Endpoint],
        rounds: usize,
    ) -> anyhow::Result<Vec<Vec<Measurement>>> {
        let mut measured: Vec<Vec<Measurement>> = endpoints
            .iter()
            .map(|_| Vec::with_capacity(rounds))
            .collect();
        for round in 1..=rounds {
            for (endpoint, row) in endpoints.iter().zip(&mut measured) {
                eprintln!("== round {round}/{rounds}: {}", endpoint.kind.name());
                let others: Vec<u32> = endpoints
                    .iter()
                    .filter(|other| other.server.is_some() && other.pid != endpoint.pid)
                    .map(|other| other.pid)
                    .collect();
                row.push(self.measure_undisturbed(endpoint, &others)?);
            }
        }
        Ok(measured)
    }

    /// Measures a row again (at most [`MAX_REMEASURES`] times) while the other servers, `others`,
    /// used more than [`DISTURBANCE_LIMIT`] of CPU during its measurement.
    fn measure_undisturbed(
        &self,
        endpoint: &Endpoint,
        others: &[u32],
    ) -> anyhow::Result<Measurement> {
        let cpu_of_others = || -> u64 {
            others
                .iter()
                .filter_map(|pid| ProcessTree::of(*pid).cpu_ticks())
                .sum()
        };
        let mut remeasured = 0;
        loop {
            let before = cpu_of_others();
            let measurement = self.measure(endpoint)?;
            let used = cpu_of_others().saturating_sub(before) as f64 / self.clock_ticks;
            if used <= DISTURBANCE_LIMIT.as_secs_f64() || remeasured == MAX_REMEASURES {
                return Ok(Measurement {
                    remeasured,
                    ..measurement
                });
            }
            eprintln!(
                "{}: the other servers used {used:.2} s of CPU meanwhile; measuring it again",
                endpoint.kind.name()
            );
            remeasured += 1;
        }
    }

    /// The rows: each endpoint's rounds, its peak RSS now, and its request-log drops.
    fn rows(&self, endpoints: &[Endpoint], measured: Vec<Vec<Measurement>>) -> Vec<Row> {
        // The last records reach the store within a batch interval: a store that refuses them
        // counts them as dropped then, so the counters are read after a pause.
        std::thread::sleep(LOG_SETTLE);
        endpoints
            .iter()
            .zip(measured)
            .map(|(endpoint, rounds)| Row {
                kind: endpoint.kind,
                rounds,
                peak_rss_kib: ProcessTree::of(endpoint.pid).peak_rss_kib(),
                log_drops: endpoint
                    .server
                    .as_ref()
                    .and_then(|server| self.log_drops(server)),
            })
            .collect()
    }

    /// `akr_request_log_dropped_total` of a server, from its `/metrics`; `None` (and a
    /// warning) when it cannot be read, so that the rounds already measured still make a report
    /// (whose drop goal is then not met).
    fn log_drops(&self, server: &ProxySetup) -> Option<u64> {
        let url = format!("{}/metrics", server.base);
        match self.http.get_authorized(&url, METRICS_TOKEN) {
            Ok((200, body)) => Some(parse_log_drops(&body)),
            Ok((status, body)) => {
                eprintln!("warning: {url} answered {status}: {body}");
                None
            }
            Err(error) => {
                eprintln!("warning: cannot read {url}: {error:#}");
                None
            }
        }
    }

    fn measure(&self, endpoint: &Endpoint) -> anyhow::Result<Measurement> {
        let name = endpoint.kind.name();
        let quiet_wait = wait_until_quiet();
        let mock_reset = format!("{}/__reset", self.mock_base);
        if endpoint.kind.proxied() {
            self.http.post_json(&mock_reset, None, &json!({}))?;
        }
        let (status, body) = self.http.post_json(
            &endpoint.chat_url,
            Some(&endpoint.bearer),
            &serde_json::from_str(CHAT_BODY)?,
        )?;
        if status != 200 || !body.contains("chat.completion") {
            bail!("{name}: the sanity request answered {status}: {body}");
        }
        let cpu_before = ProcessTree::of(endpoint.pid).cpu_ticks();
        let loaded = self.oha(endpoint, CONNECTIONS, RUN, false)?;
        let cpu_after = ProcessTree::of(endpoint.pid).cpu_ticks();
        let single = self.oha(endpoint, 1, SINGLE_RUN, false)?;
        let stream = self.oha(endpoint, CONNECTIONS, RUN, true)?;
        let (ttfb_p50, stream_total_p50) = self.time_to_first_byte(endpoint)?;
        let cpu_us_per_request = match (cpu_before, cpu_after) {
            (Some(before), Some(after)) if loaded.successes > 0 => Some(
                after.saturating_sub(before) as f64 / self.clock_ticks * 1e6
                    / loaded.successes as f64,
            ),
            _ => None,
        };
        let split = if endpoint.kind.proxied() {
            let (_, stats) = self.http.get(&format!("{}/__stats", self.mock_base))?;
            Some(parse_split(&stats)?)
        } else {
            None
        };
        let measurement = Measurement {
            loaded,
            single,
            stream,
            ttfb_p50,
            stream_total_p50,
            cpu_us_per_request,
            split,
            quiet_wait,
            remeasured: 0,
        };
        eprintln!("{name}: {measurement:?}");
        Ok(measurement)
    }

    /// Medians of the time to the first byte and to the end of a slow stream.
    fn time_to_first_byte(&self, endpoint: &Endpoint) -> anyhow::Result<(Duration, Duration)> {
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
        Ok((median(&mut firsts), median(&mut totals)))
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

/// Waits until the machine has been quiet ([`QUIET_BUSY_SHARE`]) over a whole
/// [`QUIET_WINDOW`], for at most [`QUIET_WAIT_LIMIT`], and returns how long it waited.
fn wait_until_quiet() -> Duration {
    let started = Instant::now();
    loop {
        let Some(before) = MachineCpu::now() else {
            return Duration::ZERO;
        };
        std::thread::sleep(QUIET_WINDOW);
        let Some(busy) = MachineCpu::now().and_then(|after| after.busy_since(before)) else {
            return started.elapsed();
        };
        if busy <= QUIET_BUSY_SHARE {
            return started.elapsed();
        }
        if started.elapsed() >= QUIET_WAIT_LIMIT {
            eprintln!(
                "warning: the machine is still {:.0} % busy after {} s; measuring anyway",
                busy * 100.0,
                QUIET_WAIT_LIMIT.as_secs()
            );
            return started.elapsed();
        }
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

/// The numeric `id` of a JSON answer; fails with the body when the status is not 2xx.
fn parse_id(status: u16, body: &str, what: &str) -> anyhow::Result<i64> {
    let id = parse_field(status, body, "id", what)?;
    id.parse()
        .with_context(|| format!("{what}: the id {id} is not a number"))
}

/// The sum of the `akr_request_log_dropped_total` series of a Prometheus text exposition; none
/// counts as 0.
fn parse_log_drops(metrics: &str) -> u64 {
    const NAME: &str = "akr_request_log_dropped_total";
    metrics
        .lines()
        .filter_map(|line| line.strip_prefix(NAME))
        .filter(|rest| rest.starts_with([' ', '{']))
        .filter_map(|rest| {
            // The value follows the labels (if any); a timestamp may follow it.
            let rest = rest.rfind('}').map_or(rest, |end| &rest[end + 1..]);
            rest.split_whitespace().next()?.parse::<f64>().ok()
        })
        .map(|value| value.max(0.0).round() as u64)
        .sum()
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

    #[test]
    fn sums_the_request_log_drop_series() {
        let metrics = "# HELP akr_request_log_dropped Request log records dropped\n\
                       # TYPE akr_request_log_dropped counter\n\
                       akr_request_log_dropped_total 3\n\
                       akr_request_log_dropped_total{why=\"queue\"} 4 1700000000\n\
                       akr_request_log_dropped_total_created 1700000000.5\n\
                       akr_requests_total{config=\"x\"} 99\n\
                       # EOF\n";

        assert_eq!(parse_log_drops(metrics), 7);
        assert_eq!(parse_log_drops("akr_requests_total 5\n"), 0);
    }

    #[test]
    fn rounds_default_to_three_and_reject_nonsense() {
        assert_eq!(parse_rounds(None).unwrap(), ROUNDS);
        assert_eq!(parse_rounds(Some(" ")).unwrap(), ROUNDS);
        assert_eq!(parse_rounds(Some("5")).unwrap(), 5);
        assert!(parse_rounds(Some("0")).is_err());
        assert!(parse_rounds(Some("three")).is_err());
    }

    #[test]
    fn reads_ids_and_secrets_of_admin_answers() {
        let body = r#"{"id":7,"name":"bench","secret":"akr-abc","rpm":1000000}"#;

        assert_eq!(parse_id(201, body, "create client key").unwrap(), 7);
        assert_eq!(
            parse_field(201, body, "secret", "create client key").unwrap(),
            "akr-abc"
        );
        assert!(parse_id(422, body, "create client key").is_err());
        assert!(parse_id(201, r#"{"id":"x"}"#, "create client key").is_err());
    }
}
