//! The admin console's charts of the last 24 hours: the `/metrics` counters sampled
//! every five minutes (kept in memory), drawn as SVG on the server (no script, no
//! styles the CSP would have to allow).

use std::collections::{HashMap, VecDeque};
use std::fmt::Write;
use std::sync::Mutex;

/// How often a sample is taken, and how many are kept (a day's worth).
pub const EVERY_SECS: u64 = 300;
const KEPT: usize = 24 * 3600 / EVERY_SECS as usize + 1;

/// The series a sample keeps: a metric (summed over its labels unless one is named).
const SERIES: &[(&str, &str)] = &[
    ("in", "agora_messages_received_total"),
    ("local", "agora_messages_delivered_total{destination=\"local\"}"),
    ("queued", "agora_messages_queued_total"),
    ("deferred", "agora_messages_deferred_total"),
    ("bounced", "agora_messages_bounced_total"),
    ("commit_sum", "agora_store_commit_duration_seconds_sum"),
    ("commit_count", "agora_store_commit_duration_seconds_count"),
];

#[derive(Debug, Clone)]
struct Sample {
    time: i64,
    values: HashMap<String, f64>,
}

/// Samples of the last day.
#[derive(Debug, Default)]
pub struct History(Mutex<VecDeque<Sample>>);

/// The values of one Prometheus text page that the charts use: the named series, and
/// the open sessions per listener (`sessions:KEY`).
fn read(page: &str) -> HashMap<String, f64> {
    let mut out: HashMap<String, f64> = HashMap::new();
    for line in page.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else { continue };
        let Ok(v) = value.parse::<f64>() else { continue };
        let bare = name.split('{').next().unwrap_or(name);
        for (key, metric) in SERIES {
            if *metric == name || (*metric == bare && !metric.contains('{')) {
                *out.entry((*key).to_string()).or_default() += v;
            }
        }
        if bare == "agora_sessions_open"
            && let Some(l) = name.split("listener=\"").nth(1).and_then(|r| r.split('"').next())
        {
            *out.entry(format!("sessions:{l}")).or_default() += v;
        }
    }
    out
}

impl History {
    pub fn record(&self, time: i64, page: &str) {
        let mut h = self.0.lock().unwrap_or_else(|e| e.into_inner());
        h.push_back(Sample { time, values: read(page) });
        while h.len() > KEPT {
            h.pop_front();
        }
    }

    /// The charts, with `now` (the page as it is at this moment) as their last point.
    pub fn charts(&self, now: i64, page: Option<&str>) -> String {
        let mut samples: Vec<Sample> = self.0.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect();
        if let Some(p) = page {
            samples.push(Sample { time: now, values: read(p) });
        }
        samples.retain(|s| s.time > now - 24 * 3600 - EVERY_SECS as i64);
        if samples.len() < 2 {
            return "<p>The charts fill in as the server runs (a point every five minutes).</p>".into();
        }
        // Counters become amounts per interval; a restart (a counter going down) counts from zero.
        let delta = |key: &str| -> Vec<(i64, f64)> {
            samples
                .windows(2)
                .map(|w| {
                    let (a, b) =
                        (w[0].values.get(key).copied().unwrap_or(0.0), w[1].values.get(key).copied().unwrap_or(0.0));
                    (w[1].time, if b >= a { b - a } else { b })
                })
                .collect()
        };
        let level = |key: &str| -> Vec<(i64, f64)> {
            samples.iter().skip(1).map(|s| (s.time, s.values.get(key).copied().unwrap_or(0.0))).collect()
        };
        let latency: Vec<(i64, f64)> = delta("commit_sum")
            .into_iter()
            .zip(delta("commit_count"))
            .map(|((t, s), (_, n))| (t, if n > 0.0 { s / n * 1000.0 } else { 0.0 }))
            .collect();
        let mut listeners: Vec<String> = samples
            .iter()
            .flat_map(|s| s.values.keys())
            .filter_map(|k| k.strip_prefix("sessions:").map(str::to_string))
            .collect();
        listeners.sort();
        listeners.dedup();
        let sessions: Vec<(String, Vec<(i64, f64)>)> =
            listeners.iter().map(|l| (l.clone(), level(&format!("sessions:{l}")))).collect();
        let mut out = String::new();
        out.push_str(&chart(
            "Messages per 5 minutes",
            &[("received", delta("in")), ("delivered here", delta("local")), ("queued out", delta("queued"))],
            now,
        ));
        out.push_str(&chart(
            "Remote deliveries that failed",
            &[("deferred", delta("deferred")), ("bounced", delta("bounced"))],
            now,
        ));
        let named: Vec<(&str, Vec<(i64, f64)>)> = sessions.iter().map(|(l, v)| (l.as_str(), v.clone())).collect();
        out.push_str(&chart("Open sessions per listener", &named, now));
        out.push_str(&chart("Store commit latency, mean (ms)", &[("commit", latency)], now));
        out
    }
}

/// Colours that read on light and dark backgrounds.
const COLOURS: &[&str] = &["#1a73e8", "#e37400", "#188038", "#d93025", "#9334e6", "#007b83", "#b06000", "#5f6368"];

/// One line chart of the last 24 hours, with its legend and its numbers in a table
/// for screen readers.
fn chart(title: &str, series: &[(&str, Vec<(i64, f64)>)], now: i64) -> String {
    let (w, h, left, bottom) = (640.0, 180.0, 48.0, 22.0);
    let max = series.iter().flat_map(|(_, v)| v.iter().map(|p| p.1)).fold(0.0f64, f64::max);
    let top = if max <= 0.0 { 1.0 } else { nice(max) };
    let start = now - 24 * 3600;
    let x = |t: i64| left + (t - start).max(0) as f64 / (24.0 * 3600.0) * (w - left - 8.0);
    let y = |v: f64| 8.0 + (1.0 - v / top) * (h - bottom - 8.0);
    let mut svg = format!(
        r##"<figure class="chart"><figcaption>{}</figcaption><svg viewBox="0 0 {w} {h}" role="img" aria-label="{}" xmlns="http://www.w3.org/2000/svg">"##,
        crate::pages::escape(title),
        crate::pages::escape(title)
    );
    for i in 0..=4 {
        let v = top * f64::from(i) / 4.0;
        let _ = write!(
            svg,
            r##"<line x1="{left}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#8888" stroke-width="0.5"/><text x="{}" y="{:.1}" font-size="10" text-anchor="end" fill="#888">{}</text>"##,
            w - 8.0,
            left - 4.0,
            y(v) + 3.0,
            short(v),
            y = y(v)
        );
    }
    for hours in [24, 18, 12, 6, 0] {
        let t = now - hours * 3600;
        let label = if hours == 0 { "now".to_string() } else { format!("-{hours} h") };
        let _ = write!(
            svg,
            r##"<text x="{:.1}" y="{}" font-size="10" text-anchor="middle" fill="#888">{label}</text>"##,
            x(t),
            h - 6.0
        );
    }
    let mut legend = String::new();
    let mut rows = String::new();
    for (i, (name, points)) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let line: Vec<String> = points.iter().map(|&(t, v)| format!("{:.1},{:.1}", x(t), y(v))).collect();
        if !line.is_empty() {
            let _ = write!(
                svg,
                r##"<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{}"/>"##,
                line.join(" ")
            );
        }
        let total: f64 = points.iter().map(|p| p.1).sum();
        let last = points.last().map_or(0.0, |p| p.1);
        let _ = write!(
            legend,
            r##"<li><svg width="12" height="12" aria-hidden="true"><rect width="12" height="12" fill="{colour}"/></svg> {}</li>"##,
            crate::pages::escape(name)
        );
        let _ = write!(
            rows,
            "<tr><th scope=\"row\">{}</th><td>{}</td><td>{}</td></tr>",
            crate::pages::escape(name),
            short(last),
            short(total)
        );
    }
    let _ = write!(
        svg,
        r#"</svg><ul class="legend">{legend}</ul><table class="hidden"><caption>{}</caption><tr><th scope="col">Series</th><th scope="col">Last</th><th scope="col">Sum</th></tr>{rows}</table></figure>"#,
        crate::pages::escape(title)
    );
    svg
}

/// A round number at or above `v` for the top of an axis.
fn nice(v: f64) -> f64 {
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * p).find(|&c| c >= v).unwrap_or(10.0 * p)
}

fn short(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v.fract() == 0.0 || v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_become_charts() {
        let page = |n: u32| {
            format!(
                "# TYPE x counter\nagora_messages_received_total {n}\nagora_messages_delivered_total{{destination=\"local\"}} {n}\nagora_messages_delivered_total{{destination=\"remote\"}} 99\nagora_sessions_open{{listener=\"imap\"}} 3\nagora_store_commit_duration_seconds_sum 0.5\nagora_store_commit_duration_seconds_count {n}\n"
            )
        };
        let v = read(&page(4));
        assert_eq!(v["in"], 4.0);
        assert_eq!(v["local"], 4.0, "only the labelled series");
        assert_eq!(v["sessions:imap"], 3.0);
        let h = History::default();
        assert!(h.charts(1000, None).contains("fill in"));
        h.record(1000, &page(4));
        let svg = h.charts(1300, Some(&page(10)));
        assert!(svg.contains("<polyline") && svg.contains("Messages per 5 minutes") && svg.contains("imap"), "{svg}");
        assert!(svg.contains("<th scope=\"row\">received</th><td>6</td>"), "{svg}");
        assert_eq!(nice(7.0), 10.0);
        assert_eq!(nice(120.0), 200.0);
    }
}
