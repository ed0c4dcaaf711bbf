//! Every limit and timer of [`Config`] by name, with its unit and allowed range: the table that
//! configuration files are read through (`petald`'s `[limits]` and `[timers]`) and printed
//! from (`petald --print-config`). The runtime keeps a table of the same shape for its own
//! options (`petal_node::settings`).
//!
//! A value out of its range is refused with the key and the range; [`Config::validate`] then
//! checks what involves several keys at once.

use std::time::Duration;

use crate::Config;

/// Which table of a configuration file a setting belongs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    /// Sizes, counts and bounds (`[limits]`).
    Limits,
    /// Intervals and timeouts (`[timers]`).
    Timers,
}

impl Section {
    /// The table's name in a configuration file.
    pub fn name(self) -> &'static str {
        match self {
            Self::Limits => "limits",
            Self::Timers => "timers",
        }
    }
}

/// What a setting's number means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// A count.
    Count,
    /// Bytes.
    Bytes,
    /// Milliseconds.
    Millis,
    /// A switch: 0 or 1.
    Flag,
}

/// One setting of a configuration struct `T`, as a number in its [`Unit`].
pub struct Setting<T> {
    /// Its key.
    pub name: &'static str,
    /// Its table.
    pub section: Section,
    /// Its unit.
    pub unit: Unit,
    /// Smallest allowed value.
    pub min: u64,
    /// Largest allowed value.
    pub max: u64,
    /// Reads it.
    pub get: fn(&T) -> u64,
    /// Writes it (the value must be in range: see [`Setting::apply`]).
    pub set: fn(&mut T, u64),
}

impl<T> std::fmt::Debug for Setting<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Setting")
            .field("name", &self.name)
            .field("section", &self.section)
            .field("unit", &self.unit)
            .field("min", &self.min)
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

impl<T> Setting<T> {
    /// Sets `v` on `target`, or says why not: `[section] name = v is out of range min..=max`.
    pub fn apply(&self, target: &mut T, v: u64) -> Result<(), String> {
        if v < self.min || v > self.max {
            return Err(format!(
                "[{}] {} = {v} is out of range: {}",
                self.section.name(),
                self.name,
                self.range()
            ));
        }
        (self.set)(target, v);
        Ok(())
    }

    /// The allowed range, in words (`1..=65536`, `50ms..=86400000ms`, `true or false`).
    pub fn range(&self) -> String {
        match self.unit {
            Unit::Flag => "true or false".into(),
            Unit::Millis => format!("{}ms..={}ms", self.min, self.max),
            Unit::Bytes | Unit::Count => format!("{}..={}", self.min, self.max),
        }
    }
}

/// A day, the longest interval or timeout any setting takes.
pub const DAY_MS: u64 = 86_400_000;
/// The largest count any setting takes.
pub const MAX_COUNT: u64 = 1 << 24;
/// The largest byte size any setting takes (1 TiB).
pub const MAX_BYTES: u64 = 1 << 40;

/// A duration in whole milliseconds (for [`Setting::get`] of timers).
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Declares a table of [`Setting`]s of a struct: `pub static NAME: Type { entries }`, each
/// entry `timer name [min, max]` (a `Duration` in milliseconds, in `[timers]`), `count name:
/// type [min, max]` or `bytes name: type [min, max]` (in `[limits]`), or `flag name [0, 1]` (a
/// `bool`, in `[limits]`).
#[macro_export]
macro_rules! settings_table {
    (@one $t:ty; timer $name:ident $min:literal $max:expr) => {
        $crate::settings::Setting {
            name: stringify!($name),
            section: $crate::settings::Section::Timers,
            unit: $crate::settings::Unit::Millis,
            min: $min,
            max: $max,
            get: |c: &$t| $crate::settings::millis(c.$name),
            set: |c: &mut $t, v| c.$name = ::std::time::Duration::from_millis(v),
        }
    };
    (@one $t:ty; flag $name:ident $min:literal $max:expr) => {
        $crate::settings::Setting {
            name: stringify!($name),
            section: $crate::settings::Section::Limits,
            unit: $crate::settings::Unit::Flag,
            min: $min,
            max: $max,
            get: |c: &$t| u64::from(c.$name),
            set: |c: &mut $t, v| c.$name = v != 0,
        }
    };
    (@one $t:ty; count $name:ident $ty:ty, $min:literal $max:expr) => {
        $crate::settings_table!(@num $t; Count $name $ty, $min $max)
    };
    (@one $t:ty; bytes $name:ident $ty:ty, $min:literal $max:expr) => {
        $crate::settings_table!(@num $t; Bytes $name $ty, $min $max)
    };
    (@num $t:ty; $unit:ident $name:ident $ty:ty, $min:literal $max:expr) => {
        $crate::settings::Setting {
            name: stringify!($name),
            section: $crate::settings::Section::Limits,
            unit: $crate::settings::Unit::$unit,
            min: $min,
            max: $max,
            get: |c: &$t| u64::try_from(c.$name).unwrap_or(u64::MAX),
            set: |c: &mut $t, v| c.$name = <$ty>::try_from(v).unwrap_or(<$ty>::MAX),
        }
    };
    ($(#[$doc:meta])* $vis:vis static $table:ident: $t:ty {
        $($kind:ident $name:ident $(: $ty:ty)? [$min:literal, $max:expr]),* $(,)?
    }) => {
        $(#[$doc])*
        $vis static $table: &[$crate::settings::Setting<$t>] = &[
            $($crate::settings_table!(@one $t; $kind $name $($ty,)? $min $max)),*
        ];
    };
}

settings_table! {
    /// Every limit and timer of the core's [`Config`], in declaration order.
    pub static CORE_SETTINGS: Config {
    count leaf_set_size: usize [2, 256],
    timer heartbeat_interval [1, DAY_MS],
    timer leaf_ping_interval [1, DAY_MS],
    timer routing_ping_interval [1, DAY_MS],
    timer ping_timeout [1, DAY_MS],
    timer ping_timeout_min [1, DAY_MS],
    count suspicion_misses: u32 [1, 1000],
    timer leaf_exchange_interval [1, DAY_MS],
    timer leaf_exchange_min [1, DAY_MS],
    timer join_timeout [1, DAY_MS],
    timer join_contact_timeout [1, DAY_MS],
    count join_rtt_factor: u32 [1, 1000],
    timer join_progress_min [1, DAY_MS],
    timer join_busy_retry [1, DAY_MS],
    count max_join_contacts: usize [1, 4096],
    count join_attempts: u32 [1, 1000],
    timer hop_ack_timeout [1, DAY_MS],
    timer hop_ack_timeout_min [1, DAY_MS],
    count max_reroutes: u32 [0, 1000],
    count max_pending_hops: usize [1, MAX_COUNT],
    count max_hops: u8 [8, 255],
    timer lookup_timeout [1, DAY_MS],
    count lookup_attempts: u32 [1, 1000],
    count max_pending_lookups: usize [1, MAX_COUNT],
    count max_probes: usize [1, MAX_COUNT],
    count probe_one_in: u32 [1, 1024],
    count max_join_buffer: usize [0, MAX_COUNT],
    count max_dead: usize [1, MAX_COUNT],
    timer dead_probe_min [1, DAY_MS],
    timer dead_probe_max [1, DAY_MS],
    timer dead_forget_after [0, DAY_MS],
    timer dead_probe_spacing [1, DAY_MS],
    timer dead_rumour_after [0, DAY_MS],
    timer timer_granularity [1, 60_000],
    timer routing_maintenance_interval [1, DAY_MS],
    count max_rtt_cache: usize [1, 65_534],
    count max_outbox: usize [64, MAX_COUNT],
    count max_events: usize [64, MAX_COUNT],
    timer group_refresh_interval [1, DAY_MS],
    timer group_child_timeout [1, DAY_MS],
    count max_groups: usize [1, MAX_COUNT],
    count max_group_children: usize [2, MAX_COUNT],
    count group_replay_events: usize [0, MAX_COUNT],
    bytes group_replay_bytes: usize [0, MAX_BYTES],
    timer event_gap_wait [0, DAY_MS],
    timer dedup_window [0, DAY_MS],
    count group_dedup_events: usize [0, MAX_COUNT],
    count max_recent_asks: usize [0, MAX_COUNT],
    count max_conns: usize [1, MAX_COUNT],
    count max_pending_requests: usize [1, MAX_COUNT],
    count max_conn_requests: u32 [1, MAX_COUNT],
    count max_conn_tunnels: usize [1, MAX_COUNT],
    count max_deliveries: usize [1, MAX_COUNT],
    timer ask_park_timeout [0, DAY_MS],
    count max_parked_asks: usize [0, MAX_COUNT],
    count max_member_inflight: u32 [1, MAX_COUNT],
    timer stall_forget_after [1, DAY_MS],
    count max_tunnels: usize [1, MAX_COUNT],
    bytes tunnel_chunk_limit: usize [1, 16_777_216],
    bytes tunnel_buffer: u64 [1, MAX_BYTES],
    bytes tunnel_window: u64 [65, MAX_BYTES],
    timer tunnel_keepalive_interval [1, DAY_MS],
    timer tunnel_idle_timeout [1, DAY_MS],
    bytes memory_budget: u64 [1_048_576, MAX_BYTES],
    bytes memory_share: u64 [65, MAX_BYTES],
    flag join_search [0, 1],
    count store_replicas: usize [1, 129],
    count store_write_quorum: usize [1, 129],
    count store_read_quorum: usize [1, 129],
    timer store_replica_timeout [1, DAY_MS],
    timer store_sync_interval [1, DAY_MS],
    timer store_handoff_delay [0, DAY_MS],
    timer store_tombstone_ttl [1, 30 * DAY_MS],
    bytes store_max_key: usize [1, 65_535],
    bytes store_max_value: usize [0, 16_777_216],
    bytes store_max_bytes: u64 [0, MAX_BYTES],
    count store_max_ops: usize [1, MAX_COUNT],
    timer identity_lease [3, DAY_MS],
    timer identity_ack_timeout [1, DAY_MS],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field of `Config` is in the table once (it has 79: a new field fails here until
    /// it is added), and every default is within its own range.
    #[test]
    fn the_table_covers_every_setting_and_the_defaults_fit() {
        assert_eq!(CORE_SETTINGS.len(), 79);
        let mut names: Vec<&str> = CORE_SETTINGS.iter().map(|s| s.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CORE_SETTINGS.len());
        let c = Config::default();
        for s in CORE_SETTINGS {
            let v = (s.get)(&c);
            assert!(s.min <= v && v <= s.max, "{} = {v}: {}", s.name, s.range());
        }
    }

    #[test]
    fn values_round_trip_and_out_of_range_names_the_key() {
        let mut c = Config::default();
        for s in CORE_SETTINGS {
            let v = if s.max > s.min { s.min + 1 } else { s.min };
            s.apply(&mut c, v).unwrap();
            assert_eq!((s.get)(&c), v, "{}", s.name);
        }
        let leaf = CORE_SETTINGS
            .iter()
            .find(|s| s.name == "leaf_set_size")
            .unwrap();
        let e = leaf.apply(&mut c, 1000).unwrap_err();
        assert_eq!(e, "[limits] leaf_set_size = 1000 is out of range: 2..=256");
        let t = CORE_SETTINGS
            .iter()
            .find(|s| s.name == "ping_timeout")
            .unwrap();
        assert!(t.apply(&mut c, 0).unwrap_err().contains("1ms..=86400000ms"));
    }
}
