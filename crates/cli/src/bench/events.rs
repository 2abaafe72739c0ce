//! Flow events: what per-packet tracing costs a new connection, and how
//! many events per second the agent takes from the ring buffer without
//! the kernel losing any.
//!
//! Tracing cost: new connections to the last of N Services (tc path),
//! tracing switched off and on between blocks in the order off, on, on,
//! off, … (ABBA), so a drift of the machine's load hits both states alike.
//!
//! Throughput: per-packet tracing on, UDP datagrams from the client pod
//! (tc path) to a UDP Service whose one backend has a socket bound that
//! never reads: every datagram is translated from conntrack at the client's
//! veth and emits one event there, and nothing answers (no replies, no
//! ICMP), so the sending rate sets the event rate. The rate is stepped up
//! until the kernel counts a lost event (ring buffer full); each step reads
//! the kernel's counter and the agent's `events.received` before and after.

use super::{client, objects, write_manifest, Bed, Latency};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use sluice_api::{ServiceInfo, Status, TraceConfig};
use sluice_datapath::bindings::{sluice_metric, SLUICE_EVENTS_BYTES};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const SERVICES_FILE: &str = "bench.yaml";
const UDP_FILE: &str = "bench-events-udp.yaml";
const UDP_PORT: u16 = 9999;
/// Far above the Service VIPs of any size the bench programs.
const UDP_VIP_INDEX: usize = 999_000;
/// Bytes per ring buffer record: the 72-byte `sluice_event` and the
/// kernel's 8-byte record header.
const RECORD_BYTES: u64 = 72 + 8;
/// Warm-up connections at the start of each tracing block: the switch
/// itself (a map write, a log line) should not land in the samples.
const WARMUP: usize = 5;

#[derive(Debug, Clone, Serialize, Default)]
pub struct EventsResult {
    pub trace: TraceCost,
    pub throughput: Throughput,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct TraceCost {
    /// Services programmed; connections go to the last one.
    pub services: usize,
    pub blocks: usize,
    pub samples_per_block: usize,
    pub off: Latency,
    pub on: Latency,
    /// on ÷ off (medians).
    pub ratio: f64,
    /// Events emitted (received + lost) per connection in each state.
    pub events_per_connection_off: f64,
    pub events_per_connection_on: f64,
    /// Events the kernel lost while tracing was on.
    pub lost_on: u64,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Throughput {
    pub ring_buffer_bytes: u64,
    /// Records the ring buffer holds when the agent reads nothing.
    pub ring_buffer_records: u64,
    /// Client threads sending (each its own socket, so its own flow).
    pub sender_threads: usize,
    pub step_seconds: f64,
    /// Events per datagram, measured at a low rate before the steps.
    pub events_per_packet: f64,
    pub steps: Vec<Step>,
    /// The highest event rate of a step with 0 lost events that is below
    /// every lossy step's rate (see `summarize`).
    pub sustained_events_per_s: f64,
    /// The lossy step with the lowest achieved rate, if one lost events.
    pub first_loss: Option<Step>,
    /// The senders could not reach a step's rate: the search stopped at
    /// what this machine's CPUs could generate, not at a loss.
    pub sender_limited: bool,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Step {
    /// Asked for (events/s).
    pub target_events_per_s: f64,
    pub packets_sent: u64,
    /// Received by the agent + lost in the kernel, during the step.
    pub events: u64,
    pub received: u64,
    /// The kernel's counter (METRIC_EVENTS_LOST), read from the pinned map.
    pub lost: u64,
    /// The same counter as the agent reports it (`events.lost`).
    pub lost_agent: u64,
    pub decode_errors: u64,
    /// Emitted events (received + lost) per second of the step.
    pub events_per_s: f64,
    pub seconds: f64,
}

/// Sizes of the part; `--quick` makes them tiny.
pub struct Plan {
    pub services: usize,
    pub trace_blocks: usize,
    pub samples_per_block: usize,
    pub step: Duration,
    /// Event rates to try, in order.
    pub rates: Vec<f64>,
    /// Extra steps between the last clean rate and the first loss.
    pub refine: usize,
}

impl Plan {
    pub fn new(services: usize, samples: usize, quick: bool) -> Self {
        if quick {
            Plan {
                services,
                trace_blocks: 4,
                samples_per_block: samples.div_ceil(2).max(1),
                step: Duration::from_millis(500),
                rates: vec![2_000.0, 5_000.0],
                refine: 0,
            }
        } else {
            Plan {
                services,
                trace_blocks: 10,
                samples_per_block: samples.div_ceil(2).max(1),
                step: Duration::from_secs(3),
                rates: vec![
                    10_000.0, 25_000.0, 50_000.0, 100_000.0, 200_000.0, 400_000.0, 800_000.0,
                ],
                refine: 2,
            }
        }
    }
}

/// Runs both halves; tracing is switched off and the part's manifests are
/// removed whatever happened.
pub async fn run(bed: &Bed, plan: &Plan) -> Result<EventsResult> {
    let result = measure(bed, plan).await;
    let off = set_trace(bed, false).await;
    let dir = bed.sb.manifests_dir();
    let _ = std::fs::remove_file(dir.join(UDP_FILE));
    let _ = std::fs::remove_file(dir.join(SERVICES_FILE));
    let cleaned = wait_frontends_gone(bed).await;
    let r = result?;
    off?;
    cleaned?;
    Ok(r)
}

async fn measure(bed: &Bed, plan: &Plan) -> Result<EventsResult> {
    Ok(EventsResult {
        trace: trace_cost(bed, plan).await.context("tracing on vs off")?,
        throughput: throughput(bed, plan).await.context("event throughput")?,
    })
}

async fn set_trace(bed: &Bed, on: bool) -> Result<()> {
    let _: TraceConfig = bed
        .api
        .put("/v1/config/trace", &TraceConfig { per_packet: on })
        .await
        .context("cannot switch per-packet tracing")?;
    Ok(())
}

/// The event counters once the agent has read everything the kernel
/// emitted: they stop moving for 100 ms (the reader drains the ring buffer
/// in one go when woken, so a pause that long means it is empty).
pub(super) async fn settled(bed: &Bed, pin: &std::path::Path) -> Result<Counters> {
    let mut last = counters(bed, pin).await?;
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut still = 0;
    while still < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = counters(bed, pin).await?;
        if now.received == last.received && now.lost == last.lost {
            still += 1;
        } else {
            still = 0;
        }
        last = now;
    }
    Ok(last)
}

#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Counters {
    pub received: u64,
    pub lost: u64,
    lost_agent: u64,
    decode_errors: u64,
}

async fn counters(bed: &Bed, pin: &std::path::Path) -> Result<Counters> {
    let st: Status = bed.api.get("/v1/status").await?;
    Ok(Counters {
        received: st.events.received,
        lost: kernel_lost(pin)?,
        lost_agent: st.events.lost,
        decode_errors: st.events.decode_errors,
    })
}

/// The kernel's own count of events it could not emit (per-CPU, summed).
fn kernel_lost(pin: &std::path::Path) -> Result<u64> {
    let m = sluice_datapath::LbMaps::open(pin)
        .and_then(|m| m.metrics())
        .context("cannot read sl_metrics")?;
    Ok(m.get(sluice_metric::METRIC_EVENTS_LOST as usize)
        .copied()
        .unwrap_or(0))
}

pub(super) fn pin_dir(bed: &Bed) -> PathBuf {
    sluice_datapath::loader::pin_dir(std::path::Path::new("/sys/fs/bpf"), bed.sb.run_id())
}

async fn wait_frontends_gone(bed: &Bed) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let st: Status = bed.api.get("/v1/status").await?;
        if st.frontends == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the agent did not remove the benchmark Services");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn trace_cost(bed: &Bed, plan: &Plan) -> Result<TraceCost> {
    let n = plan.services.max(1);
    let eps: Vec<Ipv4Addr> = bed.backends.iter().map(|p| p.ip).collect();
    let last = SocketAddr::from((objects::vip(n - 1), objects::SERVICE_PORT));
    write_manifest(
        bed.sb.manifests_dir(),
        SERVICES_FILE,
        &objects::services(n, &eps),
    )?;
    let ns = bed.client.netns.clone();
    client::time_until(
        &ns,
        last,
        Duration::from_secs(120),
        |r| r.is_ok(),
        Instant::now(),
    )?
    .context("the last Service did not start working within 120 s")?;

    let pin = pin_dir(bed);
    let (mut off, mut on) = (Vec::new(), Vec::new());
    let (mut ev_off, mut ev_on, mut lost_on) = (0u64, 0u64, 0u64);
    // Connections made per state, warm-ups included (they emit events too).
    let (mut conns_off, mut conns_on) = (0usize, 0usize);
    for block in 0..plan.trace_blocks {
        // ABBA: off, on, on, off, off, on, …
        let tracing = matches!(block % 4, 1 | 2);
        set_trace(bed, tracing).await?;
        let c0 = settled(bed, &pin).await?;
        let v = client::latencies_warm(&ns, &[last], plan.samples_per_block, WARMUP)?
            .pop()
            .unwrap_or_default();
        let conns = v.len() + WARMUP.min(plan.samples_per_block);
        let c1 = settled(bed, &pin).await?;
        let emitted = (c1.received + c1.lost).saturating_sub(c0.received + c0.lost);
        if tracing {
            on.extend(v);
            conns_on += conns;
            ev_on += emitted;
            lost_on += c1.lost.saturating_sub(c0.lost);
        } else {
            off.extend(v);
            conns_off += conns;
            ev_off += emitted;
        }
    }
    set_trace(bed, false).await?;
    let per_conn = |events: u64, conns: usize| events as f64 / conns.max(1) as f64;
    let off = Latency::of(off);
    let on = Latency::of(on);
    Ok(TraceCost {
        services: n,
        blocks: plan.trace_blocks,
        samples_per_block: plan.samples_per_block,
        ratio: on.median_us / off.median_us.max(1e-3),
        events_per_connection_off: per_conn(ev_off, conns_off),
        events_per_connection_on: per_conn(ev_on, conns_on),
        lost_on,
        off,
        on,
    })
}

async fn throughput(bed: &Bed, plan: &Plan) -> Result<Throughput> {
    let sink_pod = &bed.backends[1];
    let vip = objects::vip(UDP_VIP_INDEX);
    write_manifest(
        bed.sb.manifests_dir(),
        UDP_FILE,
        &objects::udp_service("events-udp", vip, UDP_PORT, &[sink_pod.ip]),
    )?;
    // The sink: bound, never read. Datagrams past its receive buffer are
    // dropped by the backend's kernel without an answer, so the only
    // events are the client-side translations.
    let sink: UdpSocket = sluice_testbed::run_in_netns(&sink_pod.netns, move || {
        UdpSocket::bind((Ipv4Addr::UNSPECIFIED, UDP_PORT))
    })?
    .context("cannot bind the UDP sink in the backend pod")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list: Vec<ServiceInfo> = bed.api.get("/v1/services").await?;
        if list
            .iter()
            .any(|s| s.ip == vip && s.port == UDP_PORT && !s.backends.is_empty())
        {
            break;
        }
        if Instant::now() > deadline {
            bail!("the UDP Service for the event benchmark was not programmed within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let pin = pin_dir(bed);
    let ns = bed.client.netns.clone();
    let target = SocketAddr::from((vip, UDP_PORT));
    let threads = 2;
    set_trace(bed, true).await?;

    // Calibration at a rate far below any limit: events per datagram.
    let calib = step(bed, &pin, &ns, target, threads, 2_000.0, 1.0, plan.step).await?;
    if calib.packets_sent == 0 || calib.events == 0 {
        bail!(
            "no events for {} datagrams with per-packet tracing on",
            calib.packets_sent
        );
    }
    let per_packet = calib.events as f64 / calib.packets_sent as f64;
    if !(0.5..=4.0).contains(&per_packet) {
        bail!(
            "{per_packet:.2} events per datagram: the UDP path is not what the benchmark assumes"
        );
    }

    let mut steps: Vec<Step> = Vec::new();
    let mut sender_limited = false;
    for &rate in &plan.rates {
        let s = step(bed, &pin, &ns, target, threads, rate, per_packet, plan.step).await?;
        let short = s.events_per_s < 0.8 * rate;
        let lost = s.lost > 0;
        steps.push(s);
        if lost {
            break;
        }
        if short {
            sender_limited = true;
            break;
        }
    }
    // Between the last clean rate and the first loss, a few geometric steps.
    let clean = |s: &&Step| s.lost == 0;
    for _ in 0..plan.refine {
        let lo = steps
            .iter()
            .filter(clean)
            .map(|s| s.target_events_per_s)
            .fold(0.0, f64::max);
        let Some(hi) = steps
            .iter()
            .filter(|s| s.lost > 0)
            .map(|s| s.target_events_per_s)
            .reduce(f64::min)
        else {
            break;
        };
        if lo <= 0.0 || hi / lo < 1.2 {
            break;
        }
        let mid = (lo * hi).sqrt();
        steps.push(step(bed, &pin, &ns, target, threads, mid, per_packet, plan.step).await?);
    }
    set_trace(bed, false).await?;
    drop(sink);

    steps.sort_by(|a, b| a.target_events_per_s.total_cmp(&b.target_events_per_s));
    let (sustained, first_loss) = summarize(&steps);
    Ok(Throughput {
        ring_buffer_bytes: u64::from(SLUICE_EVENTS_BYTES),
        ring_buffer_records: u64::from(SLUICE_EVENTS_BYTES) / RECORD_BYTES,
        sender_threads: threads,
        step_seconds: plan.step.as_secs_f64(),
        events_per_packet: per_packet,
        steps,
        sustained_events_per_s: sustained,
        first_loss,
        sender_limited,
    })
}

/// The conservative reading of the steps. On a shared machine a loss
/// comes from the agent being descheduled for longer than the ring buffer
/// lasts, so a step can lose events at a lower rate than a luckier step
/// that did not: the first loss is the lossy step with the lowest achieved
/// rate, and the sustained rate the highest clean one below it.
fn summarize(steps: &[Step]) -> (f64, Option<Step>) {
    let first_loss = steps
        .iter()
        .filter(|s| s.lost > 0)
        .min_by(|a, b| a.events_per_s.total_cmp(&b.events_per_s))
        .cloned();
    let sustained = steps
        .iter()
        .filter(|s| s.lost == 0)
        .filter(|s| {
            first_loss
                .as_ref()
                .is_none_or(|f| s.events_per_s < f.events_per_s)
        })
        .map(|s| s.events_per_s)
        .fold(0.0, f64::max);
    (sustained, first_loss)
}

/// One rate step: counters settled, datagrams at `rate / per_packet` per
/// second for `run`, counters settled again.
#[allow(clippy::too_many_arguments)]
async fn step(
    bed: &Bed,
    pin: &std::path::Path,
    ns: &std::path::Path,
    target: SocketAddr,
    threads: usize,
    rate: f64,
    per_packet: f64,
    run: Duration,
) -> Result<Step> {
    let c0 = settled(bed, pin).await?;
    let t0 = Instant::now();
    let sent = client::udp_paced(ns, target, threads, rate / per_packet, run)?;
    let took = t0.elapsed();
    let c1 = settled(bed, pin).await?;
    let received = c1.received.saturating_sub(c0.received);
    let lost = c1.lost.saturating_sub(c0.lost);
    let secs = took.as_secs_f64();
    Ok(Step {
        target_events_per_s: rate,
        packets_sent: sent,
        events: received + lost,
        received,
        lost,
        lost_agent: c1.lost_agent.saturating_sub(c0.lost_agent),
        decode_errors: c1.decode_errors.saturating_sub(c0.decode_errors),
        events_per_s: (received + lost) as f64 / secs.max(1e-3),
        seconds: secs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(rate: f64, lost: u64) -> Step {
        Step {
            events_per_s: rate,
            lost,
            ..Default::default()
        }
    }

    #[test]
    fn a_loss_below_a_clean_step_caps_the_sustained_rate() {
        let steps = [
            step(100e3, 0),
            step(200e3, 0),
            step(282e3, 0),
            step(268e3, 158),
            step(397e3, 255),
        ];
        let (sustained, first) = summarize(&steps);
        assert_eq!(sustained, 200e3);
        assert_eq!(first.map(|f| f.events_per_s), Some(268e3));
    }

    #[test]
    fn without_a_loss_the_best_clean_step_counts() {
        let (sustained, first) = summarize(&[step(10e3, 0), step(25e3, 0)]);
        assert_eq!(sustained, 25e3);
        assert!(first.is_none());
    }
}
