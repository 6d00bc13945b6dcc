//! `bench-passthrough --upstream HOST:PORT [--host H] [--port P] [--threads T]`: the leanest
//! HTTP/1.1 reverse proxy Rust's common crates make, for `cargo xtask bench` to show what an
//! HTTP stack alone costs on the machine, next to nginx and the gateway.
//!
//! It is laid out like nginx: one thread per core, each with a current-thread runtime, its own
//! listening socket on the shared port (`SO_REUSEPORT`, so the kernel spreads connections
//! evenly) and its own pool of kept-alive upstream connections; hyper serves and sends. Per
//! request it rewrites the target to origin form, drops `Connection`, and streams both bodies
//! through untouched: no keys, no checks, no log, no metrics. The first line on stdout is the
//! bound port (useful with `--port 0`).

use std::{
    cell::RefCell,
    io::Write,
    net::{SocketAddr, ToSocketAddrs},
    rc::Rc,
    thread,
};

use anyhow::{Context, bail};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use hyper::{
    Request, Response, StatusCode,
    body::{Bytes, Incoming},
    client::conn::http1::SendRequest,
    header,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use tokio::{
    net::{TcpListener, TcpSocket, TcpStream},
    task::LocalSet,
};

const USAGE: &str = "usage: bench-passthrough --upstream HOST:PORT [--host 127.0.0.1] [--port 0] [--threads <cores>]";

type Body = UnsyncBoxBody<Bytes, hyper::Error>;

/// A thread's kept-alive upstream connections, ready for their next request.
type Pool = Rc<RefCell<Vec<SendRequest<Incoming>>>>;

struct Cli {
    listen: SocketAddr,
    upstream: SocketAddr,
    threads: usize,
}

fn parse(args: impl Iterator<Item = String>) -> anyhow::Result<Cli> {
    let mut host = "127.0.0.1".to_owned();
    let mut port = 0u16;
    let mut upstream = None;
    let mut threads = thread::available_parallelism().map_or(1, usize::from);
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
            "--host" => host = value,
            "--port" => port = value.parse().with_context(bad)?,
            "--upstream" => upstream = Some(resolve(&value).with_context(bad)?),
            "--threads" => threads = value.parse::<usize>().with_context(bad)?.max(1),
            _ => bail!("unknown flag {flag}\n{USAGE}"),
        }
    }
    Ok(Cli {
        listen: resolve(&format!("{host}:{port}"))?,
        upstream: upstream.with_context(|| format!("--upstream is required\n{USAGE}"))?,
        threads,
    })
}

fn resolve(address: &str) -> anyhow::Result<SocketAddr> {
    address
        .to_socket_addrs()?
        .next()
        .with_context(|| format!("{address} resolves to no address"))
}

/// One socket per thread on the same address: the first picks the port when it is 0.
fn bind_sockets(listen: SocketAddr, count: usize) -> anyhow::Result<(u16, Vec<TcpSocket>)> {
    let mut address = listen;
    let mut sockets = Vec::with_capacity(count);
    for _ in 0..count {
        let socket = match address {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        socket.set_reuseport(true)?;
        socket
            .bind(address)
            .with_context(|| format!("cannot listen on {address}"))?;
        address = socket.local_addr()?;
        sockets.push(socket);
    }
    Ok((address.port(), sockets))
}

fn main() -> anyhow::Result<()> {
    let cli = parse(std::env::args().skip(1))?;
    let (port, sockets) = bind_sockets(cli.listen, cli.threads)?;
    let workers: Vec<_> = sockets
        .into_iter()
        .map(|socket| thread::spawn(move || serve_on_this_thread(socket, cli.upstream)))
        .collect();
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{port}")?;
        stdout.flush()?;
    }
    for worker in workers {
        match worker.join() {
            Ok(served) => served?,
            Err(_) => bail!("a worker thread panicked"),
        }
    }
    Ok(())
}

fn serve_on_this_thread(socket: TcpSocket, upstream: SocketAddr) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a runtime")?;
    LocalSet::new().block_on(&runtime, async move {
        let listener: TcpListener = socket.listen(1024)?;
        let pool = Pool::default();
        loop {
            let (stream, _) = listener.accept().await?;
            // No delayed ACK and no Nagle: the mock and nginx's defaults answer at once too.
            stream.set_nodelay(true)?;
            let pool = pool.clone();
            tokio::task::spawn_local(async move {
                let service = service_fn(move |request| forward(pool.clone(), upstream, request));
                // A client that goes away mid-request is no error of the bench's.
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

async fn forward(
    pool: Pool,
    upstream: SocketAddr,
    request: Request<Incoming>,
) -> Result<Response<Body>, hyper::Error> {
    let (mut parts, body) = request.into_parts();
    parts.uri = match parts.uri.path_and_query() {
        Some(origin) => origin.as_str().parse().unwrap_or_default(),
        None => hyper::Uri::from_static("/"),
    };
    parts.headers.remove(header::CONNECTION);
    let Some(mut sender) = take_connection(&pool, upstream).await else {
        return Ok(bad_gateway());
    };
    let answer = sender.send_request(Request::from_parts(parts, body)).await;
    // The connection takes its next request once this answer's body has been read through.
    tokio::task::spawn_local(async move {
        if sender.ready().await.is_ok() {
            pool.borrow_mut().push(sender);
        }
    });
    Ok(match answer {
        Ok(response) => response.map(BodyExt::boxed_unsync),
        Err(_) => bad_gateway(),
    })
}

/// A ready pooled connection, else a new one; `None` when the upstream cannot be reached.
async fn take_connection(pool: &Pool, upstream: SocketAddr) -> Option<SendRequest<Incoming>> {
    loop {
        let pooled = pool.borrow_mut().pop();
        match pooled {
            Some(sender) if sender.is_ready() => return Some(sender),
            Some(_closed) => continue,
            None => break,
        }
    }
    let stream = TcpStream::connect(upstream).await.ok()?;
    stream.set_nodelay(true).ok()?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::task::spawn_local(connection);
    Some(sender)
}

fn bad_gateway() -> Response<Body> {
    let mut response = Response::new(
        Full::new(Bytes::from_static(b"upstream unreachable"))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response
}
