//! The network the runtime runs on: a small trait with a tokio implementation here and a
//! turmoil implementation in the simulator (so that the daemon's dependency tree has no
//! turmoil, and no Cargo feature swaps networks: features unify across a workspace).

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};

use tokio::io::{AsyncRead, AsyncWrite};

/// Stream sockets (listen, accept, dial) and the multicast datagram socket of discovery.
pub trait Net: Clone + Send + Sync + 'static {
    /// A connected byte stream.
    type Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static;
    /// A listening socket.
    type Listener: Listener<Stream = Self::Stream>;

    /// Listens on `addr` (port 0 picks a free port).
    fn bind(&self, addr: SocketAddr) -> impl Future<Output = io::Result<Self::Listener>> + Send;

    /// Dials `addr`.
    fn connect(&self, addr: SocketAddr) -> impl Future<Output = io::Result<Self::Stream>> + Send;

    /// Dials `addr` from local address `from` (any port), so that the peer sees the
    /// connection come from the address this node listens on; a network whose hosts have one
    /// address each dials as [`Net::connect`] does (the default).
    fn connect_from(
        &self,
        addr: SocketAddr,
        from: IpAddr,
    ) -> impl Future<Output = io::Result<Self::Stream>> + Send {
        let _ = from;
        self.connect(addr)
    }

    /// A datagram socket.
    type Datagram: Datagram;

    /// A datagram socket bound to `group`'s port that has joined the IPv4 multicast `group` on
    /// `interface` (unspecified: the system's choice), sends with a TTL of 1 (the local
    /// network only) and hears its own datagrams (other nodes on the same host hear them).
    fn multicast(
        &self,
        group: SocketAddrV4,
        interface: Ipv4Addr,
    ) -> impl Future<Output = io::Result<Self::Datagram>> + Send;
}

/// A datagram socket of a [`Net`].
pub trait Datagram: Send + Sync + 'static {
    /// Sends one datagram.
    fn send_to(&self, buf: &[u8], to: SocketAddr)
    -> impl Future<Output = io::Result<usize>> + Send;

    /// Receives one datagram.
    fn recv_from(
        &self,
        buf: &mut [u8],
    ) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send;
}

/// A listening socket of a [`Net`].
pub trait Listener: Send + 'static {
    /// The accepted streams.
    type Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static;

    /// Waits for the next connection.
    fn accept(&mut self) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>> + Send;

    /// The address it listens on.
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// The operating system's TCP through tokio (the daemon's network).
#[derive(Clone, Copy, Debug, Default)]
pub struct TokioNet;

impl Net for TokioNet {
    type Stream = tokio::net::TcpStream;
    type Listener = tokio::net::TcpListener;

    async fn bind(&self, addr: SocketAddr) -> io::Result<Self::Listener> {
        tokio::net::TcpListener::bind(addr).await
    }

    async fn connect(&self, addr: SocketAddr) -> io::Result<Self::Stream> {
        let s = tokio::net::TcpStream::connect(addr).await?;
        // Small frames (pings, acks, 1-byte requests) must not wait for Nagle.
        s.set_nodelay(true)?;
        Ok(s)
    }

    async fn connect_from(&self, addr: SocketAddr, from: IpAddr) -> io::Result<Self::Stream> {
        let socket = match addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        if socket.bind(SocketAddr::new(from, 0)).is_err() {
            // Not an address of this host any more (or out of ports for it): the system's
            // choice of source, as `connect` makes it.
            return self.connect(addr).await;
        }
        let s = socket.connect(addr).await?;
        s.set_nodelay(true)?;
        Ok(s)
    }

    type Datagram = tokio::net::UdpSocket;

    async fn multicast(
        &self,
        group: SocketAddrV4,
        interface: Ipv4Addr,
    ) -> io::Result<tokio::net::UdpSocket> {
        use socket2::{Domain, Protocol, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        // Several nodes on one host share the discovery port.
        s.set_reuse_address(true)?;
        s.set_reuse_port(true)?;
        // Bound to the group's address: unicast datagrams to the port are not delivered here.
        s.bind(&SocketAddr::V4(group).into())?;
        s.join_multicast_v4(group.ip(), &interface)?;
        if !interface.is_unspecified() {
            s.set_multicast_if_v4(&interface)?;
        }
        s.set_multicast_ttl_v4(1)?;
        s.set_multicast_loop_v4(true)?;
        s.set_nonblocking(true)?;
        tokio::net::UdpSocket::from_std(s.into())
    }
}

impl Datagram for tokio::net::UdpSocket {
    async fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        tokio::net::UdpSocket::send_to(self, buf, to).await
    }

    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        tokio::net::UdpSocket::recv_from(self, buf).await
    }
}

impl Listener for tokio::net::TcpListener {
    type Stream = tokio::net::TcpStream;

    async fn accept(&mut self) -> io::Result<(Self::Stream, SocketAddr)> {
        let (s, addr) = tokio::net::TcpListener::accept(self).await?;
        // A connection reset before this point fails here; that is this connection's problem
        // (its first read fails), not the listener's: an error returned would pause every
        // accept.
        if let Err(e) = s.set_nodelay(true) {
            tracing::debug!(%addr, error = %e, "set_nodelay failed on an accepted connection");
        }
        Ok((s, addr))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        tokio::net::TcpListener::local_addr(self)
    }
}

#[cfg(test)]
mod tests {
    use super::{Net, TokioNet};
    use std::net::{IpAddr, Ipv4Addr};

    /// A dial from an address of this host comes from that address (every 127.0.0.0/8
    /// address is this host's on Linux); from an address that is not, it falls back to the
    /// system's choice instead of failing.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_dial_from_a_local_address_comes_from_it_and_falls_back_otherwise() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let to = listener.local_addr().unwrap();
        let from = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
        let _out = TokioNet.connect_from(to, from).await.unwrap();
        let (_in, seen) = listener.accept().await.unwrap();
        assert_eq!(seen.ip(), from);
        // 192.0.2.1 (TEST-NET-1) is no address of this host: bind fails, the dial does not.
        let _out = TokioNet
            .connect_from(to, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)))
            .await
            .unwrap();
        let (_in, seen) = listener.accept().await.unwrap();
        assert_eq!(seen.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
}
