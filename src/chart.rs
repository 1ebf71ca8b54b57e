//! A hand-written SVG line chart: tokens per second used against the limit, over time.

use std::fmt::Write as _;
use std::time::Duration;

/// One line of the chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The legend text.
    pub label: String,
    /// An SVG colour, such as `#d62728`.
    pub color: String,
    /// Drawn dashed (for limits and reference lines).
    pub dashed: bool,
    /// `(x, y)` points, x ascending.
    pub points: Vec<(f64, f64)>,
}

impl Series {
    /// A solid line.
    pub fn line(
        label: impl Into<String>,
        color: impl Into<String>,
        points: Vec<(f64, f64)>,
    ) -> Self {
        Series {
            label: label.into(),
            color: color.into(),
            dashed: false,
            points,
        }
    }

    /// A dashed horizontal line at `y` from `x0` to `x1`.
    pub fn limit(
        label: impl Into<String>,
        color: impl Into<String>,
        y: f64,
        x0: f64,
        x1: f64,
    ) -> Self {
        Series {
            label: label.into(),
            color: color.into(),
            dashed: true,
            points: vec![(x0, y), (x1, y)],
        }
    }
}

/// Tokens per second over time from `(when, tokens)` events: the tokens of the events
/// in each `bin`, divided by the bin's length, plotted at the bin's end; bins cover
/// `0..end`.
///
/// ```
/// use std::time::Duration;
/// use ratelayer_suite::chart::rate_per_second;
/// let s = Duration::from_secs;
/// let r = rate_per_second(&[(s(0), 100), (s(1), 100), (s(3), 50)], s(2), s(4));
/// assert_eq!(r, vec![(0.0, 0.0), (2.0, 100.0), (4.0, 25.0)]);
/// ```
pub fn rate_per_second(
    events: &[(Duration, u64)],
    bin: Duration,
    end: Duration,
) -> Vec<(f64, f64)> {
    let bin_s = bin.as_secs_f64().max(1e-3);
    let bins = (end.as_secs_f64() / bin_s).ceil().max(1.0) as usize;
    let mut sums = vec![0u64; bins];
    for (t, tokens) in events {
        let i = ((t.as_secs_f64() / bin_s) as usize).min(bins - 1);
        sums[i] += tokens;
    }
    let mut out = Vec::with_capacity(bins + 1);
    out.push((0.0, 0.0));
    for (i, sum) in sums.iter().enumerate() {
        out.push(((i + 1) as f64 * bin_s, *sum as f64 / bin_s));
    }
    out
}

/// Tokens per second averaged over the trailing `window` (what a per-window limit
/// judges: a client inside a limit of `L` per `window` never goes above
/// `L / window`), sampled every `step` over `0..=end`. Time before 0 counts as idle.
///
/// ```
/// use std::time::Duration;
/// use ratelayer_suite::chart::trailing_rate;
/// let s = Duration::from_secs;
/// let r = trailing_rate(&[(s(0), 600), (s(30), 600)], s(60), s(30), s(90));
/// assert_eq!(r, vec![(0.0, 10.0), (30.0, 20.0), (60.0, 10.0), (90.0, 0.0)]);
/// ```
pub fn trailing_rate(
    events: &[(Duration, u64)],
    window: Duration,
    step: Duration,
    end: Duration,
) -> Vec<(f64, f64)> {
    let (w, step_s) = (window.as_secs_f64().max(1e-3), step.as_secs_f64().max(1e-3));
    let steps = (end.as_secs_f64() / step_s).floor() as usize;
    (0..=steps)
        .map(|i| {
            let t = i as f64 * step_s;
            // The window (t - w, t].
            let sum: u64 = events
                .iter()
                .filter(|(at, _)| {
                    let a = at.as_secs_f64();
                    a <= t + 1e-9 && a > t - w + 1e-9
                })
                .map(|(_, tokens)| tokens)
                .sum();
            (t, sum as f64 / w)
        })
        .collect()
}

/// A "nice" step (1, 2 or 5 times a power of ten) giving about `target` ticks over
/// `span`.
fn nice_step(span: f64, target: f64) -> f64 {
    if span <= 0.0 || !span.is_finite() {
        return 1.0;
    }
    let raw = span / target;
    let pow = 10f64.powf(raw.log10().floor());
    let m = raw / pow;
    let m = if m <= 1.0 {
        1.0
    } else if m <= 2.0 {
        2.0
    } else if m <= 5.0 {
        5.0
    } else {
        10.0
    };
    m * pow
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A complete SVG document: the `series` as lines over shared axes, with ticks, axis
/// labels and a legend.
///
/// ```
/// use ratelayer_suite::chart::{svg_chart, Series};
/// let svg = svg_chart("tokens/s", "time (s)", "tokens per second", &[
///     Series::line("ratelayer", "#2ca02c", vec![(0.0, 0.0), (10.0, 900.0)]),
///     Series::limit("limit", "#000", 1000.0, 0.0, 10.0),
/// ]);
/// assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
/// assert!(svg.contains("ratelayer") && svg.contains("stroke-dasharray"));
/// ```
pub fn svg_chart(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    const W: f64 = 900.0;
    const H: f64 = 420.0;
    const LEFT: f64 = 80.0;
    const RIGHT: f64 = 20.0;
    const TOP: f64 = 40.0;
    const BOTTOM: f64 = 90.0;
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);

    let all = series.iter().flat_map(|s| s.points.iter());
    let x_max = all.clone().map(|p| p.0).fold(0.0, f64::max).max(1.0);
    let y_max = all.map(|p| p.1).fold(0.0, f64::max).max(1.0) * 1.1;
    let (xs, ys) = (nice_step(x_max, 10.0), nice_step(y_max, 6.0));
    let (x_top, y_top) = ((x_max / xs).ceil() * xs, (y_max / ys).ceil() * ys);
    let px = |x: f64| LEFT + x / x_top * pw;
    let py = |y: f64| TOP + ph - y / y_top * ph;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15" font-weight="bold">{}</text>"#,
        W / 2.0,
        escape(title)
    );
    // Grid and ticks.
    let mut y = 0.0;
    while y <= y_top + ys / 2.0 {
        let _ = writeln!(
            s,
            "<line x1=\"{LEFT}\" y1=\"{0:.1}\" x2=\"{1:.1}\" y2=\"{0:.1}\" stroke=\"#e5e5e5\"/><text x=\"{2}\" y=\"{3:.1}\" text-anchor=\"end\">{4}</text>",
            py(y),
            LEFT + pw,
            LEFT - 6.0,
            py(y) + 4.0,
            y
        );
        y += ys;
    }
    let mut x = 0.0;
    while x <= x_top + xs / 2.0 {
        let _ = writeln!(
            s,
            "<line x1=\"{0:.1}\" y1=\"{TOP}\" x2=\"{0:.1}\" y2=\"{1:.1}\" stroke=\"#f0f0f0\"/><text x=\"{0:.1}\" y=\"{2:.1}\" text-anchor=\"middle\">{3}</text>",
            px(x),
            TOP + ph,
            TOP + ph + 16.0,
            x
        );
        x += xs;
    }
    let _ = writeln!(
        s,
        r#"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"#
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        LEFT + pw / 2.0,
        TOP + ph + 36.0,
        escape(x_label)
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(18 {}) rotate(-90)" text-anchor="middle">{}</text>"#,
        TOP + ph / 2.0,
        escape(y_label)
    );
    // Lines and legend.
    for (i, line) in series.iter().enumerate() {
        let pts: Vec<String> = line
            .points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
            .collect();
        let dash = if line.dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{}" stroke-width="2"{dash} points="{}"/>"#,
            escape(&line.color),
            pts.join(" ")
        );
        let lx = LEFT + (i % 3) as f64 * (pw / 3.0);
        let ly = TOP + ph + 58.0 + (i / 3) as f64 * 18.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{}" stroke-width="2"{dash}/><text x="{}" y="{}">{}</text>"#,
            lx + 24.0,
            escape(&line.color),
            lx + 30.0,
            ly + 4.0,
            escape(&line.label)
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_nice() {
        assert_eq!(nice_step(100.0, 10.0), 10.0);
        assert_eq!(nice_step(47.0, 10.0), 5.0);
        assert_eq!(nice_step(1_700.0, 6.0), 500.0);
    }

    #[test]
    fn labels_are_escaped_and_points_scaled_into_the_plot() {
        let svg = svg_chart(
            "a<b",
            "x",
            "y",
            &[Series::line("r&d", "#123", vec![(0.0, 0.0), (10.0, 10.0)])],
        );
        assert!(svg.contains("a&lt;b") && svg.contains("r&amp;d"));
        // (0,0) maps to the plot's bottom-left corner.
        assert!(svg.contains("points=\"80.0,330.0"), "{svg}");
    }
}
