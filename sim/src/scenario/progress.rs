//! How a running scenario shows its progress, and the lines a scenario's own process writes
//! for the `sim` process that started it.
//!
//! A scenario run alone draws its own bar on the terminal. In a suite, each scenario runs in
//! a process of its own (`sim --child`), whose stdout is a pipe to the parent: there the
//! progress goes out as [`ChildLine`]s, one JSON object per line after [`CHILD_LINE_PREFIX`],
//! and the parent draws one bar per running scenario. Any other line on that pipe is a log
//! line, passed on as it is.

use std::io::Write;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// What starts every [`ChildLine`] on a child's stdout.
pub const CHILD_LINE_PREFIX: &str = "@petal ";

/// Shortest gap between two progress lines of a child (its parent redraws no faster).
const LINE_GAP: Duration = Duration::from_millis(200);

/// A line a scenario's own process (`sim --child`) writes on its stdout for its parent.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(tag = "line", rename_all = "snake_case")]
pub enum ChildLine {
    /// How far the scenario is.
    Progress {
        /// Steps done.
        pos: u64,
        /// Steps in all.
        len: u64,
        /// What it is doing.
        msg: String,
    },
    /// The scenario is about to run this many independent runs, which more threads would
    /// share (see [`crate::scenario::Threads`]).
    Width {
        /// Independent runs.
        runs: usize,
    },
    /// The scenario finished; what it reports is the `sim` binary's business.
    Done {
        /// The binary's record of the run.
        result: serde_json::Value,
    },
}

impl ChildLine {
    /// The line, without its newline.
    pub fn to_line(&self) -> String {
        // A derived Serialize of strings and numbers cannot fail.
        let json = serde_json::to_string(self).unwrap_or_default();
        format!("{CHILD_LINE_PREFIX}{json}")
    }

    /// The child line a line of a child's stdout is, if it is one.
    pub fn parse(line: &str) -> Option<Self> {
        serde_json::from_str(line.strip_prefix(CHILD_LINE_PREFIX)?).ok()
    }

    /// Writes the line on this process's stdout (errors ignored: a parent that is gone reads
    /// nothing anyway).
    pub fn emit(&self) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", self.to_line());
        let _ = out.flush();
    }
}

/// A scenario's progress: a bar on the terminal, lines for a parent process, or nothing.
///
/// The position is the sum of the positions of its parts ([`Progress::set_part`]), so that
/// independent runs on several threads can each report their own. It is `Sync`.
pub struct Progress {
    sink: Sink,
    state: Mutex<State>,
}

enum Sink {
    Bar(indicatif::ProgressBar),
    Lines,
    Hidden,
}

#[derive(Default)]
struct State {
    len: u64,
    parts: Vec<u64>,
    msg: String,
    emitted: Option<Instant>,
}

impl Progress {
    /// A bar for `name` with `len` steps on the terminal (hidden when `visible` is false or
    /// stderr is not a terminal).
    pub fn new(name: &str, len: u64, visible: bool) -> Self {
        let bar = if visible {
            Self::bar(name, len)
        } else {
            indicatif::ProgressBar::hidden()
        };
        Self::with(Sink::Bar(bar), len)
    }

    /// A hidden bar.
    pub fn hidden() -> Self {
        Self::with(Sink::Hidden, 0)
    }

    /// Progress written as [`ChildLine::Progress`] lines on stdout, at most one every 200 ms
    /// (and one at the end), for the parent process that draws the bar.
    pub fn lines(len: u64) -> Self {
        Self::with(Sink::Lines, len)
    }

    /// The bar every scenario is drawn with: its name, the bar, steps and a message.
    pub fn bar(name: &str, len: u64) -> indicatif::ProgressBar {
        let bar = indicatif::ProgressBar::new(len);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{prefix:>20} [{bar:40}] {pos}/{len} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(name.to_string());
        bar
    }

    fn with(sink: Sink, len: u64) -> Self {
        Self {
            sink,
            state: Mutex::new(State {
                len,
                ..State::default()
            }),
        }
    }

    /// Sets the position and the message.
    pub fn set(&self, pos: u64, msg: String) {
        let mut s = self.lock();
        s.parts.clear();
        s.parts.push(pos);
        s.msg = msg;
        self.show(&mut s, false);
    }

    /// Sets the position of part `part` (the bar shows the sum over parts) and the message.
    pub fn set_part(&self, part: usize, pos: u64, msg: String) {
        let mut s = self.lock();
        if s.parts.len() <= part {
            s.parts.resize(part + 1, 0);
        }
        s.parts[part] = pos;
        s.msg = msg;
        self.show(&mut s, false);
    }

    /// Sets the length.
    pub fn set_len(&self, len: u64) {
        let mut s = self.lock();
        s.len = len;
        self.show(&mut s, true);
    }

    /// Finishes the bar.
    pub fn finish(&self) {
        let mut s = self.lock();
        self.show(&mut s, true);
        if let Sink::Bar(bar) = &self.sink {
            bar.finish();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn show(&self, s: &mut State, force: bool) {
        let pos = s.parts.iter().sum();
        match &self.sink {
            Sink::Bar(bar) => {
                bar.set_length(s.len);
                bar.set_position(pos);
                bar.set_message(s.msg.clone());
            }
            Sink::Lines => {
                if force || s.emitted.is_none_or(|t| t.elapsed() >= LINE_GAP) {
                    s.emitted = Some(Instant::now());
                    ChildLine::Progress {
                        pos,
                        len: s.len,
                        msg: s.msg.clone(),
                    }
                    .emit();
                }
            }
            Sink::Hidden => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_lines_round_trip_and_other_lines_are_not_child_lines() {
        let lines = [
            ChildLine::Progress {
                pos: 3,
                len: 10,
                msg: "joining \"x\"\n".into(),
            },
            ChildLine::Width { runs: 100 },
            ChildLine::Done {
                result: serde_json::json!({"name": "churn", "wall_s": 1.5}),
            },
        ];
        for l in lines {
            let text = l.to_line();
            assert!(!text.contains('\n'), "{text}");
            assert_eq!(ChildLine::parse(&text), Some(l));
        }
        assert_eq!(ChildLine::parse("== churn (seed 1)"), None);
        assert_eq!(ChildLine::parse("@petal not json"), None);
    }

    #[test]
    fn parts_add_up() {
        let p = Progress::hidden();
        p.set_part(1, 5, "b".into());
        p.set_part(0, 2, "a".into());
        assert_eq!(p.lock().parts.iter().sum::<u64>(), 7);
        p.set(4, "all".into());
        assert_eq!(p.lock().parts, vec![4]);
    }
}
