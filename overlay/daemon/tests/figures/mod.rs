//! Measured figures of a test, written as a small JSON file to
//! `<target dir>/test-figures/<name>.json`, so that a figure the documentation quotes can be
//! read back from the run that measured it.
//!
//! The target directory is `CARGO_TARGET_DIR` when set (a relative one is taken from the
//! workspace root, as cargo run there takes it), else `<workspace>/target`; the workspace is
//! two levels above the crate's manifest (`overlay/daemon`, `overlay/core`). Keys keep the
//! order the test gives them (no map sorts them), arrays of plain values stay on one line, and
//! nothing in the file depends on the clock, so a deterministic test writes the same bytes
//! every time. Shared by the daemon's namespace tests and `overlay/core/tests/merge.rs`
//! (through `#[path]`); no serde, so neither crate needs another dependency.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// A JSON value.
#[derive(Clone, Debug)]
pub(crate) enum Json {
    Null,
    Bool(bool),
    Int(i128),
    Num(f64),
    Str(String),
    List(Vec<Json>),
    Obj(Obj),
}

/// A JSON object whose keys stay in insertion order.
#[derive(Clone, Debug, Default)]
pub(crate) struct Obj(Vec<(String, Json)>);

impl Obj {
    pub(crate) fn new() -> Obj {
        Obj::default()
    }

    /// Adds `key` (which must be new) with `value`.
    pub(crate) fn with(mut self, key: &str, value: impl Into<Json>) -> Obj {
        self.set(key, value);
        self
    }

    /// Adds `key` (which must be new) with `value`.
    pub(crate) fn set(&mut self, key: &str, value: impl Into<Json>) {
        assert!(
            self.0.iter().all(|(k, _)| k != key),
            "figure {key:?} given twice"
        );
        self.0.push((key.to_string(), value.into()));
    }
}

impl From<Obj> for Json {
    fn from(o: Obj) -> Json {
        Json::Obj(o)
    }
}

impl From<bool> for Json {
    fn from(b: bool) -> Json {
        Json::Bool(b)
    }
}

macro_rules! int {
    ($($t:ty),*) => {$(
        impl From<$t> for Json {
            fn from(v: $t) -> Json {
                Json::Int(v as i128)
            }
        }
    )*};
}
int!(u8, u16, u32, u64, u128, usize, i32, i64);

impl From<f64> for Json {
    fn from(v: f64) -> Json {
        Json::Num(v)
    }
}

impl From<&str> for Json {
    fn from(s: &str) -> Json {
        Json::Str(s.to_string())
    }
}

impl From<String> for Json {
    fn from(s: String) -> Json {
        Json::Str(s)
    }
}

impl<T: Into<Json>> From<Option<T>> for Json {
    fn from(v: Option<T>) -> Json {
        v.map_or(Json::Null, Into::into)
    }
}

impl<T: Into<Json>> From<Vec<T>> for Json {
    fn from(v: Vec<T>) -> Json {
        Json::List(v.into_iter().map(Into::into).collect())
    }
}

impl<T: Into<Json> + Clone> From<&[T]> for Json {
    fn from(v: &[T]) -> Json {
        Json::List(v.iter().cloned().map(Into::into).collect())
    }
}

fn escape(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

impl Json {
    fn is_plain(&self) -> bool {
        !matches!(self, Json::List(_) | Json::Obj(_))
    }

    /// Two-space indentation; an array of plain values on one line.
    fn write(&self, indent: usize, out: &mut String) {
        let pad = |out: &mut String, n: usize| out.extend(std::iter::repeat_n(' ', n));
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Int(i) => out.push_str(&i.to_string()),
            Json::Num(x) if x.is_finite() => out.push_str(&format!("{x}")),
            Json::Num(_) => out.push_str("null"),
            Json::Str(s) => escape(s, out),
            Json::List(items) if items.iter().all(Json::is_plain) => {
                out.push('[');
                for (n, item) in items.iter().enumerate() {
                    if n > 0 {
                        out.push_str(", ");
                    }
                    item.write(indent, out);
                }
                out.push(']');
            }
            Json::List(items) => {
                out.push_str("[\n");
                for (n, item) in items.iter().enumerate() {
                    pad(out, indent + 2);
                    item.write(indent + 2, out);
                    out.push_str(if n + 1 < items.len() { ",\n" } else { "\n" });
                }
                pad(out, indent);
                out.push(']');
            }
            Json::Obj(Obj(fields)) if fields.is_empty() => out.push_str("{}"),
            Json::Obj(Obj(fields)) => {
                out.push_str("{\n");
                for (n, (key, value)) in fields.iter().enumerate() {
                    pad(out, indent + 2);
                    escape(key, out);
                    out.push_str(": ");
                    value.write(indent + 2, out);
                    out.push_str(if n + 1 < fields.len() { ",\n" } else { "\n" });
                }
                pad(out, indent);
                out.push('}');
            }
        }
    }

    /// The pretty text, with a final newline.
    pub(crate) fn pretty(&self) -> String {
        let mut out = String::new();
        self.write(0, &mut out);
        out.push('\n');
        out
    }
}

/// The value at quantile `q` (0..=1) of `values` (nearest rank: index round((n - 1) q) of the
/// sorted values, as `common::quantile`); `None` when empty.
pub(crate) fn quantile(values: &[u64], q: f64) -> Option<u64> {
    let mut v = values.to_vec();
    v.sort_unstable();
    let i = ((v.len().checked_sub(1)?) as f64 * q).round() as usize;
    Some(v[i])
}

/// `count`, `min`, `p50`, `p90`, `max` of `values` (nearest rank; `null` when empty).
pub(crate) fn summary(values: &[u64]) -> Obj {
    Obj::new()
        .with("count", values.len())
        .with("min", values.iter().min().copied())
        .with("p50", quantile(values, 0.5))
        .with("p90", quantile(values, 0.9))
        .with("max", values.iter().max().copied())
}

/// `<target dir>/test-figures` (see the module's documentation).
pub(crate) fn dir() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if Path::new(&d).is_absolute() => PathBuf::from(d),
        Some(d) => workspace.join(d),
        None => workspace.join("target"),
    };
    let target = target.canonicalize().unwrap_or(target);
    target.join("test-figures")
}

/// Writes `figures` to `<dir()>/<name>.json` (through a temporary file, so a reader never sees
/// half of it) and prints where. Panics when it cannot: a figure that is not recorded fails
/// the test.
pub(crate) fn write(name: &str, figures: impl Into<Json>) -> PathBuf {
    let dir = dir();
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    let path = dir.join(format!("{name}.json"));
    let tmp = dir.join(format!(".{name}.json.{}", std::process::id()));
    std::fs::write(&tmp, figures.into().pretty())
        .unwrap_or_else(|e| panic!("writing {}: {e}", tmp.display()));
    std::fs::rename(&tmp, &path).unwrap_or_else(|e| panic!("renaming to {}: {e}", path.display()));
    eprintln!("figures written to {}", path.display());
    path
}
