//! Figures of lottery studies, as PNG and SVG (plotters; the text is DejaVu Sans, embedded, so a
//! machine without fonts draws the same figure).
//!
//! - [`accuracy_plot`]: accuracy versus compression (1/density) on a log axis, one line per
//!   method, error bars of ± one standard deviation over seeds: the figure of the pruning papers.
//! - [`layer_plot`]: the density of each prunable layer of one run's masks, the figure the SynFlow
//!   paper uses to show layer collapse (a layer at density 0 is marked "collapsed").
//! - [`heatmap_plot`]: a symmetric matrix as coloured cells, Early-Bird's mask-distance matrix.
//! - [`epoch_plot`]: a metric per epoch, one line per row, each line's drawn epoch marked: GEBT's
//!   normalised mask distance as it settles.

/// Draws a figure twice, to the PNG and to the SVG: `$draw(&root, args…)` on each backend's root
/// area, then presents it; errors name the file. Returns from the calling function on error.
macro_rules! render_png_and_svg {
    ($png:expr, $svg:expr, $size:expr, $draw:ident($($arg:expr),* $(,)?)) => {{
        let root = plotters::prelude::BitMapBackend::new($png, $size).into_drawing_area();
        $draw(&root, $($arg),*).map_err($crate::draw_err($png))?;
        root.present().map_err($crate::draw_err($png))?;
        drop(root);
        let root = plotters::prelude::SVGBackend::new($svg, $size).into_drawing_area();
        $draw(&root, $($arg),*).map_err($crate::draw_err($svg))?;
        root.present().map_err($crate::draw_err($svg))?;
    }};
}

mod curves;
mod heatmap;

use std::path::Path;
use std::sync::Once;

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;

pub use curves::{EpochLine, epoch_plot};
pub use heatmap::heatmap_plot;

/// Errors of drawing or writing a figure, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// Drawing or encoding failed.
    #[error("{path}: {why}")]
    Draw {
        /// The file being written.
        path: String,
        /// Why.
        why: String,
    },
    /// Nothing to draw.
    #[error("nothing to plot: {0}")]
    Empty(String),
    /// The data cannot be drawn as given (a shape or a value), with why.
    #[error("cannot plot {0}")]
    Invalid(String),
}

/// One point of a line: a density and the mean (and sample std) of a metric over seeds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Fraction of prunable weights kept, in (0, 1].
    pub density: f64,
    /// Mean over seeds.
    pub mean: f64,
    /// Sample standard deviation over seeds (none for one seed).
    pub std: Option<f64>,
}

/// One line of [`accuracy_plot`].
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend label (the method).
    pub label: String,
    /// Points, any order.
    pub points: Vec<Point>,
}

/// The density of one layer, for [`layer_plot`].
#[derive(Debug, Clone, PartialEq)]
pub struct LayerDensity {
    /// Parameter name.
    pub name: String,
    /// Fraction kept.
    pub density: f64,
}

pub(crate) const FONT: &str = "sans-serif";

pub(crate) fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular())
            .unwrap_or_else(|_| panic!("the embedded DejaVu Sans is a valid font"));
    });
}

pub(crate) fn draw_err<E: std::fmt::Debug>(path: &Path) -> impl FnOnce(E) -> PlotError + '_ {
    move |e| PlotError::Draw {
        path: path.display().to_string(),
        why: format!("{e:?}"),
    }
}

/// Draws `series` as metric (y) versus compression (x, log) to `png` and `svg`; `density_meaning`
/// says what a density counts (e.g. "fraction of prunable weights kept") for the x axis.
pub fn accuracy_plot(
    title: &str,
    y_label: &str,
    density_meaning: &str,
    series: &[Series],
    png: &Path,
    svg: &Path,
) -> Result<(), PlotError> {
    register_font();
    if series.iter().all(|s| s.points.is_empty()) {
        return Err(PlotError::Empty(title.to_string()));
    }
    let size = (960, 640);
    render_png_and_svg!(
        png,
        svg,
        size,
        draw_accuracy(title, y_label, density_meaning, series)
    );
    Ok(())
}

fn draw_accuracy<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    y_label: &str,
    density_meaning: &str,
    series: &[Series],
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    let points = series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for p in points {
        let x = 1.0 / p.density;
        let s = p.std.unwrap_or(0.0);
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(p.mean - s);
        y1 = y1.max(p.mean + s);
    }
    let (x0, x1) = (x0 / 1.25, x1 * 1.25);
    // Ticks at the compressions that were run, labelled with their density too.
    let mut ticks: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| 1.0 / p.density))
        .collect();
    ticks.sort_by(f64::total_cmp);
    ticks.dedup_by(|a, b| (*a / *b - 1.0).abs() < 1e-9);
    // Labels about a seventh of the axis wide: keep a tick only that far from the last kept
    // (an IMP curve has a level every 0.1 decades, whose labels would overlap).
    let min_gap = (x1 / x0).log10() * 0.14;
    let mut kept: Vec<f64> = vec![];
    for t in ticks {
        if kept
            .last()
            .is_none_or(|&last| (t / last).log10() >= min_gap)
        {
            kept.push(t);
        }
    }
    let ticks = kept;
    let pad = ((y1 - y0) * 0.08).max(0.5);
    let (y0, y1) = (y0 - pad, y1 + pad);
    let mut chart = ChartBuilder::on(root)
        .caption(title, (FONT, 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d((x0..x1).log_scale().with_key_points(ticks), y0..y1)?;
    chart
        .configure_mesh()
        .x_desc(format!(
            "compression (1 / density, log scale) and density: the {density_meaning}"
        ))
        .y_desc(y_label)
        .x_label_formatter(&|x| {
            let density = 100.0 / x;
            if *x >= 10.0 {
                format!("{x:.0}× ({density:.3}%)")
            } else {
                format!("{x:.1}× ({density:.3}%)")
            }
        })
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .draw()?;
    for (i, s) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let mut pts: Vec<(f64, f64, f64)> = s
            .points
            .iter()
            .map(|p| (1.0 / p.density, p.mean, p.std.unwrap_or(0.0)))
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart
            .draw_series(LineSeries::new(
                pts.iter().map(|p| (p.0, p.1)),
                color.stroke_width(2),
            ))?
            .label(s.label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(
            pts.iter()
                .map(|p| Circle::new((p.0, p.1), 4, color.filled())),
        )?;
        chart.draw_series(pts.iter().filter(|p| p.2 > 0.0).map(|p| {
            ErrorBar::new_vertical(p.0, p.1 - p.2, p.1, p.1 + p.2, color.stroke_width(1), 8)
        }))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// Draws one bar per layer (its density, in percent) to `png` and `svg`.
pub fn layer_plot(
    title: &str,
    layers: &[LayerDensity],
    png: &Path,
    svg: &Path,
) -> Result<(), PlotError> {
    register_font();
    if layers.is_empty() {
        return Err(PlotError::Empty(title.to_string()));
    }
    let size = (960, 120 + 26 * layers.len() as u32);
    render_png_and_svg!(png, svg, size, draw_layers(title, layers));
    Ok(())
}

fn draw_layers<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    layers: &[LayerDensity],
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    let n = layers.len();
    let top = layers
        .iter()
        .map(|l| l.density * 100.0)
        .fold(0.0_f64, f64::max)
        .max(1e-3);
    let label_width = layers
        .iter()
        .map(|l| l.name.len() + if l.density == 0.0 { 12 } else { 0 })
        .max()
        .unwrap_or(8) as u32
        * 8
        + 16;
    let mut chart = ChartBuilder::on(root)
        .caption(title, (FONT, 20))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(label_width.min(480))
        .build_cartesian_2d(0.0..top * 1.1, (0..n).into_segmented())?;
    let names: Vec<String> = layers
        .iter()
        .map(|l| {
            if l.density == 0.0 {
                format!("{} (collapsed)", l.name)
            } else {
                l.name.clone()
            }
        })
        .collect();
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n)
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .x_desc("density of the layer (% of its weights kept)")
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 15))
        .draw()?;
    chart.draw_series(layers.iter().enumerate().map(|(i, l)| {
        let color = if l.density == 0.0 { RED } else { BLUE };
        let mut bar = Rectangle::new(
            [
                (0.0, SegmentValue::Exact(i)),
                (l.density * 100.0, SegmentValue::Exact(i + 1)),
            ],
            color.mix(0.7).filled(),
        );
        bar.set_margin(3, 3, 0, 0);
        bar
    }))?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A decodable PNG `width` wide with coloured marks and dark axes and text.
    pub(crate) fn check_png(path: &Path, width: u32) {
        let img = image::open(path).expect("a decodable PNG").to_rgb8();
        assert_eq!(img.width(), width);
        let colored = img
            .pixels()
            .filter(|p| !(p[0] == p[1] && p[1] == p[2]))
            .count();
        assert!(colored > 100, "the lines and bars are drawn in colour");
        let dark = img
            .pixels()
            .filter(|p| p[0] < 60 && p[1] < 60 && p[2] < 60)
            .count();
        assert!(dark > 100, "axes and text are drawn");
    }

    #[test]
    fn accuracy_plot_writes_valid_png_and_svg() {
        let d = tempfile::tempdir().unwrap();
        let series = vec![
            Series {
                label: "synflow".into(),
                points: vec![
                    Point {
                        density: 0.05,
                        mean: 88.0,
                        std: Some(0.3),
                    },
                    Point {
                        density: 0.005,
                        mean: 82.0,
                        std: Some(1.0),
                    },
                ],
            },
            Series {
                label: "random".into(),
                points: vec![Point {
                    density: 0.05,
                    mean: 86.9,
                    std: None,
                }],
            },
        ];
        let (png, svg) = (d.path().join("a.png"), d.path().join("a.svg"));
        accuracy_plot(
            "study: test_accuracy",
            "test accuracy (%)",
            "fraction of batch-norm channels kept",
            &series,
            &png,
            &svg,
        )
        .unwrap();
        check_png(&png, 960);
        let text = std::fs::read_to_string(&svg).unwrap();
        assert!(text.starts_with("<svg") && text.trim_end().ends_with("</svg>"));
        assert!(text.contains("synflow") && text.contains("random"));
        assert!(text.contains("density: the fraction of batch-norm channels kept"));
    }

    #[test]
    fn layer_plot_marks_collapsed_layers() {
        let d = tempfile::tempdir().unwrap();
        let layers = vec![
            LayerDensity {
                name: "features.0.weight".into(),
                density: 0.5,
            },
            LayerDensity {
                name: "classifier.weight".into(),
                density: 0.0,
            },
        ];
        let (png, svg) = (d.path().join("l.png"), d.path().join("l.svg"));
        layer_plot("run: layers", &layers, &png, &svg).unwrap();
        check_png(&png, 960);
        let text = std::fs::read_to_string(&svg).unwrap();
        assert!(text.contains("classifier.weight (collapsed)"));
    }

    #[test]
    fn nothing_to_plot_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let e = accuracy_plot(
            "s",
            "y",
            "fraction of prunable weights kept",
            &[],
            &d.path().join("a.png"),
            &d.path().join("a.svg"),
        );
        assert!(matches!(e, Err(PlotError::Empty(_))));
    }
}
