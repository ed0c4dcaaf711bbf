//! [`TurmoilNet`]: petal-node's [`Net`] over turmoil's simulated TCP.
//!
//! Turmoil's listeners bind only the unspecified address (`0.0.0.0`) or loopback, and panic on
//! an IP-version mismatch, so the harness binds the peer listener on `0.0.0.0:PORT`, advertises
//! the host's simulated address, and binds the relay on `127.0.0.1:55555` only.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use petal_node::{Datagram, Listener, Net};

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

    type Datagram = TurmoilDatagram;

    async fn multicast(
        &self,
        group: SocketAddrV4,
        interface: Ipv4Addr,
    ) -> io::Result<TurmoilDatagram> {
        let s = turmoil::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, group.port())).await?;
        s.join_multicast_v4(*group.ip(), interface)?;
        s.set_multicast_loop_v4(true)?;
        Ok(TurmoilDatagram(s))
    }
}

/// A simulated UDP socket (discovery beacons).
pub struct TurmoilDatagram(turmoil::net::UdpSocket);

impl std::fmt::Debug for TurmoilDatagram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("TurmoilDatagram")
            .field(&self.0.local_addr().ok())
            .finish()
    }
}

impl Datagram for TurmoilDatagram {
    async fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.0.send_to(buf, to).await
    }

    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.0.recv_from(buf).await
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
