//! Prometheus metrics on `--metrics-addr` (off unless given).
//!
//! Datapath numbers (per-CPU counters, map fill) are read from the pinned
//! maps at scrape time by a [`Collector`], so they cost nothing between
//! scrapes and survive agent restarts (the maps do). Control-plane numbers
//! come from [`AgentStats`], which the controller updates, and the reconcile
//! latency histogram, which it observes into.

use crate::flows::Telemetry;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use sluice_datapath::bindings::sluice_metric;
use sluice_datapath::events::{point_name, reason_name};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Control-plane numbers the controller keeps current.
#[derive(Debug)]
pub struct AgentStats {
    pub services: AtomicU64,
    pub frontends: AtomicU64,
    pub backends: AtomicU64,
    pub endpoints: AtomicU64,
    pub rejected_objects: AtomicU64,
    pub map_write_errors: AtomicU64,
    /// Seconds from a change arriving to its map writes being done.
    pub reconcile_seconds: Histogram,
}

impl Default for AgentStats {
    fn default() -> Self {
        Self {
            services: AtomicU64::new(0),
            frontends: AtomicU64::new(0),
            backends: AtomicU64::new(0),
            endpoints: AtomicU64::new(0),
            rejected_objects: AtomicU64::new(0),
            map_write_errors: AtomicU64::new(0),
            // 10 µs .. ~10 s: an incremental change is tens of µs, a full
            // sync of 100k Services seconds.
            reconcile_seconds: Histogram::new(exponential_buckets(0.00001, 4.0, 11)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot listen for metrics on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Reads the datapath and the agent's counters at scrape time.
#[derive(Debug)]
struct AgentCollector {
    tel: Arc<Telemetry>,
}

fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Vec<(&'static str, String)>, u64)],
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in rows {
        ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Vec<(&'static str, String)>, i64)],
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in rows {
        ConstGauge::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn one(v: u64) -> Vec<(Vec<(&'static str, String)>, u64)> {
    vec![(Vec::new(), v)]
}

fn one_gauge(v: u64) -> Vec<(Vec<(&'static str, String)>, i64)> {
    vec![(Vec::new(), i64::try_from(v).unwrap_or(i64::MAX))]
}

impl Collector for AgentCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let tel = &self.tel;
        let maps = sluice_datapath::LbMaps::open(&tel.pin_dir).ok();
        let kernel = maps
            .as_ref()
            .and_then(|m| m.metrics().ok())
            .unwrap_or_default();
        let k = |m: sluice_metric| kernel.get(m as usize).copied().unwrap_or(0);
        let traffic = sluice_datapath::ObsMaps::open(&tel.pin_dir)
            .and_then(|o| o.traffic())
            .unwrap_or_default();

        let mut drops = Vec::new();
        let mut drop_bytes = Vec::new();
        let mut fwd = Vec::new();
        let mut fwd_bytes = Vec::new();
        for r in &traffic {
            let point = ("point", point_name(r.point).to_string());
            if r.reason == 0 {
                fwd.push((vec![point.clone()], r.packets));
                fwd_bytes.push((vec![point], r.bytes));
            } else {
                let reason = ("reason", reason_name(r.reason).to_string());
                drops.push((vec![reason.clone(), point.clone()], r.packets));
                drop_bytes.push((vec![reason, point], r.bytes));
            }
        }
        counter(
            &mut enc,
            "sluice_drops",
            "Packets dropped (or refused) by the datapath, by reason and observation point",
            &drops,
        )?;
        counter(
            &mut enc,
            "sluice_drop_bytes",
            "Bytes dropped by the datapath, by reason and observation point",
            &drop_bytes,
        )?;
        counter(
            &mut enc,
            "sluice_forwarded_packets",
            "Packets the datapath let through (translated or untouched), by observation point",
            &fwd,
        )?;
        counter(
            &mut enc,
            "sluice_forwarded_bytes",
            "Bytes the datapath let through, by observation point",
            &fwd_bytes,
        )?;
        counter(
            &mut enc,
            "sluice_new_flows",
            "Service flows created (backend selected, conntrack entry written)",
            &[
                (
                    vec![("kind", "service".to_string())],
                    k(sluice_metric::METRIC_SERVICE_NEW_FLOW),
                ),
                (
                    vec![("kind", "nodeport".to_string())],
                    k(sluice_metric::METRIC_NODEPORT_NEW_FLOW),
                ),
            ],
        )?;
        counter(
            &mut enc,
            "sluice_conntrack_hits",
            "Packets translated from an existing conntrack entry",
            &one(k(sluice_metric::METRIC_SERVICE_CT_HIT)),
        )?;
        counter(
            &mut enc,
            "sluice_fragments_without_first",
            "Non-first IPv4 fragments whose first fragment was not seen (passed untranslated)",
            &one(k(sluice_metric::METRIC_FRAG_NO_FIRST)),
        )?;
        counter(
            &mut enc,
            "sluice_events_lost",
            "Flow events the kernel could not emit because the ring buffer was full",
            &one(k(sluice_metric::METRIC_EVENTS_LOST)),
        )?;
        counter(
            &mut enc,
            "sluice_events_received",
            "Flow events the agent read from the ring buffer",
            &one(tel.received.load(Ordering::Relaxed)),
        )?;
        counter(
            &mut enc,
            "sluice_events_decode_errors",
            "Ring buffer records the agent could not decode",
            &one(tel.decode_errors.load(Ordering::Relaxed)),
        )?;

        let s = &tel.stats;
        let g = |a: &AtomicU64| one_gauge(a.load(Ordering::Relaxed));
        gauge(
            &mut enc,
            "sluice_services",
            "Services programmed",
            &g(&s.services),
        )?;
        gauge(
            &mut enc,
            "sluice_frontends",
            "Service frontends programmed (ClusterIP and NodePort ports)",
            &g(&s.frontends),
        )?;
        gauge(
            &mut enc,
            "sluice_backends",
            "Backends programmed",
            &g(&s.backends),
        )?;
        gauge(
            &mut enc,
            "sluice_endpoints",
            "Pods registered by the CNI plugin on this node",
            &g(&s.endpoints),
        )?;
        gauge(
            &mut enc,
            "sluice_rejected_objects",
            "Manifest objects (or files) rejected and not in force",
            &g(&s.rejected_objects),
        )?;
        counter(
            &mut enc,
            "sluice_map_write_errors",
            "Map writes that failed (e.g. a full map) since the agent started",
            &one(s.map_write_errors.load(Ordering::Relaxed)),
        )?;
        s.reconcile_seconds.encode(enc.encode_descriptor(
            "sluice_reconcile_duration_seconds",
            "Time from a change to its map writes being done",
            None,
            MetricType::Histogram,
        )?)?;

        let pinned = sluice_datapath::mapinfo::list_pinned(&tel.pin_dir).unwrap_or_default();
        let mut entries = Vec::new();
        let mut capacity = Vec::new();
        let mut memory = Vec::new();
        for m in &pinned {
            let label = vec![("map", m.name.clone())];
            capacity.push((label.clone(), i64::from(m.max_entries)));
            if let Some(n) = m.entries {
                entries.push((label.clone(), i64::try_from(n).unwrap_or(i64::MAX)));
            }
            if let Some(b) = m.memlock_bytes {
                memory.push((label, i64::try_from(b).unwrap_or(i64::MAX)));
            }
        }
        gauge(
            &mut enc,
            "sluice_map_entries",
            "Entries in use per BPF map (maps that fill up)",
            &entries,
        )?;
        gauge(
            &mut enc,
            "sluice_map_capacity",
            "Maximum entries per BPF map (bytes for the ring buffer)",
            &capacity,
        )?;
        gauge(
            &mut enc,
            "sluice_map_memory_bytes",
            "Memory the kernel charges per BPF map",
            &memory,
        )?;
        Ok(())
    }
}

/// The registry served on the metrics endpoint.
pub fn registry(tel: Arc<Telemetry>) -> Registry {
    let mut r = Registry::default();
    r.register_collector(Box::new(AgentCollector { tel }));
    r
}

/// Renders the Prometheus text exposition (format 0.0.4).
pub fn render(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, registry)?;
    Ok(out)
}

/// Binds `addr` and serves `GET /metrics` until the process ends.
pub async fn serve(addr: SocketAddr, tel: Arc<Telemetry>) -> Result<(), MetricsError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Bind { addr, source })?;
    let registry = Arc::new(registry(tel));
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let registry = registry.clone();
            async move {
                // Map walks are blocking syscalls: off the async workers.
                let text = tokio::task::spawn_blocking(move || render(&registry)).await;
                match text {
                    Ok(Ok(body)) => (
                        [(
                            CONTENT_TYPE,
                            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                        )],
                        body,
                    )
                        .into_response(),
                    _ => (
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                        "cannot render metrics",
                    )
                        .into_response(),
                }
            }
        }),
    );
    tracing::info!(%addr, "serving Prometheus metrics on /metrics");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_parse::{Scrape, Value};

    /// The exposition parses with a real Prometheus text parser and carries
    /// the control-plane numbers (the datapath families are exercised
    /// against real maps by the e2e test).
    #[test]
    fn exposition_parses() {
        let tel = Arc::new(Telemetry::new(
            std::path::Path::new("/nonexistent/sluice-test"),
            16,
            Default::default(),
            None,
        ));
        tel.stats.services.store(3, Ordering::Relaxed);
        tel.stats.reconcile_seconds.observe(0.002);
        let text = render(&registry(tel)).expect("renders");
        let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("parses");
        let services = scrape
            .samples
            .iter()
            .find(|s| s.metric == "sluice_services")
            .expect("sluice_services");
        assert!(
            matches!(services.value, Value::Gauge(v) if v == 3.0),
            "{text}"
        );
        let hist = scrape
            .samples
            .iter()
            .find(|s| s.metric == "sluice_reconcile_duration_seconds")
            .expect("histogram");
        let Value::Histogram(buckets) = &hist.value else {
            panic!("not a histogram: {:?}", hist.value)
        };
        assert!(buckets.iter().any(|b| b.count == 1.0), "{text}");
    }
}
