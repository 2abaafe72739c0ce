//! Presenting results: a terminal table with ratios, SVG plots, and the
//! quick mode's completeness check.

use super::events::{EventsResult, Throughput, TraceCost};
use super::policy::PolicyResult;
use super::{Latency, Mode, Row};
use crate::output::table;
use anyhow::{bail, Result};
use plotters::prelude::*;
use std::path::{Path, PathBuf};

fn us(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.1} ms", v / 1000.0)
    } else {
        format!("{v:.0} µs")
    }
}

fn ms(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.2} s", v / 1000.0)
    } else {
        format!("{v:.1} ms")
    }
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

/// The best baseline's value for a size (lower is better).
fn best_baseline(rows: &[Row], n: usize, f: impl Fn(&Row) -> f64) -> Option<f64> {
    rows.iter()
        .filter(|r| r.services == n && !r.mode.starts_with("sluice") && !r.over_budget)
        .map(f)
        .fold(None, |acc, v| Some(acc.map_or(v, |a: f64| a.min(v))))
}

/// A mode that ran out of time at this size: said so, not dropped.
fn over_budget_row(r: &Row) -> Vec<String> {
    vec![r.mode.clone(), r.services.to_string(), "> budget".into()]
}

pub fn print_table(rows: &[Row]) {
    println!("New-connection latency (connect + HTTP request + close, median / p99), client pod → Service:");
    let mut t = table(&[
        "MODE",
        "SERVICES",
        "FLOOR (pod IP, no rules)",
        "POD IP (same loop)",
        "FIRST",
        "MIDDLE",
        "LAST",
        "LAST ÷ FLOOR",
        "LAST ÷ POD IP (same loop)",
        "LAST ÷ BEST BASELINE",
        "CONN/S (LAST, 2 CLIENTS)",
    ]);
    for r in rows {
        if r.over_budget {
            t.add_row(over_budget_row(r));
            continue;
        }
        let vs_base = if r.mode.starts_with("sluice") {
            best_baseline(rows, r.services, |b| b.last.median_us)
                .map(|b| format!("{:.2}×", r.last.median_us / b))
                .unwrap_or_else(|| "-".into())
        } else {
            "-".into()
        };
        t.add_row(vec![
            r.mode.clone(),
            r.services.to_string(),
            format!("{} / {}", us(r.floor.median_us), us(r.floor.p99_us)),
            format!(
                "{} / {}",
                us(r.floor_loaded.median_us),
                us(r.floor_loaded.p99_us)
            ),
            format!("{} / {}", us(r.first.median_us), us(r.first.p99_us)),
            format!("{} / {}", us(r.middle.median_us), us(r.middle.p99_us)),
            format!("{} / {}", us(r.last.median_us), us(r.last.p99_us)),
            format!("{:.2}×", r.last.median_us / r.floor.median_us.max(1.0)),
            format!(
                "{:.2}×",
                r.last.median_us / r.floor_loaded.median_us.max(1.0)
            ),
            vs_base,
            format!("{:.0}", r.cps_last),
        ]);
    }
    println!("{t}");
    println!(
        "\nChanges and memory (one change: submit → first connection that shows it, median / p99):"
    );
    let mut t = table(&[
        "MODE",
        "SERVICES",
        "FULL SYNC",
        "ADD",
        "CHANGE ENDPOINTS",
        "DELETE",
        "KERNEL OBJECTS",
        "BPF MAPS",
        "SLAB Δ",
        "AGENT RSS",
    ]);
    for r in rows {
        if r.over_budget {
            t.add_row(over_budget_row(r));
            continue;
        }
        t.add_row(vec![
            r.mode.clone(),
            r.services.to_string(),
            ms(r.full_sync_ms),
            format!(
                "{} / {}",
                us(r.change_add.median_us),
                us(r.change_add.p99_us)
            ),
            format!(
                "{} / {}",
                us(r.change_endpoints.median_us),
                us(r.change_endpoints.p99_us)
            ),
            format!(
                "{} / {}",
                us(r.change_delete.median_us),
                us(r.change_delete.p99_us)
            ),
            r.objects_in_kernel.to_string(),
            if r.mode.starts_with("sluice") {
                mib(r.bpf_map_bytes)
            } else {
                "-".into()
            },
            format!("{:.1} MiB", r.slab_delta_bytes as f64 / (1024.0 * 1024.0)),
            if r.mode.starts_with("sluice") {
                mib(r.agent_rss_bytes)
            } else {
                "-".into()
            },
        ]);
    }
    println!("{t}");
}

fn lat(l: &Latency) -> String {
    format!("{} / {}", us(l.median_us), us(l.p99_us))
}

fn rate(v: f64) -> String {
    format!("{v:.0}/s")
}

pub fn print_policy(p: &PolicyResult) {
    println!("\nNetworkPolicy per-packet cost (new connection client pod → pod IP, median / p99; A and B in one loop):");
    let mut t = table(&[
        "POLICY ENTRIES (A / NODE)",
        "A: SELECTED",
        "B: NOT SELECTED",
        "A ÷ B",
        "A ÷ B, AGENT PAUSED",
        "A ÷ B BEFORE ANY POLICY",
        "EVENTS / CONN TO A",
        "SAMPLES",
        "PROGRAMMED IN",
        "AGENT: COMPILE / + MAP WRITES",
    ]);
    let agent = match (p.agent_compile_ms, p.agent_total_ms, p.agent_writes) {
        (Some(c), Some(tot), Some(w)) => format!("{} / {} ({w} writes)", ms(c), ms(tot)),
        _ => "-".into(),
    };
    t.add_row(vec![
        format!("{} / {}", p.entries_a, p.entries_total),
        lat(&p.with_a),
        lat(&p.with_b),
        format!("{:.3}×", p.ratio),
        format!(
            "{:.3}× ({} / {})",
            p.ratio_agent_paused,
            us(p.paused_a.median_us),
            us(p.paused_b.median_us)
        ),
        format!(
            "{:.3}× ({} / {})",
            p.ratio_before,
            us(p.before_a.median_us),
            us(p.before_b.median_us)
        ),
        format!("{:.2}", p.events_per_connection_a),
        p.samples.to_string(),
        ms(p.programmed_ms),
        agent,
    ]);
    println!("{t}");
}

pub fn print_events(e: &EventsResult) {
    print_trace(&e.trace);
    print_throughput(&e.throughput);
}

fn print_trace(tc: &TraceCost) {
    println!(
        "\nPer-packet tracing (new connection to the last of {} Services, tc path, {} blocks of {} switched off/on ABBA; median / p99):",
        tc.services, tc.blocks, tc.samples_per_block
    );
    let mut t = table(&[
        "TRACING OFF",
        "TRACING ON",
        "ON ÷ OFF",
        "EVENTS / CONNECTION (OFF → ON)",
        "LOST WHILE ON",
    ]);
    t.add_row(vec![
        lat(&tc.off),
        lat(&tc.on),
        format!("{:.3}×", tc.ratio),
        format!(
            "{:.1} → {:.1}",
            tc.events_per_connection_off, tc.events_per_connection_on
        ),
        tc.lost_on.to_string(),
    ]);
    println!("{t}");
}

fn print_throughput(th: &Throughput) {
    println!(
        "\nFlow event throughput (per-packet tracing on, UDP from the client pod, {} threads, {:.1} s per step, {:.2} events per datagram; ring buffer {} KiB ≈ {} events):",
        th.sender_threads,
        th.step_seconds,
        th.events_per_packet,
        th.ring_buffer_bytes / 1024,
        th.ring_buffer_records
    );
    let mut t = table(&["TARGET", "DATAGRAMS/S", "EVENTS/S", "RECEIVED", "LOST"]);
    for s in &th.steps {
        t.add_row(vec![
            rate(s.target_events_per_s),
            rate(s.packets_sent as f64 / s.seconds.max(1e-3)),
            rate(s.events_per_s),
            s.received.to_string(),
            s.lost.to_string(),
        ]);
    }
    println!("{t}");
    let mut line = format!(
        "sustained {:.0} events/s with 0 lost",
        th.sustained_events_per_s
    );
    match &th.first_loss {
        Some(f) => line.push_str(&format!(
            "; at {:.0} events/s, {} lost ({:.1} %)",
            f.events_per_s,
            f.lost,
            100.0 * f.lost as f64 / f.events.max(1) as f64
        )),
        None if th.sender_limited => line.push_str(
            "; no loss up to what the senders could generate on this machine (sender-limited)",
        ),
        None => line.push_str("; no loss at any rate tried"),
    }
    println!("{line}");
}

/// The quick run's assertion for the once-per-run parts: each that ran
/// produced numbers.
pub fn check_parts(policy: Option<&PolicyResult>, events: Option<&EventsResult>) -> Result<()> {
    let mut missing = Vec::new();
    if let Some(p) = policy {
        if p.entries_a == 0 || p.with_a.median_us <= 0.0 || p.with_b.median_us <= 0.0 {
            missing.push("NetworkPolicy cost: incomplete");
        }
    }
    if let Some(e) = events {
        if e.trace.on.median_us <= 0.0 || e.trace.off.median_us <= 0.0 {
            missing.push("tracing on/off: incomplete");
        }
        if e.throughput.steps.iter().all(|s| s.received == 0) {
            missing.push("event throughput: no events received");
        }
    }
    if !missing.is_empty() {
        bail!("benchmark incomplete: {}", missing.join("; "));
    }
    Ok(())
}

/// A plotted metric: file stem, title (unit in parentheses), value of a row.
type Metric = (&'static str, &'static str, fn(&Row) -> f64);

/// One SVG per metric: value vs number of Services, log-log, one line per mode.
pub fn plots(rows: &[Row], dir: &Path) -> Result<Vec<PathBuf>> {
    let metrics: [Metric; 4] = [
        (
            "latency_last",
            "new-connection latency to the last Service, median (µs)",
            |r| r.last.median_us,
        ),
        (
            "change_add",
            "one change (add a Service): submit → working, median (µs)",
            |r| r.change_add.median_us,
        ),
        (
            "full_sync",
            "full sync: submit → last Service working (ms)",
            |r| r.full_sync_ms,
        ),
        (
            "cps_last",
            "connections per second to the last Service, 2 clients (conn/s)",
            |r| r.cps_last,
        ),
    ];
    let mut out = Vec::new();
    for (file, title, f) in metrics {
        let path = dir.join(format!("{file}.svg"));
        plot(rows, &path, title, f, file == "latency_last")?;
        out.push(path);
    }
    Ok(out)
}

fn plot(
    rows: &[Row],
    path: &Path,
    title: &str,
    f: fn(&Row) -> f64,
    with_floor: bool,
) -> Result<()> {
    let ok: Vec<&Row> = rows
        .iter()
        .filter(|r| !r.over_budget && f(r) > 0.0)
        .collect();
    if ok.is_empty() {
        return Ok(());
    }
    let xmax = ok.iter().map(|r| r.services).max().unwrap_or(10) as f64 * 1.5;
    let xmin = ok.iter().map(|r| r.services).min().unwrap_or(1).max(1) as f64 / 1.5;
    let ymax = ok.iter().map(|r| f(r)).fold(1.0, f64::max) * 2.0;
    let ymin = ok
        .iter()
        .map(|r| {
            if with_floor {
                f(r).min(r.floor.median_us)
            } else {
                f(r)
            }
        })
        .fold(f64::MAX, f64::min)
        / 2.0;
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    let draw =
        |e: DrawingAreaErrorKind<_>| anyhow::anyhow!("cannot draw {}: {e:?}", path.display());
    root.fill(&WHITE).map_err(draw)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((xmin..xmax).log_scale(), (ymin.max(0.01)..ymax).log_scale())
        .map_err(draw)?;
    chart
        .configure_mesh()
        .x_desc("Services")
        // The unit is the last parenthesised part of the title.
        .y_desc(
            title
                .rsplit('(')
                .next()
                .map(|u| u.trim_end_matches(')'))
                .unwrap_or(""),
        )
        .draw()
        .map_err(draw)?;
    let colors = [
        (Mode::Sluice, BLUE),
        (Mode::SluiceSocket, MAGENTA),
        (Mode::Iptables, RED),
        (Mode::Nftables, GREEN),
    ];
    for (mode, color) in colors {
        let pts: Vec<(f64, f64)> = ok
            .iter()
            .filter(|r| r.mode == mode.to_string())
            .map(|r| (r.services as f64, f(r)))
            .collect();
        if pts.is_empty() {
            continue;
        }
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(draw)?
            .label(mode.to_string())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart
            .draw_series(pts.iter().map(|p| Circle::new(*p, 4, color.filled())))
            .map_err(draw)?;
    }
    if with_floor {
        let pts: Vec<(f64, f64)> = ok
            .iter()
            .filter(|r| r.mode == "sluice")
            .map(|r| (r.services as f64, r.floor.median_us))
            .collect();
        chart
            .draw_series(LineSeries::new(pts, BLACK.stroke_width(1)))
            .map_err(draw)?
            .label("floor (pod IP)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(draw)?;
    root.present().map_err(draw)?;
    Ok(())
}

/// The quick run's assertion: every requested mode produced numbers at
/// every size (a failure, a timeout or "> budget" fails it).
pub fn check_complete(rows: &[Row], modes: &[Mode]) -> Result<()> {
    let mut missing = Vec::new();
    for m in modes {
        let mine: Vec<&Row> = rows.iter().filter(|r| r.mode == m.to_string()).collect();
        if mine.is_empty() {
            missing.push(format!("{m}: no results"));
        }
        for r in mine {
            if r.over_budget
                || r.last.median_us <= 0.0
                || r.floor.median_us <= 0.0
                || r.cps_last <= 0.0
                || r.change_add.median_us <= 0.0
            {
                missing.push(format!("{m} at {} Services: incomplete", r.services));
            }
        }
    }
    if !missing.is_empty() {
        bail!("benchmark incomplete: {}", missing.join("; "));
    }
    println!("quick benchmark: every mode produced numbers");
    Ok(())
}
