//! Petal's HTTP gateway (`petald --gateway ADDR`): the messaging patterns for applications that
//! cannot link a relay-v1 client (browsers, scripts, serverless functions).
//!
//! | path | answer |
//! |---|---|
//! | `POST /v1/clusters/{cluster}/request` | the body is the request; header `Petal-Timeout-Ms` (default 5000, at most 600000): 200 with the reply, 502 with the service's fault, 504 on timeout |
//! | `POST /v1/clusters/{cluster}/broadcast` | 202: sent to every member (best effort) |
//! | `POST /v1/topics/{topic}/publish` | 202: published to every subscriber (best effort) |
//! | `GET /v1/topics/{topic}/events` | Server-Sent Events, or a WebSocket when upgraded ([`events`]) |
//! | `GET /v1/clusters/{cluster}/tunnel` | WebSocket: a tunnel to a member ([`members`]) |
//! | `GET /v1/clusters/{cluster}/serve` | WebSocket: a member of the cluster from outside ([`members`]) |
//! | `GET /v1/openapi.json` | the OpenAPI 3.1 document of the above ([`OPENAPI`]) |
//!
//! Names are one path segment: a `/` in a cluster or topic name is written `%2F`. Streams
//! (events, tunnels, members) also take the bearer secret as the query parameter
//! `access_token`, for browsers, which cannot set a WebSocket's or an `EventSource`'s headers
//! (it may then show in proxies' logs: prefer the header where the client can set it).
//!
//! Errors are JSON: `{"error": "<code>", "message": "<what>"}` with the status (400 bad input,
//! 401 no or unknown token, 403 not allowed to the token, 413 body too large, 429 rate
//! exceeded, 502 remote fault, 503 node unreachable, 504 timeout). Exactly one response per
//! request, as relay v1 gives one reply per request.
//!
//! The gateway is a client of its node: it speaks relay v1 to the node's relay port (a few
//! shared connections for requests, broadcasts and publishes; one per event stream, so the
//! node's own per-client limits apply to each stream). Security: with a token file
//! ([`auth`]) every path needs `Authorization: Bearer <secret>` of a token that allows the
//! pattern and the name; without one the gateway only listens on loopback. Cross-origin
//! browsers are let in from the configured origins only ([`GatewayOptions::cors_origins`]);
//! a WebSocket upgrade from another origin is refused (403). Bodies are limited
//! ([`GatewayOptions::max_body`]), connections too (in all and per client address).

#![allow(
    clippy::result_large_err,
    reason = "handlers return the error response itself: built once, on the error path"
)]

pub mod auth;
pub mod events;
pub mod members;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use petal_client::{Connection, Error};
use tokio::net::TcpListener;

use auth::{Denied, Pattern, Tokens};

/// How the gateway runs.
#[derive(Clone, Debug)]
pub struct GatewayOptions {
    /// Where to listen.
    pub addr: SocketAddr,
    /// The node's relay port on 127.0.0.1 (the gateway is one of its clients).
    pub relay_port: u16,
    /// Bearer tokens; required for a non-loopback `addr`.
    pub tokens: Option<Arc<Tokens>>,
    /// Origins allowed to call from a browser (`https://app.example`, or `*`).
    pub cors_origins: Vec<String>,
    /// Largest request body, in bytes.
    pub max_body: usize,
    /// Connections served at once.
    pub max_connections: usize,
    /// Connections served at once from one address (an IPv6 /64 counts as one address).
    pub max_connections_per_ip: usize,
    /// Longest wait for a request's head, and for its body.
    pub header_timeout: Duration,
    /// Longest a write to a client may wait for it to read (it is disconnected then).
    pub write_timeout: Duration,
    /// Bytes of events queued for one event stream before it is cut off as a slow reader
    /// (with `event_queue`, whichever comes first).
    pub event_queue_bytes: usize,
    /// A request's timeout when `Petal-Timeout-Ms` is absent.
    pub default_timeout: Duration,
    /// Events queued for one event stream before it is cut off as a slow reader.
    pub event_queue: usize,
    /// Relay connections shared by requests, broadcasts and publishes.
    pub pool: usize,
    /// TLS (see [`tls_config`]); `None`: plain HTTP.
    pub tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    /// The gateway's counters (give an `Arc` made beforehand to read them elsewhere, e.g. the
    /// admin API's `/metrics`).
    pub stats: Arc<GatewayStats>,
    /// Reach the node in this process ([`petal_node::NodeHandle::local_connector`]) instead
    /// of over TCP to `relay_port`: no socket between the gateway and its node.
    pub local: Option<petal_node::LocalConnector>,
}

impl GatewayOptions {
    /// Defaults on `addr` for the node whose relay port is `relay_port`.
    pub fn new(addr: SocketAddr, relay_port: u16) -> Self {
        Self {
            addr,
            relay_port,
            tokens: None,
            cors_origins: Vec::new(),
            max_body: 1 << 20,
            max_connections: 4096,
            max_connections_per_ip: 1024,
            header_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            event_queue_bytes: 16 << 20,
            default_timeout: Duration::from_secs(5),
            event_queue: 1024,
            pool: 4,
            tls: None,
            local: None,
            stats: Arc::default(),
        }
    }
}

/// The longest the gateway waits for its node to take a relay connection.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest request timeout a client may ask for.
pub const MAX_TIMEOUT_MS: u64 = 600_000;

/// Counters of the gateway's work.
#[derive(Debug, Default)]
pub struct GatewayStats {
    /// HTTP requests received (any path, any answer).
    pub requests: AtomicU64,
    /// Requests refused for their token (401, 403) or rate (429).
    pub refused: AtomicU64,
    /// Event streams opened (Server-Sent Events and WebSockets).
    pub streams: AtomicU64,
    /// Events sent on event streams.
    pub events: AtomicU64,
    /// Event streams cut off because their reader fell `event_queue` events behind.
    pub slow_cut: AtomicU64,
    /// Broadcasts not sent to a WebSocket member because it fell 16 MiB behind.
    pub member_drops: AtomicU64,
}

impl GatewayStats {
    /// The counters in the Prometheus text format (`petal_gateway_*_total`).
    pub fn prometheus(&self) -> String {
        let mut out = String::new();
        for (name, help, v) in [
            (
                "requests",
                "HTTP requests the gateway received.",
                &self.requests,
            ),
            (
                "refused",
                "Requests refused for their token (401, 403) or rate (429).",
                &self.refused,
            ),
            (
                "streams",
                "Event streams, tunnels and members opened.",
                &self.streams,
            ),
            ("events", "Events sent on event streams.", &self.events),
            (
                "slow_cut",
                "Event streams cut off for a slow reader.",
                &self.slow_cut,
            ),
            (
                "member_drops",
                "Broadcasts dropped for a WebSocket member that fell behind.",
                &self.member_drops,
            ),
        ] {
            let v = v.load(Ordering::Relaxed);
            out.push_str(&format!(
                "# HELP petal_gateway_{name}_total {help}\n# TYPE petal_gateway_{name}_total counter\npetal_gateway_{name}_total {v}\n"
            ));
        }
        out
    }
}

/// Why the gateway did not start.
#[derive(Debug)]
pub enum StartError {
    /// A non-loopback address without tokens.
    NeedsTokens(SocketAddr),
    /// The address could not be bound.
    Bind(SocketAddr, std::io::Error),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NeedsTokens(a) => write!(
                f,
                "the gateway on {a} would be reachable from other machines: give it a token \
                 file (--gateway-tokens), or bind it to a loopback address"
            ),
            Self::Bind(a, e) => write!(f, "cannot listen on {a} for the gateway: {e}"),
        }
    }
}

impl std::error::Error for StartError {}

/// A running gateway; dropping it does not stop it (see [`GatewayHandle::stop`]).
#[derive(Debug)]
pub struct GatewayHandle {
    addr: SocketAddr,
    task: tokio::task::AbortHandle,
    stats: Arc<GatewayStats>,
}

impl GatewayHandle {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its counters.
    pub fn stats(&self) -> &GatewayStats {
        &self.stats
    }

    /// Stops accepting (connections being served finish on their own).
    pub fn stop(&self) {
        self.task.abort();
    }
}

/// Binds and serves the gateway.
pub async fn start(opts: GatewayOptions) -> Result<GatewayHandle, StartError> {
    if opts.tokens.is_none() && !opts.addr.ip().is_loopback() {
        return Err(StartError::NeedsTokens(opts.addr));
    }
    let listener = TcpListener::bind(opts.addr)
        .await
        .map_err(|e| StartError::Bind(opts.addr, e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| StartError::Bind(opts.addr, e))?;
    let stats = opts.stats.clone();
    let app = router(opts.clone(), stats.clone());
    let limits = petal_admin::http::Limits {
        max_connections: opts.max_connections,
        max_connections_per_ip: opts.max_connections_per_ip,
        header_timeout: opts.header_timeout,
        lifetime: None,
        upgrades: true,
        write_timeout: Some(opts.write_timeout),
        what: "gateway",
        tls: opts.tls.clone().map(tokio_rustls::TlsAcceptor::from),
    };
    let task = tokio::spawn(petal_admin::http::serve(listener, app, limits)).abort_handle();
    tracing::info!(%addr, tokens = opts.tokens.is_some(), tls = opts.tls.is_some(), "gateway listening");
    Ok(GatewayHandle { addr, task, stats })
}

/// A TLS configuration from PEM files: the certificate chain (leaf first) and its private key
/// (PKCS#8, PKCS#1 or SEC1). HTTP/1.1 only (ALPN `http/1.1`).
pub fn tls_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<Arc<tokio_rustls::rustls::ServerConfig>, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect)
        .map_err(|e| format!("certificates in {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate in {}", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("private key in {}: {e}", key.display()))?;
    // ring, the crypto the node's Noise links use already (aws-lc-rs would add a C build);
    // rustls deprecates it for want of post-quantum key exchange.
    #[allow(deprecated, reason = "ring is the project's crypto provider")]
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("certificate and key: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The shared state of the handlers.
pub(crate) struct Gate {
    pub(crate) opts: GatewayOptions,
    pub(crate) stats: Arc<GatewayStats>,
    pool: Vec<tokio::sync::Mutex<Option<Connection>>>,
    next: AtomicUsize,
}

pub(crate) type St = State<Arc<Gate>>;

impl Gate {
    /// One of the shared relay connections (dialled again when it broke).
    async fn conn(&self) -> Result<Connection, Response> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.pool.len();
        let mut slot = self.pool[i].lock().await;
        if let Some(c) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let c = self.dial().await.map_err(|e| unreachable_node(&e))?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// A new connection to the node (embedded when [`GatewayOptions::local`] is set: no
    /// socket, no relay codec),
    /// within [`DIAL_TIMEOUT`].
    pub(crate) async fn dial(&self) -> Result<Connection, Error> {
        self.dial_with(petal_client::Options::default()).await
    }

    /// As [`Gate::dial`], with these client options.
    pub(crate) async fn dial_with(&self, o: petal_client::Options) -> Result<Connection, Error> {
        let dial = async {
            match &self.opts.local {
                Some(l) => l.connect(o).await,
                None => o.connect(self.opts.relay_port).await,
            }
        };
        tokio::time::timeout(DIAL_TIMEOUT, dial)
            .await
            .unwrap_or_else(|_| Err(Error::Handshake("no answer within 5 s".into())))
    }

    /// Checks the request's token for `pattern` on `name`.
    pub(crate) fn authorize(
        &self,
        headers: &HeaderMap,
        pattern: Pattern,
        name: &str,
    ) -> Result<(), Response> {
        self.authorize_query(headers, None, pattern, name)
    }

    /// As [`Gate::authorize`], and for streams (which browsers open without headers) also
    /// from the query parameter `access_token`.
    pub(crate) fn authorize_query(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        pattern: Pattern,
        name: &str,
    ) -> Result<(), Response> {
        check_name(name)?;
        let Some(tokens) = &self.opts.tokens else {
            return Ok(());
        };
        let from_query = query.and_then(|q| {
            q.split('&')
                .find_map(|p| p.strip_prefix("access_token="))
                .map(|t| format!("Bearer {}", percent_decode(t)))
        });
        let auth = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or(from_query);
        tokens
            .check(auth.as_deref(), pattern, name)
            .map(drop)
            .map_err(|d| {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                match d {
                    Denied::Unauthenticated => {
                        let mut r = error(
                            StatusCode::UNAUTHORIZED,
                            "unauthorized",
                            "a bearer token is required (Authorization: Bearer <secret>)",
                        );
                        r.headers_mut()
                            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                        r
                    }
                    Denied::Forbidden(why) => error(StatusCode::FORBIDDEN, "forbidden", why),
                    Denied::RateLimited(why) => {
                        let mut r = error(StatusCode::TOO_MANY_REQUESTS, "rate_limited", why);
                        r.headers_mut()
                            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                        r
                    }
                }
            })
    }
}

/// `%XX` escapes decoded (`+` stays): enough for a token in a query string.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Gate {
    /// Reads a request's body (after its token was checked): at most `max_body` bytes
    /// (413), within `header_timeout` (408).
    async fn body(&self, body: axum::body::Body) -> Result<Bytes, Response> {
        let read = axum::body::to_bytes(body, self.opts.max_body);
        match tokio::time::timeout(self.opts.header_timeout, read).await {
            Ok(Ok(b)) => Ok(b),
            Ok(Err(_)) => Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("bodies are at most {} bytes", self.opts.max_body),
            )),
            Err(_) => Err(error(
                StatusCode::REQUEST_TIMEOUT,
                "slow_body",
                "the body did not arrive in time",
            )),
        }
    }
}

/// Cluster and topic names: 1 to 1024 bytes (relay v1 carries any UTF-8; a bound keeps paths
/// sane).
fn check_name(name: &str) -> Result<(), Response> {
    if name.is_empty() || name.len() > 1024 {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "bad_name",
            "cluster and topic names are 1 to 1024 bytes",
        ));
    }
    Ok(())
}

/// A JSON error response.
pub(crate) fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = serde_json::json!({ "error": code, "message": message.into() });
    (status, axum::Json(body)).into_response()
}

fn unreachable_node(e: &Error) -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "node_unreachable",
        format!("the node does not answer: {e}"),
    )
}

/// The router of the gateway.
pub fn router(opts: GatewayOptions, stats: Arc<GatewayStats>) -> Router {
    let max_body = opts.max_body;
    let pool = (0..opts.pool.max(1))
        .map(|_| tokio::sync::Mutex::new(None))
        .collect();
    let gate = Arc::new(Gate {
        opts,
        stats,
        pool,
        next: AtomicUsize::new(0),
    });
    Router::new()
        .route("/v1/clusters/{cluster}/request", post(request))
        .route("/v1/clusters/{cluster}/broadcast", post(broadcast))
        .route("/v1/topics/{topic}/publish", post(publish))
        .route("/v1/topics/{topic}/events", get(events::events))
        .route("/v1/clusters/{cluster}/tunnel", get(members::tunnel))
        .route("/v1/clusters/{cluster}/serve", get(members::serve))
        .route("/v1/openapi.json", get(openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method",
                "this path takes another method",
            )
        })
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn_with_state(gate.clone(), cors))
        .with_state(gate)
}

/// The OpenAPI 3.1 document of the gateway (`GET /v1/openapi.json`, no token needed).
pub const OPENAPI: &str = include_str!("openapi.json");

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not_found", "no such path")
}

/// The request's timeout from `Petal-Timeout-Ms`.
pub(crate) fn timeout_of(headers: &HeaderMap, default: Duration) -> Result<Duration, Response> {
    let Some(v) = headers.get("petal-timeout-ms") else {
        return Ok(default);
    };
    match v.to_str().ok().and_then(|t| t.trim().parse::<u64>().ok()) {
        Some(ms) if (1..=MAX_TIMEOUT_MS).contains(&ms) => Ok(Duration::from_millis(ms)),
        _ => Err(error(
            StatusCode::BAD_REQUEST,
            "bad_timeout",
            format!(
                "Petal-Timeout-Ms must be a whole number of milliseconds, 1 to {MAX_TIMEOUT_MS}"
            ),
        )),
    }
}

async fn request(State(g): St, Path(cluster): Path<String>, req: Request) -> Response {
    if let Err(r) = g.authorize(req.headers(), Pattern::Request, &cluster) {
        return r;
    }
    let (parts, body) = req.into_parts();
    let headers = parts.headers;
    let body = match g.body(body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let timeout = match timeout_of(&headers, g.opts.default_timeout) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let conn = match g.conn().await {
        Ok(c) => c,
        Err(r) => return r,
    };
    match conn.request(&cluster, body, timeout).await {
        Ok(reply) => ([(header::CONTENT_TYPE, "application/octet-stream")], reply).into_response(),
        Err(Error::Remote(fault)) => error(StatusCode::BAD_GATEWAY, "remote_fault", fault),
        Err(Error::Timeout) => error(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            format!("no reply within {} ms", timeout.as_millis()),
        ),
        Err(Error::Invalid(why)) => error(StatusCode::BAD_REQUEST, "invalid", why),
        Err(e) => unreachable_node(&e),
    }
}

async fn broadcast(State(g): St, Path(cluster): Path<String>, req: Request) -> Response {
    if let Err(r) = g.authorize(req.headers(), Pattern::Broadcast, &cluster) {
        return r;
    }
    let body = match g.body(req.into_body()).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let conn = match g.conn().await {
        Ok(c) => c,
        Err(r) => return r,
    };
    match conn.broadcast(&cluster, body).await {
        Ok(()) => StatusCode::ACCEPTED.into_response(),
        Err(Error::Invalid(why)) => error(StatusCode::BAD_REQUEST, "invalid", why),
        Err(e) => unreachable_node(&e),
    }
}

async fn publish(State(g): St, Path(topic): Path<String>, req: Request) -> Response {
    if let Err(r) = g.authorize(req.headers(), Pattern::Publish, &topic) {
        return r;
    }
    let body = match g.body(req.into_body()).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let conn = match g.conn().await {
        Ok(c) => c,
        Err(r) => return r,
    };
    match conn.publish(&topic, body).await {
        Ok(()) => StatusCode::ACCEPTED.into_response(),
        Err(Error::Invalid(why)) => error(StatusCode::BAD_REQUEST, "invalid", why),
        Err(e) => unreachable_node(&e),
    }
}

/// Whether browsers from `origin` may call.
pub(crate) fn origin_allowed(opts: &GatewayOptions, origin: &str) -> bool {
    opts.cors_origins.iter().any(|o| o == "*" || o == origin)
}

/// CORS: answers preflights and marks responses for allowed origins; refuses a WebSocket
/// upgrade from an origin not allowed (browsers do not apply CORS to WebSockets).
async fn cors(State(g): St, req: Request, next: Next) -> Response {
    g.stats.requests.fetch_add(1, Ordering::Relaxed);
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let allowed = origin
        .as_deref()
        .is_some_and(|o| origin_allowed(&g.opts, o));
    // The gateway serves no pages: a browser's request comes from another origin, and one not
    // allowed is refused before anything runs (a "simple" POST would otherwise run unseen).
    if origin.is_some() && !allowed {
        return error(
            StatusCode::FORBIDDEN,
            "origin",
            "origin not in the gateway's CORS origins",
        );
    }
    // Without tokens (loopback only), only requests naming this machine are served, so a
    // page cannot reach the gateway through a name it rebinds to 127.0.0.1.
    if g.opts.tokens.is_none() {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok());
        if !host.is_some_and(petal_admin::http::local_host) {
            return error(
                StatusCode::FORBIDDEN,
                "host",
                "without tokens the gateway answers requests to localhost or a loopback address only",
            );
        }
    }
    let mut r = if req.method() == Method::OPTIONS && origin.is_some() {
        {
            let mut r = StatusCode::NO_CONTENT.into_response();
            let h = r.headers_mut();
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, POST"),
            );
            h.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("authorization, content-type, petal-timeout-ms"),
            );
            h.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("600"),
            );
            r
        }
    } else {
        next.run(req).await
    };
    if let (true, Some(o)) = (allowed, origin)
        && let Ok(v) = HeaderValue::from_str(&o)
    {
        let h = r.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    r
}
