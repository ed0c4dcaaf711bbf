//! [`TurmoilNet`]: petal-node's [`Net`] over turmoil's simulated TCP.
//!
//! Turmoil's listeners bind only the unspecified address (`0.0.0.0`) or loopback, and panic on
//! an IP-version mismatch, so the harness binds the peer listener on `0.0.0.0:PORT`, advertises
//! the host's simulated address, and binds the relay on `127.0.0.1:55555` only.

use std::io;
use std::net::SocketAddr;

use petal_node::{Listener, Net};

/// Simulated TCP streams of the turmoil host the calling task runs on.
#[derive(Clone, Copy, Debug, Default)]
pub struct TurmoilNet;

/// A listening socket on the simulated host.
pub struct TurmoilListener(turmoil::net::TcpListener);

impl std::fmt::Debug for TurmoilListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("TurmoilListener")
            .field(&self.0.local_addr().ok())
            .finish()
    }
}

impl Net for TurmoilNet {
    type Stream = turmoil::net::TcpStream;
    type Listener = TurmoilListener;

    async fn bind(&self, addr: SocketAddr) -> io::Result<TurmoilListener> {
        turmoil::net::TcpListener::bind(addr)
            .await
            .map(TurmoilListener)
    }

    async fn connect(&self, addr: SocketAddr) -> io::Result<turmoil::net::TcpStream> {
        turmoil::net::TcpStream::connect(addr).await
    }
}

impl Listener for TurmoilListener {
    type Stream = turmoil::net::TcpStream;

    async fn accept(&mut self) -> io::Result<(turmoil::net::TcpStream, SocketAddr)> {
        self.0.accept().await
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}
