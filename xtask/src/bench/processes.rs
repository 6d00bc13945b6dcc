//! The processes under test and what `/proc` says about them: a [`Child`] guard that kills its
//! process when dropped, the mock upstream, the server (clean environment, data directory as
//! working directory), the nginx baseline with its generated configuration, and readers of CPU
//! time (`/proc/<pid>/stat`) and peak resident set (`VmHWM` in `/proc/<pid>/status`).

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
    ADMIN_PASSWORD, JWT_SECRET, PROXY_KEY, STREAM_CHUNKS, WORKERS, command_line_output, http::Http,
};

/// A child process killed (and reaped) when dropped, so that no server outlives the task,
/// whatever way it ends.
pub(super) struct Child {
    pub(super) name: String,
    pub(super) child: std::process::Child,
    pub(super) port: u16,
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
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the mock upstream on a free port; its first stdout line is that port.
pub(super) fn start_mock(binary: &Path, out: &Path) -> anyhow::Result<Child> {
    let log = fs::File::create(out.join("mock-upstream.log"))?;
    let mut child = Command::new(binary)
        .args(["--host", "127.0.0.1", "--port", "0"])
        .args(["--chunks", &STREAM_CHUNKS.to_string()])
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let stdout = child.stdout.take().context("mock stdout")?;
    let mut guard = Child {
        name: "mock-upstream".into(),
        child,
        port: 0,
    };
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    guard.port = line
        .trim()
        .parse()
        .with_context(|| format!("mock-upstream printed {line:?} instead of its port"))?;
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

/// The nginx configuration of the pass-through baseline: one worker, no access log, a
/// keep-alive upstream pool, no response buffering (so streams pass through as they come),
/// and no cap on requests per connection (oha keeps its connections for the whole run).
pub(super) fn nginx_config(dir: &Path, listen: u16, upstream: u16) -> String {
    let d = dir.display();
    format!(
        "daemon off;
master_process off;
worker_processes 1;
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

pub(super) fn start_nginx(nginx: &Path, out: &Path, upstream: u16) -> anyhow::Result<Child> {
    let dir = out.join("nginx");
    fs::create_dir_all(&dir)?;
    let port = free_port()?;
    let conf = dir.join("nginx.conf");
    fs::write(&conf, nginx_config(&dir, port, upstream))?;
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
        name: "nginx".into(),
        child,
        port,
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

/// utime + stime of a process, in clock ticks, from `/proc/<pid>/stat`.
pub(super) fn cpu_ticks(pid: u32) -> Option<u64> {
    parse_stat_ticks(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

pub(super) fn parse_stat_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may contain spaces: count after it.
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of the whole line are 12 and 13 after the name (state is 3).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// VmHWM (peak resident set) of a process, in KiB.
pub(super) fn peak_rss_kib(pid: u32) -> Option<u64> {
    parse_vm_hwm(&fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
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
    fn reads_cpu_ticks_even_with_spaces_in_the_command_name() {
        let stat = "4242 (tokio runtime) S 1 4242 4242 0 -1 4194560 1000 0 0 0 \
                    750 250 0 0 20 0 3 0 100 123456 789 18446744073709551615";
        assert_eq!(parse_stat_ticks(stat), Some(1000));
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn reads_the_peak_resident_set() {
        let status = "Name:\tapp\nVmPeak:\t  100 kB\nVmHWM:\t   23456 kB\nVmRSS:\t 20000 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(23456));
        assert_eq!(parse_vm_hwm("Name: x"), None);
    }

    #[test]
    fn the_nginx_config_proxies_to_the_mock_with_a_keepalive_pool() {
        let config = nginx_config(Path::new("/tmp/b"), 8081, 9000);
        assert!(config.contains("listen 127.0.0.1:8081;"));
        assert!(config.contains("server 127.0.0.1:9000;"));
        assert!(config.contains("keepalive 128;"));
        assert!(config.contains("worker_processes 1;"));
        assert!(config.contains("proxy_http_version 1.1;"));
    }
}
