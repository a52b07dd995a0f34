//! Charts of stored measurements: a metric by iteration, one line per method, as SVG or
//! PNG (plotters). Text is drawn with a font the system has (Debian:
//! `fonts-dejavu-core`; `SRLM_CHART_FONT` names another file).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context, Result};
use plotters::coord::Shift;
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

/// Chart size in pixels (PNG) or user units (SVG).
pub const SIZE: (u32, u32) = (800, 480);

/// Where the usual sans-serif fonts live on Debian/Ubuntu, Fedora, Arch and macOS.
const FONT_FILES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
];

/// The first font file that exists: `SRLM_CHART_FONT`, else the usual places.
fn find_font(explicit: Option<PathBuf>, candidates: &[&str]) -> Result<PathBuf> {
    if let Some(path) = explicit {
        return if path.is_file() { Ok(path) } else { bail!("SRLM_CHART_FONT={}: no such file", path.display()) };
    }
    candidates.iter().map(PathBuf::from).find(|p| p.is_file()).ok_or_else(|| {
        anyhow!(
            "no font to draw the chart's text: install Debian's `fonts-dejavu-core` (apt-get install fonts-dejavu-core) \
             or point SRLM_CHART_FONT at a .ttf file; looked in {}",
            candidates.join(", ")
        )
    })
}

/// Registers the system font as plotters' `sans-serif`, once per process.
fn load_font() -> Result<()> {
    static LOADED: OnceLock<Result<(), String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            let path = find_font(std::env::var_os("SRLM_CHART_FONT").map(PathBuf::from), FONT_FILES).map_err(|e| e.to_string())?;
            let bytes = std::fs::read(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
            plotters::style::register_font("sans-serif", FontStyle::Normal, Box::leak(bytes.into_boxed_slice()))
                .map_err(|_| format!("{} is not a font plotters can read", path.display()))
        })
        .clone()
        .map_err(|e| anyhow!(e))
}

/// Draws the chart to `path`, as SVG or PNG by its extension.
pub fn write(path: &Path, title: &str, metric: &str, series: &BTreeMap<String, Vec<(i32, f64)>>) -> Result<()> {
    let extension = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("svg") => {
            load_font()?;
            draw(SVGBackend::new(path, SIZE).into_drawing_area(), title, metric, series)
        }
        Some("png") => {
            load_font()?;
            let (width, height) = SIZE;
            let mut pixels = vec![0u8; (width * height * 3) as usize];
            draw(BitMapBackend::with_buffer(&mut pixels, SIZE).into_drawing_area(), title, metric, series)?;
            image::save_buffer_with_format(path, &pixels, width, height, image::ExtendedColorType::Rgb8, image::ImageFormat::Png)
                .with_context(|| format!("writing {}", path.display()))
        }
        _ => bail!("{}: charts are written as SVG or PNG; name the file *.svg or *.png", path.display()),
    }
}

fn draw<DB>(root: DrawingArea<DB, Shift>, title: &str, metric: &str, series: &BTreeMap<String, Vec<(i32, f64)>>) -> Result<()>
where
    DB: DrawingBackend,
    DB::ErrorType: 'static,
{
    let points = series.values().flatten();
    let (mut lo_x, mut hi_x, mut lo_y, mut hi_y) = (0i32, 1i32, 0f64, 1f64);
    for &(x, y) in points {
        (lo_x, hi_x) = (lo_x.min(x), hi_x.max(x));
        (lo_y, hi_y) = (lo_y.min(y), hi_y.max(y));
    }
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
        write(&path, "rm: pairwise_accuracy by iteration", "pairwise_accuracy", &s).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("sample") && svg.contains("expected"));
        assert_eq!(svg.matches("<circle").count(), 5, "one marker per point");
        assert!(write(&dir.join("chart.gif"), "t", "m", &s).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_png_chart_decodes_at_its_size_with_the_lines_drawn() {
        let dir = std::env::temp_dir().join(format!("srlm-png-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut s = BTreeMap::new();
        s.insert("sample".to_string(), vec![(0, 0.39), (1, 0.56), (2, 0.61)]);
        let path = dir.join("chart.png");
        write(&path, "rm: pairwise_accuracy by iteration", "pairwise_accuracy", &s).unwrap();
        let png = image::open(&path).unwrap().to_rgb8();
        assert_eq!(png.dimensions(), SIZE);
        let white = png.pixels().filter(|p| p.0 == [255, 255, 255]).count();
        let colored = png.pixels().filter(|p| p.0[0] != p.0[1] || p.0[1] != p.0[2]).count();
        assert!(white > png.len() / 6, "mostly a white background");
        assert!(colored > 100, "the series is drawn in colour ({colored} pixels)");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn without_a_font_the_error_names_the_package_to_install() {
        let err = find_font(None, &["/no/such/font.ttf"]).unwrap_err().to_string();
        assert!(err.contains("fonts-dejavu-core") && err.contains("SRLM_CHART_FONT") && err.contains("/no/such/font.ttf"), "{err}");
        let err = find_font(Some("/no/such.ttf".into()), FONT_FILES).unwrap_err().to_string();
        assert!(err.contains("/no/such.ttf"), "{err}");
    }
}
