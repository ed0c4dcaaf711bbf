//! The admin API's settings (`--admin`, `--admin-token-file`) and its start.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use petal_admin::{AdminHandle, AdminOptions, Bound, DEFAULT_ADDR};

/// Where the admin API listens, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AdminAddr {
    /// Not given: the default address, best effort (a second daemon on the machine, or
    /// another program on the port, gets a warning, not a failure).
    Default,
    /// Given: failing to listen there stops the daemon.
    At(SocketAddr),
    /// `off`.
    Off,
}

/// Parses `--admin`'s value: an address, `off`, or `default` (127.0.0.1:55558, skipped with a
/// warning when taken).
pub(crate) fn parse_admin(text: &str) -> Result<AdminAddr, String> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("off") {
        return Ok(AdminAddr::Off);
    }
    if t.eq_ignore_ascii_case("default") {
        return Ok(AdminAddr::Default);
    }
    t.parse::<SocketAddr>().map(AdminAddr::At).map_err(|_| {
        format!("{text:?} is neither an address like 127.0.0.1:55558 nor \"off\" or \"default\"")
    })
}

/// The admin API's settings.
#[derive(Debug, Clone)]
pub(crate) struct AdminSettings {
    pub(crate) addr: AdminAddr,
    pub(crate) token_file: Option<PathBuf>,
}

/// Reads a bearer token file: its first line, at least 16 characters, not readable by every
/// user.
fn read_token(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the admin token file {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
        if mode & 0o007 != 0 {
            bail!(
                "{} is readable by every user (mode {mode:o}): run `chmod 600 {}`",
                path.display(),
                path.display()
            );
        }
    }
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if token.len() < 16 || token.chars().any(|c| !c.is_ascii_graphic()) {
        bail!(
            "{} must hold a token of at least 16 printable characters on its first line",
            path.display()
        );
    }
    Ok(token)
}

/// Binds the admin API as configured, before the node starts, so that a missing token, an
/// unreadable token file or a taken port stop the daemon before it joins anything (`None`
/// when off, or when the default address is taken).
pub(crate) async fn bind(
    s: &AdminSettings,
    extra: Option<petal_admin::ExtraMetrics>,
) -> Result<Option<Bound>> {
    let addr = match s.addr {
        AdminAddr::Off => return Ok(None),
        AdminAddr::Default => DEFAULT_ADDR,
        AdminAddr::At(a) => a,
    };
    let mut opts = AdminOptions::new(addr, env!("CARGO_PKG_VERSION"));
    opts.token = s.token_file.as_deref().map(read_token).transpose()?;
    opts.extra_metrics = extra;
    match petal_admin::bind(opts).await {
        Ok(b) => Ok(Some(b)),
        Err(petal_admin::StartError::Bind(a, e)) if s.addr == AdminAddr::Default => {
            tracing::warn!(addr = %a, error = %e,
                "admin API not started: its default address is taken (give --admin ADDR, or --admin off)");
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// Serves a bound admin API over the running node.
pub(crate) fn serve(
    bound: Option<Bound>,
    token: bool,
    source: petal_node::StatsSource,
) -> Option<AdminHandle> {
    let h = bound?.serve(source);
    tracing::info!(addr = %h.local_addr(), token, "admin API listening");
    Some(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_flag_takes_an_address_or_off() {
        assert_eq!(parse_admin("off"), Ok(AdminAddr::Off));
        assert_eq!(parse_admin("OFF"), Ok(AdminAddr::Off));
        assert_eq!(parse_admin("default"), Ok(AdminAddr::Default));
        assert_eq!(
            parse_admin("0.0.0.0:9000"),
            Ok(AdminAddr::At("0.0.0.0:9000".parse().unwrap()))
        );
        assert!(parse_admin("localhost").is_err());
    }

    #[test]
    fn token_files_must_be_private_and_long_enough() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("petald-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("token");
        std::fs::write(&p, "0123456789abcdef0123\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_token(&p).unwrap(), "0123456789abcdef0123");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(
            read_token(&p)
                .unwrap_err()
                .to_string()
                .contains("chmod 600")
        );
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&p, "short\n").unwrap();
        assert!(read_token(&p).unwrap_err().to_string().contains("16"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
