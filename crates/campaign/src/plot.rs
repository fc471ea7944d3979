//! The campaign's SVG: the recovery-latency distribution, the outcomes per
//! fault type, and (for a soak) memory over time.

use std::path::Path;

use plotters::prelude::*;

use crate::outcome::Outcome;
use crate::report::Report;

/// Why the SVG could not be drawn (or written).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PlotError(Box<dyn std::error::Error + Send + Sync>);

/// What the plot shows, taken from a [`Report`].
struct PlotData {
    latencies_ms: Vec<f64>,
    /// Per fault type: (outcome name, count) in a fixed outcome order.
    by_type: Vec<(String, Vec<(&'static str, u64)>)>,
    memory: Vec<MemPoint>,
}

/// One memory sample of a soak.
struct MemPoint {
    t_s: f64,
    /// The hypervisor's resident set, guest RAM included (KiB).
    rss_kib: Option<u64>,
    /// The hypervisor's own memory: that resident set less guest RAM (KiB).
    vmm_own_kib: Option<u64>,
    guest_frames_used: Option<u64>,
}

impl PlotData {
    fn of(r: &Report) -> PlotData {
        PlotData {
            latencies_ms: r.records.iter().filter_map(|x| x.latency_ms).collect(),
            by_type: r
                .by_type
                .iter()
                .map(|(t, c)| {
                    (
                        t.clone(),
                        Outcome::ALL
                            .iter()
                            .map(|o| (o.name(), c.get(o.name()).copied().unwrap_or(0)))
                            .collect(),
                    )
                })
                .collect(),
            memory: r
                .memory
                .iter()
                .map(|m| MemPoint {
                    t_s: m.t_s,
                    rss_kib: m.host_rss_kib,
                    vmm_own_kib: m.vmm_own_kib,
                    guest_frames_used: m.guest_frames_used,
                })
                .collect(),
        }
    }
}

const COLORS: [RGBColor; 5] = [
    RGBColor(160, 160, 160),
    RGBColor(46, 139, 87),
    RGBColor(70, 130, 180),
    RGBColor(218, 165, 32),
    RGBColor(205, 55, 55),
];

type DrawResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Draws `report` as an SVG at `path`: the latency histogram, the
/// outcomes per fault type and, with more than one memory sample, memory
/// over time.
pub fn draw(path: &Path, report: &Report) -> Result<(), PlotError> {
    draw_data(path, &PlotData::of(report)).map_err(PlotError)
}

fn draw_data(path: &Path, d: &PlotData) -> DrawResult<()> {
    let panels = if d.memory.len() > 1 { 3 } else { 2 };
    let root = SVGBackend::new(path, (1000, 380 * panels)).into_drawing_area();
    root.fill(&WHITE)?;
    let areas = root.split_evenly((panels as usize, 1));
    latency(&areas[0], &d.latencies_ms)?;
    outcomes(&areas[1], &d.by_type)?;
    if panels == 3 {
        memory(&areas[2], &d.memory)?;
    }
    root.present()?;
    Ok(())
}

fn latency<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    v: &[f64],
) -> DrawResult<()>
where
    DB::ErrorType: 'static,
{
    let max = v.iter().copied().fold(0.0f64, f64::max).max(0.1);
    let bins = 40usize;
    let width = max / bins as f64;
    let mut counts = vec![0u32; bins];
    for &x in v {
        let i = ((x / width) as usize).min(bins - 1);
        counts[i] += 1;
    }
    let top = counts.iter().copied().max().unwrap_or(0).max(1);
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!("Recovery latency ({} resurrections)", v.len()),
            ("sans-serif", 22),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..max * 1.02, 0u32..top + top / 10 + 1)?;
    chart
        .configure_mesh()
        .x_desc("latency (ms)")
        .y_desc("recoveries")
        .draw()?;
    chart.draw_series(counts.iter().enumerate().map(|(i, &c)| {
        let x0 = i as f64 * width;
        Rectangle::new([(x0, 0), (x0 + width, c)], COLORS[1].filled())
    }))?;
    Ok(())
}

fn outcomes<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    by_type: &[(String, Vec<(&'static str, u64)>)],
) -> DrawResult<()>
where
    DB::ErrorType: 'static,
{
    let top = by_type
        .iter()
        .map(|(_, c)| c.iter().map(|x| x.1).sum::<u64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let n = by_type.len().max(1) as u32;
    let names: Vec<String> = by_type.iter().map(|(t, _)| t.clone()).collect();
    let mut chart = ChartBuilder::on(area)
        .caption("Outcomes per fault type", ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d((0u32..n).into_segmented(), 0u64..top + top / 10 + 1)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n as usize)
        .x_label_formatter(&|x| match x {
            SegmentValue::CenterOf(i) => names.get(*i as usize).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .y_desc("faults")
        .draw()?;
    let outcome_names: Vec<&'static str> = by_type
        .first()
        .map(|(_, c)| c.iter().map(|x| x.0).collect())
        .unwrap_or_default();
    for (k, name) in outcome_names.iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
        let bars = by_type.iter().enumerate().map(move |(i, (_, c))| {
            let below: u64 = c[..k].iter().map(|x| x.1).sum();
            let h = c[k].1;
            let i = i as u32;
            Rectangle::new(
                [
                    (SegmentValue::Exact(i), below),
                    (SegmentValue::Exact(i + 1), below + h),
                ],
                color.filled(),
            )
        });
        chart
            .draw_series(bars)?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

fn memory<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    m: &[MemPoint],
) -> DrawResult<()>
where
    DB::ErrorType: 'static,
{
    let t_max = m.iter().map(|x| x.t_s).fold(1.0f64, f64::max);
    // Every series in MiB: the hypervisor's from KiB, guest frames are
    // 4 KiB each.
    let series = |f: &dyn Fn(&MemPoint) -> Option<f64>| -> Vec<(f64, f64)> {
        m.iter().filter_map(|x| Some((x.t_s, f(x)?))).collect()
    };
    let rss = series(&|x| Some(x.rss_kib? as f64 / 1024.0));
    let own = series(&|x| Some(x.vmm_own_kib? as f64 / 1024.0));
    let guest = series(&|x| Some(x.guest_frames_used? as f64 * 4.0 / 1024.0));
    let top = rss
        .iter()
        .chain(&own)
        .chain(&guest)
        .map(|x| x.1)
        .fold(1.0f64, f64::max);
    let mut chart = ChartBuilder::on(area)
        .caption("Memory over time", ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..t_max, 0.0..top * 1.1)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("MiB")
        .draw()?;
    chart
        .draw_series(LineSeries::new(rss, COLORS[0].stroke_width(2)))?
        .label("hypervisor RSS (with guest RAM)")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 15, y)], COLORS[0]));
    chart
        .draw_series(LineSeries::new(own, COLORS[2].stroke_width(2)))?
        .label("hypervisor's own memory (RSS less guest RAM)")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 15, y)], COLORS[2]));
    chart
        .draw_series(LineSeries::new(guest, COLORS[4].stroke_width(2)))?
        .label("guest kernel frames in use")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 15, y)], COLORS[4]));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}
