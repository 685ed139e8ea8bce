//! An SVG line chart of GPU allocation against arrived load, one line per
//! policy (mean over seeds), like Fig. 9(a) of the FGD paper. Self-contained
//! SVG text: no fonts or scripts to fetch.

use std::fmt::Write as _;

use super::RunResult;
use super::by_policy;

const COLORS: [&str; 8] = [
    "#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
];

/// Mean allocation % per arrived-load percent, for one policy's runs.
fn mean_curve(runs: &[&RunResult], max_pct: usize) -> Vec<(usize, f64)> {
    (0..=max_pct)
        .filter_map(|p| {
            let vals: Vec<f64> = runs
                .iter()
                .filter_map(|r| r.curve.bucket(p))
                .map(|b| b.alloc_pct)
                .collect();
            (!vals.is_empty()).then(|| (p, vals.iter().sum::<f64>() / vals.len() as f64))
        })
        .collect()
}

/// An SVG chart of GPU allocation % against arrived GPU demand (0 to `max_pct` % of
/// capacity), one line per policy averaged over its runs, titled `title`.
pub fn allocation_svg(title: &str, runs: &[RunResult], max_pct: usize) -> String {
    let (w, h, left, top, right, bottom) = (720.0, 440.0, 60.0, 40.0, 150.0, 50.0);
    let (pw, ph) = (w - left - right, h - top - bottom);
    let x = |p: f64| left + p / max_pct.max(1) as f64 * pw;
    let y = |v: f64| top + (1.0 - v / 100.0) * ph;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{left}" y="22" font-size="14">{}</text>"#,
        escape(title)
    );
    for v in (0..=100).step_by(20) {
        let yy = y(f64::from(v));
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{v}</text>"##,
            left + pw,
            left - 6.0,
            yy + 4.0
        );
    }
    for p in (0..=max_pct).step_by(10) {
        let xx = x(p as f64);
        let _ = writeln!(
            s,
            r#"<text x="{xx:.1}" y="{:.1}" text-anchor="middle">{p}</text>"#,
            top + ph + 16.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">arrived GPU demand (% of capacity)</text>"#,
        left + pw / 2.0,
        h - 10.0
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(16,{:.1}) rotate(-90)" text-anchor="middle">GPU allocation (%)</text>"#,
        top + ph / 2.0
    );
    for (i, (p, rs)) in by_policy(runs).into_iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let pts: Vec<String> = mean_curve(&rs, max_pct)
            .iter()
            .map(|&(pp, v)| format!("{:.1},{:.1}", x(pp as f64), y(v)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
            pts.join(" ")
        );
        let ly = top + 14.0 + i as f64 * 18.0;
        let lx = left + pw + 12.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="3"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            lx + 20.0,
            lx + 26.0,
            ly + 4.0,
            escape(p)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn escape(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
