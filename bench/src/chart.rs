//! The accept-latency chart: p50, p99 and p99.9 against offered load, both
//! axes logarithmic (rates double per step; latencies span orders of
//! magnitude once the server saturates), with the 20 ms p99 target drawn in.

use std::path::Path;

use anyhow::{bail, Context as _};
use plotters::prelude::*;

use crate::scenarios::AcceptStep;

/// The accept-path target: p99 at most this at 1,000 req/s.
pub const TARGET_P99_MS: f64 = 20.0;

pub fn accept_latency(path: &Path, steps: &[AcceptStep]) -> anyhow::Result<()> {
    let points: Vec<(f64, [f64; 3])> = steps
        .iter()
        .filter_map(|s| {
            s.latency
                .map(|l| (s.offered_per_s, [l.p50_ms, l.p99_ms, l.p999_ms]))
        })
        .collect();
    if points.is_empty() {
        bail!("no accept-path latencies to chart");
    }
    let x_min = points.iter().map(|p| p.0).fold(f64::INFINITY, f64::min) / 1.3;
    let x_max = points.iter().map(|p| p.0).fold(0.0, f64::max) * 1.3;
    let y_min = points
        .iter()
        .map(|p| p.1[0])
        .fold(f64::INFINITY, f64::min)
        .clamp(0.01, TARGET_P99_MS)
        / 2.0;
    let y_max = points
        .iter()
        .map(|p| p.1[2])
        .fold(0.0, f64::max)
        .max(TARGET_P99_MS)
        * 2.0;

    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "POST /v1/payments: latency vs offered load (open loop)",
            ("sans-serif", 22),
        )
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(
            // Ticks at the measured rates, not at powers of ten.
            (x_min..x_max)
                .log_scale()
                .with_key_points(points.iter().map(|p| p.0).collect()),
            (y_min..y_max).log_scale(),
        )?;
    chart
        .configure_mesh()
        .x_desc("offered load (requests/s)")
        .y_desc("latency from intended send time (ms)")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| {
            if *v >= 1.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.2}")
            }
        })
        .draw()?;

    let series = [("p50", 0, BLUE), ("p99", 1, RED), ("p99.9", 2, MAGENTA)];
    for (label, i, color) in series {
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|(x, ys)| (*x, ys[i])),
                color.stroke_width(2),
            ))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(
            points
                .iter()
                .map(|(x, ys)| Circle::new((*x, ys[i]), 4, color.filled())),
        )?;
    }
    chart
        .draw_series(DashedLineSeries::new(
            vec![(x_min, TARGET_P99_MS), (x_max, TARGET_P99_MS)],
            8,
            5,
            BLACK.stroke_width(1),
        ))?
        .label("target: p99 <= 20 ms at 1000 req/s")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
