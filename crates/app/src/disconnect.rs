//! Notices a client that closed its connection while its request still waits on the upstream,
//! so the proxies can drop the attempt in flight and send no retry for nobody (actix-web keeps
//! polling a handler after its client has gone).
//!
//! At connect time the server keeps a duplicate of the connection's socket descriptor; a
//! request then races its exchange with the duplicate's readiness, which reports the client's
//! FIN or reset without taking a byte from the connection (a peek confirms it).

use std::{any::Any, io};

use actix_web::{HttpRequest, dev::Extensions};
use tokio::io::Interest;

/// A watch on one client connection (stored in its connection data).
#[derive(Debug)]
pub struct ClientConnection {
    watch: tokio::net::TcpStream,
}

/// `HttpServer::on_connect` hook: keeps a duplicate of a plain TCP connection's descriptor.
/// A connection that cannot be watched (another transport, no descriptor left) is simply not
/// watched.
pub fn watch_connection(connection: &dyn Any, data: &mut Extensions) {
    if let Some(stream) = connection.downcast_ref::<tokio::net::TcpStream>()
        && let Ok(watch) = duplicate(stream)
    {
        data.insert(ClientConnection { watch });
    }
}

#[cfg(unix)]
fn duplicate(stream: &tokio::net::TcpStream) -> std::io::Result<tokio::net::TcpStream> {
    use std::os::fd::AsFd;
    let duplicate = std::net::TcpStream::from(stream.as_fd().try_clone_to_owned()?);
    duplicate.set_nonblocking(true)?;
    tokio::net::TcpStream::from_std(duplicate)
}

#[cfg(not(unix))]
fn duplicate(_: &tokio::net::TcpStream) -> std::io::Result<tokio::net::TcpStream> {
    Err(std::io::ErrorKind::Unsupported.into())
}

/// Completes when the request's client has closed or reset its connection; never completes
/// for a connection that is not watched, or while the client has sent more bytes (a pipelined
/// request or an unread body), since those say nothing about whether it is still there.
///
/// It waits on the duplicate's readiness, which the runtime's poller already tracks, and peeks
/// only once that readiness says the peer closed its side: a request whose client stays costs
/// no system call, where a peek on every request cost one `recvfrom` (an `EAGAIN`) each.
pub async fn client_gone(request: &HttpRequest) {
    match request.conn_data::<ClientConnection>() {
        Some(connection) => connection.closed_by_peer().await,
        None => std::future::pending().await,
    }
}

impl ClientConnection {
    async fn closed_by_peer(&self) {
        loop {
            let ready = match self.watch.ready(Interest::READABLE).await {
                Ok(ready) => ready,
                Err(_) => return,
            };
            if ready.is_read_closed() || ready.is_error() {
                return self.confirm_gone().await;
            }
            // Readable but open: bytes of this request or the next, read through the
            // connection's own descriptor. Forget this readiness (the runtime never forgets a
            // close) and wait for the next change.
            let _ = self.watch.try_io(Interest::READABLE, || {
                Err::<(), _>(io::ErrorKind::WouldBlock.into())
            });
        }
    }

    /// The peer's side is closed, or the socket failed: gone, unless unread bytes wait first.
    async fn confirm_gone(&self) {
        let mut byte = [0u8; 1];
        match self.watch.peek(&mut byte).await {
            Ok(0) | Err(_) => {}
            Ok(_) => std::future::pending().await,
        }
    }
}
