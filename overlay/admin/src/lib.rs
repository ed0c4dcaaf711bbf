//! The admin HTTP API of a Petal node (`petald --admin`): read-only, HTTP/1.1, JSON.
//!
//! | path | answer |
//! |---|---|
//! | `GET /` | the dashboard: one self-contained page that polls the API |
//! | `GET /healthz` | 200 `ok` while the process runs |
//! | `GET /readyz` | 200 `ready` once the node is part of a ring (joined, or serving alone), 503 before and after shutdown |
//! | `GET /metrics` | Prometheus text format ([`metrics`]) |
//! | `GET /v1/node` | id, addresses, version, uptime, encryption, discovery state, sizes |
//! | `GET /v1/peers` | peer links: state, direction, RTT, bytes and messages each way, age |
//! | `GET /v1/leafset` | leaf set, each side nearest first, with measured RTTs |
//! | `GET /v1/routes` | routing table (row, column, node, measured RTT) |
//! | `GET /v1/clusters`, `GET /v1/topics` | this node's part of each tree: role, parent, children, local members |
//! | `GET /v1/tunnels` | tunnel ends: phase, far node, queued bytes |
//! | `GET /v1/sessions` | attached applications: age, queued bytes, drops, clusters, topics |
//! | `GET /v1/openapi.json` | the OpenAPI 3.1 document of all of the above, derived from the code |
//!
//! It listens on `127.0.0.1:55558` by default. A bind to any other address needs a bearer
//! token ([`AdminOptions::token`]); with a token, every path but `/healthz`, `/readyz` and the
//! dashboard page `/` (its script asks for the token) answers 401 without `Authorization:
//! Bearer <token>`. Without a token, only requests whose `Host` is `localhost` or a loopback
//! address are answered (403 otherwise), so a web page cannot read the API through a name it
//! rebinds to 127.0.0.1.
//!
//! The API never blocks the node: each answer is built from a snapshot the node task copies
//! out of its tables between two inputs ([`petal_node::StatsSource::inspect`]), one copy at a
//! time and reused for 500 ms however many clients poll; a node too busy to answer within
//! [`AdminOptions::inspect_timeout`] gets a 503 (and makes no copy for a reader that left).
//! `/readyz` and `/healthz` never ask the node (a flag it keeps). Bad input affects only its
//! own connection: unknown paths get 404, other methods 405, request heads over 16 KiB are
//! refused (431), a client that takes longer than [`AdminOptions::header_timeout`] to send
//! its request head or keeps a connection longer than [`AdminOptions::connection_timeout`]
//! is disconnected, and at most [`AdminOptions::max_connections`] connections are served at
//! once (more wait in the kernel's accept queue), at most
//! [`AdminOptions::max_connections_per_ip`] from one address (more are closed at once).

pub mod http;
pub mod metrics;
mod openapi;
pub mod views;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use petal_node::{Inspection, StatsSource};
use tokio::net::TcpListener;

pub use openapi::openapi_json;
use views::ErrorView;

/// Where the admin API listens unless told otherwise.
pub const DEFAULT_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 55558);

/// How the admin API runs.
#[derive(Clone, Debug)]
pub struct AdminOptions {
    /// Where to listen.
    pub addr: SocketAddr,
    /// Bearer token required on every path but the probes; required for a non-loopback
    /// `addr`.
    pub token: Option<String>,
    /// The daemon's version, shown in `/v1/node` and `petal_info`.
    pub version: String,
    /// Connections served at once.
    pub max_connections: usize,
    /// Connections served at once from one IP address (more are closed at once), so that one
    /// client cannot take every slot; an IPv6 /64 counts as one address.
    pub max_connections_per_ip: usize,
    /// Longest wait for a request's head (the first, and each next one on a kept-alive
    /// connection).
    pub header_timeout: Duration,
    /// Longest a connection lives.
    pub connection_timeout: Duration,
    /// Longest wait for the node's snapshot.
    pub inspect_timeout: Duration,
    /// More metric families appended to `/metrics` (the daemon's other parts: the gateway).
    pub extra_metrics: Option<ExtraMetrics>,
}

/// Renders more metric families in the Prometheus text format, each with `# HELP` and
/// `# TYPE`, ending in a newline.
#[derive(Clone)]
pub struct ExtraMetrics(pub Arc<dyn Fn() -> String + Send + Sync>);

impl std::fmt::Debug for ExtraMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExtraMetrics")
    }
}

impl AdminOptions {
    /// Defaults on `addr`, without a token.
    pub fn new(addr: SocketAddr, version: impl Into<String>) -> Self {
        Self {
            addr,
            token: None,
            version: version.into(),
            max_connections: 64,
            max_connections_per_ip: 16,
            header_timeout: Duration::from_secs(5),
            connection_timeout: Duration::from_secs(60),
            inspect_timeout: Duration::from_secs(2),
            extra_metrics: None,
        }
    }
}

/// Why the admin API did not start.
#[derive(Debug)]
pub enum StartError {
    /// A non-loopback address without a token.
    NeedsToken(SocketAddr),
    /// The address could not be bound.
    Bind(SocketAddr, std::io::Error),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NeedsToken(a) => write!(
                f,
                "the admin API on {a} would be reachable from other machines: give it a bearer \
                 token file (--admin-token-file), or bind it to a loopback address"
            ),
            Self::Bind(a, e) => write!(f, "cannot listen on {a} for the admin API: {e}"),
        }
    }
}

impl std::error::Error for StartError {}

/// A running admin API; dropping it does not stop it (see [`AdminHandle::stop`]).
#[derive(Debug)]
pub struct AdminHandle {
    addr: SocketAddr,
    task: tokio::task::AbortHandle,
}

impl AdminHandle {
    /// Where it listens (the bound port when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting connections (those open finish their current exchange or are dropped).
    pub fn stop(&self) {
        self.task.abort();
    }
}

/// How long one copy of the node's tables serves every request (and how often, at most, an
/// admin API asks the node for one, however many clients poll).
const SNAPSHOT_TTL: Duration = Duration::from_millis(500);

/// State shared by the handlers.
struct Shared {
    source: StatsSource,
    version: String,
    token: Option<String>,
    inspect_timeout: Duration,
    extra_metrics: Option<ExtraMetrics>,
    /// The last copy of the node's tables and when it was taken. Requests wait here for one
    /// copy in flight instead of each asking the node.
    snapshot: tokio::sync::Mutex<Option<(tokio::time::Instant, Arc<Inspection>)>>,
}

type St = State<Arc<Shared>>;

/// A JSON error answer.
fn error(status: StatusCode, what: impl Into<String>) -> Response {
    (status, axum::Json(ErrorView { error: what.into() })).into_response()
}

impl Shared {
    async fn inspect(&self) -> Result<Arc<Inspection>, Response> {
        let deadline = tokio::time::Instant::now() + self.inspect_timeout;
        let Ok(mut last) = tokio::time::timeout_at(deadline, self.snapshot.lock()).await else {
            return Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the node did not answer in time",
            ));
        };
        if let Some((at, i)) = last.as_ref()
            && at.elapsed() < SNAPSHOT_TTL
        {
            return Ok(i.clone());
        }
        match tokio::time::timeout_at(deadline, self.source.inspect()).await {
            Ok(Some(i)) => {
                let i = Arc::new(i);
                *last = Some((tokio::time::Instant::now(), i.clone()));
                Ok(i)
            }
            Ok(None) => Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the node has shut down",
            )),
            Err(_) => Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the node did not answer in time",
            )),
        }
    }
}

/// Equal without an early exit on the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// A `Host` header naming this machine: `localhost` or a loopback address, with any port.
async fn authorize(State(s): St, headers: HeaderMap, req: Request, next: Next) -> Response {
    // Without a token the API is loopback-only, and a page elsewhere could still reach it
    // through a name it rebinds to 127.0.0.1 (DNS rebinding): only requests that name this
    // machine are answered.
    if s.token.is_none() {
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
        if !host.is_some_and(http::local_host) {
            return error(
                StatusCode::FORBIDDEN,
                "without a token the admin API answers only requests for localhost",
            );
        }
    }
    // The probes, and the dashboard page (it holds no data: its script asks for the token
    // and sends it with each call).
    let open = matches!(req.uri().path(), "/healthz" | "/readyz" | "/");
    if let (Some(token), false) = (&s.token, open) {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| same(g.trim().as_bytes(), token.as_bytes())) {
            let mut r = error(StatusCode::UNAUTHORIZED, "a bearer token is required");
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"petald\""),
            );
            return r;
        }
    }
    next.run(req).await
}

/// The API's routes over `source` (for tests and embedding; [`start`] serves them).
pub fn router(source: StatsSource, opts: &AdminOptions) -> Router {
    let shared = Arc::new(Shared {
        source,
        version: opts.version.clone(),
        token: opts.token.clone(),
        inspect_timeout: opts.inspect_timeout,
        extra_metrics: opts.extra_metrics.clone(),
        snapshot: tokio::sync::Mutex::new(None),
    });
    Router::new()
        .route("/", get(handlers::dashboard))
        .route("/healthz", get(handlers::healthz))
        .route("/readyz", get(handlers::readyz))
        .route("/metrics", get(handlers::metrics))
        .route("/v1/node", get(handlers::node))
        .route("/v1/peers", get(handlers::peers))
        .route("/v1/leafset", get(handlers::leafset))
        .route("/v1/routes", get(handlers::routes))
        .route("/v1/clusters", get(handlers::clusters))
        .route("/v1/topics", get(handlers::topics))
        .route("/v1/tunnels", get(handlers::tunnels))
        .route("/v1/sessions", get(handlers::sessions))
        .route("/v1/openapi.json", get(handlers::openapi))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such path") })
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            authorize,
        ))
        .with_state(shared)
}

/// Binds `opts.addr` and serves the API in a task of the current runtime.
pub async fn start(source: StatsSource, opts: AdminOptions) -> Result<AdminHandle, StartError> {
    Ok(bind(opts).await?.serve(source))
}

/// The admin API's listener, bound but not serving yet: a daemon binds it (and learns of a
/// missing token or a taken port) before it starts its node.
#[derive(Debug)]
pub struct Bound {
    listener: TcpListener,
    addr: SocketAddr,
    opts: AdminOptions,
}

/// Checks `opts` and binds its address.
pub async fn bind(opts: AdminOptions) -> Result<Bound, StartError> {
    if !opts.addr.ip().is_loopback() && opts.token.is_none() {
        return Err(StartError::NeedsToken(opts.addr));
    }
    let listener = TcpListener::bind(opts.addr)
        .await
        .map_err(|e| StartError::Bind(opts.addr, e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| StartError::Bind(opts.addr, e))?;
    Ok(Bound {
        listener,
        addr,
        opts,
    })
}

impl Bound {
    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves the API over `source` in a task of the current runtime.
    pub fn serve(self, source: StatsSource) -> AdminHandle {
        let app = router(source, &self.opts);
        let task = tokio::spawn(serve(self.listener, app, self.opts)).abort_handle();
        AdminHandle {
            addr: self.addr,
            task,
        }
    }
}

async fn serve(listener: TcpListener, app: Router, opts: AdminOptions) {
    let limits = http::Limits {
        max_connections: opts.max_connections,
        max_connections_per_ip: opts.max_connections_per_ip,
        header_timeout: opts.header_timeout,
        lifetime: Some(opts.connection_timeout),
        upgrades: false,
        write_timeout: Some(opts.header_timeout),
        what: "admin API",
        tls: None,
    };
    http::serve(listener, app, limits).await;
}

mod handlers {
    use axum::Json;
    use axum::extract::State;
    use axum::http::{StatusCode, header};
    use axum::response::{IntoResponse, Response};
    use petal_core::GroupKind;

    use super::St;
    use crate::views::{
        self, EntryView, GroupView, LeafSetView, NodeView, PeerView, RouteView, SessionView,
        TunnelView,
    };

    /// The dashboard: one self-contained page (no build step) that polls the API.
    #[utoipa::path(get, path = "/", responses((status = 200, description = "HTML page", body = String, content_type = "text/html")))]
    pub(super) async fn dashboard() -> axum::response::Html<&'static str> {
        axum::response::Html(include_str!("dashboard.html"))
    }

    /// The process runs.
    #[utoipa::path(get, path = "/healthz", responses((status = 200, description = "The process runs", body = String, content_type = "text/plain")))]
    pub(super) async fn healthz() -> &'static str {
        "ok"
    }

    /// The node is part of a ring (joined, or serving alone).
    #[utoipa::path(get, path = "/readyz", responses(
        (status = 200, description = "Ready", body = String, content_type = "text/plain"),
        (status = 503, description = "Joining, or shut down", body = String, content_type = "text/plain")))]
    pub(super) async fn readyz(State(s): St) -> Response {
        // A flag the node task keeps: the probe never waits for the node.
        if s.source.is_ready() {
            "ready".into_response()
        } else {
            (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
        }
    }

    /// Counters and gauges in the Prometheus text format.
    #[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format 0.0.4", body = String, content_type = "text/plain")))]
    pub(super) async fn metrics(State(s): St) -> Response {
        match s.inspect().await {
            Ok(i) => {
                let mut text = crate::metrics::render(&i, &s.version);
                if let Some(extra) = &s.extra_metrics {
                    text.push_str(&(extra.0)());
                }
                ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response()
            }
            Err(r) => r,
        }
    }

    /// Who this node is and how it runs.
    #[utoipa::path(get, path = "/v1/node", responses((status = 200, body = NodeView), (status = 503, body = views::ErrorView)))]
    pub(super) async fn node(State(s): St) -> Response {
        match s.inspect().await {
            Ok(i) => Json(NodeView::new(&i, &s.version)).into_response(),
            Err(r) => r,
        }
    }

    /// Peer links and dials under way.
    #[utoipa::path(get, path = "/v1/peers", responses((status = 200, body = Vec<PeerView>), (status = 503, body = views::ErrorView)))]
    pub(super) async fn peers(State(s): St) -> Response {
        match s.inspect().await {
            Ok(i) => Json(i.links.iter().map(PeerView::from).collect::<Vec<_>>()).into_response(),
            Err(r) => r,
        }
    }

    /// The leaf set.
    #[utoipa::path(get, path = "/v1/leafset", responses((status = 200, body = LeafSetView), (status = 503, body = views::ErrorView)))]
    pub(super) async fn leafset(State(s): St) -> Response {
        match s.inspect().await {
            Ok(i) => Json(LeafSetView {
                id: i.id.to_string(),
                left: i.leaf_left.iter().map(EntryView::from).collect(),
                right: i.leaf_right.iter().map(EntryView::from).collect(),
            })
            .into_response(),
            Err(r) => r,
        }
    }

    /// The routing table.
    #[utoipa::path(get, path = "/v1/routes", responses((status = 200, body = Vec<RouteView>), (status = 503, body = views::ErrorView)))]
    pub(super) async fn routes(State(s): St) -> Response {
        match s.inspect().await {
            Ok(i) => Json(i.routes.iter().map(RouteView::from).collect::<Vec<_>>()).into_response(),
            Err(r) => r,
        }
    }

    /// This node's part of each cluster's tree.
    #[utoipa::path(get, path = "/v1/clusters", responses((status = 200, body = Vec<GroupView>), (status = 503, body = views::ErrorView)))]
    pub(super) async fn clusters(State(s): St) -> Response {
        match s.inspect().await {
            Ok(i) => Json(views::groups(&i, GroupKind::Cluster)).into_response(),
            Err(r) => r,
        }
    }

    /// This node's part of each topic's tree.
    #[utoipa::path(get, path = "/v1/topics", responses((status = 200, body = Vec<GroupView>), (status = 503, body = views::ErrorView)))]
    pub(super) async fn topics(State(s): St) -> Response {
        match s.inspect().await {
            Ok(i) => Json(views::groups(&i, GroupKind::Topic)).into_response(),
            Err(r) => r,
        }
    }

    /// Tunnel ends on this node.
    #[utoipa::path(get, path = "/v1/tunnels", responses((status = 200, body = Vec<TunnelView>), (status = 503, body = views::ErrorView)))]
    pub(super) async fn tunnels(State(s): St) -> Response {
        match s.inspect().await {
            Ok(i) => {
                Json(i.tunnels.iter().map(TunnelView::from).collect::<Vec<_>>()).into_response()
            }
            Err(r) => r,
        }
    }

    /// Attached applications.
    #[utoipa::path(get, path = "/v1/sessions", responses((status = 200, body = Vec<SessionView>), (status = 503, body = views::ErrorView)))]
    pub(super) async fn sessions(State(s): St) -> Response {
        match s.inspect().await {
            Ok(i) => Json(views::sessions(&i)).into_response(),
            Err(r) => r,
        }
    }

    /// This document.
    #[utoipa::path(get, path = "/v1/openapi.json", responses((status = 200, description = "OpenAPI 3.1", body = Object)))]
    pub(super) async fn openapi() -> Response {
        (
            [(header::CONTENT_TYPE, "application/json")],
            crate::openapi_json(),
        )
            .into_response()
    }
}
