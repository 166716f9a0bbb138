//! A metric per epoch, one line per row of a study: GEBT's normalised mask distance as it
//! settles (the paper's Fig. 4(b)), with the epoch each line's ticket was drawn marked.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::{FONT, PlotError, register_font};

/// One line of [`epoch_plot`].
#[derive(Debug, Clone, PartialEq)]
pub struct EpochLine {
    /// Legend label.
    pub label: String,
    /// `(epoch, mean, sample std)`, any order.
    pub points: Vec<(f64, f64, Option<f64>)>,
    /// An epoch to mark on the line with a triangle (e.g. the mean epoch its ticket was drawn);
    /// drawn only within the line's epochs, and then the legend ends in "▲".
    pub marked_epoch: Option<f64>,
}

/// Draws `lines` as metric (y) versus epoch (x) to `png` and `svg`, each with ± std error bars and
/// its marked epoch as a triangle on the line; `threshold`, when given, as a dashed horizontal
/// line. Non-finite values are an error (they would leave no range to draw).
pub fn epoch_plot(
    title: &str,
    y_label: &str,
    lines: &[EpochLine],
    threshold: Option<f64>,
    png: &Path,
    svg: &Path,
) -> Result<(), PlotError> {
    register_font();
    if lines.iter().all(|l| l.points.is_empty()) {
        return Err(PlotError::Empty(title.to_string()));
    }
    let finite = |v: f64| v.is_finite();
    if !lines
        .iter()
        .flat_map(|l| l.points.iter())
        .all(|&(x, m, s)| finite(x) && finite(m) && s.is_none_or(finite))
        || !threshold.is_none_or(finite)
    {
        return Err(PlotError::Invalid(format!(
            "{title}: a value or the threshold is not finite"
        )));
    }
    let size = (960, 640);
    render_png_and_svg!(
        png,
        svg,
        size,
        draw_epochs(title, y_label, lines, threshold)
    );
    Ok(())
}

/// The line's value at `x`, linearly between its two nearest epochs (sorted points); none outside
/// them.
fn value_at(points: &[(f64, f64, f64)], x: f64) -> Option<f64> {
    let after = points.iter().position(|p| p.0 >= x)?;
    let b = points[after];
    if b.0 == x {
        return Some(b.1);
    }
    if after == 0 {
        return None;
    }
    let a = points[after - 1];
    Some(a.1 + (b.1 - a.1) * (x - a.0) / (b.0 - a.0))
}

fn draw_epochs<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    y_label: &str,
    lines: &[EpochLine],
    threshold: Option<f64>,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, m, s) in lines.iter().flat_map(|l| l.points.iter()) {
        let s = s.unwrap_or(0.0);
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(m - s);
        y1 = y1.max(m + s);
    }
    if let Some(t) = threshold {
        y0 = y0.min(t);
        y1 = y1.max(t);
    }
    let pad = ((y1 - y0) * 0.08).max(1e-3);
    let (y0, y1) = (y0 - pad, y1 + pad);
    let (x0, x1) = (x0 - 1.0, x1 + 1.0);
    let mut chart = ChartBuilder::on(root)
        .caption(title, (FONT, 20))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc(y_label)
        // Whole epochs only (a short axis has ticks at halves).
        .x_label_formatter(&|x| {
            if x.fract() == 0.0 {
                format!("{x:.0}")
            } else {
                String::new()
            }
        })
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .draw()?;
    if let Some(t) = threshold {
        chart
            .draw_series(DashedLineSeries::new(
                [(x0, t), (x1, t)],
                6,
                4,
                BLACK.stroke_width(1),
            ))?
            .label(format!("threshold {t}"))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(1)));
    }
    for (i, line) in lines.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let mut pts: Vec<(f64, f64, f64)> = line
            .points
            .iter()
            .map(|&(x, m, s)| (x, m, s.unwrap_or(0.0)))
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let marker = line
            .marked_epoch
            .and_then(|e| value_at(&pts, e).map(|y| (e, y)));
        let label = match marker {
            Some(_) => format!("{} ▲", line.label),
            None => line.label.clone(),
        };
        chart
            .draw_series(LineSeries::new(
                pts.iter().map(|p| (p.0, p.1)),
                color.stroke_width(2),
            ))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(pts.iter().filter(|p| p.2 > 0.0).map(|p| {
            ErrorBar::new_vertical(p.0, p.1 - p.2, p.1, p.1 + p.2, color.stroke_width(1), 5)
        }))?;
        if let Some(at) = marker {
            chart.draw_series(std::iter::once(TriangleMarker::new(at, 9, color.filled())))?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::check_png;

    #[test]
    fn epoch_plot_marks_the_drawn_epoch() {
        let d = tempfile::tempdir().unwrap();
        let lines = vec![
            EpochLine {
                label: "gcn-tickets d=0.328, drawn at 4.5".into(),
                points: vec![
                    (3.0, 1.0, Some(0.1)),
                    (4.0, 0.5, Some(0.05)),
                    (5.0, 0.05, None),
                ],
                marked_epoch: Some(4.5),
            },
            EpochLine {
                label: "gcn-tickets d=0.168, drawn at 9".into(),
                points: vec![(3.0, 0.9, None), (4.0, 0.7, None)],
                marked_epoch: Some(9.0),
            },
        ];
        let (png, svg) = (d.path().join("c.png"), d.path().join("c.svg"));
        epoch_plot("s: distance", "distance", &lines, Some(0.1), &png, &svg).unwrap();
        check_png(&png, 960);
        let text = std::fs::read_to_string(&svg).unwrap();
        assert!(text.contains("drawn at 4.5 ▲") && text.contains("threshold 0.1"));
        // Epoch 9 lies past the line's last point: no triangle, and the legend promises none.
        assert!(text.contains("drawn at 9") && !text.contains("drawn at 9 ▲"));
        let line = [(3.0, 1.0, 0.0), (5.0, 0.0, 0.0)];
        assert_eq!(value_at(&line, 4.5), Some(0.25));
        assert_eq!(value_at(&line, 3.0), Some(1.0));
        assert_eq!(value_at(&line, 2.0), None);
        assert_eq!(value_at(&line, 9.0), None);
        let e = epoch_plot("s", "y", &[], None, &png, &svg);
        assert!(matches!(e, Err(PlotError::Empty(_))));
        let e = epoch_plot("s", "y", &lines, Some(f64::INFINITY), &png, &svg);
        assert!(matches!(e, Err(PlotError::Invalid(_))));
    }
}
