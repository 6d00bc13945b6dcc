//! `mock-upstream [--host H] [--port P] [--chunks N] [--chunk-delay-ms D] [--threads T]`: serves
//! the mock until killed. The first line on stdout is the bound port (useful with `--port 0`).
//! `MOCK_SSE_CHUNKS` and `MOCK_SSE_DELAY_MS` set the stream defaults when the flags are absent.

use std::{io::Write, sync::Arc, time::Duration};

use anyhow::{Context, bail};
use mock_upstream::{Options, State};

const USAGE: &str = "usage: mock-upstream [--host 127.0.0.1] [--port 0] [--chunks 5] [--chunk-delay-ms 0] [--threads <cores>]";

struct Cli {
    host: String,
    port: u16,
    threads: Option<usize>,
    options: Options,
}

fn parse(args: impl Iterator<Item = String>) -> anyhow::Result<Cli> {
    let mut cli = Cli {
        host: "127.0.0.1".to_owned(),
        port: 0,
        threads: None,
        options: Options::default(),
    };
    if let Ok(value) = std::env::var("MOCK_SSE_CHUNKS") {
        cli.options.chunks = value.parse().context("MOCK_SSE_CHUNKS must be a count")?;
    }
    if let Ok(value) = std::env::var("MOCK_SSE_DELAY_MS") {
        let ms = value
            .parse()
            .context("MOCK_SSE_DELAY_MS must be milliseconds")?;
        cli.options.chunk_delay = Duration::from_millis(ms);
    }
    let mut args = args;
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            bail!("{USAGE}");
        }
        let Some(value) = args.next() else {
            bail!("{flag} needs a value\n{USAGE}");
        };
        let bad = || format!("invalid value {value:?} for {flag}\n{USAGE}");
        match flag.as_str() {
            "--host" => cli.host = value,
            "--port" => cli.port = value.parse().with_context(bad)?,
            "--chunks" => cli.options.chunks = value.parse().with_context(bad)?,
            "--chunk-delay-ms" => {
                cli.options.chunk_delay = Duration::from_millis(value.parse().with_context(bad)?);
            }
            "--threads" => cli.threads = Some(value.parse().with_context(bad)?),
            _ => bail!("unknown flag {flag}\n{USAGE}"),
        }
    }
    Ok(cli)
}

fn main() -> anyhow::Result<()> {
    let cli = parse(std::env::args().skip(1))?;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = cli.threads {
        runtime.worker_threads(threads.max(1));
    }
    let runtime = runtime
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind((cli.host.as_str(), cli.port))
            .await
            .with_context(|| format!("cannot listen on {}:{}", cli.host, cli.port))?;
        let port = listener.local_addr()?.port();
        {
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "{port}")?;
            stdout.flush()?;
        }
        let state = Arc::new(State::new(cli.options));
        tokio::select! {
            served = mock_upstream::serve(listener, state) => served.context("serving failed"),
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    })
}
