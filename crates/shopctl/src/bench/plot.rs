//! `shopctl plot`: SVG plots of `shopctl bench` reports, drawn with `plotters`.
//!
//! Each report given is one series, named after its file (`sqlite-saga.json` is
//! `sqlite-saga`). Two plots come out:
//! - `latency-vs-rate.svg`: saga p50 and p99 against the offered rate, one point per run (a
//!   `--sweep` report gives a curve);
//! - `latency-cdf.svg`: the saga latency distribution of each report's first run, on a
//!   logarithmic latency axis, so that the tail is as readable as the median.

use std::path::{Path, PathBuf};

use anyhow::Context;
use plotters::prelude::*;

use super::BenchReport;

#[derive(Debug, Clone, clap::Args)]
pub struct PlotArgs {
    /// JSON reports written by `shopctl bench --json`; each is one series.
    #[arg(required = true)]
    pub reports: Vec<PathBuf>,
    /// The folder the SVG files go to (created if missing).
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
    /// Said in both plots' titles, such as the stack measured.
    #[arg(long, default_value = "")]
    pub title: String,
}

/// One series: a report and the name it is drawn under.
struct Series {
    name: String,
    report: BenchReport,
}

/// Colours that stay apart on white, in the order series get them.
const COLOURS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
    RGBColor(140, 86, 75),
    RGBColor(127, 127, 127),
];

const SIZE: (u32, u32) = (900, 560);

/// `shopctl plot`: reads the reports and writes both plots; returns the files written.
pub fn plot(args: &PlotArgs) -> anyhow::Result<Vec<PathBuf>> {
    let series = args
        .reports
        .iter()
        .map(|path| load(path))
        .collect::<anyhow::Result<Vec<_>>>()?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let rate = args.out.join("latency-vs-rate.svg");
    latency_vs_rate(&series, &args.title, &rate)?;
    let cdf = args.out.join("latency-cdf.svg");
    latency_cdf(&series, &args.title, &cdf)?;
    Ok(vec![rate, cdf])
}

fn load(path: &Path) -> anyhow::Result<Series> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let report: BenchReport = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a shopctl bench report", path.display()))?;
    if report.runs.is_empty() {
        anyhow::bail!("{} has no runs", path.display());
    }
    let name = path.file_stem().map_or_else(
        || path.display().to_string(),
        |s| s.to_string_lossy().into(),
    );
    Ok(Series { name, report })
}

fn titled(title: &str, what: &str) -> String {
    if title.is_empty() {
        what.to_owned()
    } else {
        format!("{what}: {title}")
    }
}

/// The bounds of a logarithmic axis around `values`, with some room on both sides.
fn log_bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (low, high) = values
        .filter(|v| *v > 0.0)
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if high <= 0.0 {
        return (0.1, 10.0);
    }
    (low / 1.5, high * 1.5)
}

fn latency_vs_rate(series: &[Series], title: &str, path: &Path) -> anyhow::Result<()> {
    let runs = || series.iter().flat_map(|s| &s.report.runs);
    let max_rate = runs().map(|r| r.rate).fold(0.0, f64::max) * 1.08;
    let (low, high) = log_bounds(runs().flat_map(|r| [r.saga_ms.p50, r.saga_ms.p99]));
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            titled(title, "Saga latency against offered rate"),
            ("sans-serif", 22),
        )
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..max_rate.max(1.0), (low..high).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("offered rate (orders/s)")
        .y_desc("saga latency (ms)")
        .draw()?;
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        for (quantile, width) in [("p50", 1), ("p99", 3)] {
            let points: Vec<(f64, f64)> = s
                .report
                .runs
                .iter()
                .map(|r| {
                    let ms = if quantile == "p50" {
                        r.saga_ms.p50
                    } else {
                        r.saga_ms.p99
                    };
                    (r.rate, ms.max(low))
                })
                .collect();
            chart
                .draw_series(LineSeries::new(points.clone(), colour.stroke_width(width)))?
                .label(format!("{} {quantile}", s.name))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(width))
                });
            chart.draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 2 + width, colour.filled())),
            )?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// The run a report's distribution is drawn from: its first.
fn first(series: &Series) -> &super::RunReport {
    &series.report.runs[0]
}

fn latency_cdf(series: &[Series], title: &str, path: &Path) -> anyhow::Result<()> {
    let (low, high) = log_bounds(
        series
            .iter()
            .flat_map(|s| first(s).saga_cdf_ms.iter().map(|[_, ms]| *ms)),
    );
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            titled(title, "Saga latency distribution"),
            ("sans-serif", 22),
        )
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d((low..high).log_scale(), 0.0..100.0)?;
    chart
        .configure_mesh()
        .x_desc("saga latency (ms)")
        .y_desc("orders at or under it (%)")
        .draw()?;
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let run = first(s);
        let points = run
            .saga_cdf_ms
            .iter()
            .map(|[percentile, ms]| (ms.max(low), *percentile));
        chart
            .draw_series(LineSeries::new(points, colour.stroke_width(2)))?
            .label(format!("{} at {:.0}/s", s.name, run.rate))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_axis_leaves_room_around_its_values_and_ignores_zeros() {
        let (low, high) = log_bounds([0.0, 10.0, 100.0].into_iter());
        assert!(low < 10.0 && low > 0.0);
        assert!(high > 100.0);
        assert_eq!(log_bounds(std::iter::empty()), (0.1, 10.0));
    }
}
