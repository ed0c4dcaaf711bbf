//! Tests of the report module as a whole: files written, byte-identical reruns, degenerate data.

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use super::font::{FAMILY, ensure_fonts};
use super::*;

/// A fresh directory under the system temp dir, unique to this process and test.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("petal-report-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn assert_png(bytes: &[u8]) {
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(
        bytes.len() > 2000,
        "suspiciously small PNG: {} bytes",
        bytes.len()
    );
}

fn sample_line_chart() -> LineChart {
    let squares: Vec<(f64, f64)> = (0..40)
        .map(|i| (f64::from(i), f64::from(i * i) + 1.0))
        .collect();
    let linear: Vec<(f64, f64)> = (0..400)
        .map(|i| (f64::from(i) / 10.0, f64::from(i) * 3.0 + 5.0))
        .collect();
    Frame::new("Lookup latency vs nodes", "nodes", "latency (ms)")
        .lines()
        .series("measured", squares)
        .series("model", linear)
        .series("empty", vec![])
        .hline("target", 900.0)
}

fn sample_bar_chart() -> BarChart {
    let hops = (1..=5).map(|h| h.to_string()).collect();
    Frame::new("Hop distribution, N = 10^4", "hops", "fraction of lookups")
        .bars(hops)
        .group("measured", vec![0.02, 0.2, 0.6, 0.17, 0.01])
        .group("Pastry paper", vec![0.01, 0.22, 0.63, 0.14])
}

fn sample_cdf() -> Vec<(String, Vec<f64>)> {
    let big: Vec<f64> = (0..50_000)
        .map(|i| f64::from((i * 7919) % 50_000).sqrt())
        .collect();
    let small = vec![3.0, 1.0, 2.0, f64::NAN, 2.5];
    vec![("hops x 10".to_string(), big), ("tiny".to_string(), small)]
}

#[test]
fn charts_are_byte_identical_across_renders() {
    let tmp = TempDir::new("determinism");
    type Render = Box<dyn Fn(&Path) -> anyhow::Result<()>>;
    let kinds: Vec<(&str, Render)> = vec![
        (
            "line",
            Box::new(|p: &Path| line_chart(p, &sample_line_chart())),
        ),
        (
            "log",
            Box::new(|p: &Path| line_chart(p, &sample_line_chart().log_y())),
        ),
        (
            "bar",
            Box::new(|p: &Path| bar_chart(p, &sample_bar_chart())),
        ),
        (
            "cdf",
            Box::new(|p: &Path| cdf_chart(p, &CdfChart::new("Hop CDF", "hops", sample_cdf()))),
        ),
    ];
    for (kind, render) in kinds {
        let first = tmp.path().join(format!("{kind}-1.png"));
        let second = tmp.path().join(format!("sub/{kind}-2.png"));
        render(&first).unwrap();
        render(&second).unwrap();
        let bytes = read(&first);
        assert_png(&bytes);
        assert!(
            bytes == read(&second),
            "{kind} chart differs between renders"
        );
    }
}

#[test]
fn empty_and_degenerate_charts_render_without_panicking() {
    let tmp = TempDir::new("degenerate");
    let p = |name: &str| tmp.path().join(name);
    line_chart(&p("none.png"), &Frame::new("nothing", "x", "y").lines()).unwrap();
    let junk = vec![
        (f64::NAN, 1.0),
        (1.0, f64::INFINITY),
        (f64::NEG_INFINITY, f64::NAN),
    ];
    line_chart(
        &p("nan.png"),
        &Frame::new("junk", "x", "y")
            .lines()
            .series("s", junk.clone()),
    )
    .unwrap();
    let single = Frame::new("one", "x", "y")
        .lines()
        .series("s", vec![(3.0, 7.0)])
        .hline("h", f64::NAN);
    line_chart(&p("single.png"), &single).unwrap();
    line_chart(&p("single-log.png"), &single.clone().log_y()).unwrap();
    let non_positive = Frame::new("log", "x", "y")
        .lines()
        .series("s", vec![(1.0, 0.0), (2.0, -1.0)]);
    line_chart(&p("nonpos-log.png"), &non_positive.log_y()).unwrap();
    let flat = Frame::new("flat", "x", "y")
        .lines()
        .series("s", vec![(0.0, 0.0), (0.0, 0.0)]);
    line_chart(&p("flat.png"), &flat).unwrap();
    let huge = Frame::new("huge", "x", "y")
        .lines()
        .series("s", vec![(f64::MIN, f64::MIN), (f64::MAX, 1.0)]);
    line_chart(&p("huge.png"), &huge).unwrap();

    bar_chart(&p("bar-none.png"), &BarChart::default()).unwrap();
    let no_groups = Frame::new("no groups", "x", "y").bars(vec!["a".into()]);
    bar_chart(&p("bar-nogroups.png"), &no_groups).unwrap();
    let nan_bars = Frame::new("nan", "x", "y")
        .bars(vec!["a".into(), "b".into()])
        .group("g", vec![f64::NAN]);
    bar_chart(&p("bar-nan.png"), &nan_bars).unwrap();
    let zeros = Frame::new("zeros", "x", "y")
        .bars(vec!["a".into()])
        .group("g", vec![0.0, 5.0]);
    bar_chart(&p("bar-zero.png"), &zeros).unwrap();
    let negative = Frame::new("neg", "x", "y")
        .bars(vec!["a".into(), "b".into()])
        .group("g", vec![-2.0, 1.0]);
    bar_chart(&p("bar-neg.png"), &negative).unwrap();

    cdf_chart(&p("cdf-none.png"), &CdfChart::new("empty", "x", &[])).unwrap();
    cdf_chart(
        &p("cdf-nan.png"),
        &CdfChart::new("nan", "x", &[("s".to_string(), vec![f64::NAN])]),
    )
    .unwrap();
    cdf_chart(
        &p("cdf-one.png"),
        &CdfChart::new("one", "x", &[("s".to_string(), vec![4.0])]),
    )
    .unwrap();

    for entry in std::fs::read_dir(tmp.path()).unwrap() {
        assert_png(&read(&entry.unwrap().path()));
    }
    // The "no data" image differs from a chart with data.
    assert!(read(&p("none.png")) != read(&p("single.png")));
}

#[test]
fn bad_sizes_are_errors_not_panics() {
    let tmp = TempDir::new("sizes");
    let mut chart = sample_line_chart();
    chart.frame.size = Some((0, 600));
    assert!(line_chart(&tmp.path().join("zero.png"), &chart).is_err());
}

#[test]
fn bundled_font_draws_glyphs() {
    ensure_fonts().unwrap();
    ensure_fonts().unwrap();
    let (width, height) = (200u32, 60u32);
    let mut pixels = vec![255u8; (width * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (width, height)).into_drawing_area();
        root.draw(&Text::new("Petal 123", (10, 15), (FAMILY, 30).into_font()))
            .unwrap();
        root.present().unwrap();
    }
    let inked = pixels
        .chunks(3)
        .filter(|px| px.iter().any(|&c| c < 128))
        .count();
    assert!(inked > 100, "text drew only {inked} dark pixels");
}

#[test]
fn markdown_table_escapes_and_aligns() {
    let rows = vec![
        vec!["a|b".to_string(), "two\nlines".to_string()],
        vec!["short".to_string()],
        vec!["x".to_string(), "y".to_string(), "extra".to_string()],
    ];
    let expected = "\
| Name  | Value        |       |
| ----- | ------------ | ----- |
| a\\|b  | two<br>lines |       |
| short |              |       |
| x     | y            | extra |
";
    assert_eq!(markdown_table(&["Name", "Value"], &rows), expected);
    assert_eq!(markdown_table::<&str>(&[], &[]), "");
    assert_eq!(markdown_table(&["Only"], &[]), "| Only |\n| ---- |\n");
}

#[test]
fn report_writer_writes_markdown_and_json() {
    let tmp = TempDir::new("writer");
    let dir = tmp.path().join("reports").join("hops");
    let mut report = ReportWriter::new(&dir, "hops", "Route lengths in a stable overlay.");
    report.heading("Targets").targets(&[
        TargetRow::new("mean hops", "≤ 3.3", "2.9", Verdict::Met),
        TargetRow::new("p99 hops", "≤ 5", "6", Verdict::from_met(false)),
        TargetRow::new("nodes", "-", "10000", Verdict::Info),
    ]);
    report.heading("Figures");
    report.bar_chart("hops.png", &sample_bar_chart()).unwrap();
    report.image("other file.png", "a [tricky] alt");
    assert!(
        report
            .line_chart("../escape.png", &sample_line_chart())
            .is_err()
    );
    assert!(report.line_chart("/abs.png", &sample_line_chart()).is_err());
    report.paragraph("  Done.  ");
    let counts = report.target_counts();
    assert_eq!(
        counts,
        TargetCounts {
            met: 1,
            missed: 1,
            info: 1
        }
    );
    assert_eq!(counts.summary(), "❌ 1/2 targets met");
    assert_eq!(TargetCounts::default().summary(), "no targets");

    let results = serde_json::json!({ "mean_hops": 2.9, "targets": report.target_rows() });
    report.finish(&results).unwrap();
    let markdown = String::from_utf8(read(&dir.join("report.md"))).unwrap();
    let expected = "\
# hops

Route lengths in a stable overlay.

## Targets

| Metric    | Target | Measured | Verdict  |
| --------- | ------ | -------- | -------- |
| mean hops | ≤ 3.3  | 2.9      | ✅ met    |
| p99 hops  | ≤ 5    | 6        | ❌ missed |
| nodes     | -      | 10000    | ℹ️ info  |

## Figures

![Hop distribution, N = 10^4](hops.png)

![a \\[tricky\\] alt](other%20file.png)

Done.
";
    assert_eq!(markdown, expected);
    assert_png(&read(&dir.join("hops.png")));
    let json = String::from_utf8(read(&dir.join("results.json"))).unwrap();
    assert!(json.ends_with("}\n") && !json.ends_with("\n\n"));
    assert!(json.contains("\"verdict\": \"missed\""));
    let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(parsed, results);
    let root = tmp.path().to_string_lossy().into_owned();
    assert!(
        !markdown.contains(&root) && !json.contains(&root),
        "absolute path leaked"
    );
}

#[test]
fn index_links_every_report() {
    let tmp = TempDir::new("index");
    let entries = [
        IndexEntry {
            name: "churn".into(),
            description: "Nodes join | leave".into(),
            summary_line: "✅ 2/2 targets met".into(),
        },
        IndexEntry {
            name: "big net".into(),
            description: "10^5 nodes".into(),
            summary_line: "-".into(),
        },
    ];
    write_index(tmp.path(), &entries).unwrap();
    let text = String::from_utf8(read(&tmp.path().join("README.md"))).unwrap();
    assert!(text.starts_with("# Simulation reports\n"));
    let table = "\
| Scenario                       | Description         | Outcome           |
| ------------------------------ | ------------------- | ----------------- |
| [churn](churn/report.md)       | Nodes join \\| leave | ✅ 2/2 targets met |
| [big net](big%20net/report.md) | 10^5 nodes          | -                 |
";
    assert!(text.ends_with(table), "{text}");
    assert!(index_markdown(&[]).contains("No scenario"));
}

#[test]
fn clipped_cdf_ends_at_the_quantile_and_names_the_maximum() {
    let mut samples: Vec<f64> = (1..=1000).map(f64::from).collect();
    samples.push(1e6);
    let series = vec![("ratio".to_string(), samples)];
    let cut = super::plot::clip_point(&series, 0.999).unwrap();
    assert_eq!(cut, 1000.0);
    let s = super::plot::cdf_series("ratio", &series[0].1, Some(cut));
    assert!(s.name.contains("max 1e6"), "{}", s.name);
    assert!(s.points.iter().all(|p| p.0 <= cut));
    assert_eq!(s.points.last().map(|p| p.0), Some(cut));
    let unclipped = super::plot::cdf_series("ratio", &series[0].1, None);
    assert_eq!(unclipped.name, "ratio (n=1001)");
    let tmp = TempDir::new("clip");
    let chart = CdfChart::new("clipped", "ratio", series).clip_at(0.999);
    cdf_chart(&tmp.path().join("clip.png"), &chart).unwrap();
}
