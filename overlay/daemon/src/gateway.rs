//! `--gateway`: the HTTP gateway, started once the node runs.

use std::net::SocketAddr;

use anyhow::{Context, Result};

/// The gateway's options from the settings (tokens and TLS files read and checked), made
/// before the node starts so that a bad file stops the start early.
pub(crate) fn prepare(
    s: &crate::Settings,
    addr: SocketAddr,
) -> Result<petal_gateway::GatewayOptions> {
    let mut o = petal_gateway::GatewayOptions::new(addr, s.port);
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
    if o.tokens.is_none() && !addr.ip().is_loopback() {
        anyhow::bail!("{}", petal_gateway::StartError::NeedsTokens(addr));
    }
    Ok(o)
}

/// Starts the prepared gateway, a client of this node over in-memory relay sessions.
pub(crate) async fn start(
    mut o: petal_gateway::GatewayOptions,
    local: petal_node::LocalConnector,
) -> Result<petal_gateway::GatewayHandle> {
    o.local = Some(local);
    Ok(petal_gateway::start(o).await?)
}
