//! The node's keys: the network key from its sources, the node's static key in the data
//! directory.

use std::path::Path;

use anyhow::{Context, Result, bail};
use petal_node::{Identity, NetworkKey};

/// The network key from the first source that has one (see the crate docs), and its source.
pub(crate) fn network_key(
    flag_file: Option<&Path>,
    env: Option<String>,
    config_file: Option<&Path>,
    config_key: Option<&str>,
    data_dir: Option<&Path>,
) -> Result<(Option<NetworkKey>, String)> {
    let from_file = |p: &Path| -> Result<NetworkKey> {
        let text = std::fs::read_to_string(p)
            .with_context(|| format!("reading the network key file {}", p.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(p)?.permissions().mode() & 0o777;
            if mode & 0o007 != 0 {
                bail!(
                    "{} is readable by every user (mode {mode:o}): run `chmod 600 {}` (or 640 \
                     for a group of operators)",
                    p.display(),
                    p.display()
                );
            }
        }
        NetworkKey::from_hex(&text).with_context(|| {
            format!(
                "{} does not hold a network key (64 hex digits)",
                p.display()
            )
        })
    };
    if let Some(p) = flag_file {
        return Ok((Some(from_file(p)?), p.display().to_string()));
    }
    if let Some(v) = env {
        let k = NetworkKey::from_hex(&v)
            .context("PETAL_NETWORK_KEY does not hold a network key (64 hex digits)")?;
        return Ok((Some(k), "PETAL_NETWORK_KEY".into()));
    }
    if let Some(p) = config_file {
        return Ok((Some(from_file(p)?), p.display().to_string()));
    }
    if let Some(v) = config_key {
        let k = NetworkKey::from_hex(v)
            .context("the config's network_key is not a network key (64 hex digits)")?;
        return Ok((Some(k), "the config file".into()));
    }
    if let Some(dir) = data_dir {
        let p = dir.join("network.key");
        if p.exists() {
            return Ok((Some(from_file(&p)?), p.display().to_string()));
        }
    }
    Ok((None, String::new()))
}

/// The node's static key: kept in `<data_dir>/node.key` (created on first start with mode
/// 0600; refused when others may read it), else new.
pub(crate) fn identity(data_dir: Option<&Path>) -> Result<Identity> {
    let Some(dir) = data_dir else {
        return Identity::generate().context("generating the node key");
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("node.key");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(&path)?.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    bail!(
                        "{} is readable by others (mode {mode:o}): run `chmod 600 {}`",
                        path.display(),
                        path.display()
                    );
                }
            }
            Identity::from_file_contents(&text)
                .with_context(|| format!("{} does not hold a node key", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = Identity::generate().context("generating the node key")?;
            // Written to a temporary file, synced, then renamed: a crash never leaves a
            // half-written key that would stop every later start.
            let tmp = dir.join(format!("node.key.tmp{}", std::process::id()));
            let _ = std::fs::remove_file(&tmp);
            let mut o = std::fs::OpenOptions::new();
            o.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
            let mut f = o
                .open(&tmp)
                .with_context(|| format!("creating {}", tmp.display()))?;
            std::io::Write::write_all(&mut f, id.to_file_contents().as_bytes())
                .with_context(|| format!("writing {}", tmp.display()))?;
            f.sync_all()?;
            drop(f);
            std::fs::rename(&tmp, &path)
                .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
            tracing::info!(path = %path.display(), "created the node key");
            Ok(id)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}
