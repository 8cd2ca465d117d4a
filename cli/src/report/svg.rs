//! Inline SVG line charts for the HTML report: a time axis, a linear or
//! logarithmic value axis, series drawn as polylines (broken where a bucket
//! is missing) and shaded bands for spikes. No script, no external assets.

use std::fmt::Write;

use super::esc;

/// One line on a chart.
pub struct Series {
    /// Legend text.
    pub name: &'static str,
    /// Stroke colour (CSS).
    pub color: &'static str,
    /// (x, y) points in x order; `None` breaks the line.
    pub points: Vec<Option<(f64, f64)>>,
}

/// A shaded x range with a label.
pub struct Band {
    /// Start and end, in x units.
    pub from: f64,
    /// End.
    pub to: f64,
    /// Label drawn at the top.
    pub label: String,
    /// Tooltip.
    pub title: String,
}

/// How to draw the value axis.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// Linear from 0.
    Linear,
    /// Base-10 logarithmic.
    Log,
}

/// A chart's frame.
pub struct Chart<'a> {
    /// Heading inside the SVG (also its accessible name).
    pub title: &'a str,
    /// Element id.
    pub id: &'a str,
    /// x range.
    pub x0: f64,
    /// x end.
    pub x1: f64,
    /// Value axis.
    pub scale: Scale,
    /// Formats an x value for tick labels.
    pub x_label: &'a dyn Fn(f64) -> String,
    /// Formats a y value for tick labels.
    pub y_label: &'a dyn Fn(f64) -> String,
}

const W: f64 = 1040.0;
const H: f64 = 260.0;
const LEFT: f64 = 72.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 28.0;
const BOTTOM: f64 = 30.0;

/// Value range and ticks for the y axis.
fn y_axis(scale: Scale, series: &[Series]) -> (f64, f64, Vec<f64>) {
    let ys = series
        .iter()
        .flat_map(|s| s.points.iter().flatten().map(|p| p.1));
    match scale {
        Scale::Linear => {
            let max = ys.fold(0.0f64, f64::max);
            let max = if max > 0.0 { max * 1.1 } else { 1.0 };
            let step = nice_step(max / 5.0);
            let ticks = (0..=10)
                .map(|i| i as f64 * step)
                .take_while(|t| *t <= max)
                .collect();
            (0.0, max, ticks)
        }
        Scale::Log => {
            let (lo, hi) = ys
                .filter(|y| *y > 0.0)
                .fold((f64::MAX, 0.0f64), |(a, b), y| (a.min(y), b.max(y)));
            let (lo, hi) = if hi > 0.0 { (lo, hi) } else { (1.0, 10.0) };
            let lo = 10f64.powf(lo.log10().floor());
            let hi = 10f64.powf(hi.log10().ceil()).max(lo * 10.0);
            let mut ticks = Vec::new();
            let mut t = lo;
            let few = hi / lo <= 100.0;
            while t <= hi * 1.0001 {
                ticks.push(t);
                if few && t * 2.0 < hi {
                    ticks.push(t * 2.0);
                    ticks.push(t * 5.0);
                }
                t *= 10.0;
            }
            ticks.retain(|x| *x <= hi * 1.0001);
            (lo, hi, ticks)
        }
    }
}

/// 1, 2 or 5 times a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    if raw <= 0.0 || !raw.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * p)
}

/// Renders the chart as an `<svg>` element.
pub fn chart(c: &Chart<'_>, series: &[Series], bands: &[Band]) -> String {
    let (y0, y1, yticks) = y_axis(c.scale, series);
    let span = (c.x1 - c.x0).max(1e-9);
    let px = |x: f64| LEFT + (x - c.x0) / span * (W - LEFT - RIGHT);
    let py = |y: f64| {
        let f = match c.scale {
            Scale::Linear => (y - y0) / (y1 - y0).max(1e-12),
            Scale::Log => (y.max(y0).log10() - y0.log10()) / (y1.log10() - y0.log10()).max(1e-12),
        };
        H - BOTTOM - f.clamp(0.0, 1.0) * (H - TOP - BOTTOM)
    };
    let mut s = String::with_capacity(16 << 10);
    let _ = write!(
        s,
        r#"<svg id="{}" class="chart" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{}" xmlns="http://www.w3.org/2000/svg">"#,
        esc(c.id),
        esc(c.title)
    );
    let _ = write!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{}" height="{}" fill="#fcfcfd" stroke="#d0d4da"/>"##,
        W - LEFT - RIGHT,
        H - TOP - BOTTOM
    );
    for b in bands {
        let (a, z) = (px(b.from.max(c.x0)), px(b.to.min(c.x1)));
        let _ = write!(
            s,
            r##"<g class="band"><title>{}</title><rect x="{a:.1}" y="{TOP}" width="{:.1}" height="{}" fill="#fa5252" fill-opacity="0.16"/><text x="{:.1}" y="{}" font-size="11" fill="#c92a2a">{}</text></g>"##,
            esc(&b.title),
            (z - a).max(2.0),
            H - TOP - BOTTOM,
            a + 2.0,
            TOP + 12.0,
            esc(&b.label)
        );
    }
    for t in &yticks {
        let y = py(*t);
        let _ = write!(
            s,
            r##"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#e3e6ea"/><text x="{}" y="{:.1}" font-size="11" text-anchor="end" fill="#495057">{}</text>"##,
            W - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            esc(&(c.y_label)(*t))
        );
    }
    let xticks = 8;
    for i in 0..=xticks {
        let x = c.x0 + span * f64::from(i) / f64::from(xticks);
        let anchor = match i {
            0 => "start",
            i if i == xticks => "end",
            _ => "middle",
        };
        let _ = write!(
            s,
            r##"<text x="{:.1}" y="{}" font-size="11" text-anchor="{anchor}" fill="#495057">{}</text>"##,
            px(x),
            H - BOTTOM + 16.0,
            esc(&(c.x_label)(x))
        );
    }
    for sr in series {
        let mut d = String::new();
        let mut pen = false;
        for p in &sr.points {
            match p {
                Some((x, y)) => {
                    let _ = write!(
                        d,
                        "{}{:.1},{:.1} ",
                        if pen { "L" } else { "M" },
                        px(*x),
                        py(*y)
                    );
                    pen = true;
                }
                None => pen = false,
            }
        }
        let _ = write!(
            s,
            r#"<path class="series" data-name="{}" d="{}" fill="none" stroke="{}" stroke-width="1.6"/>"#,
            esc(sr.name),
            d.trim_end(),
            sr.color
        );
    }
    let mut lx = LEFT + 8.0;
    let _ = write!(
        s,
        r##"<text x="{LEFT}" y="16" font-size="13" font-weight="600" fill="#212529">{}</text>"##,
        esc(c.title)
    );
    lx += 7.5 * c.title.len() as f64 + 16.0;
    for sr in series {
        let _ = write!(
            s,
            r#"<rect x="{lx:.1}" y="7" width="14" height="4" fill="{}"/><text x="{:.1}" y="14" font-size="11" fill="{}">{}</text>"#,
            sr.color,
            lx + 18.0,
            sr.color,
            esc(sr.name)
        );
        lx += 30.0 + 7.0 * sr.name.len() as f64;
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_steps() {
        assert_eq!(nice_step(0.7), 1.0);
        assert_eq!(nice_step(1.3), 2.0);
        assert_eq!(nice_step(3.0), 5.0);
        assert_eq!(nice_step(60.0), 100.0);
    }

    #[test]
    fn log_axis_spans_decades_around_the_data() {
        let s = [Series {
            name: "p99",
            color: "#000",
            points: vec![Some((0.0, 3e4)), None, Some((1.0, 4e7))],
        }];
        let (lo, hi, ticks) = y_axis(Scale::Log, &s);
        assert_eq!((lo, hi), (1e4, 1e8));
        assert_eq!(ticks.len(), 5);
    }

    #[test]
    fn a_gap_breaks_the_line_and_names_are_escaped() {
        let s = [Series {
            name: "a<b",
            color: "#000",
            points: vec![Some((0.0, 1.0)), Some((1.0, 2.0)), None, Some((2.0, 1.0))],
        }];
        let c = Chart {
            title: "t",
            id: "c",
            x0: 0.0,
            x1: 2.0,
            scale: Scale::Linear,
            x_label: &|x| format!("{x}"),
            y_label: &|y| format!("{y}"),
        };
        let svg = chart(&c, &s, &[]);
        assert_eq!(svg.matches(" M").count() + svg.matches("\"M").count(), 2);
        assert!(svg.contains("a&lt;b") && !svg.contains("a<b"));
    }
}
