//! Pure helpers behind the charts: cleaning data, axis ranges, tick labels, empirical CDFs and
//! the category axis of bar charts. Nothing here draws, so all of it is unit-tested directly.

use std::ops::Range;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};

/// The most points an empirical CDF curve keeps; larger samples are thinned deterministically.
pub const MAX_CDF_POINTS: usize = 2000;

/// Largest magnitude a chart shows. Beyond it axis arithmetic (spans, padding, plotters' tick
/// search, which loops forever on an infinite span) would overflow, so such values are dropped
/// like non-finite ones.
const MAX_MAGNITUDE: f64 = 1e150;

/// True for values a chart can show: finite and at most [`MAX_MAGNITUDE`] in magnitude.
pub(crate) fn plottable(value: f64) -> bool {
    value.is_finite() && value.abs() <= MAX_MAGNITUDE
}

/// True for values a log axis can show: plottable and at least `1 / MAX_MAGNITUDE`.
pub(crate) fn log_plottable(value: f64) -> bool {
    plottable(value) && value >= 1.0 / MAX_MAGNITUDE
}

/// Keeps the points whose coordinates are both [`plottable`] (and whose y is [`log_plottable`]
/// when `log_y`), in their original order.
pub(crate) fn clean_points(points: &[(f64, f64)], log_y: bool) -> Vec<(f64, f64)> {
    points
        .iter()
        .copied()
        .filter(|&(x, y)| {
            plottable(x)
                && if log_y {
                    log_plottable(y)
                } else {
                    plottable(y)
                }
        })
        .collect()
}

/// The smallest and largest [`plottable`] value, or `None` if there is none.
pub(crate) fn extent(values: impl IntoIterator<Item = f64>) -> Option<(f64, f64)> {
    values
        .into_iter()
        .filter(|&v| plottable(v))
        .fold(None, |acc, v| match acc {
            None => Some((v, v)),
            Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
        })
}

/// A linear axis range covering `values` with 5% padding on each side.
///
/// A single distinct value gets a fixed margin instead, so the axis never has zero width; a range
/// of non-negative data that the padding would push below zero starts at zero. `None` without data.
pub(crate) fn linear_range(values: impl IntoIterator<Item = f64>) -> Option<Range<f64>> {
    let (lo, hi) = extent(values)?;
    let span = hi - lo;
    let pad = if span <= f64::EPSILON * lo.abs().max(hi.abs()).max(1.0) {
        (lo.abs() * 0.1).max(1.0)
    } else {
        span * 0.05
    };
    let start = if lo >= 0.0 && lo - pad < 0.0 {
        0.0
    } else {
        lo - pad
    };
    Some(start..hi + pad)
}

/// A logarithmic axis range covering the [`log_plottable`] `values` with a little padding (in
/// decades); `None` when there is no such value.
pub(crate) fn log_range(values: impl IntoIterator<Item = f64>) -> Option<Range<f64>> {
    let (lo, hi) = extent(values.into_iter().filter(|&v| log_plottable(v)))?;
    let (llo, lhi) = (lo.log10(), hi.log10());
    let pad = if lhi - llo < 1e-9 {
        0.5
    } else {
        (lhi - llo) * 0.05
    };
    Some(10f64.powf(llo - pad)..10f64.powf(lhi + pad))
}

/// A compact tick label: about four significant digits, no trailing zeros, scientific notation
/// for very large or very small magnitudes.
pub(crate) fn tick_label(value: f64) -> String {
    if value == 0.0 || !value.is_finite() {
        return if value.is_finite() {
            "0".to_string()
        } else {
            value.to_string()
        };
    }
    let magnitude = value.abs();
    if !(1e-3..1e6).contains(&magnitude) {
        let text = format!("{value:.3e}");
        return match text.split_once('e') {
            Some((mantissa, exponent)) => format!("{}e{exponent}", trim_zeros(mantissa)),
            None => text,
        };
    }
    #[expect(
        clippy::cast_possible_truncation,
        reason = "the decimal exponent of a magnitude in 1e-3..1e6, clamped to 0..=6"
    )]
    let decimals = (3 - magnitude.log10().floor() as i32).clamp(0, 6) as usize;
    trim_zeros(&format!("{value:.decimals$}")).to_string()
}

/// Drops trailing zeros after a decimal point, and the point itself if nothing follows it.
fn trim_zeros(text: &str) -> &str {
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        text
    }
}

/// The empirical CDF of the [`plottable`] `samples` as a curve of `(value, fraction <= value)` points.
///
/// Small samples give an exact staircase starting at fraction 0; samples too large for
/// [`MAX_CDF_POINTS`] are thinned to evenly spaced ranks (always keeping the first and last),
/// which depends only on the data, so equal inputs give equal curves.
pub(crate) fn ecdf(samples: &[f64]) -> Vec<(f64, f64)> {
    let mut sorted: Vec<f64> = samples.iter().copied().filter(|&v| plottable(v)).collect();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n == 0 {
        return Vec::new();
    }
    let total = n as f64;
    if 2 * n <= MAX_CDF_POINTS {
        let mut curve = Vec::with_capacity(2 * n);
        for (rank, &value) in sorted.iter().enumerate() {
            curve.push((value, rank as f64 / total));
            curve.push((value, (rank + 1) as f64 / total));
        }
        return curve;
    }
    let mut curve = Vec::with_capacity(MAX_CDF_POINTS);
    curve.push((sorted[0], 0.0));
    let steps = MAX_CDF_POINTS - 2;
    for k in 0..=steps {
        // Integer arithmetic keeps the chosen ranks exact and platform independent.
        let rank = k * (n - 1) / steps;
        curve.push((sorted[rank], (rank + 1) as f64 / total));
    }
    curve.dedup();
    curve
}

/// A corner of the plotting area, where a legend can go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Corner {
    UpperRight,
    UpperLeft,
    LowerRight,
    LowerLeft,
}

/// The corner whose legend-sized box (wider and taller with more `entries`) covers the least of
/// what is drawn, given as line segments in data coordinates; ties go to the earlier corner in
/// [`Corner`]'s order. Segments are sampled at a few points each, which is plenty for choosing.
pub(crate) fn emptiest_corner(
    segments: impl IntoIterator<Item = ((f64, f64), (f64, f64))>,
    x: &Range<f64>,
    y: &Range<f64>,
    log_y: bool,
    entries: usize,
) -> Corner {
    const SAMPLES: u32 = 8;
    let fy = |v: f64| {
        if log_y {
            v.max(f64::MIN_POSITIVE).log10()
        } else {
            v
        }
    };
    let (y0, y1) = (fy(y.start), fy(y.end));
    let width = 0.4;
    let height = (0.1 + 0.055 * entries as f64).min(0.9);
    let mut hits = [0usize; 4];
    for ((ax, ay), (bx, by)) in segments {
        for step in 0..=SAMPLES {
            let t = f64::from(step) / f64::from(SAMPLES);
            let nx = (ax + (bx - ax) * t - x.start) / (x.end - x.start);
            let ny = (fy(ay) + (fy(by) - fy(ay)) * t - y0) / (y1 - y0);
            let (left, right) = (nx < width, nx > 1.0 - width);
            let (low, high) = (ny < height, ny > 1.0 - height);
            for (i, inside) in [high && right, high && left, low && right, low && left]
                .into_iter()
                .enumerate()
            {
                hits[i] += usize::from(inside);
            }
        }
    }
    let corners = [
        Corner::UpperRight,
        Corner::UpperLeft,
        Corner::LowerRight,
        Corner::LowerLeft,
    ];
    let best = (0..4).min_by_key(|&i| hits[i]).unwrap_or(0);
    corners[best]
}

/// The x axis of a bar chart: category `i` is centred on `i`, the axis spans `-0.5..count-0.5`,
/// and only the category centres are key points (at most as many as the axis asks for).
pub(crate) struct CategoryAxis {
    /// Number of categories on the axis (at least one).
    pub(crate) count: usize,
}

impl Ranged for CategoryAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    #[expect(
        clippy::cast_possible_truncation,
        reason = "a pixel offset within the chart's limits, which are i32"
    )]
    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let range = self.range();
        let fraction = (value - range.start) / (range.end - range.start);
        let pixels = f64::from(limit.1 - limit.0) * fraction;
        limit.0 + pixels.round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        let wanted = hint.max_num_points();
        if hint.weight().allow_light_points() || wanted == 0 {
            // Light grid lines between categories would only clutter the bars.
            return Vec::new();
        }
        let step = self.count.div_ceil(wanted).max(1);
        (0..self.count).step_by(step).map(|i| i as f64).collect()
    }

    fn range(&self) -> Range<f64> {
        -0.5..self.count.max(1) as f64 - 0.5
    }
}

#[cfg(test)]
mod tests {
    use plotters::coord::ranged1d::BoldPoints;

    use super::*;

    #[test]
    fn ranges_pad_and_survive_degenerate_input() {
        assert_eq!(linear_range(Vec::<f64>::new()), None);
        assert_eq!(linear_range([f64::NAN, f64::INFINITY]), None);
        assert_eq!(linear_range([5.0]), Some(4.0..6.0));
        assert_eq!(linear_range([0.0]), Some(0.0..1.0));
        assert_eq!(linear_range([-3.0, f64::NAN]), Some(-4.0..-2.0));
        assert_eq!(linear_range([10.0, 20.0]), Some(9.5..20.5));
        assert_eq!(linear_range([0.1, 10.0]), Some(0.0..10.495));
        assert_eq!(
            linear_range([f64::MIN, f64::MAX]),
            None,
            "absurd magnitudes are dropped"
        );
        let wide = linear_range([-1e150, 1e150]).unwrap();
        assert!((wide.end - wide.start).is_finite());
        assert_eq!(log_range([1e-200]), None);
        assert_eq!(log_range([0.0, -1.0]), None);
        let r = log_range([1.0, 1000.0, -5.0]).unwrap();
        assert!(r.start < 1.0 && r.start > 0.5 && r.end > 1000.0 && r.end < 2000.0);
        let single = log_range([100.0]).unwrap();
        assert!(single.start < 100.0 && single.end > 100.0);
    }

    #[test]
    fn tick_labels_are_compact() {
        let cases = [
            (0.0, "0"),
            (-0.0, "0"),
            (1.0, "1"),
            (2.5, "2.5"),
            (12.25, "12.25"),
            (1234.0, "1234"),
            (0.00125, "0.00125"),
            (-0.5, "-0.5"),
            (2_500_000.0, "2.5e6"),
            (0.0001, "1e-4"),
        ];
        for (value, expected) in cases {
            assert_eq!(tick_label(value), expected, "{value}");
        }
    }

    #[test]
    fn ecdf_is_a_staircase_for_small_samples() {
        assert!(ecdf(&[]).is_empty());
        assert!(ecdf(&[f64::NAN]).is_empty());
        assert_eq!(
            ecdf(&[2.0, 1.0, f64::INFINITY]),
            vec![(1.0, 0.0), (1.0, 0.5), (2.0, 0.5), (2.0, 1.0)]
        );
    }

    #[test]
    fn ecdf_thins_large_samples_deterministically() {
        let samples: Vec<f64> = (0..100_003)
            .map(|i| f64::from((i * 7919) % 100_003))
            .collect();
        let curve = ecdf(&samples);
        assert!(curve.len() <= MAX_CDF_POINTS);
        assert_eq!(curve.first(), Some(&(0.0, 0.0)));
        assert_eq!(curve.last(), Some(&(100_002.0, 1.0)));
        assert!(
            curve
                .windows(2)
                .all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1)
        );
        assert_eq!(curve, ecdf(&samples));
    }

    #[test]
    fn legend_avoids_the_data() {
        let (x, y) = (0.0..10.0, 0.0..10.0);
        let rising = [((0.0, 0.0), (10.0, 10.0))];
        assert_eq!(emptiest_corner(rising, &x, &y, false, 2), Corner::UpperLeft);
        let falling = [((0.0, 10.0), (10.0, 0.0))];
        assert_eq!(
            emptiest_corner(falling, &x, &y, false, 2),
            Corner::UpperRight
        );
        let top = [((0.0, 9.5), (10.0, 9.5))];
        assert_eq!(emptiest_corner(top, &x, &y, false, 2), Corner::LowerRight);
        assert_eq!(emptiest_corner([], &x, &y, false, 2), Corner::UpperRight);
        let log = [((0.0, 1.0), (10.0, 1000.0))];
        let log_y = 0.9..1100.0;
        assert_eq!(emptiest_corner(log, &x, &log_y, true, 1), Corner::UpperLeft);
    }

    #[test]
    fn category_axis_centres_categories() {
        let axis = CategoryAxis { count: 4 };
        assert_eq!(axis.map(&-0.5, (0, 400)), 0);
        assert_eq!(axis.map(&0.0, (0, 400)), 50);
        assert_eq!(axis.map(&3.5, (0, 400)), 400);
        assert_eq!(
            axis.key_points(10usize).len(),
            0,
            "light points are not wanted"
        );
        assert_eq!(axis.key_points(BoldPoints(10)), vec![0.0, 1.0, 2.0, 3.0]);
        assert_eq!(axis.key_points(BoldPoints(2)), vec![0.0, 2.0]);
        assert_eq!(CategoryAxis { count: 25 }.range(), -0.5..24.5);
    }
}
