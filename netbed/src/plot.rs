//! Latency pictures: percentile curves drawn as an SVG a person can open in a browser.
//! One copy for the peer benchmark, `pipeline demo` and `pipeline stat --plot`.
//!
//! A [`Curve`] is a latency distribution as points (nines, µs): x is the latency on a
//! log scale, y the percentile on a "nines" scale (p50, p90, p99, p99.9, ...), where tail
//! differences are visible. It can come from raw samples ([`Curve::from_sorted_ns`]) or
//! from anything that answers "value at quantile q" ([`Curve::from_quantiles`], e.g. a
//! histogram in the stats region).

const COLORS: [&str; 8] = ["#d62728", "#1f77b4", "#2ca02c", "#7f7f7f", "#9467bd", "#ff7f0e", "#8c564b", "#17becf"];

/// How many points a curve has from p0 to its top: enough for a smooth line.
const STEPS: usize = 600;

/// A latency distribution as (nines, µs) points, nines rising.
#[derive(Clone, Debug, Default)]
pub struct Curve {
    pub points: Vec<(f64, f64)>,
}

impl Curve {
    /// From samples in nanoseconds, sorted ascending. The top of the curve is the
    /// deepest percentile the sample count supports (log10 of the count).
    pub fn from_sorted_ns(sorted: &[u64]) -> Curve {
        if sorted.is_empty() {
            return Curve::default();
        }
        let n = sorted.len() as f64;
        Curve::from_quantiles(n.log10(), |q| {
            let idx = ((n - 1.0) * q).round() as usize;
            sorted[idx.min(sorted.len() - 1)] as f64
        })
    }

    /// From a quantile function giving nanoseconds at q in [0, 1], up to `top` nines.
    pub fn from_quantiles(top: f64, mut ns_at: impl FnMut(f64) -> f64) -> Curve {
        let points = (0..=STEPS)
            .map(|k| {
                let nines = top * k as f64 / STEPS as f64;
                (nines, ns_at(1.0 - 10f64.powf(-nines)) / 1000.0)
            })
            .collect();
        Curve { points }
    }

    /// The latency (µs) at `nines` (log10 2 = p50, 2 = p99), interpolated between the
    /// points around it; the top point beyond the curve, 0 for an empty curve.
    pub fn us_at(&self, nines: f64) -> f64 {
        let i = self.points.partition_point(|p| p.0 < nines);
        match (i.checked_sub(1).and_then(|j| self.points.get(j)), self.points.get(i)) {
            (Some(a), Some(b)) if b.0 > a.0 => a.1 + (b.1 - a.1) * (nines - a.0) / (b.0 - a.0),
            (_, Some(b)) => b.1,
            (Some(a), None) => a.1,
            (None, None) => 0.0,
        }
    }
}

/// The picture: one line per named curve, legend with p50 and p99 on the right.
/// `xlabel` says what was measured (e.g. "one-way latency, server send stamp to
/// client receipt").
pub fn latency_svg(series: &[(String, Curve)], title: &str, xlabel: &str) -> String {
    let (w, h) = (900.0f64, 560.0f64);
    let (l, r, t, b) = (70.0, 260.0, 50.0, 60.0);
    let pw = w - l - r;
    let ph = h - t - b;
    let mut lo = f64::MAX;
    let mut hi: f64 = 1.0;
    for (_, c) in series {
        if let (Some(f), Some(x)) = (c.points.first(), c.points.last()) {
            lo = lo.min(f.1.max(0.1));
            hi = hi.max(x.1);
        }
    }
    if lo == f64::MAX {
        lo = 1.0;
    }
    let (d0, d1) = (lo.log10().floor(), hi.log10().ceil().max(lo.log10().floor() + 1.0));
    let ymax = 5.0f64; // p99.999
    let x_of = |us: f64| l + pw * (us.max(0.1).log10() - d0) / (d1 - d0);
    let y_of = |nines: f64| t + ph - ph * nines.min(ymax) / ymax;
    let mut o = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{}\" y=\"24\" font-size=\"15\" text-anchor=\"middle\">{}</text>\n",
        l + pw / 2.0,
        escape(title)
    );
    // Grid: decades on x, nines on y.
    let mut d = d0;
    while d <= d1 + 1e-9 {
        let x = x_of(10f64.powf(d));
        o += &format!("<line x1=\"{x:.1}\" y1=\"{t}\" x2=\"{x:.1}\" y2=\"{}\" stroke=\"#ddd\"/>\n", t + ph);
        let lab = 10f64.powf(d);
        let lab = if lab >= 1000.0 { format!("{} ms", lab / 1000.0) } else { format!("{lab} µs") };
        o += &format!("<text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{lab}</text>\n", t + ph + 18.0);
        d += 1.0;
    }
    for (n, lab) in [(std::f64::consts::LOG10_2, "p50"), (1.0, "p90"), (2.0, "p99"), (3.0, "p99.9"), (4.0, "p99.99"), (5.0, "p99.999")] {
        let y = y_of(n);
        o += &format!("<line x1=\"{l}\" y1=\"{y:.1}\" x2=\"{}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\n", l + pw);
        o += &format!("<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{lab}</text>\n", l - 6.0, y + 4.0);
    }
    o += &format!("<rect x=\"{l}\" y=\"{t}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#444\"/>\n");
    o += &format!("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{} (log scale)</text>\n", l + pw / 2.0, h - 16.0, escape(xlabel));
    for (i, (name, c)) in series.iter().enumerate() {
        if c.points.is_empty() {
            continue;
        }
        let pts: String = c.points.iter().map(|&(n, us)| format!("{:.1},{:.1} ", x_of(us), y_of(n))).collect();
        let col = COLORS[i % COLORS.len()];
        o += &format!("<polyline fill=\"none\" stroke=\"{col}\" stroke-width=\"2\" points=\"{pts}\"/>\n");
        let ly = t + 20.0 + 22.0 * i as f64;
        o += &format!("<line x1=\"{}\" y1=\"{ly}\" x2=\"{}\" y2=\"{ly}\" stroke=\"{col}\" stroke-width=\"3\"/>\n", w - r + 15.0, w - r + 40.0);
        o += &format!("<text x=\"{}\" y=\"{}\">{}</text>\n", w - r + 46.0, ly + 4.0, escape(name));
        o += &format!(
            "<text x=\"{}\" y=\"{}\" fill=\"#555\">p50 {:.1} µs, p99 {:.1} µs</text>\n",
            w - r + 46.0,
            ly + 17.0,
            c.us_at(std::f64::consts::LOG10_2),
            c.us_at(2.0)
        );
    }
    o += "</svg>\n";
    o
}

/// Text for SVG character data (names and titles come from users: a URL has `&`).
fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curve_from_samples_reads_back_its_percentiles() {
        let s: Vec<u64> = (1..=10_000).map(|i| i * 1000).collect(); // 1..10,000 µs
        let c = Curve::from_sorted_ns(&s);
        assert!((c.us_at(std::f64::consts::LOG10_2) - 5000.0).abs() < 20.0, "{}", c.us_at(std::f64::consts::LOG10_2));
        assert!((c.us_at(2.0) - 9900.0).abs() < 20.0, "{}", c.us_at(2.0));
        let svg = latency_svg(&[("a&b".into(), c)], "t<1>", "x");
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("a&amp;b") && svg.contains("t&lt;1&gt;") && svg.contains("<polyline"));
    }
}
