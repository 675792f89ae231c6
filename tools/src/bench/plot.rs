//! `--plot FILE.svg`: throughput and latency percentiles over time, written as plain SVG.

use std::fmt::Write as _;

use super::stats::{Report, Sample};

const W: f64 = 960.0;
const PANEL_H: f64 = 260.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 200.0;
const TOP: f64 = 50.0;
const GAP: f64 = 70.0;

struct Series<'a> {
    label: &'a str,
    color: &'a str,
    dashed: bool,
    points: Vec<(f64, f64)>,
}

fn nice_max(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if m * mag >= v {
            return m * mag;
        }
    }
    10.0 * mag
}

fn panel(svg: &mut String, y0: f64, title: &str, unit: &str, t_max: f64, series: &[Series]) {
    let plot_w = W - LEFT - RIGHT;
    let v_max = nice_max(
        series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .fold(0.0, f64::max),
    );
    let x = |t: f64| LEFT + t / t_max * plot_w;
    let y = |v: f64| y0 + PANEL_H - v / v_max * PANEL_H;
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="{:.1}" font-size="15" font-weight="bold">{title}</text>"#,
        y0 - 10.0
    );
    let _ = writeln!(
        svg,
        r##"<rect x="{LEFT}" y="{y0:.1}" width="{plot_w:.1}" height="{PANEL_H}" fill="none" stroke="#444"/>"##
    );
    for i in 0..=5 {
        let v = v_max * i as f64 / 5.0;
        let yy = y(v);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"##,
            LEFT + plot_w,
            LEFT - 6.0,
            yy + 4.0,
            fmt_val(v)
        );
    }
    for i in 0..=6 {
        let t = t_max * i as f64 / 6.0;
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">{}s</text>"#,
            x(t),
            y0 + PANEL_H + 16.0,
            if t_max < 12.0 {
                format!("{t:.1}")
            } else {
                format!("{t:.0}")
            }
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="16" y="{:.1}" font-size="12" transform="rotate(-90 16 {:.1})" text-anchor="middle">{unit}</text>"#,
        y0 + PANEL_H / 2.0,
        y0 + PANEL_H / 2.0
    );
    for (i, s) in series.iter().enumerate() {
        if s.points.is_empty() {
            continue;
        }
        let mut d = String::new();
        for (j, (t, v)) in s.points.iter().enumerate() {
            let _ = write!(
                d,
                "{}{:.1},{:.1} ",
                if j == 0 { "M" } else { "L" },
                x(*t),
                y(*v)
            );
        }
        let dash = if s.dashed {
            r#" stroke-dasharray="6,4""#
        } else {
            ""
        };
        let _ = writeln!(
            svg,
            r#"<path d="{}" fill="none" stroke="{}" stroke-width="1.8"{dash}/>"#,
            d.trim_end(),
            s.color
        );
        let ly = y0 + 14.0 + i as f64 * 18.0;
        let lx = LEFT + plot_w + 14.0;
        let _ = writeln!(
            svg,
            r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{}" stroke-width="2"{dash}/><text x="{:.1}" y="{:.1}" font-size="12">{}</text>"#,
            lx + 24.0,
            s.color,
            lx + 30.0,
            ly + 4.0,
            s.label
        );
    }
}

fn fmt_val(v: f64) -> String {
    if v == 0.0 {
        "0".to_string()
    } else if v >= 1_000_000.0 {
        format!("{:.1}M", v / 1_000_000.0)
    } else if v >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn pts(tl: &[Sample], f: impl Fn(&Sample) -> Option<f64>) -> Vec<(f64, f64)> {
    tl.iter().filter_map(|s| f(s).map(|v| (s.t_s, v))).collect()
}

/// Renders the report's timeline as an SVG document.
pub fn svg(r: &Report) -> String {
    let tl = &r.timeline;
    let t_max = tl.iter().map(|s| s.t_s).fold(1.0, f64::max);
    let h = TOP + 2.0 * PANEL_H + GAP + 40.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" viewBox="0 0 {W} {h}" font-family="sans-serif">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="22" font-size="16">{} — {} · {} B · {} partitions · acks={}</text>"#,
        xml(&r.name),
        r.mode,
        r.message_size,
        r.partitions,
        if r.acks == -1 {
            "all".into()
        } else {
            r.acks.to_string()
        }
    );
    let throughput = vec![
        Series {
            label: "publish msg/s",
            color: "#1f77b4",
            dashed: false,
            points: pts(tl, |s| {
                (r.mode != "consume").then_some(s.publish_msgs_per_s)
            }),
        },
        Series {
            label: "consume msg/s",
            color: "#2ca02c",
            dashed: true,
            points: pts(tl, |s| {
                (r.mode != "produce").then_some(s.consume_msgs_per_s)
            }),
        },
    ];
    panel(&mut svg, TOP, "Throughput", "msg/s", t_max, &throughput);
    let latency = vec![
        Series {
            label: "publish p50",
            color: "#1f77b4",
            dashed: false,
            points: pts(tl, |s| s.publish.map(|p| p.p50)),
        },
        Series {
            label: "publish p99",
            color: "#ff7f0e",
            dashed: false,
            points: pts(tl, |s| s.publish.map(|p| p.p99)),
        },
        Series {
            label: "publish p99.9",
            color: "#d62728",
            dashed: false,
            points: pts(tl, |s| s.publish.map(|p| p.p999)),
        },
        Series {
            label: "e2e p50",
            color: "#1f77b4",
            dashed: true,
            points: pts(tl, |s| s.e2e.map(|p| p.p50)),
        },
        Series {
            label: "e2e p99",
            color: "#ff7f0e",
            dashed: true,
            points: pts(tl, |s| s.e2e.map(|p| p.p99)),
        },
        Series {
            label: "e2e p99.9",
            color: "#d62728",
            dashed: true,
            points: pts(tl, |s| s.e2e.map(|p| p.p999)),
        },
    ];
    panel(
        &mut svg,
        TOP + PANEL_H + GAP,
        "Latency percentiles (per second)",
        "ms",
        t_max,
        &latency,
    );
    svg.push_str("</svg>\n");
    svg
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::stats::Percentiles;

    #[test]
    fn svg_has_one_path_per_series_with_data() {
        let mut r = Report {
            name: "t<1>".into(),
            mode: "e2e".into(),
            ..Report::default()
        };
        for i in 1..=3 {
            r.timeline.push(Sample {
                t_s: i as f64,
                publish_msgs_per_s: 1000.0 * i as f64,
                consume_msgs_per_s: 900.0,
                publish: Some(Percentiles {
                    p50: 1.0,
                    p99: 2.0,
                    p999: 3.0,
                    ..Percentiles::default()
                }),
                e2e: None,
                ..Sample::default()
            });
        }
        let s = svg(&r);
        assert!(s.starts_with("<svg"));
        assert!(s.contains("t&lt;1&gt;"));
        // 2 throughput series + 3 publish latency series; no e2e data.
        assert_eq!(s.matches("<path").count(), 5);
    }
}
