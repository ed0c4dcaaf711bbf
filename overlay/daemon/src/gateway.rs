//! `--gateway`: the HTTP gateway, started once the node runs.

use std::net::SocketAddr;

use anyhow::{Context, Result};

/// Starts the HTTP gateway on `addr`, a client of this node over in-memory relay sessions.
pub(crate) async fn start(
    s: &crate::Settings,
    addr: SocketAddr,
    local: petal_node::LocalConnector,
    stats: std::sync::Arc<petal_gateway::GatewayStats>,
) -> Result<petal_gateway::GatewayHandle> {
    let mut o = petal_gateway::GatewayOptions::new(addr, s.port);
    o.local = Some(local);
    o.stats = stats;
    if let Some(f) = &s.gateway_tokens {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("reading the gateway's tokens {}", f.display()))?;
        let tokens = petal_gateway::auth::Tokens::parse(&text)
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("the gateway's tokens {}", f.display()))?;
        o.tokens = Some(std::sync::Arc::new(tokens));
    }
    o.cors_origins = s.gateway_cors.clone();
    if let Some((cert, key)) = &s.gateway_tls {
        o.tls = Some(petal_gateway::tls_config(cert, key).map_err(anyhow::Error::msg)?);
    }
    Ok(petal_gateway::start(o).await?)
}
