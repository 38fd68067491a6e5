//! The loadtest harness's charts (loadtest/helper.py, drawn by gnuplot): every percentile is on
//! the latency chart's axis, bar charts say what their y axis counts, and runs disturbed by
//! other load are marked on the chart itself.

use std::path::Path;
use std::process::Command;

/// One scenario's summary as helper.py's aggregate builds it: ringway clean, nginx disturbed
/// (other processes took 30% of the machine during a run) when `disturbed`.
fn scenario(disturbed: bool) -> serde_json::Value {
    let proxy = |rate: f64, p999: f64, other: f64| {
        serde_json::json!({
            "runs": 3, "valid_runs": 3, "rate": rate, "rate_min": rate * 0.9, "rate_max": rate * 1.1,
            "latency_us": { "p50": 1500.0, "p90": 2400.0, "p99": 3600.0, "p99.9": p999 },
            "cpu_us_per_unit": { "user": 5.0, "sys": 10.0, "total": 15.0 },
            "cpu_us_per_unit_min": 14.0, "cpu_us_per_unit_max": 17.0,
            "extra": {}, "extra_min": {}, "extra_max": {},
            "max_steal_fraction": 0.0, "max_other_busy_fraction": other
        })
    };
    serde_json::json!({
        "settings": { "unit": "req" },
        "summary": {
            "ringway": proxy(30000.0, 9000.0, 0.0),
            "nginx": proxy(25000.0, 48000.0, if disturbed { 0.3 } else { 0.0 })
        }
    })
}

/// Draws the charts of `doc` into `out` and returns the SVG texts by chart name.
fn draw(out: &Path, doc: &serde_json::Value) -> Vec<(String, String)> {
    let gnuplot = ["/usr/bin/gnuplot", "/usr/local/bin/gnuplot"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("gnuplot (package gnuplot-nox) is needed to draw the loadtest charts; install it");
    let doc_path = out.join("doc.json");
    std::fs::write(&doc_path, doc.to_string()).unwrap();
    let script = format!(
        "import json, sys\nsys.path.insert(0, {loadtest:?})\nimport helper\n\
         made = helper.charts({gnuplot:?}, {out:?}, 'demo', json.load(open({doc:?})))\nprint('\\n'.join(made))\n",
        loadtest = concat!(env!("CARGO_MANIFEST_DIR"), "/loadtest"),
        out = out.to_str().unwrap(),
        doc = doc_path.to_str().unwrap(),
    );
    let o = Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3 is needed to run loadtest/helper.py");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && stderr.trim().is_empty(), "{stderr}");
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|rel| {
            let text = std::fs::read_to_string(out.join(rel)).unwrap();
            (rel.to_string(), text)
        })
        .collect()
}

fn chart<'a>(charts: &'a [(String, String)], suffix: &str) -> &'a str {
    &charts
        .iter()
        .find(|(n, _)| n.ends_with(suffix))
        .unwrap_or_else(|| {
            panic!(
                "no {suffix} chart in {:?}",
                charts.iter().map(|c| &c.0).collect::<Vec<_>>()
            )
        })
        .1
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("ringway-charts-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn latency_chart_shows_every_percentile_and_bar_charts_label_their_axis() {
    let dir = temp_dir("clean");
    let charts = draw(&dir, &scenario(false));
    let latency = chart(&charts, "demo-latency.svg");
    for tic in ["p50", "p90", "p99", "p99.9"] {
        assert!(
            latency.contains(&format!(">{tic}<")),
            "{tic} is off the axis"
        );
    }
    assert!(latency.contains(">ms<"), "no y label on the latency chart");
    assert!(chart(&charts, "demo-cpu.svg").contains("CPU µs per req"));
    assert!(chart(&charts, "demo-rate.svg").contains(">req/s<"));
    // Nothing disturbed: no marks.
    for (name, svg) in &charts {
        assert!(!svg.contains("disturbed"), "{name} marks a clean run");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn runs_disturbed_by_other_load_are_marked_on_every_chart() {
    let dir = temp_dir("disturbed");
    let charts = draw(&dir, &scenario(true));
    for (name, svg) in &charts {
        assert!(
            svg.contains("disturbed by other load"),
            "{name} has no note"
        );
    }
    // The disturbed proxy is starred where it is named; the clean one is not.
    assert!(chart(&charts, "demo-cpu.svg").contains(">nginx*<"));
    assert!(chart(&charts, "demo-cpu.svg").contains(">ringway<"));
    assert!(chart(&charts, "demo-latency.svg").contains(">nginx *<"));
    let _ = std::fs::remove_dir_all(&dir);
}
