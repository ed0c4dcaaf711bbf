//! Grouped bar charts: one cluster of bars per category, one bar colour per group, e.g. the
//! share of lookups per hop count, measured next to the Pastry paper's figures.

use std::path::Path;

use plotters::coord::ranged1d::Ranged;
use plotters::prelude::*;

use super::axis::{CategoryAxis, emptiest_corner, extent, plottable, tick_label};
use super::plot::{
    Frame, chart_frame, colour, draw_legend, draw_no_data, legend_position, render, style_mesh,
};

/// Fraction of a category's slot that its cluster of bars fills.
const CLUSTER_WIDTH: f64 = 0.8;

/// Most category names written under the x axis; with more, only every k-th is named.
const MAX_CATEGORY_LABELS: usize = 30;

/// One named set of bars of a [`BarChart`], a value per category.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BarGroup {
    /// Legend text.
    pub name: String,
    /// `values[i]` is the bar height for `categories[i]`; missing or non-finite values draw no bar.
    pub values: Vec<f64>,
}

impl BarGroup {
    /// A group named `name` with one value per category.
    pub fn new(name: impl Into<String>, values: Vec<f64>) -> Self {
        Self {
            name: name.into(),
            values,
        }
    }
}

/// A grouped bar chart: categories along the x axis, one bar per group in each category; made
/// with [`Frame::bars`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BarChart {
    /// Caption, axis descriptions (x: what the categories are) and size.
    pub frame: Frame,
    /// Category names, left to right.
    pub categories: Vec<String>,
    /// The groups, coloured in order from the same palette as line charts and named in the legend.
    pub groups: Vec<BarGroup>,
}

impl BarChart {
    /// Adds a group of bars, one value per category.
    pub fn group(mut self, name: impl Into<String>, values: Vec<f64>) -> Self {
        self.groups.push(BarGroup::new(name, values));
        self
    }
}

/// Writes `chart` as a PNG image to `path`, creating its parent directory if needed.
///
/// Bars grow from zero, so negative values point down. Without categories or any finite value the
/// image shows the title and "no data". Equal inputs give byte-identical files.
pub fn bar_chart(path: &Path, chart: &BarChart) -> anyhow::Result<()> {
    let size = chart.frame.pixels();
    let count = chart.categories.len();
    let values = || {
        chart
            .groups
            .iter()
            .flat_map(|group| group.values.iter().take(count).copied())
            .filter(|&v| plottable(v))
    };
    let Some((lo, hi)) = extent(values()).filter(|_| count > 0) else {
        return render(path, size, |root| draw_no_data(root, &chart.frame.title));
    };
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    let span = hi - lo;
    let pad = if span > 0.0 { span * 0.08 } else { 1.0 };
    let y_range = (if lo < 0.0 { lo - pad } else { 0.0 })..(if hi > 0.0 { hi + pad } else { pad });
    let bars = bars(chart);
    let x_range = CategoryAxis { count }.range();
    let stems = bars.iter().map(|b| {
        let centre = (b.left + b.right) / 2.0;
        ((centre, 0.0), (centre, b.value))
    });
    let corner = emptiest_corner(stems, &x_range, &y_range, false, chart.groups.len());
    render(path, size, |root| {
        let mut ctx = chart_frame(root, &chart.frame.title)
            .build_cartesian_2d(CategoryAxis { count }, y_range)?;
        #[expect(
            clippy::cast_possible_truncation,
            reason = "a category index, checked against 0 and the count before use"
        )]
        let category_name = |v: &f64| {
            let index = v.round();
            if index >= 0.0 && (index as usize) < count {
                chart.categories[index as usize].clone()
            } else {
                String::new()
            }
        };
        style_mesh(&mut ctx.configure_mesh(), &chart.frame)
            .disable_x_mesh()
            .x_labels(count.min(MAX_CATEGORY_LABELS))
            .x_label_formatter(&category_name)
            .y_label_formatter(&|v| tick_label(*v))
            .draw()?;
        for (g, group) in chart.groups.iter().enumerate() {
            let fill = colour(g).filled();
            let rectangles = bars
                .iter()
                .filter(|b| b.group == g)
                .map(|b| Rectangle::new([(b.left, 0.0), (b.right, b.value)], fill));
            ctx.draw_series(rectangles)?
                .label(group.name.as_str())
                .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 16, y + 6)], fill));
        }
        if !chart.groups.is_empty() {
            draw_legend(&mut ctx, legend_position(corner))?;
        }
        Ok(())
    })
}

/// One bar to draw, in data coordinates.
struct Bar {
    group: usize,
    left: f64,
    right: f64,
    value: f64,
}

/// Every bar of `chart` with a plottable value: group `g`'s bar for category `i` sits in the
/// `g`-th slice of the cluster centred on `i`.
fn bars(chart: &BarChart) -> Vec<Bar> {
    let count = chart.categories.len();
    let bar_width = CLUSTER_WIDTH / chart.groups.len().max(1) as f64;
    let mut bars = Vec::new();
    for (group, values) in chart.groups.iter().map(|g| &g.values).enumerate() {
        for (i, &value) in values.iter().take(count).enumerate() {
            if plottable(value) {
                let left = i as f64 - CLUSTER_WIDTH / 2.0 + group as f64 * bar_width;
                // A little narrower than its slice, leaving a thin gap between neighbouring bars.
                let right = left + bar_width * 0.92;
                bars.push(Bar {
                    group,
                    left,
                    right,
                    value,
                });
            }
        }
    }
    bars
}
