//! The book's charts: log-log line charts drawn as SVG with `plotters`.
//!
//! Made to be read on the white card the book's CSS puts under every SVG
//! image, in the light and the dark themes: a white background, the
//! Okabe-Ito colours (distinct for colour-blind readers too), a different
//! marker for each series, axis titles with units, a legend, and a footer
//! that names the machine and the date.

use std::path::Path;

use plotters::prelude::*;

use crate::Result;

/// One line of a chart.
pub struct Series {
    pub label: String,
    /// (x, y), both > 0 (log axes).
    pub points: Vec<(f64, f64)>,
    /// Index into the colour and marker tables; 0 is black, for floors.
    pub style: usize,
}

pub struct Chart {
    pub title: String,
    pub x_desc: String,
    pub y_desc: String,
    pub footer: String,
    pub series: Vec<Series>,
    /// A dashed horizontal line at this y, with its legend label.
    pub reference: Option<(f64, String)>,
    /// The x axis is logarithmic in this base: 10 for lengths (ticks at 10,
    /// 100, 1k ...), 2 for page counts (256, 512, 1024 ...).
    pub x_log_base: f64,
}

/// Okabe & Ito's palette, black first.
const COLOURS: [RGBColor; 8] = [
    RGBColor(0, 0, 0),
    RGBColor(0, 114, 178),   // blue
    RGBColor(213, 94, 0),    // vermillion
    RGBColor(0, 158, 115),   // bluish green
    RGBColor(204, 121, 167), // reddish purple
    RGBColor(230, 159, 0),   // orange
    RGBColor(86, 180, 233),  // sky blue
    RGBColor(120, 120, 120), // grey (Okabe-Ito's yellow is too pale on white)
];

const FONT: &str = "sans-serif";
const WIDTH: u32 = 960;
const HEIGHT: u32 = 600;
const FOOTER: u32 = 44;
/// The plotting area's height, roughly: the figure less the caption, the
/// x labels, the margins and the footer.
const PLOT_HEIGHT: f64 = (HEIGHT - FOOTER - 56 - 40 - 28) as f64;

pub fn draw(path: &Path, chart: &Chart) -> Result<()> {
    draw_svg(path, chart).map_err(|e| format!("{}: {e}", path.display()).into())
}

fn draw_svg(path: &Path, chart: &Chart) -> std::result::Result<(), String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let points: Vec<(f64, f64)> = chart
        .series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .chain(chart.reference.iter().map(|(y, _)| (f64::NAN, *y)))
        .filter(|&(_, y)| y > 0.0 && y.is_finite())
        .collect();
    let xs: Vec<f64> = chart
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .filter(|x| *x > 0.0)
        .collect();
    if points.is_empty() || xs.is_empty() {
        return Err("nothing to draw".into());
    }
    // The x axis is linear in log(x): ticks land on whole powers of the base.
    let base = chart.x_log_base;
    let (x_min, x_max) = bounds(xs.iter().copied());
    let (t_min, t_max) = (x_min.log(base), x_max.log(base));
    let x_range = (t_min - 0.35)..(t_max + 0.35);
    // The y axis is logarithmic. The legend sits in the top band of the plot,
    // kept empty: the data stays below it, so no point hides behind it.
    let (y_min, y_max) = bounds(points.iter().map(|p| p.1));
    let entries = chart.series.len() + usize::from(chart.reference.is_some());
    let legend_share = (24.0 + 20.0 * entries as f64) / PLOT_HEIGHT;
    // Down to the power of ten below the data, so the lowest values have a
    // labelled line under them.
    let lo = (y_min / 1.2).log10().floor();
    let data_hi = (y_max * 1.6).log10();
    let hi = lo + (data_hi - lo) / (1.0 - legend_share).max(0.3);
    let y_range = 10f64.powf(lo)..10f64.powf(hi);

    let root = SVGBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (plot, footer) = root.split_vertically(HEIGHT - FOOTER);
    let x_label = |t: &f64| {
        let whole = t.round();
        if (t - whole).abs() > 1e-6 {
            String::new()
        } else if base == 10.0 {
            count(base.powf(whole))
        } else {
            plain(base.powf(whole))
        }
    };
    let y_label = |v: &f64| plain(*v);
    let mut ctx = ChartBuilder::on(&plot)
        .caption(&chart.title, (FONT, 22))
        .margin(14)
        .x_label_area_size(56)
        .y_label_area_size(86)
        .build_cartesian_2d(x_range, y_range.log_scale())
        .map_err(|e| err(&e))?;
    let mut mesh = ctx.configure_mesh();
    mesh.x_desc(&chart.x_desc)
        .y_desc(&chart.y_desc)
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 16))
        .x_label_formatter(&x_label)
        .x_labels(((t_max - t_min).round() as usize + 2).max(2))
        .x_max_light_lines(0)
        .y_label_formatter(&y_label)
        .bold_line_style(RGBColor(215, 215, 215))
        .light_line_style(RGBColor(242, 242, 242));
    mesh.draw().map_err(|e| err(&e))?;

    if let Some((y, label)) = &chart.reference {
        let grey = RGBColor(90, 90, 90);
        let line = [(t_min - 0.35, *y), (t_max + 0.35, *y)];
        ctx.draw_series(DashedLineSeries::new(line, 8, 6, grey.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(label)
            .legend(move |(x, y)| {
                EmptyElement::at((x, y))
                    + PathElement::new(vec![(0, 0), (9, 0)], grey.stroke_width(2))
                    + PathElement::new(vec![(13, 0), (22, 0)], grey.stroke_width(2))
            });
    }

    for series in &chart.series {
        let colour = COLOURS[series.style % COLOURS.len()];
        let line = colour.stroke_width(if series.style == 0 { 3 } else { 2 });
        let shape = series.style % 5;
        let pts: Vec<(f64, f64)> = series
            .points
            .iter()
            .copied()
            .filter(|&(x, y)| x > 0.0 && y > 0.0 && y.is_finite())
            .map(|(x, y)| (x.log(base), y))
            .collect();
        ctx.draw_series(LineSeries::new(pts.clone(), line))
            .map_err(|e| err(&e))?
            .label(&series.label)
            .legend(move |(x, y)| {
                EmptyElement::at((x, y))
                    + PathElement::new(vec![(0, 0), (22, 0)], line)
                    + marker(shape, (11, 0), colour)
            });
        ctx.draw_series(
            pts.iter()
                .map(|&p| EmptyElement::at(p) + marker(shape, (0, 0), colour)),
        )
        .map_err(|e| err(&e))?;
    }

    ctx.configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .margin(12)
        .legend_area_size(30)
        .label_font((FONT, 15))
        .background_style(WHITE.mix(0.92))
        .border_style(RGBColor(160, 160, 160))
        .draw()
        .map_err(|e| err(&e))?;

    let style = TextStyle::from((FONT, 13)).color(&RGBColor(70, 70, 70));
    for (i, line) in chart.footer.lines().take(2).enumerate() {
        footer
            .draw_text(line, &style, (14, 6 + 18 * i as i32))
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// A marker centred on `at` (pixels, relative to the element's anchor).
fn marker<DB: DrawingBackend>(
    shape: usize,
    at: (i32, i32),
    colour: RGBColor,
) -> DynElement<'static, DB, (i32, i32)> {
    let (x, y) = at;
    match shape {
        0 => Rectangle::new([(x - 4, y - 4), (x + 4, y + 4)], colour.filled()).into_dyn(),
        1 => Circle::new((x, y), 4, colour.filled()).into_dyn(),
        2 => TriangleMarker::new((x, y), 6, colour.filled()).into_dyn(),
        3 => Cross::new((x, y), 5, colour.stroke_width(2)).into_dyn(),
        _ => Circle::new((x, y), 5, colour.stroke_width(2)).into_dyn(),
    }
}

fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        })
}

/// `10`, `100`, `1k`, `10k`, `1M`: for lengths and page counts.
fn count(v: f64) -> String {
    let r = v.round();
    if (r - v).abs() > 1e-6 * v.max(1.0) {
        return String::new();
    }
    let n = r as u64;
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1_000 && n % 1_000 == 0 => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}

/// `0.01`, `0.1`, `1`, `10`, `1000`: log-axis tick labels.
fn plain(v: f64) -> String {
    if v >= 1.0 {
        format!("{}", v.round() as u64)
    } else {
        let decimals = (-v.log10().floor()) as usize;
        format!("{v:.decimals$}")
    }
}

// ---------------------------------------------------------------------------
// Numbers for people: the tables' and charts' digits
// ---------------------------------------------------------------------------

/// Three significant digits: `0.0123`, `1.23`, `123`, `12300`.
pub fn sig3(v: f64) -> String {
    sig(v, 3)
}

pub fn sig2(v: f64) -> String {
    sig(v, 2)
}

pub fn sig(v: f64, digits: i32) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let magnitude = v.abs().log10().floor() as i32;
    let decimals = (digits - 1 - magnitude).max(0) as usize;
    let scale = 10f64.powi(magnitude - digits + 1);
    let rounded = if magnitude >= digits - 1 {
        (v / scale).round() * scale
    } else {
        v
    };
    format!("{rounded:.decimals$}")
}

/// `1000000` -> `1,000,000`.
pub fn group_digits(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_for_people() {
        assert_eq!(sig3(20.2095), "20.2");
        assert_eq!(sig3(0.012345), "0.0123");
        assert_eq!(sig3(123456.0), "123000");
        assert_eq!(sig2(-0.0567), "-0.057");
        assert_eq!(group_digits(1_000_000), "1,000,000");
        assert_eq!(group_digits(100), "100");
    }

    #[test]
    fn tick_labels_are_short() {
        assert_eq!(count(10.0), "10");
        assert_eq!(count(1_000.0), "1k");
        assert_eq!(count(1_000_000.0), "1M");
        assert_eq!(count(16384.0), "16384");
        assert_eq!(plain(0.01), "0.01");
        assert_eq!(plain(100.0), "100");
    }
}
