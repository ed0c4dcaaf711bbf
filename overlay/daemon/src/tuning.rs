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
    /// Sets every key on `opts`; then checks the settings that depend on each other.
    pub(crate) fn apply(&self, opts: &mut Options) -> Result<()> {
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
    let mut opts = Options::new(
        petal_node::Identity::from_seed(0),
        petal_node::LinkSecurity::Plaintext,
    );
    s.tuning.apply(&mut opts)?;
    if let Some(budget) = s.memory_budget {
        opts.core.memory_budget = budget;
        opts.core.memory_share = budget / 8;
        check(&opts)?;
    }
    let quote = |t: &str| toml::Value::String(t.to_string()).to_string();
    let mut out = String::from(
        "# petald --print-config: the effective configuration
",
    );
    out.push_str(&format!(
        "port = {}
",
        s.port
    ));
    out.push_str(&format!(
        "listen = {}
",
        quote(&s.listen.to_string())
    ));
    if let Some(a) = s.advertise {
        out.push_str(&format!(
            "advertise = {}
",
            quote(&a.to_string())
        ));
    }
    let seeds: Vec<String> = s.seeds.iter().map(|x| quote(x)).collect();
    out.push_str(&format!(
        "seeds = [{}]
",
        seeds.join(", ")
    ));
    if let Some(d) = &s.data_dir {
        out.push_str(&format!(
            "data_dir = {}
",
            quote(&d.display().to_string())
        ));
    }
    if let Some(f) = &s.network_key_file {
        out.push_str(&format!(
            "network_key_file = {}
",
            quote(&f.display().to_string())
        ));
    }
    out.push_str(&format!(
        "log = {}
",
        quote(&s.log)
    ));
    let format = if s.json_logs { "json" } else { "text" };
    out.push_str(&format!(
        "log_format = {}
",
        quote(format)
    ));
    out.push_str(&format!(
        "discovery = {}
",
        s.discovery.is_some()
    ));
    if let Some(d) = &s.discovery {
        out.push_str(&format!(
            "discovery_group = {}
",
            quote(&d.group.to_string())
        ));
        if !d.interface.is_unspecified() {
            out.push_str(&format!(
                "discovery_interface = {}
",
                quote(&d.interface.to_string())
            ));
        }
    }
    let admin = match s.admin.addr {
        crate::admin::AdminAddr::Off => "off".to_string(),
        crate::admin::AdminAddr::Default => petal_admin::DEFAULT_ADDR.to_string(),
        crate::admin::AdminAddr::At(a) => a.to_string(),
    };
    out.push_str(&format!(
        "admin = {}
",
        quote(&admin)
    ));
    if let Some(f) = &s.admin.token_file {
        out.push_str(&format!(
            "admin_token_file = {}
",
            quote(&f.display().to_string())
        ));
    }
    out.push_str(&tables(&opts));
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
        .apply(&mut o)
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
        let err = |text: &str| tuning(text).apply(&mut opts()).unwrap_err().to_string();
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

    /// What `--print-config` prints reads back to the same settings.
    #[test]
    fn printed_tables_read_back_the_same() {
        let mut o = opts();
        tuning("[limits]\nmax_dials = 9\n[timers]\ndial_backoff = \"3s\"")
            .apply(&mut o)
            .unwrap();
        let text = tables(&o);
        let mut back = opts();
        tuning(&text).apply(&mut back).unwrap();
        assert_eq!(tables(&back), text);
        assert_eq!(back.max_dials, 9);
        assert_eq!(text.lines().filter(|l| l.contains(" = ")).count(), 65 + 19);
    }
}
