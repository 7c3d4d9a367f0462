//! The PNG chart of `herald-bench compare`: one panel per headline figure, one bar per
//! server, on a logarithmic axis (the servers differ by orders of magnitude).
//!
//! Text is rendered with `ab_glyph` from a TrueType file found at run time (DejaVu Sans from
//! Debian's `fonts-dejavu-core`, or `HERALD_CHART_FONT`), so no system font library is
//! linked.

use std::path::{Path, PathBuf};

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{register_font, FontStyle};

/// Fonts tried in order when `HERALD_CHART_FONT` is not set.
const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
];
/// The family name panels ask for (registered from the font file).
const FAMILY: &str = "sans-serif";
/// Pixels per panel.
const PANEL: (u32, u32) = (520, 400);
/// Panels per row.
const COLUMNS: usize = 3;

/// Why a chart could not be drawn.
#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    /// No usable TrueType font.
    #[error("no TrueType font found (tried {tried}); install fonts-dejavu-core or set HERALD_CHART_FONT")]
    NoFont {
        /// The paths tried.
        tried: String,
    },
    /// The font file could not be parsed.
    #[error("{0}: not a usable TrueType font")]
    BadFont(PathBuf),
    /// Nothing to draw.
    #[error("no figures to chart")]
    Empty,
    /// Drawing or encoding failed.
    #[error("drawing {path}: {message}")]
    Draw {
        /// The PNG being written.
        path: PathBuf,
        /// What plotters reported.
        message: String,
    },
}

/// One bar: a server's figure.
#[derive(Debug, Clone)]
pub struct Bar {
    /// Server name (x-axis label).
    pub label: String,
    /// The figure (> 0 to be drawn; others are labelled "n/a").
    pub value: f64,
    /// Fill colour.
    pub color: RGBColor,
}

/// One panel: a figure compared across servers.
#[derive(Debug, Clone)]
pub struct Panel {
    /// Panel title (what and in which unit).
    pub title: String,
    /// Whether smaller is better (shown in the title).
    pub lower_is_better: bool,
    /// One bar per server.
    pub bars: Vec<Bar>,
}

/// Registers the chart font once per process.
fn load_font() -> Result<(), ChartError> {
    static LOADED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let outcome = LOADED.get_or_init(|| {
        let candidates: Vec<PathBuf> = match std::env::var_os("HERALD_CHART_FONT") {
            Some(path) => vec![path.into()],
            None => FONT_CANDIDATES.iter().map(PathBuf::from).collect(),
        };
        let Some((path, bytes)) = candidates
            .iter()
            .find_map(|p| std::fs::read(p).ok().map(|b| (p.clone(), b)))
        else {
            return Err(candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "));
        };
        // plotters keeps registered fonts for the life of the process.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        register_font(FAMILY, FontStyle::Normal, bytes)
            .map_err(|_| format!("bad:{}", path.display()))
    });
    match outcome {
        Ok(()) => Ok(()),
        Err(e) => match e.strip_prefix("bad:") {
            Some(path) => Err(ChartError::BadFont(path.into())),
            None => Err(ChartError::NoFont { tried: e.clone() }),
        },
    }
}

/// Human form of a figure: 3 significant digits with k/M suffixes.
pub fn short(value: f64) -> String {
    let (v, suffix) = if value >= 1e6 {
        (value / 1e6, "M")
    } else if value >= 1e3 {
        (value / 1e3, "k")
    } else {
        (value, "")
    };
    let digits = if v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else {
        2
    };
    format!("{v:.digits$}{suffix}")
}

/// Draws `panels` into a PNG at `path`, under `title`.
pub fn draw(path: &Path, title: &str, panels: &[Panel]) -> Result<(), ChartError> {
    if panels.is_empty() {
        return Err(ChartError::Empty);
    }
    load_font()?;
    let draw_err = |e: &dyn std::fmt::Display| ChartError::Draw {
        path: path.to_owned(),
        message: e.to_string(),
    };
    let rows = panels.len().div_ceil(COLUMNS);
    let header = 50;
    let size = (PANEL.0 * COLUMNS as u32, PANEL.1 * rows as u32 + header);
    let root = BitMapBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw_err(&e))?;
    let (top, body) = root.split_vertically(header);
    top.draw(&Text::new(
        title.to_owned(),
        (size.0 as i32 / 2, 14),
        TextStyle::from((FAMILY, 24).into_font()).pos(Pos::new(HPos::Center, VPos::Top)),
    ))
    .map_err(|e| draw_err(&e))?;
    for (area, panel) in body.split_evenly((rows, COLUMNS)).iter().zip(panels) {
        draw_panel(area, panel).map_err(|e| draw_err(&e))?;
    }
    root.present().map_err(|e| draw_err(&e))?;
    Ok(())
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

fn draw_panel(
    area: &Area<'_>,
    panel: &Panel,
) -> Result<(), DrawingAreaErrorKind<<BitMapBackend<'static> as DrawingBackend>::ErrorType>> {
    let drawn: Vec<f64> = panel
        .bars
        .iter()
        .map(|b| b.value)
        .filter(|v| v.is_finite() && *v > 0.0)
        .collect();
    let (lo, hi) = drawn
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    let (lo, hi) = if drawn.is_empty() {
        (0.1, 10.0)
    } else {
        (lo / 4.0, hi * 4.0)
    };
    let caption = format!(
        "{} ({} is better)",
        panel.title,
        if panel.lower_is_better {
            "lower"
        } else {
            "higher"
        }
    );
    let labels: Vec<String> = panel.bars.iter().map(|b| b.label.clone()).collect();
    // A segmented 0..n axis has n + 1 slots; 0..n-1 has one per bar.
    let last = (panel.bars.len() as u32).max(2) - 1;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FAMILY, 17))
        .margin(12)
        .x_label_area_size(28)
        .y_label_area_size(58)
        .build_cartesian_2d((0u32..last).into_segmented(), (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(WHITE.mix(0.0))
        .label_style((FAMILY, 14))
        .y_labels(6)
        .y_label_formatter(&|v| short(*v))
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => labels.get(*i as usize).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .draw()?;
    for (i, bar) in (0u32..).zip(&panel.bars) {
        let ok = bar.value.is_finite() && bar.value > 0.0;
        if ok {
            chart.draw_series(
                Histogram::vertical(&chart)
                    .style(bar.color.filled())
                    .margin(28)
                    .baseline(lo)
                    .data([(i, bar.value)]),
            )?;
        }
        let (text, at) = if ok {
            (short(bar.value), bar.value)
        } else {
            ("n/a".to_owned(), lo * 1.5)
        };
        chart.draw_series(std::iter::once(Text::new(
            text,
            (SegmentValue::CenterOf(i), at),
            TextStyle::from((FAMILY, 15).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom)),
        )))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_figures() {
        assert_eq!(short(931_094.0), "931k");
        assert_eq!(short(1_234_567.0), "1.23M");
        assert_eq!(short(9_600.0), "9.60k");
        assert_eq!(short(42.25), "42.2");
        assert_eq!(short(0.5), "0.50");
    }

    #[test]
    fn draws_a_png_with_every_panel() {
        if FONT_CANDIDATES.iter().all(|p| !Path::new(p).exists())
            && std::env::var_os("HERALD_CHART_FONT").is_none()
        {
            // The font error is the documented outcome without fonts; check it.
            let err = draw(Path::new("/nonexistent.png"), "t", &[]).unwrap_err();
            assert!(matches!(err, ChartError::Empty));
            return;
        }
        let dir = std::env::temp_dir().join(format!("herald-chart-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("chart.png");
        let bar = |label: &str, value| Bar {
            label: label.into(),
            value,
            color: RGBColor(30, 90, 200),
        };
        let panels = vec![
            Panel {
                title: "max deliveries/s".into(),
                lower_is_better: false,
                bars: vec![bar("herald", 800_000.0), bar("legacy", 5_000.0)],
            },
            Panel {
                title: "p99 ms".into(),
                lower_is_better: true,
                bars: vec![bar("herald", 20.0), bar("legacy", f64::NAN)],
            },
        ];
        draw(&path, "test chart", &panels).unwrap();
        let png = std::fs::read(&path).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        // Width and height from the IHDR chunk: 3 panel columns, 1 row plus the header.
        let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
        let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
        assert_eq!((width, height), (PANEL.0 * 3, PANEL.1 + 50));
        assert!(matches!(draw(&path, "t", &[]), Err(ChartError::Empty)));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
