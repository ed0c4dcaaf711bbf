//! The comparison's outputs: a Markdown table with ratios (stdout and README.md), the figures
//! as JSON, and a chart (each row's figures relative to the best system on that row).

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use plotters::prelude::*;
use serde_json::{Value, json};

use crate::Figure;

/// The systems of each table: one node (broker), then two.
fn groups() -> [&'static [&'static str]; 2] {
    let names: &'static [&'static str] = &crate::systems::NAMES;
    let one = crate::systems::ONE_NODE;
    [&names[..one], &names[one..]]
}

fn is_petal(system: &str) -> bool {
    system.starts_with("petald") || system.starts_with("Petal")
}

pub fn to_json(rows: &[Figure]) -> Value {
    Value::Array(
        rows.iter()
            .map(|f| {
                json!({"row": f.row, "system": f.system, "value": f.value,
                       "rounds": f.values, "lower_better": f.lower_better, "lost": f.lost})
            })
            .collect(),
    )
}

pub fn from_json(bytes: &[u8]) -> Result<Vec<Figure>> {
    let v: Value = serde_json::from_slice(bytes).context("a results JSON")?;
    let arr = v.as_array().context("an array")?;
    arr.iter()
        .map(|f| {
            let system = f["system"].as_str().context("system")?;
            // The names are the systems' own static names (or the floor's).
            let system = crate::systems::NAMES
                .iter()
                .chain([&crate::BASELINE])
                .find(|n| **n == system)
                .copied()
                .context("a known system")?;
            let value = f["value"].as_f64().context("value")?;
            let values = match f["rounds"].as_array() {
                Some(v) => v.iter().filter_map(Value::as_f64).collect(),
                None => vec![value],
            };
            Ok(Figure {
                row: f["row"].as_str().context("row")?.to_owned(),
                system,
                value,
                lower_better: f["lower_better"].as_bool().unwrap_or(false),
                lost: f["lost"].as_u64().unwrap_or(0),
                values,
            })
        })
        .collect()
}

/// Rows in first-seen order, systems in first-seen order.
fn layout(rows: &[Figure]) -> (Vec<String>, Vec<&'static str>) {
    let (mut names, mut systems) = (Vec::<String>::new(), Vec::<&'static str>::new());
    for f in rows {
        if !names.contains(&f.row) {
            names.push(f.row.clone());
        }
        if !systems.contains(&f.system) {
            systems.push(f.system);
        }
    }
    (names, systems)
}

fn get<'a>(rows: &'a [Figure], row: &str, sys: &str) -> Option<&'a Figure> {
    rows.iter().find(|f| f.row == row && f.system == sys)
}

fn num(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2} M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.0} k", v / 1e3)
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// A figure's cell: the median, then the range of the rounds (when more than one) and the
/// events lost (when any).
fn cell(f: &Figure) -> String {
    let mut c = num(f.value);
    if f.values.len() > 1 {
        let lo = f.values.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = f.values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let _ = write!(c, " ({}-{})", num(lo), num(hi));
    }
    if f.lost > 0 {
        let _ = write!(c, ", {} lost", f.lost);
    }
    c
}

/// Petal's figure against the best of the other systems on the row: above 1 means Petal is
/// better by that factor (for latency: the others' time over Petal's).
fn ratio(rows: &[Figure], row: &str, petal: &str, systems: &[&str]) -> Option<f64> {
    best_other(rows, row, petal, systems).map(|(r, _)| r)
}

/// [`ratio`] and the best other system's figure.
fn best_other<'a>(
    rows: &'a [Figure],
    row: &str,
    petal: &str,
    systems: &[&str],
) -> Option<(f64, &'a Figure)> {
    let p = get(rows, row, petal)?;
    let others = systems
        .iter()
        .filter(|s| !is_petal(s))
        .filter_map(|s| get(rows, row, s));
    let best = if p.lower_better {
        others.min_by(|a, b| a.value.total_cmp(&b.value))
    } else {
        others.max_by(|a, b| a.value.total_cmp(&b.value))
    }?;
    if !best.value.is_finite() || best.value <= 0.0 || p.value <= 0.0 {
        return None;
    }
    let r = if p.lower_better {
        best.value / p.value
    } else {
        p.value / best.value
    };
    Some((r, best))
}

/// The figures of the systems in `group` only.
fn only(rows: &[Figure], group: &[&str]) -> Vec<Figure> {
    rows.iter()
        .filter(|f| group.contains(&f.system))
        .cloned()
        .collect()
}

/// One of issue 20's targets: `bound` is a floor (or, for latency rows, a ceiling) on the
/// median of each of `systems` on `rows`.
struct Target {
    what: &'static str,
    rows: &'static [&'static str],
    systems: &'static [&'static str],
    bound: f64,
    /// Judged on every row (else on the best of them, as requests/s at 64 or 256 in flight).
    each: bool,
}

const LOCAL: &[&str] = &["petald (relay v1)", "Petal embedded"];
const TWO: &[&str] = &["petald, 2 nodes", "Petal embedded, 2 nodes"];
const REQUESTS: &[&str] = &["requests/s, 64 in flight", "requests/s, 256 in flight"];
/// Events delivered per second (summed over the subscribers), both sizes, to one and to ten.
const EVENTS: &[&str] = &[
    "events delivered/s, 8 B, 1 subscriber",
    "events delivered/s, 8 B, 10 subscribers",
    "events delivered/s, 1 KiB, 1 subscriber",
    "events delivered/s, 1 KiB, 10 subscribers",
];

const TARGETS: [Target; 7] = [
    Target {
        what: "local request p50 <= 25 us, pinned",
        rows: &["request p50 us (pinned)"],
        systems: LOCAL,
        bound: 25.0,
        each: true,
    },
    Target {
        what: "local requests/s >= 400 k",
        rows: REQUESTS,
        systems: LOCAL,
        bound: 400e3,
        each: false,
    },
    Target {
        what: "publish >= 2.5 M delivered/s through the relay",
        rows: EVENTS,
        systems: &["petald (relay v1)"],
        bound: 2.5e6,
        each: true,
    },
    Target {
        what: "publish >= 5 M delivered/s embedded",
        rows: EVENTS,
        systems: &["Petal embedded"],
        bound: 5e6,
        each: true,
    },
    Target {
        what: "across two nodes >= 1 M events/s",
        rows: EVENTS,
        systems: TWO,
        bound: 1e6,
        each: true,
    },
    Target {
        what: "across two nodes >= 200 k requests/s",
        rows: REQUESTS,
        systems: TWO,
        bound: 200e3,
        each: false,
    },
    Target {
        what: "one tunnel >= 1.5 GB/s encrypted across nodes",
        rows: &["stream, 64 KiB messages, MB/s"],
        systems: TWO,
        bound: 1500.0,
        each: true,
    },
];

/// The targets judged on this run's medians, and every row where a Petal system is below the
/// best other system of its table (the "at least NATS's and Zenoh's figure").
pub fn verdicts(rows: &[Figure]) -> String {
    let mut s = String::from(
        "### Issue 20's targets, judged on this run's medians\n\n\
         Events are deliveries, summed over the subscribers, of both sizes; requests/s the \
         better of 64 and 256 in flight. Losses are not judged here (the tables note them).\n\n\
         | target | system | measured | verdict |\n|---|---|---|---|\n",
    );
    for t in &TARGETS {
        for sys in t.systems {
            let figures: Vec<&Figure> = t.rows.iter().filter_map(|r| get(rows, r, sys)).collect();
            let judged: Vec<&Figure> = if t.each {
                figures
            } else {
                let better = |a: &&Figure, b: &&Figure| {
                    let (x, y) = if a.lower_better {
                        (b.value, a.value)
                    } else {
                        (a.value, b.value)
                    };
                    x.total_cmp(&y)
                };
                figures.into_iter().max_by(better).into_iter().collect()
            };
            for f in judged {
                let met = if f.lower_better {
                    f.value <= t.bound
                } else {
                    f.value >= t.bound
                };
                let _ = writeln!(
                    s,
                    "| {} | {sys} | {} ({}) | {} |",
                    t.what,
                    num(f.value),
                    f.row,
                    if met { "met" } else { "**missed**" }
                );
            }
        }
    }
    s.push_str("\nRows where a Petal system is below the best other system of its table:");
    let mut below = Vec::new();
    for group in groups() {
        let rows = only(rows, group);
        let (names, systems) = layout(&rows);
        for row in &names {
            for p in systems.iter().filter(|s| is_petal(s)) {
                if let (Some(f), Some((r, best))) =
                    (get(&rows, row, p), best_other(&rows, row, p, &systems))
                    && r < 1.0
                {
                    below.push(format!(
                        "{p}, {row}: {} against {} ({}), {r:.3}x",
                        num(f.value),
                        num(best.value),
                        best.system
                    ));
                }
            }
        }
    }
    if below.is_empty() {
        s.push_str(" none.\n");
    } else {
        s.push('\n');
        for b in below {
            let _ = writeln!(s, "- {b}");
        }
    }
    s
}

/// The A/B pairs of an A/B run (`--petald-b`).
const PAIRS: [(&str, &str); 2] = [
    ("petald (relay v1)", "petald B (relay v1)"),
    ("petald, 2 nodes", "petald B, 2 nodes"),
];

/// In an A/B run, B's figure against A's on every row, round by round (each round measures B
/// right after A): the median of the rounds' ratios and their range, above 1 when B is better
/// (for latency, A's time over B's). Empty when no B ran.
pub fn ab_table(rows: &[Figure]) -> String {
    let mut lines = Vec::new();
    for (a, b) in PAIRS {
        let (names, _) = layout(rows);
        for row in &names {
            let (Some(fa), Some(fb)) = (get(rows, row, a), get(rows, row, b)) else {
                continue;
            };
            let ratios: Vec<f64> = fa
                .values
                .iter()
                .zip(&fb.values)
                .filter(|(x, y)| **x > 0.0 && **y > 0.0)
                .map(|(x, y)| if fa.lower_better { x / y } else { y / x })
                .collect();
            if ratios.is_empty() {
                continue;
            }
            let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            lines.push(format!(
                "| {b} against {a} | {row} | {:.3}x ({lo:.3}-{hi:.3}) |",
                crate::median(&ratios)
            ));
        }
    }
    if lines.is_empty() {
        return String::new();
    }
    format!(
        "\n### B against A, round by round (above 1: B better)\n\n\
         | systems | workload | median ratio (range) |\n|---|---|---|\n{}\n",
        lines.join("\n")
    )
}

/// One table per group of systems (one node, two nodes), each with its Petal ratio columns.
pub fn table(rows: &[Figure]) -> String {
    let mut s = String::new();
    let floor: Vec<&Figure> = rows
        .iter()
        .filter(|f| f.system == crate::BASELINE)
        .collect();
    if !floor.is_empty() {
        s.push_str("### This machine's floor in this run (raw loopback TCP, no system)\n\n");
        s.push_str("| measure | raw loopback TCP |\n|---|---|\n");
        for f in floor {
            let _ = writeln!(s, "| {} | {} |", f.row, cell(f));
        }
        s.push('\n');
    }
    for (i, group) in groups().iter().enumerate() {
        let rows = only(rows, group);
        if rows.is_empty() {
            continue;
        }
        s.push_str(if i == 0 {
            "### One node (broker)\n\n"
        } else {
            "\n### Two nodes (brokers) linked to each other; the two ends attach to different ones\n\n"
        });
        s.push_str(&group_table(&rows));
    }
    s.push_str(&ab_table(rows));
    s
}

fn group_table(rows: &[Figure]) -> String {
    let (names, systems) = layout(rows);
    let petal: Vec<&str> = systems.iter().copied().filter(|s| is_petal(s)).collect();
    let mut s = String::new();
    let _ = write!(s, "| workload |");
    for sys in &systems {
        let _ = write!(s, " {sys} |");
    }
    for p in &petal {
        let _ = write!(s, " {p} vs best other |");
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "|---|{}{}",
        "---|".repeat(systems.len()),
        "---|".repeat(petal.len())
    );
    for row in &names {
        let _ = write!(s, "| {row} |");
        for sys in &systems {
            match get(rows, row, sys) {
                Some(f) => {
                    let _ = write!(s, " {} |", cell(f));
                }
                None => s.push_str(" - |"),
            }
        }
        for p in &petal {
            match ratio(rows, row, p, &systems) {
                Some(r) => {
                    let _ = write!(s, " {r:.2}x |");
                }
                None => s.push_str(" - |"),
            }
        }
        s.push('\n');
    }
    s
}

pub fn write(out: &str, rows: &[Figure], d: Duration, rounds: usize) -> Result<()> {
    let dir = Path::new(out);
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(&to_json(rows))?,
    )?;
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let md = format!(
        "# Petal against NATS and Zenoh\n\n\
         Written by `petal-compare` (benches/compare; see its README.md for the command), \
         {} s per phase, {cpus} CPUs, {rounds} round{}: each round runs every workload of every \
         system once, the systems one after another, and each figure is the median of the \
         rounds' with their range in brackets. The floor table measures the machine itself in \
         the same run (unpinned in every round, pinned in every round of the pinned phase): \
         one-byte round trips and a stream of 64 KiB writes over loopback TCP between two \
         threads of the harness, blocking sockets, nothing else (every request \
         crosses loopback TCP twice, through a broker four times; the machine's speed here \
         moves a lot between nights, so read a figure against the floor beside it). \
         Both ends of every workload run in the harness's \
         process, as tasks on its runtime's workers, allocating with mimalloc; brokers \
         (petald, nats-server, the Zenoh router) in their own processes. Ratios: Petal's \
         figure against the best other system on the row, above 1 when Petal is better (for \
         latency, the others' time over Petal's). Pub/sub publishers keep at most 1,000 events \
         per subscriber undelivered (a publisher with a full window sleeps until a quarter of \
         it is free); losses are noted, summed over the rounds. Streams: a Petal tunnel; one subscriber \
         of a topic for the others. Two nodes: two petald linked by Noise (the relay on both \
         ends), two embedded nodes in the harness linked by Noise, two nats-servers in a \
         cluster, two Zenoh routers linked to each other (Zenoh peers have no such form: each \
         session is a node already); NATS and Zenoh links are not encrypted.\n\n{}\n{}\n\
         ![one node, relative figures](compare.png)\n\n\
         ![two nodes, relative figures](compare-two-nodes.png)\n",
        d.as_secs_f64(),
        if rounds == 1 { "" } else { "s" },
        table(rows),
        verdicts(rows)
    );
    std::fs::write(dir.join("README.md"), md)?;
    let [one, two] = groups();
    chart(&dir.join("compare.png"), &only(rows, one))?;
    chart(&dir.join("compare-two-nodes.png"), &only(rows, two))
}

/// One group of bars per row: each system's figure over the best on the row (1 = best).
fn chart(path: &Path, rows: &[Figure]) -> Result<()> {
    crate::font::ensure()?;
    let (names, systems) = layout(rows);
    let colors = [
        RGBColor(200, 60, 60),
        RGBColor(230, 140, 40),
        RGBColor(60, 120, 200),
        RGBColor(60, 160, 90),
        RGBColor(140, 90, 180),
        RGBColor(120, 120, 120),
    ];
    let height = 60 + 26 * names.len() as u32 * (systems.len() as u32 + 1) / 2;
    let root = BitMapBackend::new(path, (1200, height.max(400))).into_drawing_area();
    root.fill(&WHITE)?;
    let n = names.len() as f64;
    let k = systems.len() as f64;
    let mut c = ChartBuilder::on(&root)
        .caption(
            "relative to the best system on each row (1 = best)",
            ("sans-serif", 20),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(330)
        .build_cartesian_2d(0.0..1.45, 0.0..n)?;
    c.configure_mesh().disable_y_mesh().y_labels(0).draw()?;
    // Each row's name beside the middle of its group of bars.
    for (ri, row) in names.iter().enumerate() {
        let (_, y) = c.backend_coord(&(0.0, n - 0.5 - ri as f64));
        let style = TextStyle::from(("sans-serif", 13).into_font()).pos(
            plotters::style::text_anchor::Pos::new(
                plotters::style::text_anchor::HPos::Right,
                plotters::style::text_anchor::VPos::Center,
            ),
        );
        root.draw(&Text::new(row.clone(), (330, y), style))?;
    }
    for (si, sys) in systems.iter().enumerate() {
        // One colour per family (petald, embedded, NATS, Zenoh ...) in both charts.
        const FAMILY: [usize; 11] = [0, 1, 2, 3, 4, 5, 0, 1, 2, 4, 5];
        let family = crate::systems::NAMES
            .iter()
            .position(|n| n == sys)
            .map_or(si, |i| FAMILY[i]);
        let color = colors[family % colors.len()];
        let bars = names.iter().enumerate().filter_map(|(ri, row)| {
            let f = get(rows, row, sys)?;
            let vals = systems
                .iter()
                .filter_map(|s| get(rows, row, s).map(|f| f.value));
            let rel = if f.lower_better {
                vals.fold(f64::INFINITY, f64::min) / f.value
            } else {
                f.value / vals.fold(0.0, f64::max)
            };
            let y0 = (n - 1.0 - ri as f64) + 0.1 + 0.8 * si as f64 / k;
            Some(Rectangle::new(
                [(0.0, y0), (rel.clamp(0.0, 1.0), y0 + 0.8 / k)],
                color.filled(),
            ))
        });
        c.draw_series(bars)?
            .label(*sys)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    c.configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()?;
    root.present()?;
    Ok(())
}
