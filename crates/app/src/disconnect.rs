//! Notices a client that closed its connection while its request still waits on the upstream,
//! so the proxies can drop the attempt in flight and send no retry for nobody (actix-web keeps
//! polling a handler after its client has gone).
//!
//! At connect time the server keeps a duplicate of the connection's socket descriptor; a
//! request then races its exchange with a peek on that duplicate, which sees the client's FIN or
//! reset without taking a byte from the connection.

use std::any::Any;

use actix_web::{HttpRequest, dev::Extensions};

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
pub async fn client_gone(request: &HttpRequest) {
    match request.conn_data::<ClientConnection>() {
        Some(connection) => {
            let mut byte = [0u8; 1];
            match connection.watch.peek(&mut byte).await {
                Ok(0) | Err(_) => {}
                Ok(_) => std::future::pending().await,
            }
        }
        None => std::future::pending().await,
    }
}
