//! The chart: pairs/s against threads for each engine, durable and not.

use plotters::prelude::*;
use std::path::Path;

/// One engine's line: `(threads, pairs/s)` points.
pub struct Series {
    /// Engine name, for the legend.
    pub engine: String,
    /// Points in increasing thread order.
    pub points: Vec<(u32, f64)>,
}

/// Colours by engine name, stable across charts.
fn colour(engine: &str) -> RGBColor {
    match engine {
        "idemkv" => RGBColor(214, 39, 40),
        "fjall" => RGBColor(31, 119, 180),
        "redb" => RGBColor(44, 160, 44),
        "sled" => RGBColor(148, 103, 189),
        "rocksdb" => RGBColor(140, 86, 75),
        "map" => RGBColor(127, 127, 127),
        "map-wal" => RGBColor(64, 64, 64),
        _ => RGBColor(23, 190, 207),
    }
}

/// Draws one log-log panel.
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    max_threads: u32,
    ticks: &[u32],
    series: &[Series],
    legend: SeriesLabelPosition,
) -> Result<(), Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    let values = series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
    let (lo, hi) = values.fold((f64::MAX, 0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) = if hi > 0.0 {
        (
            10f64.powf(lo.log10().floor()),
            10f64.powf(hi.log10().ceil()),
        )
    } else {
        (1.0, 10.0)
    };
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(
            (1u32..max_threads)
                .log_scale()
                .with_key_points(ticks.to_vec()),
            (lo..hi).log_scale(),
        )?;
    chart
        .configure_mesh()
        .x_desc("client threads")
        .y_desc("pairs/s")
        .x_label_formatter(&|x| x.to_string())
        .y_label_formatter(&|y| {
            if *y >= 1000.0 {
                format!("{:.0}k", y / 1000.0)
            } else {
                format!("{y:.0}")
            }
        })
        .draw()?;
    for s in series.iter().filter(|s| !s.points.is_empty()) {
        let c = colour(&s.engine);
        chart
            .draw_series(LineSeries::new(s.points.iter().copied(), c.stroke_width(2)))?
            .label(s.engine.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 4, c.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(legend)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// Writes an SVG with two panels: durable (left) and not durable (right).
pub fn draw(
    path: &Path,
    durable: &[Series],
    not_durable: &[Series],
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (1200, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(720);
    panel(
        &left,
        "durable (fsync before ack): pairs/s",
        64,
        &[1, 2, 4, 8, 16, 32, 64],
        durable,
        SeriesLabelPosition::UpperLeft,
    )?;
    panel(
        &right,
        "not durable: pairs/s",
        2,
        &[1, 2],
        not_durable,
        SeriesLabelPosition::MiddleRight,
    )?;
    root.present()?;
    Ok(())
}
