//! The HTTP/1.1 accept loop the admin API and the gateway share: at most `max_connections`
//! served at once (more wait in the kernel's accept queue), at most `max_connections_per_ip`
//! from one address (more are closed at once), request heads within 16 KiB (431 beyond) and
//! `header_timeout`, connections closed after `lifetime` (the admin API; the gateway's
//! streams live as long as their clients), optionally TLS (rustls).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Largest request head accepted (hyper answers 431 beyond).
pub const MAX_HEAD: usize = 16 * 1024;

/// How [`serve`] limits its clients.
#[derive(Clone)]
pub struct Limits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Connections served at once from one IP address.
    pub max_connections_per_ip: usize,
    /// Longest wait for a request's head (the first, and each next one on a kept-alive
    /// connection).
    pub header_timeout: Duration,
    /// Longest a connection lives (`None`: as long as its client keeps it).
    pub lifetime: Option<Duration>,
    /// Connections may be upgraded (WebSocket). An upgraded connection keeps its slot (the
    /// handler takes the request's [`ConnSlot`] into the upgraded task).
    pub upgrades: bool,
    /// Longest a write to the client may wait (a client that stops reading is disconnected);
    /// `None`: no limit.
    pub write_timeout: Option<Duration>,
    /// What serves, for logs.
    pub what: &'static str,
    /// TLS (rustls): every connection's handshake first, within `header_timeout`.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

/// Whether a `Host` header names this machine (`localhost` or a loopback address, with or
/// without a port): a server that answers only such requests cannot be read by a web page
/// through a name it rebinds to 127.0.0.1.
pub fn local_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A connection's places in the limits (in all, and for its address), released when the last
/// holder drops it: the connection's task, and an upgraded connection's task (a handler moves
/// it from the request's extensions into `on_upgrade`).
#[derive(Clone)]
pub struct ConnSlot(
    #[allow(dead_code, reason = "held, not read")] Arc<(tokio::sync::OwnedSemaphorePermit, IpSlot)>,
);

/// Connections open per client address; an entry goes when its last connection ends.
#[derive(Clone, Default)]
struct PerIp(Arc<std::sync::Mutex<std::collections::BTreeMap<IpAddr, usize>>>);

/// One connection counted in [`PerIp`] until dropped.
struct IpSlot(PerIp, IpAddr);

impl PerIp {
    /// A slot for a connection from `ip`, or `None` when its address has `max` already (an
    /// IPv6 address counts by its /64, see [`petal_node::limit_key`]).
    fn take(&self, ip: IpAddr, max: usize) -> Option<IpSlot> {
        let ip = petal_node::limit_key(ip);
        let mut m = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = m.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(IpSlot(self.clone(), ip))
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut m = (self.0)
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = m.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.1);
            }
        }
    }
}

/// Serves `app` on `listener` within `limits`, until the task is dropped or aborted.
pub async fn serve(listener: TcpListener, app: Router, limits: Limits) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let per_ip = PerIp::default();
    let what = limits.what;
    loop {
        // A slot first: past the limit, connections wait in the accept queue.
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, from) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!(error = %e, "{what}: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(ip_slot) = per_ip.take(from.ip(), limits.max_connections_per_ip.max(1)) else {
            tracing::debug!(%from, "{what}: too many connections from one address; closed");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let slot = ConnSlot(Arc::new((permit, ip_slot)));
        let service = if limits.upgrades {
            hyper_util::service::TowerToHyperService::new(
                app.clone().layer(axum::Extension(slot.clone())),
            )
        } else {
            hyper_util::service::TowerToHyperService::new(app.clone())
        };
        let limits = limits.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let stream = WriteDeadline::new(stream, limits.write_timeout);
            let ended = match &limits.tls {
                None => connection(stream, service, &limits).await,
                Some(tls) => {
                    let hs = tokio::time::timeout(limits.header_timeout, tls.accept(stream));
                    match hs.await {
                        Ok(Ok(s)) => connection(s, service, &limits).await,
                        Ok(Err(e)) => {
                            tracing::debug!(%from, error = %e, "{what}: TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%from, "{what}: TLS handshake timed out");
                            return;
                        }
                    }
                }
            };
            match ended {
                Some(Ok(())) => {}
                Some(Err(e)) => tracing::debug!(error = %e, "{what}: connection ended"),
                None => tracing::debug!("{what}: connection open too long; closed"),
            }
        });
    }
}

/// Serves HTTP/1.1 on one (plain or TLS) stream.
async fn connection<S>(
    stream: S,
    service: hyper_util::service::TowerToHyperService<Router>,
    limits: &Limits,
) -> Option<Result<(), hyper::Error>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_HEAD);
    let io = hyper_util::rt::TokioIo::new(stream);
    if limits.upgrades {
        let conn = builder.serve_connection(io, service).with_upgrades();
        finish(conn, limits.lifetime).await
    } else {
        let conn = builder.serve_connection(io, service);
        finish(conn, limits.lifetime).await
    }
}

/// Runs a connection to its end, or until `lifetime` (then `None`).
async fn finish<F: std::future::Future<Output = Result<(), hyper::Error>>>(
    conn: F,
    lifetime: Option<Duration>,
) -> Option<Result<(), hyper::Error>> {
    match lifetime {
        Some(d) => tokio::time::timeout(d, conn).await.ok(),
        None => Some(conn.await),
    }
}

/// A stream whose writes fail (`TimedOut`) once one has waited `limit` for the peer to read.
struct WriteDeadline<S> {
    inner: S,
    limit: Option<Duration>,
    /// Armed while a write waits.
    timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<S> WriteDeadline<S> {
    fn new(inner: S, limit: Option<Duration>) -> Self {
        Self {
            inner,
            limit,
            timer: None,
        }
    }

    /// After the inner write said `Pending`: fails once the wait passed its limit.
    fn pending<T>(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<T>> {
        use std::future::Future;
        use std::task::Poll;
        let Some(limit) = self.limit else {
            return Poll::Pending;
        };
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client does not read",
            )));
        }
        Poll::Pending
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for WriteDeadline<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for WriteDeadline<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match std::pin::Pin::new(&mut self.inner).poll_write(cx, buf) {
            std::task::Poll::Pending => self.pending(cx),
            ready => {
                self.timer = None;
                ready
            }
        }
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            std::task::Poll::Pending => self.pending(cx),
            ready => {
                self.timer = None;
                ready
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match std::pin::Pin::new(&mut self.inner).poll_flush(cx) {
            std::task::Poll::Pending => self.pending(cx),
            ready => {
                self.timer = None;
                ready
            }
        }
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::PerIp;
    use std::net::IpAddr;

    #[test]
    fn one_ipv6_64_shares_one_connection_allowance() {
        let per_ip = PerIp::default();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let a = per_ip.take(ip("2001:db8::1"), 2).unwrap();
        let _b = per_ip.take(ip("2001:db8::2"), 2).unwrap();
        assert!(
            per_ip.take(ip("2001:db8::3"), 2).is_none(),
            "a third from the /64"
        );
        assert!(
            per_ip.take(ip("2001:db8:0:1::1"), 2).is_some(),
            "another /64"
        );
        drop(a);
        assert!(per_ip.take(ip("2001:db8::3"), 2).is_some(), "a place freed");
    }
}
