//! Every limit and timer of the runtime's [`Options`] by name, unit and allowed range (the
//! core's are in [`petal_core::settings`]): what `petald` reads from its configuration file's
//! `[limits]` and `[timers]` and prints with `--print-config`.

use petal_core::settings::{DAY_MS, MAX_BYTES, MAX_COUNT, Setting};
use petal_core::settings_table;

use crate::Options;

settings_table! {
    /// Every limit and timer of the runtime's [`Options`].
    pub static NODE_SETTINGS: Options {
        timer seed_retry [1, DAY_MS],
        count max_link_handshakes: usize [1, MAX_COUNT],
        count max_link_handshakes_per_ip: usize [1, MAX_COUNT],
        count max_relay_handshakes: usize [1, MAX_COUNT],
        timer handshake_timeout [1, DAY_MS],
        timer dial_timeout [1, DAY_MS],
        count max_dials: usize [1, MAX_COUNT],
        timer dial_backoff [1, DAY_MS],
        timer join_wait [0, DAY_MS],
        timer close_linger [0, DAY_MS],
        timer link_keepalive [1, DAY_MS],
        timer link_idle_timeout [1, DAY_MS],
        timer link_idle_close [1, DAY_MS],
        count link_queue: usize [1, MAX_COUNT],
        bytes max_frame: usize [1024, 1_073_741_824],
        bytes max_message: usize [1024, 1_073_741_824],
        bytes session_queue_bytes: usize [1024, MAX_BYTES],
        bytes session_max_bytes: usize [1024, MAX_BYTES],
        count input_queue: usize [1, MAX_COUNT],
    }
}

/// A setting of either table, by name.
pub enum AnySetting {
    /// One of the core's ([`Options::core`]).
    Core(&'static Setting<petal_core::Config>),
    /// One of the runtime's.
    Node(&'static Setting<Options>),
}

impl AnySetting {
    /// The setting called `name` in either table.
    pub fn find(name: &str) -> Option<Self> {
        petal_core::settings::CORE_SETTINGS
            .iter()
            .find(|s| s.name == name)
            .map(Self::Core)
            .or_else(|| {
                NODE_SETTINGS
                    .iter()
                    .find(|s| s.name == name)
                    .map(Self::Node)
            })
    }

    /// Its key, table and unit as the core's [`Setting`] describes them.
    pub fn describe(
        &self,
    ) -> (
        &'static str,
        petal_core::settings::Section,
        petal_core::settings::Unit,
    ) {
        match self {
            Self::Core(s) => (s.name, s.section, s.unit),
            Self::Node(s) => (s.name, s.section, s.unit),
        }
    }

    /// Sets it on `opts` (the core's on `opts.core`), or says why not.
    pub fn apply(&self, opts: &mut Options, v: u64) -> Result<(), String> {
        match self {
            Self::Core(s) => s.apply(&mut opts.core, v),
            Self::Node(s) => s.apply(opts, v),
        }
    }

    /// Its value in `opts`.
    pub fn get(&self, opts: &Options) -> u64 {
        match self {
            Self::Core(s) => (s.get)(&opts.core),
            Self::Node(s) => (s.get)(opts),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Identity, LinkSecurity};

    /// No key names two settings, and every default fits its range.
    #[test]
    fn keys_are_unique_across_both_tables_and_defaults_fit() {
        let mut names: Vec<&str> = petal_core::settings::CORE_SETTINGS
            .iter()
            .map(|s| s.name)
            .chain(NODE_SETTINGS.iter().map(|s| s.name))
            .collect();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n);
        let o = Options::new(Identity::from_seed(1), LinkSecurity::Plaintext);
        for s in NODE_SETTINGS {
            let v = (s.get)(&o);
            assert!(s.min <= v && v <= s.max, "{} = {v}: {}", s.name, s.range());
        }
        let mut o = o;
        let s = AnySetting::find("link_queue").unwrap();
        s.apply(&mut o, 77).unwrap();
        assert_eq!(o.link_queue, 77);
        AnySetting::find("max_hops")
            .unwrap()
            .apply(&mut o, 9)
            .unwrap();
        assert_eq!(o.core.max_hops, 9);
        assert!(AnySetting::find("no_such_key").is_none());
    }
}
