//! Accepted TCP connections, presented to HTTP/2 so that a small reply leaves in one write.
//!
//! Over a transport with vectored writes, h2 keeps a DATA payload of more than 256 bytes in a
//! buffer of its own and must flush before it can queue the next frame, so a unary reply of a
//! few hundred bytes leaves as two `writev`s: headers and message, then the trailers. Each one
//! is a trip through the kernel's TCP path and may wake the client separately. Without vectored
//! writes, h2 copies payloads of up to 1 KiB into its frame buffer, and the whole reply of a
//! small call (one entity, tens of features) goes out in one `write`. Larger payloads are sent
//! as before, one write per frame.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// An accepted connection whose writes are never vectored.
#[derive(Debug)]
pub(crate) struct Connection(pub(crate) TcpStream);

impl Connected for Connection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.0.connect_info()
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(context, buffer)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(context, buffer)
    }

    fn poll_flush(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(context)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(context)
    }

    fn is_write_vectored(&self) -> bool {
        false
    }
}
