//! The processes under test and what `/proc` says about them: a [`Child`] guard that stops its
//! process when dropped, the mock upstream, the server (clean environment, data directory as
//! working directory), the nginx baselines (one worker without a master, or a master and its
//! workers) with their generated configuration, the bare hyper pass-through, and a
//! [`ProcessTree`] (a process and its children, as `/proc/*/stat` links them) whose CPU time
//! (utime + stime) and peak resident set (`VmHWM`) are summed.

use std::{
    fs,
    io::{BufRead, BufReader},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

use super::{
    ADMIN_PASSWORD, JWT_SECRET, METRICS_TOKEN, PROXY_KEY, REQUEST_LOG_MAX_ROWS, STREAM_CHUNKS,
    WORKERS, command_line_output, http::Http,
};

/// How long an nginx master gets to stop its workers before they and it are killed.
const GRACEFUL_STOP: Duration = Duration::from_secs(5);

/// A child process stopped (and reaped) when dropped, so that no server outlives the task,
/// whatever way it ends.
pub(super) struct Child {
    pub(super) name: String,
    pub(super) child: std::process::Child,
    pub(super) port: u16,
    /// Whether the child is an nginx master (or may be one): it is then asked to stop its
    /// workers (SIGTERM), since killing it alone would leave them running.
    master: bool,
}

impl Child {
    pub(super) fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Fails with the log's tail when the child has exited.
    fn check_alive(&mut self, log: &Path) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let text = fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "{} exited with {status} during start-up; its log ({}):\n{}",
                self.name,
                log.display(),
                tail.join("\n")
            );
        }
        Ok(())
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.master {
            self.stop_master();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Child {
    /// Asks a master to stop its workers and exit (SIGTERM); past [`GRACEFUL_STOP`], kills the
    /// workers it had and the master.
    fn stop_master(&mut self) {
        let pid = self.child.id();
        let workers: Vec<String> = ProcessTree::of(pid)
            .members
            .iter()
            .filter(|p| p.pid != pid)
            .map(|p| p.pid.to_string())
            .collect();
        let _ = signal("-TERM", &[pid.to_string()]);
        let started = Instant::now();
        while started.elapsed() < GRACEFUL_STOP {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if !workers.is_empty() {
            let _ = signal("-KILL", &workers);
        }
    }
}

/// Sends `signal` (`-TERM`, `-KILL`) to `pids` with `kill`: std sends no signal but SIGKILL,
/// and only to its own children.
fn signal(signal: &str, pids: &[String]) -> std::io::Result<std::process::ExitStatus> {
    Command::new("kill")
        .arg(signal)
        .args(pids)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
}

/// Starts the mock upstream on a free port; its first stdout line is that port.
pub(super) fn start_mock(binary: &Path, out: &Path) -> anyhow::Result<Child> {
    let mut command = Command::new(binary);
    command
        .args(["--host", "127.0.0.1", "--port", "0"])
        .args(["--chunks", &STREAM_CHUNKS.to_string()]);
    start_printing_port(command, "mock-upstream", out)
}

/// Starts `bench-passthrough` in front of the mock on a free port, a thread per core.
pub(super) fn start_passthrough(binary: &Path, out: &Path, upstream: u16) -> anyhow::Result<Child> {
    let mut command = Command::new(binary);
    command
        .args(["--host", "127.0.0.1", "--port", "0"])
        .args(["--upstream", &format!("127.0.0.1:{upstream}")]);
    start_printing_port(command, "bench-passthrough", out)
}

/// Starts a process that prints its bound port as its first stdout line; its stderr goes to
/// `<name>.log` in `out`.
fn start_printing_port(mut command: Command, name: &str, out: &Path) -> anyhow::Result<Child> {
    let log = fs::File::create(out.join(format!("{name}.log")))?;
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start {name}"))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut guard = Child {
        name: name.into(),
        child,
        port: 0,
        master: false,
    };
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    guard.port = line
        .trim()
        .parse()
        .with_context(|| format!("{name} printed {line:?} instead of its port"))?;
    Ok(guard)
}

/// A free loopback port (the server takes its port from `BACKEND_PORT` and logs it only at
/// `info`, which the bench silences).
pub(super) fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub(super) fn start_server(
    binary: &Path,
    name: &str,
    out: &Path,
    data: &Path,
    extra: &[(String, String)],
) -> anyhow::Result<Child> {
    if data.exists() {
        fs::remove_dir_all(data)?;
    }
    fs::create_dir_all(data)?;
    let port = free_port()?;
    let log_path = out.join(format!("server-{name}.log"));
    let log = fs::File::create(&log_path)?;
    let mut command = Command::new(binary);
    // A clean environment: no DATABASE_URL or .env of the caller's may change the edition
    // under test. The working directory is the data directory, so no .env or config.toml of
    // the repository is read either.
    command
        .env_clear()
        .current_dir(data)
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("BACKEND_HOST", "127.0.0.1")
        .env("BACKEND_PORT", port.to_string())
        .env("WORKERS", WORKERS)
        .env("LOG_LEVEL", "warn")
        .env("ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("JWT_SECRET", JWT_SECRET)
        .env("GLOBAL_PROXY_KEYS", PROXY_KEY)
        // The request log stays on (this is its default, stated so that the report's setting is
        // visible in the command), and its drop counter is read from /metrics behind this token.
        .env("REQUEST_LOG_MAX_ROWS", REQUEST_LOG_MAX_ROWS)
        .env("METRICS_TOKEN", METRICS_TOKEN)
        .env("CONFIG_FILE", data.join("absent.toml"))
        .envs(extra.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(log.try_clone()?)
        .stderr(log);
    let child = command
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let mut server = Child {
        name: format!("server ({name})"),
        child,
        port,
        master: false,
    };
    let http = Http::new();
    let started = Instant::now();
    loop {
        server.check_alive(&log_path)?;
        if http
            .get(&format!("{}/health", server.base()))
            .is_ok_and(|(status, _)| status == 200)
        {
            return Ok(server);
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!(
                "{} did not answer /health within 60 s; see {}",
                server.name,
                log_path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The worker processes of an nginx baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NginxWorkers {
    /// `master_process off; worker_processes 1`: one process does everything.
    One,
    /// `master_process on; worker_processes 2`: a master and two workers, one per core.
    Two,
}

impl NginxWorkers {
    pub(super) fn count(self) -> u32 {
        match self {
            NginxWorkers::One => 1,
            NginxWorkers::Two => 2,
        }
    }

    fn directives(self) -> &'static str {
        match self {
            NginxWorkers::One => "master_process off;\nworker_processes 1;",
            NginxWorkers::Two => "master_process on;\nworker_processes 2;",
        }
    }
}

/// The nginx configuration of a pass-through baseline: in the foreground, no access log, a
/// keep-alive upstream pool, no response buffering (so streams pass through as they come), and
/// no cap on requests per connection (oha keeps its connections for the whole run).
pub(super) fn nginx_config(
    dir: &Path,
    listen: u16,
    upstream: u16,
    workers: NginxWorkers,
) -> String {
    let d = dir.display();
    let workers = workers.directives();
    format!(
        "daemon off;
{workers}
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 1000000;
    upstream mock {{
        server 127.0.0.1:{upstream};
        keepalive 128;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{listen};
        location / {{
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_buffering off;
        }}
    }}
}}
"
    )
}

/// Starts nginx in front of the mock, with its own prefix directory (`nginx-<workers>`) so that
/// both baselines run side by side. It stays in the task's process group: a Ctrl-C (SIGINT, a
/// fast shutdown for nginx) reaches the master and its workers too.
pub(super) fn start_nginx(
    nginx: &Path,
    out: &Path,
    upstream: u16,
    workers: NginxWorkers,
) -> anyhow::Result<Child> {
    let dir = out.join(format!("nginx-{}", workers.count()));
    fs::create_dir_all(&dir)?;
    let port = free_port()?;
    let conf = dir.join("nginx.conf");
    fs::write(&conf, nginx_config(&dir, port, upstream, workers))?;
    let log_path = dir.join("stderr.log");
    let child = Command::new(nginx)
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg(dir.join("error.log"))
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log_path)?)
        .spawn()
        .with_context(|| format!("cannot start {}", nginx.display()))?;
    let mut server = Child {
        name: format!("nginx ({} workers)", workers.count()),
        child,
        port,
        master: true,
    };
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        server.check_alive(&log_path)?;
        if started.elapsed() > Duration::from_secs(10) {
            bail!("nginx did not listen within 10 s; see {}", dir.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(server)
}

/// What one line of `/proc/<pid>/stat` says about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ProcStat {
    pub(super) pid: u32,
    pub(super) ppid: u32,
    /// utime + stime of all its threads, in clock ticks.
    pub(super) ticks: u64,
}

pub(super) fn parse_stat(stat: &str) -> Option<ProcStat> {
    // The command name (field 2) is in parentheses and may contain spaces and parentheses:
    // split around its last `)`.
    let close = stat.rfind(')')?;
    let pid = stat.get(..stat.find('(')?)?.trim().parse().ok()?;
    let fields: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // After the name, field 0 is the state (field 3 of the line), then ppid; utime and stime
    // (fields 14 and 15 of the line) are 11 and 12.
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(ProcStat {
        pid,
        ppid,
        ticks: utime + stime,
    })
}

/// `root` and the processes whose parent it is, out of `all`.
pub(super) fn family(root: u32, all: &[ProcStat]) -> Vec<ProcStat> {
    all.iter()
        .filter(|p| p.pid == root || p.ppid == root)
        .copied()
        .collect()
}

/// A process and its children (an nginx master and its workers; a server or the mock alone):
/// CPU time and peak memory are those of the whole tree, since the work is spread over it.
pub(super) struct ProcessTree {
    members: Vec<ProcStat>,
}

impl ProcessTree {
    /// `root` and its children as `/proc` shows them now.
    pub(super) fn of(root: u32) -> Self {
        let all: Vec<ProcStat> = fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter(|entry| entry.file_name().to_string_lossy().parse::<u32>().is_ok())
            .filter_map(|entry| fs::read_to_string(entry.path().join("stat")).ok())
            .filter_map(|stat| parse_stat(&stat))
            .collect();
        ProcessTree {
            members: family(root, &all),
        }
    }

    /// Summed utime + stime in clock ticks; `None` when the root is gone.
    pub(super) fn cpu_ticks(&self) -> Option<u64> {
        (!self.members.is_empty()).then(|| self.members.iter().map(|p| p.ticks).sum())
    }

    /// Summed VmHWM (peak resident set) in KiB; `None` when no member's could be read.
    pub(super) fn peak_rss_kib(&self) -> Option<u64> {
        let peaks: Vec<u64> = self
            .members
            .iter()
            .filter_map(|p| fs::read_to_string(format!("/proc/{}/status", p.pid)).ok())
            .filter_map(|status| parse_vm_hwm(&status))
            .collect();
        (!peaks.is_empty()).then(|| peaks.iter().sum())
    }
}

pub(super) fn parse_vm_hwm(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The whole machine's CPU time so far, from the first line of `/proc/stat`, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct MachineCpu {
    /// Every state: user, nice, system, idle, iowait, irq, softirq, steal.
    pub(super) total: u64,
    /// Idle and iowait.
    pub(super) idle: u64,
}

impl MachineCpu {
    /// `/proc/stat` now; `None` when it cannot be read.
    pub(super) fn now() -> Option<Self> {
        parse_machine_cpu(&fs::read_to_string("/proc/stat").ok()?)
    }

    /// The share (0 to 1) of the machine's CPU time that was busy between `earlier` and this
    /// reading; `None` when no tick passed.
    pub(super) fn busy_since(self, earlier: Self) -> Option<f64> {
        let total = self.total.checked_sub(earlier.total)?;
        let idle = self.idle.checked_sub(earlier.idle)?;
        (total > 0).then(|| total.saturating_sub(idle) as f64 / total as f64)
    }
}

pub(super) fn parse_machine_cpu(stat: &str) -> Option<MachineCpu> {
    let mut fields = stat.lines().next()?.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    // Guest time is already inside user time, so only the first eight states are summed.
    let states: Vec<u64> = fields
        .take(8)
        .map(|field| field.parse().ok())
        .collect::<Option<_>>()?;
    let (idle, iowait) = (*states.get(3)?, *states.get(4)?);
    Some(MachineCpu {
        total: states.iter().sum(),
        idle: idle + iowait,
    })
}

pub(super) fn clock_ticks_per_second() -> f64 {
    command_line_output(Path::new("getconf"), &["CLK_TCK"])
        .parse()
        .unwrap_or(100.0)
}

pub(super) fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn reads_pid_parent_and_cpu_ticks_even_with_spaces_in_the_command_name() {
        let stat = "4242 (tokio (runtime)) S 17 4242 4242 0 -1 4194560 1000 0 0 0 \
                    750 250 0 0 20 0 3 0 100 123456 789 18446744073709551615";

        assert_eq!(
            parse_stat(stat),
            Some(ProcStat {
                pid: 4242,
                ppid: 17,
                ticks: 1000
            })
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("12 (x) S"), None);
    }

    #[test]
    fn the_family_is_the_root_and_its_children_only() {
        let p = |pid, ppid, ticks| ProcStat { pid, ppid, ticks };
        let all = [
            p(1, 0, 5),
            p(10, 1, 7),
            p(11, 10, 3),
            p(12, 10, 4),
            p(13, 11, 100),
        ];

        let tree = ProcessTree {
            members: family(10, &all),
        };

        assert_eq!(tree.cpu_ticks(), Some(14));
        assert_eq!(
            ProcessTree {
                members: family(99, &all)
            }
            .cpu_ticks(),
            None
        );
    }

    #[test]
    fn reads_the_machine_cpu_and_its_busy_share() {
        let earlier = parse_machine_cpu(
            "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0 0 0\nintr 1\n",
        )
        .unwrap();
        let later =
            parse_machine_cpu("cpu  130 0 60 850 60 0 0 0 0 0\ncpu0 65 0 30 425 30 0 0 0 0 0\n")
                .unwrap();

        assert_eq!(
            earlier,
            MachineCpu {
                total: 1000,
                idle: 850
            }
        );
        assert_eq!(later.busy_since(earlier), Some(40.0 / 100.0));
        assert_eq!(earlier.busy_since(earlier), None);
        assert_eq!(earlier.busy_since(later), None);
        assert_eq!(parse_machine_cpu("intr 1\n"), None);
        assert_eq!(parse_machine_cpu("cpu 1 2 x 4 5\n"), None);
    }

    #[test]
    fn reads_the_peak_resident_set() {
        let status = "Name:\tapp\nVmPeak:\t  100 kB\nVmHWM:\t   23456 kB\nVmRSS:\t 20000 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(23456));
        assert_eq!(parse_vm_hwm("Name: x"), None);
    }

    #[test]
    fn the_nginx_config_proxies_to_the_mock_with_a_keepalive_pool() {
        let config = nginx_config(Path::new("/tmp/b"), 8081, 9000, NginxWorkers::One);

        assert!(config.contains("listen 127.0.0.1:8081;"));
        assert!(config.contains("server 127.0.0.1:9000;"));
        assert!(config.contains("keepalive 128;"));
        assert!(config.contains("daemon off;\nmaster_process off;\nworker_processes 1;\n"));
        assert!(config.contains("proxy_http_version 1.1;"));
    }

    #[test]
    fn the_two_worker_nginx_config_runs_a_master() {
        let config = nginx_config(Path::new("/tmp/b"), 8081, 9000, NginxWorkers::Two);

        assert!(config.contains("daemon off;\nmaster_process on;\nworker_processes 2;\n"));
        assert!(config.contains("pid /tmp/b/nginx.pid;"));
    }
}
