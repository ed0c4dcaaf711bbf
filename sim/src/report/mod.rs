//! Reports: what a scenario run leaves behind for people to read.
//!
//! Each scenario writes one directory holding `report.md` (prose, tables, target verdicts and
//! figures), `results.json` (the measured numbers, for machines) and PNG charts; [`write_index`]
//! links all of them from the reports root's `README.md`. A scenario builds its report with a
//! [`ReportWriter`] (headings, paragraphs, tables, target verdicts and figures, in reading order;
//! then `finish` writes `report.md` and `results.json`) and renders figures with
//! [`line_chart`], [`bar_chart`] and [`cdf_chart`] (or the writer's methods of the same names,
//! which also embed the image, its title as the alt text). Every chart starts from a [`Frame`]
//! (caption, axis descriptions, size): `Frame::new(title, x, y).lines()` for a [`LineChart`]
//! (`.percent()` keeps a share's axis from running past 100), `.bars(categories)` for a
//! [`BarChart`], `.cdf(samples)` or [`CdfChart::new`] for empirical CDFs, which
//! [`CdfChart::clip_at`] cuts at a quantile (the legend then names each sample's maximum) or
//! [`CdfChart::log_x`] draws on a log axis, so that a long tail (ratios, copies per link,
//! latencies with timeouts) does not squeeze the curves into a corner.
//!
//! Reports are committed as reference runs, so they must be reproducible: equal inputs give
//! byte-identical files, PNGs included. Nothing that varies between runs or machines is written
//! (no time, host name or absolute path), charts thin large samples deterministically, and text
//! is drawn with the DejaVu Sans font compiled into the binary (registered with plotters'
//! `ab_glyph` backend as `"sans-serif"`) rather than whatever fonts the system has. Charts never
//! panic on awkward data: non-finite values are dropped, and a chart left with no data is still
//! written, saying so.
//!
//! # Layout
//! - `markdown.rs`: [`ReportWriter`], target verdicts and [`markdown_table`].
//! - `index.rs`: the reports index, [`write_index`].
//! - `plot.rs`: [`Frame`], [`LineChart`], [`CdfChart`] and the drawing code shared by all
//!   charts (a long caption is drawn smaller so that it fits the image).
//! - `bar.rs`: grouped [`BarChart`]s.
//! - `axis.rs`: data cleaning, axis ranges, tick labels, CDF thinning (pure, unit-tested).
//! - `font.rs`: one-time registration of the bundled font.

mod axis;
mod bar;
mod font;
mod index;
mod markdown;
mod plot;
#[cfg(test)]
mod tests;

pub use axis::MAX_CDF_POINTS;
pub use bar::{BarChart, BarGroup, bar_chart};
pub use index::{IndexEntry, index_markdown, write_index};
pub use markdown::{ReportWriter, TargetCounts, TargetRow, Verdict, markdown_table};
pub use plot::{CdfChart, DEFAULT_SIZE, Frame, LineChart, Series, cdf_chart, line_chart};
