//! Line charts and empirical CDFs, plus the drawing plumbing every chart kind shares.
//!
//! Charts are drawn with plotters' bitmap backend and written as PNG. Input is cleaned first:
//! non-finite values are dropped (and non-positive ones on a log axis), axis ranges come from
//! what is left, and a chart with nothing left to show still gets written, saying "no data".

use std::ops::Range;
use std::path::Path;

use plotters::chart::MeshStyle;
use plotters::coord::Shift;
use plotters::coord::ranged1d::{Ranged, ValueFormatter};
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::axis::{
    Corner, clean_points, ecdf, emptiest_corner, linear_range, log_plottable, log_range, plottable,
    tick_label,
};
use super::font::{FAMILY, ensure_fonts};

/// Width and height in pixels of a chart whose `size` is `None`.
pub const DEFAULT_SIZE: (u32, u32) = (1000, 600);

/// Series with at most this many points get a marker on each point.
const MARKER_LIMIT: usize = 60;

/// Series colours, in order: distinct hues that stay apart for colour-blind readers
/// (Okabe–Ito), then darker extras; a chart with more series reuses them cyclically.
pub(crate) const PALETTE: [RGBColor; 10] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(120, 120, 120),
    RGBColor(0, 0, 0),
    RGBColor(140, 86, 75),
    RGBColor(148, 103, 189),
];

/// The colour of series number `index`.
pub(crate) fn colour(index: usize) -> RGBColor {
    PALETTE[index % PALETTE.len()]
}

/// The drawing area charts are drawn on.
pub(crate) type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// One named curve of a [`LineChart`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// `(x, y)` points, drawn joined in the given order; non-finite points are skipped.
    pub points: Vec<(f64, f64)>,
}

impl Series {
    /// A series named `name` through `points`.
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self {
            name: name.into(),
            points,
        }
    }
}

/// What every chart shows around its data: the caption, the axes' descriptions and the size.
///
/// A chart starts from its frame: [`Frame::lines`] for a [`LineChart`], [`Frame::bars`] for a
/// [`BarChart`](super::BarChart), [`Frame::cdf`] for a [`CdfChart`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Frame {
    /// Caption above the plot.
    pub title: String,
    /// Description of the x axis (with its unit).
    pub x_label: String,
    /// Description of the y axis (with its unit).
    pub y_label: String,
    /// Image size in pixels; `None` means [`DEFAULT_SIZE`].
    pub size: Option<(u32, u32)>,
}

impl Frame {
    /// A frame with a caption and axis descriptions, at the default size.
    pub fn new(
        title: impl Into<String>,
        x_label: impl Into<String>,
        y_label: impl Into<String>,
    ) -> Self {
        Self {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            size: None,
        }
    }

    /// An empty line chart in this frame; add curves with [`LineChart::series`].
    pub fn lines(self) -> LineChart {
        LineChart {
            frame: self,
            ..LineChart::default()
        }
    }

    /// An empty bar chart over `categories` in this frame; add bars with
    /// [`BarChart::group`](super::BarChart::group).
    pub fn bars(self, categories: Vec<String>) -> super::BarChart {
        super::BarChart {
            frame: self,
            categories,
            groups: Vec::new(),
        }
    }

    /// The empirical CDFs of `series` (legend names and samples) in this frame; the frame's y
    /// description is replaced by the CDF's own.
    pub fn cdf(self, series: impl Into<Vec<(String, Vec<f64>)>>) -> CdfChart {
        CdfChart {
            frame: Frame {
                y_label: "fraction of samples ≤ x".to_string(),
                ..self
            },
            series: series.into(),
            clip_quantile: None,
            x_log: false,
        }
    }

    /// The image size in pixels.
    pub(crate) fn pixels(&self) -> (u32, u32) {
        self.size.unwrap_or(DEFAULT_SIZE)
    }
}

/// A chart of one or more curves over a shared pair of axes, with optional reference lines.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LineChart {
    /// Caption, axis descriptions and size.
    pub frame: Frame,
    /// The curves, coloured in order from a fixed palette and named in the legend.
    pub series: Vec<Series>,
    /// Draw the y axis on a log scale; points with `y <= 0` (or below 1e-150) are then left out.
    pub y_log: bool,
    /// Draw the x axis on a log scale; points with `x <= 0` (or below 1e-150) are then left out.
    pub x_log: bool,
    /// Horizontal reference lines (a target, a bound, a paper's figure): legend text and y value.
    pub hlines: Vec<(String, f64)>,
    /// A value the y axis does not run past (100 for a percentage): the axis ends a little above
    /// it when the data would pad it beyond, so flat curves at 100 % sit at the top.
    pub y_ceiling: Option<f64>,
}

impl LineChart {
    /// Adds a curve.
    pub fn series(mut self, name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        self.series.push(Series::new(name, points));
        self
    }

    /// Adds a horizontal reference line at `y`.
    pub fn hline(mut self, name: impl Into<String>, y: f64) -> Self {
        self.hlines.push((name.into(), y));
        self
    }

    /// Keeps the y axis from running past 100: for shares in percent.
    pub fn percent(mut self) -> Self {
        self.y_ceiling = Some(100.0);
        self
    }

    /// Switches the x axis to a log scale.
    pub fn log_x(mut self) -> Self {
        self.x_log = true;
        self
    }

    /// Switches the y axis to a log scale.
    pub fn log_y(mut self) -> Self {
        self.y_log = true;
        self
    }
}

/// Empirical CDFs of one or more samples, made with [`Frame::cdf`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CdfChart {
    /// Caption, x axis description and size (the y axis is the fraction of samples).
    pub frame: Frame,
    /// Legend names and samples, in any order.
    pub series: Vec<(String, Vec<f64>)>,
    /// Where the x axis ends, as a quantile of the samples (the largest over the series):
    /// `Some(0.999)` keeps a long tail (a few ratios of 80 where most are 2) from squeezing the
    /// curves into the first twentieth of the axis. Each legend entry whose sample reaches
    /// beyond the axis names its maximum, and the x description says where the axis is cut.
    /// `None`: the axis runs to the largest sample.
    pub clip_quantile: Option<f64>,
    /// Draw the x axis on a log scale (for samples spanning decades, such as copies per link
    /// or latencies with a tail of timeouts); samples `<= 0` are then left out.
    pub x_log: bool,
}

impl CdfChart {
    /// The CDFs of `series` (legend names and samples) under `title`, over `x_label`.
    pub fn new(
        title: impl Into<String>,
        x_label: impl Into<String>,
        series: impl Into<Vec<(String, Vec<f64>)>>,
    ) -> Self {
        Frame::new(title, x_label, "").cdf(series)
    }

    /// Switches the x axis to a log scale (see [`CdfChart::x_log`]).
    pub fn log_x(mut self) -> Self {
        self.x_log = true;
        self
    }

    /// Ends the x axis at quantile `q` of the samples (see [`CdfChart::clip_quantile`]).
    pub fn clip_at(mut self, q: f64) -> Self {
        self.clip_quantile = Some(q);
        self
    }
}

/// Writes `chart` as a PNG image to `path`, creating its parent directory if needed.
///
/// Non-finite points (and absurd ones, beyond ±1e150) are dropped; with nothing left to draw, the
/// image shows the title and "no data". The legend goes in the corner that hides the least data.
/// Equal inputs give byte-identical files.
pub fn line_chart(path: &Path, chart: &LineChart) -> anyhow::Result<()> {
    let style = LineStyle {
        markers: true,
        y_fixed: None,
    };
    draw_line_chart(path, chart, &style)
}

/// Writes the empirical CDFs of `chart` as a PNG image to `path`.
///
/// Non-finite samples are dropped, and each curve keeps at most
/// [`MAX_CDF_POINTS`](super::MAX_CDF_POINTS) points, chosen deterministically. The legend
/// shows each sample's size (and its maximum when the axis is cut before it).
pub fn cdf_chart(path: &Path, chart: &CdfChart) -> anyhow::Result<()> {
    let cut = chart
        .clip_quantile
        .and_then(|q| clip_point(&chart.series, q).map(|x| (q, x)));
    let mut x_label = chart.frame.x_label.clone();
    if let Some((q, _)) = cut {
        x_label = format!(
            "{x_label} (axis cut at the {}th percentile)",
            tick_label(q * 100.0)
        );
    }
    let lines = LineChart {
        frame: Frame {
            x_label,
            ..chart.frame.clone()
        },
        series: chart
            .series
            .iter()
            .map(|(name, samples)| cdf_series(name, samples, cut.map(|c| c.1)))
            .collect(),
        x_log: chart.x_log,
        ..LineChart::default()
    };
    let style = LineStyle {
        markers: false,
        y_fixed: Some(0.0..1.05),
    };
    draw_line_chart(path, &lines, &style)
}

/// Where quantile `q` of the samples ends the x axis: the largest of the series' `q`-quantiles;
/// `None` without samples.
pub(crate) fn clip_point(series: &[(String, Vec<f64>)], q: f64) -> Option<f64> {
    series
        .iter()
        .filter_map(|(_, samples)| {
            let mut sorted: Vec<f64> = samples.iter().copied().filter(|&v| plottable(v)).collect();
            sorted.sort_by(f64::total_cmp);
            let last = sorted.len().checked_sub(1)?;
            // The smallest value with at least a share `q` of the samples at or below it.
            #[expect(
                clippy::cast_possible_truncation,
                reason = "q * len rounded up: a rank between 0 and the sample's length"
            )]
            let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
            sorted.get(rank.saturating_sub(1).min(last)).copied()
        })
        .reduce(f64::max)
}

/// One sample's CDF curve, cut at `cut` (then reaching the cut flat, its maximum in the name).
pub(crate) fn cdf_series(name: &str, samples: &[f64], cut: Option<f64>) -> Series {
    let n = samples.iter().filter(|&&v| plottable(v)).count();
    let mut curve = ecdf(samples);
    let max = curve.last().map(|p| p.0);
    match (cut, max) {
        (Some(cut), Some(max)) if max > cut => {
            curve.retain(|p| p.0 <= cut);
            if let Some(&(_, y)) = curve.last() {
                curve.push((cut, y));
            }
            Series::new(format!("{name} (n={n}, max {})", tick_label(max)), curve)
        }
        _ => Series::new(format!("{name} (n={n})"), curve),
    }
}

/// How [`draw_line_chart`] differs between line charts and CDFs.
struct LineStyle {
    /// Mark each point of short series.
    markers: bool,
    /// A y range to use instead of one computed from the data.
    y_fixed: Option<Range<f64>>,
}

/// A line chart's data after cleaning: the input order and names are kept.
struct CleanLines<'c> {
    series: Vec<(&'c str, Vec<(f64, f64)>)>,
    hlines: Vec<(&'c str, f64)>,
    x_range: Range<f64>,
    legend: SeriesLabelPosition,
}

fn draw_line_chart(path: &Path, chart: &LineChart, style: &LineStyle) -> anyhow::Result<()> {
    let size = chart.frame.pixels();
    let series: Vec<(&str, Vec<(f64, f64)>)> = chart
        .series
        .iter()
        .map(|s| {
            let mut points = clean_points(&s.points, chart.y_log);
            if chart.x_log {
                points.retain(|&(x, _)| log_plottable(x));
            }
            (s.name.as_str(), points)
        })
        .collect();
    let hlines: Vec<(&str, f64)> = chart
        .hlines
        .iter()
        .filter(|&&(_, y)| {
            if chart.y_log {
                log_plottable(y)
            } else {
                plottable(y)
            }
        })
        .map(|(name, y)| (name.as_str(), *y))
        .collect();
    let all_points = || series.iter().flat_map(|(_, points)| points.iter().copied());
    let xs = || all_points().map(|(x, _)| x);
    let x_range = if chart.x_log {
        log_range(xs())
    } else {
        linear_range(xs())
    };
    let ys = || {
        all_points()
            .map(|(_, y)| y)
            .chain(hlines.iter().map(|(_, y)| *y))
    };
    let y_range = match &style.y_fixed {
        Some(fixed) => Some(fixed.clone()),
        None if chart.y_log => log_range(ys()),
        None => linear_range(ys()).map(|r| ceiled(r, chart.y_ceiling)),
    };
    let (Some(x_range), Some(y_range)) = (x_range, y_range) else {
        return render(path, size, |root| draw_no_data(root, &chart.frame.title));
    };
    let (x0, x1) = (x_range.start, x_range.end);
    let segments = series
        .iter()
        .flat_map(|(_, points)| {
            let single = points.first().filter(|_| points.len() == 1);
            let joined = points.windows(2).map(|w| (w[0], w[1]));
            joined.chain(single.map(|&p| (p, p)))
        })
        .chain(hlines.iter().map(|&(_, y)| ((x0, y), (x1, y))));
    let entries = series.len() + hlines.len();
    // The corner search works on a linear x: a log axis is searched in decades.
    let fx = |x: f64| if chart.x_log { x.log10() } else { x };
    let segments = segments.map(|((ax, ay), (bx, by))| ((fx(ax), ay), (fx(bx), by)));
    let x_search = fx(x_range.start)..fx(x_range.end);
    let corner = emptiest_corner(segments, &x_search, &y_range, chart.y_log, entries);
    let lines = CleanLines {
        series,
        hlines,
        x_range: x_range.clone(),
        legend: legend_position(corner),
    };
    render(path, size, |root| {
        let mut builder = chart_frame(root, &chart.frame.title);
        match (chart.x_log, chart.y_log) {
            (false, false) => {
                let mut ctx = builder.build_cartesian_2d(x_range, y_range)?;
                draw_lines(&mut ctx, chart, &lines, style)
            }
            (false, true) => {
                let mut ctx = builder.build_cartesian_2d(x_range, y_range.log_scale())?;
                draw_lines(&mut ctx, chart, &lines, style)
            }
            (true, false) => {
                let mut ctx = builder.build_cartesian_2d(x_range.log_scale(), y_range)?;
                draw_lines(&mut ctx, chart, &lines, style)
            }
            (true, true) => {
                let x = x_range.log_scale();
                let mut ctx = builder.build_cartesian_2d(x, y_range.log_scale())?;
                draw_lines(&mut ctx, chart, &lines, style)
            }
        }
    })
}

/// `range` ended just above `ceiling` when it runs further (and starts below it).
fn ceiled(range: Range<f64>, ceiling: Option<f64>) -> Range<f64> {
    match ceiling {
        Some(c) if range.end > c && range.start < c => {
            let pad = ((c - range.start) * 0.03).max(f64::EPSILON);
            range.start..c + pad
        }
        _ => range,
    }
}

/// Draws mesh, curves, reference lines and legend on a chart whose axes are linear or log.
fn draw_lines<'a, 'p: 'a, X, Y>(
    ctx: &mut ChartContext<'a, BitMapBackend<'p>, Cartesian2d<X, Y>>,
    chart: &LineChart,
    lines: &CleanLines<'_>,
    style: &LineStyle,
) -> anyhow::Result<()>
where
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    style_mesh(&mut ctx.configure_mesh(), &chart.frame)
        .x_label_formatter(&|v| tick_label(*v))
        .y_label_formatter(&|v| tick_label(*v))
        .draw()?;
    for (index, (name, points)) in lines.series.iter().enumerate() {
        let colour = colour(index);
        let line = colour.stroke_width(2);
        let label = if points.is_empty() {
            format!("{name} (no data)")
        } else {
            name.to_string()
        };
        ctx.draw_series(LineSeries::new(points.iter().copied(), line))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], line));
        if (style.markers && points.len() <= MARKER_LIMIT) || points.len() == 1 {
            ctx.draw_series(points.iter().map(|&p| Circle::new(p, 3, colour.filled())))?;
        }
    }
    let (x0, x1) = (lines.x_range.start, lines.x_range.end);
    for (offset, (name, y)) in lines.hlines.iter().enumerate() {
        let line = colour(lines.series.len() + offset).stroke_width(2);
        ctx.draw_series(DashedLineSeries::new(vec![(x0, *y), (x1, *y)], 10, 6, line))?
            .label(format!("{name} ({})", tick_label(*y)))
            .legend(move |(x, y)| DashedPathElement::new(vec![(x, y), (x + 24, y)], 6, 4, line));
    }
    if !lines.series.is_empty() || !lines.hlines.is_empty() {
        draw_legend(ctx, lines.legend.clone())?;
    }
    Ok(())
}

/// A chart builder with the caption, margins and axis-label areas every chart uses.
pub(crate) fn chart_frame<'a, 'p>(
    root: &'a Area<'p>,
    title: &str,
) -> ChartBuilder<'a, 'p, BitMapBackend<'p>> {
    let mut builder = ChartBuilder::on(root);
    builder
        .caption(title, (FAMILY, caption_size(root, title)))
        .margin(20)
        .x_label_area_size(55)
        .y_label_area_size(85);
    builder
}

/// The caption's font size: 26 px, or smaller (down to 12 px) so that a long title still fits
/// the image's width.
fn caption_size(root: &Area<'_>, title: &str) -> u32 {
    let room = root.dim_in_pixel().0.saturating_sub(40);
    (12..=26)
        .rev()
        .find(|&px| {
            root.estimate_text_size(title, &TextStyle::from((FAMILY, f64::from(px)).into_font()))
                .is_ok_and(|(w, _)| w <= room)
        })
        .unwrap_or(12)
}

/// Applies the mesh style every chart uses: fonts, axis descriptions, a light grid.
pub(crate) fn style_mesh<'m, 'a, 'b, 'p, X, Y>(
    mesh: &'m mut MeshStyle<'a, 'b, X, Y, BitMapBackend<'p>>,
    frame: &Frame,
) -> &'m mut MeshStyle<'a, 'b, X, Y, BitMapBackend<'p>>
where
    X: Ranged,
    Y: Ranged,
{
    mesh.x_desc(frame.x_label.as_str())
        .y_desc(frame.y_label.as_str())
        .axis_desc_style((FAMILY, 18))
        .label_style((FAMILY, 15))
        .max_light_lines(4)
        .light_line_style(RGBColor(0, 0, 0).mix(0.04))
        .bold_line_style(RGBColor(0, 0, 0).mix(0.15))
}

/// Where plotters puts a legend placed in `corner`.
pub(crate) fn legend_position(corner: Corner) -> SeriesLabelPosition {
    match corner {
        Corner::UpperRight => SeriesLabelPosition::UpperRight,
        Corner::UpperLeft => SeriesLabelPosition::UpperLeft,
        Corner::LowerRight => SeriesLabelPosition::LowerRight,
        Corner::LowerLeft => SeriesLabelPosition::LowerLeft,
    }
}

/// Draws the legend box of the series labelled so far.
pub(crate) fn draw_legend<'a, 'p: 'a, X, Y>(
    ctx: &mut ChartContext<'a, BitMapBackend<'p>, Cartesian2d<X, Y>>,
    position: SeriesLabelPosition,
) -> anyhow::Result<()>
where
    X: Ranged,
    Y: Ranged,
{
    ctx.configure_series_labels()
        .position(position)
        .label_font((FAMILY, 15))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(0, 0, 0).mix(0.4))
        .draw()?;
    Ok(())
}

/// Draws a chart that has nothing to show: its title where charts have it, and "no data" in
/// the middle of an empty frame.
pub(crate) fn draw_no_data(root: &Area<'_>, title: &str) -> anyhow::Result<()> {
    let mut ctx = chart_frame(root, title).build_cartesian_2d(0.0..1.0, 0.0..1.0)?;
    ctx.configure_mesh()
        .disable_mesh()
        .x_labels(0)
        .y_labels(0)
        .axis_style(RGBColor(0, 0, 0).mix(0.3))
        .draw()?;
    let text = TextStyle::from((FAMILY, 30).into_font())
        .color(&RGBColor(110, 110, 110))
        .pos(Pos::new(HPos::Center, VPos::Center));
    ctx.draw_series(std::iter::once(Text::new("no data", (0.5, 0.5), text)))?;
    Ok(())
}

/// Creates `path`'s directory, draws on a white `size` canvas with `draw`, and saves the PNG.
pub(crate) fn render(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&Area<'_>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        size.0 >= 100 && size.1 >= 100 && size.0 <= 10_000 && size.1 <= 10_000,
        "chart size {}x{} is outside 100x100..=10000x10000",
        size.0,
        size.1
    );
    ensure_fonts()?;
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let root = BitMapBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE)?;
    draw(&root)?;
    root.present()?;
    Ok(())
}
