//! The configuration file's `[limits]` and `[timers]`: every limit and timer of the core and
//! the runtime by name (`petal_core::settings`, `petal_node::settings`), checked against its
//! range at start, and `--print-config`.
//!
//! Values: counts as integers; byte sizes as integers or with a unit (`"64MiB"`); timers as
//! integers (milliseconds) or with a unit (`"500ms"`, `"2s"`, `"5m"`, `"1h"`); switches as
//! `true`/`false`.

use anyhow::{Result, anyhow, bail};
use petal_core::settings::{CORE_SETTINGS, Section, Unit};
use petal_node::Options;
use petal_node::settings::{AnySetting, NODE_SETTINGS};

/// The `[limits]` and `[timers]` tables of a configuration file.
#[derive(Debug, Default, Clone)]
pub(crate) struct Tuning {
    pub(crate) limits: toml::Table,
    pub(crate) timers: toml::Table,
}

/// A duration with a unit (`ms`, `s`, `m`, `h`), in milliseconds.
fn parse_millis(text: &str) -> Option<u64> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let n: u64 = t[..digits].parse().ok()?;
    let scale = match t[digits..].trim() {
        "" | "ms" => 1,
        "s" => 1000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        _ => return None,
    };
    n.checked_mul(scale)
}

/// The number a TOML value stands for in `unit`.
fn number(unit: Unit, v: &toml::Value) -> Option<u64> {
    match (unit, v) {
        (Unit::Flag, toml::Value::Boolean(b)) => Some(u64::from(*b)),
        (Unit::Flag, _) => None,
        (_, toml::Value::Integer(i)) => u64::try_from(*i).ok(),
        (Unit::Millis, toml::Value::String(s)) => parse_millis(s),
        (Unit::Bytes, toml::Value::String(s)) => crate::parse_bytes(s).ok(),
        _ => None,
    }
}

fn expected(unit: Unit) -> &'static str {
    match unit {
        Unit::Flag => "true or false",
        Unit::Millis => "milliseconds, or a string like \"500ms\", \"2s\", \"5m\"",
        Unit::Bytes => "bytes, or a string like \"64MiB\"",
        Unit::Count => "a whole number",
    }
}

impl Tuning {
    /// Sets every key on `opts`, then the memory budget given as a flag or at the top of the
    /// file (`budget`, which wins over `[limits] memory_budget`); a budget sets the share to an
    /// eighth of it unless `[limits] memory_share` says otherwise. Then checks the settings
    /// that depend on each other.
    pub(crate) fn apply(&self, opts: &mut Options, budget: Option<u64>) -> Result<()> {
        for (section, table) in [
            (Section::Limits, &self.limits),
            (Section::Timers, &self.timers),
        ] {
            for (key, value) in table {
                let s = AnySetting::find(key).ok_or_else(|| {
                    anyhow!(
                        "[{}] {key}: no such setting (petald --print-config lists them all)",
                        section.name()
                    )
                })?;
                let (_, in_section, unit) = s.describe();
                if in_section != section {
                    bail!(
                        "[{}] {key}: this setting belongs in [{}]",
                        section.name(),
                        in_section.name()
                    );
                }
                let v = number(unit, value).ok_or_else(|| {
                    anyhow!(
                        "[{}] {key} = {value}: expected {}",
                        section.name(),
                        expected(unit)
                    )
                })?;
                s.apply(opts, v).map_err(anyhow::Error::msg)?;
            }
        }
        if let Some(b) = budget {
            if b < (1 << 20) {
                bail!("memory budget {b} bytes: at least 1MiB");
            }
            opts.core.memory_budget = b;
        }
        let budget_set = budget.is_some() || self.limits.contains_key("memory_budget");
        if budget_set && !self.limits.contains_key("memory_share") {
            opts.core.memory_share = opts.core.memory_budget / 8;
        }
        check(opts)
    }
}

/// The checks that involve several settings.
pub(crate) fn check(opts: &Options) -> Result<()> {
    opts.core
        .validate()
        .map_err(|e| anyhow!("[limits]/[timers]: {}", e.0))?;
    opts.validate()
        .map_err(|e| anyhow!("[limits]/[timers]: {e}"))?;
    Ok(())
}

/// The `[limits]` and `[timers]` of `opts`, every setting with its value, as TOML.
pub(crate) fn tables(opts: &Options) -> String {
    let mut out = String::new();
    for section in [Section::Limits, Section::Timers] {
        out.push_str(&format!("\n[{}]\n", section.name()));
        let core = CORE_SETTINGS
            .iter()
            .filter(|s| s.section == section)
            .map(|s| (s.name, s.unit, (s.get)(&opts.core)));
        let node = NODE_SETTINGS
            .iter()
            .filter(|s| s.section == section)
            .map(|s| (s.name, s.unit, (s.get)(opts)));
        for (name, unit, v) in core.chain(node) {
            let value = match unit {
                Unit::Flag => (v != 0).to_string(),
                Unit::Millis => format!("\"{v}ms\""),
                Unit::Bytes | Unit::Count => v.to_string(),
            };
            out.push_str(&format!("{name} = {value}\n"));
        }
    }
    out
}

/// `petald --print-config`: the merged settings as a configuration file (the network key is
/// never printed, only the file it comes from).
pub(crate) fn print_config(s: &crate::Settings) -> Result<String> {
    use std::fmt::Write as _;
    let mut opts = Options::new(
        petal_node::Identity::from_seed(0),
        petal_node::LinkSecurity::Plaintext,
    );
    s.tuning.apply(&mut opts, s.memory_budget)?;
    let q = |t: &str| toml::Value::String(t.to_string()).to_string();
    let mut out = String::from("# petald --print-config: the effective configuration\n");
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    line(format!("port = {}", s.port));
    line(format!("listen = {}", q(&s.listen.to_string())));
    if let Some(a) = s.advertise {
        line(format!("advertise = {}", q(&a.to_string())));
    }
    let seeds: Vec<String> = s.seeds.iter().map(|x| q(x)).collect();
    line(format!("seeds = [{}]", seeds.join(", ")));
    if let Some(d) = &s.data_dir {
        line(format!("data_dir = {}", q(&d.display().to_string())));
    }
    if let Some(f) = &s.network_key_file {
        line(format!(
            "network_key_file = {}",
            q(&f.display().to_string())
        ));
    }
    line(format!("log = {}", q(&s.log)));
    line(format!(
        "log_format = {}",
        q(if s.json_logs { "json" } else { "text" })
    ));
    line(format!("discovery = {}", s.discovery.is_some()));
    if let Some(d) = &s.discovery {
        line(format!("discovery_group = {}", q(&d.group.to_string())));
        if !d.interface.is_unspecified() {
            line(format!(
                "discovery_interface = {}",
                q(&d.interface.to_string())
            ));
        }
    }
    if let Some(g) = s.gateway {
        line(format!("gateway = {}", q(&g.to_string())));
    }
    if let Some(f) = &s.gateway_tokens {
        line(format!("gateway_tokens = {}", q(&f.display().to_string())));
    }
    if let Some((cert, key)) = &s.gateway_tls {
        line(format!(
            "gateway_tls_cert = {}",
            q(&cert.display().to_string())
        ));
        line(format!(
            "gateway_tls_key = {}",
            q(&key.display().to_string())
        ));
    }
    if !s.gateway_cors.is_empty() {
        let cors: Vec<String> = s.gateway_cors.iter().map(|x| q(x)).collect();
        line(format!("gateway_cors = [{}]", cors.join(", ")));
    }
    if let Some(url) = &s.session_store {
        line(format!(
            "session_store = {}",
            q(&crate::session_store::without_password(url))
        ));
    }
    let admin = match s.admin.addr {
        crate::admin::AdminAddr::Off => "off".to_string(),
        crate::admin::AdminAddr::Default => "default".to_string(),
        crate::admin::AdminAddr::At(a) => a.to_string(),
    };
    line(format!(
        "# admin \"default\": {}, skipped with a warning when taken",
        petal_admin::DEFAULT_ADDR
    ));
    line(format!("admin = {}", q(&admin)));
    if let Some(f) = &s.admin.token_file {
        line(format!(
            "admin_token_file = {}",
            q(&f.display().to_string())
        ));
    }
    let _ = write!(out, "{}", tables(&opts));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> Options {
        Options::new(
            petal_node::Identity::from_seed(1),
            petal_node::LinkSecurity::Plaintext,
        )
    }

    fn tuning(text: &str) -> Tuning {
        let t: toml::Table = toml::from_str(text).unwrap();
        let get = |k: &str| {
            t.get(k)
                .and_then(|v| v.as_table())
                .cloned()
                .unwrap_or_default()
        };
        Tuning {
            limits: get("limits"),
            timers: get("timers"),
        }
    }

    #[test]
    fn limits_and_timers_are_set_with_units() {
        let mut o = opts();
        tuning(
            "[limits]\nleaf_set_size = 8\nlink_queue = 100\nsession_queue_bytes = \"64MiB\"\n\
             join_search = false\n[timers]\nping_timeout = \"2s\"\nlink_keepalive = 1500\n",
        )
        .apply(&mut o, None)
        .unwrap();
        assert_eq!(o.core.leaf_set_size, 8);
        assert_eq!(o.link_queue, 100);
        assert_eq!(o.session_queue_bytes, 64 << 20);
        assert!(!o.core.join_search);
        assert_eq!(o.core.ping_timeout, std::time::Duration::from_secs(2));
        assert_eq!(o.link_keepalive, std::time::Duration::from_millis(1500));
    }

    #[test]
    fn errors_name_the_key_and_what_is_allowed() {
        let err = |text: &str| {
            tuning(text)
                .apply(&mut opts(), None)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err("[limits]\nleaf_set_size = 1000"),
            "[limits] leaf_set_size = 1000 is out of range: 2..=256"
        );
        assert!(err("[limits]\nping_timeout = 5").contains("belongs in [timers]"));
        assert!(err("[timers]\nping_timeout = \"5 parsecs\"").contains("expected milliseconds"));
        assert!(err("[limits]\nno_such = 1").contains("no such setting"));
        assert!(err("[limits]\nmax_rtt_cache = 70000").contains("1..=65534"));
        // In range one by one, wrong together.
        assert!(
            err("[timers]\nping_timeout_min = 900\nping_timeout = 800")
                .contains("ping_timeout_min")
        );
    }

    /// The budget from a flag or the top of the file sets the share to an eighth unless
    /// `[limits]` names one, and is checked with the share it ends with.
    #[test]
    fn the_memory_budget_sets_the_share_unless_limits_name_one() {
        let mut o = opts();
        tuning("[limits]\nmemory_share = \"2GiB\"")
            .apply(&mut o, Some(32 << 30))
            .unwrap();
        assert_eq!(
            (o.core.memory_budget, o.core.memory_share),
            (32 << 30, 2 << 30)
        );
        let mut o = opts();
        tuning("[limits]\nmemory_budget = \"64MiB\"")
            .apply(&mut o, None)
            .unwrap();
        assert_eq!(o.core.memory_share, 8 << 20);
        let mut o = opts();
        tuning("").apply(&mut o, Some(256 << 20)).unwrap();
        assert_eq!(o.core.memory_share, 32 << 20);
        assert!(tuning("").apply(&mut opts(), Some(1000)).is_err());
    }

    /// Settings each in range that together would break links are refused.
    #[test]
    fn frames_and_link_timers_must_fit_together() {
        let err = |text: &str| {
            tuning(text)
                .apply(&mut opts(), None)
                .unwrap_err()
                .to_string()
        };
        assert!(err("[limits]\nmax_message = \"64MiB\"").contains("max_frame must exceed"));
        assert!(
            err("[limits]\nmax_message = \"1MiB\"\nmax_frame = \"2MiB\"\ntunnel_chunk_limit = \"2MiB\"")
                .contains("max_frame must exceed")
        );
        assert!(err("[timers]\nlink_keepalive = \"4s\"").contains("link_idle_timeout"));
    }

    /// What `--print-config` prints reads back to the same settings.
    #[test]
    fn printed_tables_read_back_the_same() {
        let mut o = opts();
        tuning("[limits]\nmax_dials = 9\n[timers]\ndial_backoff = \"3s\"")
            .apply(&mut o, None)
            .unwrap();
        let text = tables(&o);
        let mut back = opts();
        tuning(&text).apply(&mut back, None).unwrap();
        assert_eq!(tables(&back), text);
        assert_eq!(back.max_dials, 9);
        assert_eq!(text.lines().filter(|l| l.contains(" = ")).count(), 79 + 19);
    }
}
