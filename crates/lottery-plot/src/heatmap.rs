//! A symmetric matrix as a heatmap: Early-Bird's mask-distance matrix (the paper's Fig. 2).

use std::path::Path;

use plotters::coord::Shift;
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::{FONT, PlotError, register_font};

/// Cells at most this many a side carry their value as text.
const ANNOTATE_UP_TO: usize = 24;

/// Draws `matrix` (rows and columns both named by `ticks`, e.g. epochs) as coloured cells, the
/// colour scale from 0 to the largest finite value (viridis: dark is near 0), with a colour bar;
/// a NaN cell is left white. Writes `png` and `svg`.
pub fn heatmap_plot(
    title: &str,
    axis: &str,
    ticks: &[u64],
    matrix: &[Vec<f64>],
    png: &Path,
    svg: &Path,
) -> Result<(), PlotError> {
    register_font();
    let n = ticks.len();
    if n < 2 {
        return Err(PlotError::Empty(format!(
            "{title}: a matrix of distances needs at least 2 masks, got {n}"
        )));
    }
    let bad_row = matrix.iter().map(Vec::len).find(|&len| len != n);
    if matrix.len() != n || bad_row.is_some() {
        return Err(PlotError::Invalid(format!(
            "{title}: the matrix must be {n} × {n} (a row and a column per mark); it has {} rows{}",
            matrix.len(),
            bad_row
                .map(|len| format!(", one of {len} columns"))
                .unwrap_or_default()
        )));
    }
    let size = (900, 800);
    render_png_and_svg!(png, svg, size, draw_heatmap(title, axis, ticks, matrix));
    Ok(())
}

fn draw_heatmap<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    axis: &str,
    ticks: &[u64],
    matrix: &[Vec<f64>],
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    let n = ticks.len();
    let top = matrix
        .iter()
        .flatten()
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0_f64, f64::max)
        .max(f64::MIN_POSITIVE);
    let (area, bar) = root.split_horizontally(root.dim_in_pixel().0 - 130);
    // Cell (i, j) is segment j across and n − 1 − i up: the first row at the top. (A segmented
    // range holds its end: 0..n − 1 is n segments.)
    let mut chart = ChartBuilder::on(&area)
        .caption(title, (FONT, 20))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(56)
        .build_cartesian_2d((0..n - 1).into_segmented(), (0..n - 1).into_segmented())?;
    let name = |k: usize| ticks.get(k).map(u64::to_string).unwrap_or_default();
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(n)
        .y_labels(n)
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(j) => name(*j),
            _ => String::new(),
        })
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(y) if *y < n => name(n - 1 - y),
            _ => String::new(),
        })
        .x_desc(axis)
        .y_desc(axis)
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 15))
        .draw()?;
    let color = |v: f64| ViridisRGB.get_color_normalized(v, 0.0, top);
    chart.draw_series(matrix.iter().enumerate().flat_map(|(i, row)| {
        row.iter().enumerate().map(move |(j, &v)| {
            let fill = if v.is_finite() {
                color(v).filled()
            } else {
                WHITE.filled()
            };
            let y = n - 1 - i;
            Rectangle::new(
                [
                    (SegmentValue::Exact(j), SegmentValue::Exact(y)),
                    (SegmentValue::Exact(j + 1), SegmentValue::Exact(y + 1)),
                ],
                fill,
            )
        })
    }))?;
    if n <= ANNOTATE_UP_TO {
        let size = if n <= 14 { 12 } else { 9 };
        let centred = Pos::new(HPos::Center, VPos::Center);
        chart.draw_series(matrix.iter().enumerate().flat_map(|(i, row)| {
            row.iter()
                .enumerate()
                .filter(|(_, v)| v.is_finite())
                .map(move |(j, &v)| {
                    // Light text on the dark (low) half of the scale.
                    let ink = if v < 0.5 * top { WHITE } else { BLACK };
                    Text::new(
                        format!("{v:.2}"),
                        (SegmentValue::CenterOf(j), SegmentValue::CenterOf(n - 1 - i)),
                        (FONT, size).into_font().color(&ink).pos(centred),
                    )
                })
        }))?;
    }
    // The colour bar: 0 at the bottom, the largest value at the top.
    let mut scale = ChartBuilder::on(&bar)
        .margin_top(60)
        .margin_bottom(64)
        .margin_right(16)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..1.0, 0.0..top)?;
    scale
        .configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .y_labels(6)
        .y_label_formatter(&|v| format!("{v:.2}"))
        .label_style((FONT, 12))
        .draw()?;
    let steps = 100;
    scale.draw_series((0..steps).map(|k| {
        let (a, b) = (
            top * k as f64 / steps as f64,
            top * (k + 1) as f64 / steps as f64,
        );
        Rectangle::new([(0.0, a), (1.0, b)], color(a).filled())
    }))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::check_png;

    #[test]
    fn heatmap_draws_the_matrix_with_its_values() {
        let d = tempfile::tempdir().unwrap();
        let m = vec![
            vec![0.0, 0.5, f64::NAN],
            vec![0.5, 0.0, 0.25],
            vec![f64::NAN, 0.25, 0.0],
        ];
        let (png, svg) = (d.path().join("h.png"), d.path().join("h.svg"));
        heatmap_plot("run: distances", "epoch", &[0, 1, 2], &m, &png, &svg).unwrap();
        check_png(&png, 900);
        let text = std::fs::read_to_string(&svg).unwrap();
        assert!(
            text.contains("0.50") && text.contains("0.25"),
            "cells carry values"
        );
        let e = heatmap_plot("t", "epoch", &[0, 1], &m, &png, &svg);
        assert!(
            matches!(e, Err(PlotError::Invalid(_))),
            "a 3 × 3 matrix with 2 ticks"
        );
        let e = heatmap_plot("t", "epoch", &[0], &[vec![0.0]], &png, &svg);
        assert!(
            matches!(e, Err(PlotError::Empty(_))),
            "one mask: no distance"
        );
    }
}
