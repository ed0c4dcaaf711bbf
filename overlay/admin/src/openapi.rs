//! The OpenAPI document of the admin API, derived from the handlers' annotations and the view
//! types (`utoipa`).

use utoipa::OpenApi;

use crate::handlers;
use crate::views::{
    DiscoveryView, EntryView, ErrorView, GroupView, LeafSetView, NodeView, PeerView, RouteView,
    SessionView, TunnelView,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "petald admin API",
        description = "Read-only views of a Petal node: health, readiness, metrics and its tables."
    ),
    paths(
        handlers::dashboard,
        handlers::healthz,
        handlers::readyz,
        handlers::metrics,
        handlers::node,
        handlers::peers,
        handlers::leafset,
        handlers::routes,
        handlers::clusters,
        handlers::topics,
        handlers::tunnels,
        handlers::sessions,
        handlers::openapi,
    ),
    components(schemas(
        NodeView,
        DiscoveryView,
        PeerView,
        EntryView,
        LeafSetView,
        RouteView,
        GroupView,
        TunnelView,
        SessionView,
        ErrorView
    ))
)]
struct ApiDoc;

/// The OpenAPI 3.1 document, as served at `/v1/openapi.json`.
pub fn openapi_json() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}
