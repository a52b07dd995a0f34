//! Charts of stored measurements: a metric by iteration, one line per method (SVG, via
//! plotters; SVG needs no font files, which a PNG backend would).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Result};
use plotters::prelude::*;

use crate::store::evaluations::Evaluation;

/// Points (iteration, value) per method; measurements of checkpoints srlm does not know
/// (no iteration) or without the metric are left out. Several of one iteration and
/// method are averaged.
pub fn series(evaluations: &[Evaluation], metric: &str) -> BTreeMap<String, Vec<(i32, f64)>> {
    let mut sums: BTreeMap<String, BTreeMap<i32, (f64, usize)>> = BTreeMap::new();
    for e in evaluations {
        if let (Some(iteration), Some(value)) = (e.iteration, e.metrics[metric].as_f64()) {
            let slot = sums.entry(e.method.clone()).or_default().entry(iteration).or_default();
            slot.0 += value;
            slot.1 += 1;
        }
    }
    sums.into_iter().map(|(method, points)| (method, points.into_iter().map(|(i, (s, n))| (i, s / n as f64)).collect())).collect()
}

pub fn write_svg(path: &Path, title: &str, metric: &str, series: &BTreeMap<String, Vec<(i32, f64)>>) -> Result<()> {
    if path.extension().is_none_or(|e| e != "svg") {
        bail!("{}: charts are written as SVG; name the file *.svg", path.display());
    }
    let points = series.values().flatten();
    let (mut lo_x, mut hi_x, mut lo_y, mut hi_y) = (0i32, 1i32, 0f64, 1f64);
    for &(x, y) in points {
        (lo_x, hi_x) = (lo_x.min(x), hi_x.max(x));
        (lo_y, hi_y) = (lo_y.min(y), hi_y.max(y));
    }
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(lo_x..hi_x, lo_y..hi_y)?;
    chart.configure_mesh().x_desc("iteration").y_desc(metric).x_labels((hi_x - lo_x + 1) as usize).draw()?;
    for (i, (method, points)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(points.iter().map(|&(x, y)| (x, y)), color.stroke_width(2)))?
            .label(method.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        chart.draw_series(points.iter().map(|&(x, y)| Circle::new((x, y), 4, color.filled())))?;
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn evaluation(method: &str, iteration: Option<i32>, metrics: serde_json::Value) -> Evaluation {
        Evaluation {
            id: 0,
            kind: "rm".into(),
            checkpoint_id: iteration.map(i64::from),
            iteration,
            opponent_checkpoint_id: None,
            subject: String::new(),
            opponent: None,
            method: method.into(),
            dataset: String::new(),
            items: 1,
            metrics,
            config: serde_json::json!({}),
            created_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn series_average_per_iteration_and_skip_what_cannot_be_placed() {
        let rows = [
            evaluation("sample", Some(0), serde_json::json!({"spearman": 0.2})),
            evaluation("sample", Some(0), serde_json::json!({"spearman": 0.4})),
            evaluation("sample", Some(1), serde_json::json!({"spearman": 0.5})),
            evaluation("expected", Some(1), serde_json::json!({"spearman": null})),
            evaluation("expected", None, serde_json::json!({"spearman": 0.9})),
        ];
        let s = series(&rows, "spearman");
        assert_eq!(s.len(), 1);
        let sample = &s["sample"];
        assert_eq!(sample.len(), 2);
        assert!((sample[0].1 - 0.3).abs() < 1e-12 && sample[1] == (1, 0.5));
    }

    #[test]
    fn the_chart_is_an_svg_with_a_line_per_method() {
        let dir = std::env::temp_dir().join(format!("srlm-chart-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut s = BTreeMap::new();
        s.insert("sample".to_string(), vec![(0, 0.39), (1, 0.56), (2, 0.61)]);
        s.insert("expected".to_string(), vec![(0, 0.41), (1, 0.52)]);
        let path = dir.join("chart.svg");
        write_svg(&path, "rm: pairwise_accuracy by iteration", "pairwise_accuracy", &s).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("sample") && svg.contains("expected"));
        assert_eq!(svg.matches("<circle").count(), 5, "one marker per point");
        assert!(write_svg(&dir.join("chart.png"), "t", "m", &s).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
