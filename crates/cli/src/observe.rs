//! `sluice observe`: flow events from the agent, Hubble-style: filters, a
//! one-line human format, or one JSON object per line
//! (fields: docs/observability.md).

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use sluice_api::{Client, Flow, FlowPeer, FlowQuery, TraceConfig, Verdict};
use std::io::Write;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ObserveOutput {
    /// One line per flow.
    Compact,
    /// One JSON object per line (NDJSON).
    Json,
}

#[derive(Args)]
pub struct ObserveArgs {
    /// Flows from or to this pod (`namespace/name`).
    #[arg(long)]
    pod: Option<String>,
    /// Flows sent by this pod (`namespace/name`).
    #[arg(long)]
    from_pod: Option<String>,
    /// Flows delivered to this pod (`namespace/name`), also through a Service.
    #[arg(long)]
    to_pod: Option<String>,
    /// Flows with a pod (or Service) in this namespace on either side.
    #[arg(long)]
    namespace: Option<String>,
    /// Flows addressed to this Service (`namespace/name`).
    #[arg(long)]
    service: Option<String>,
    /// Source or destination port (original or translated).
    #[arg(long)]
    port: Option<u16>,
    /// TCP or UDP.
    #[arg(long)]
    protocol: Option<String>,
    /// FORWARDED or DROPPED.
    #[arg(long, value_parser = parse_verdict)]
    verdict: Option<Verdict>,
    /// Only drops for this reason, e.g. no_service_backend.
    #[arg(long)]
    drop_reason: Option<String>,
    /// Keep printing new flows as they happen.
    #[arg(short, long)]
    follow: bool,
    /// How many past flows to show first (default 20).
    #[arg(long)]
    last: Option<usize>,
    /// Switch per-packet tracing on or off in the datapath (debugging:
    /// every translated packet gets an event, not only new flows), then exit.
    #[arg(long, value_name = "on|off", value_parser = parse_on_off)]
    trace_packets: Option<bool>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = ObserveOutput::Compact)]
    output: ObserveOutput,
}

fn parse_verdict(s: &str) -> Result<Verdict, String> {
    s.parse()
}

fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" | "true" | "1" => Ok(true),
        "off" | "false" | "0" => Ok(false),
        other => Err(format!("expected on or off, got {other:?}")),
    }
}

fn side(p: &FlowPeer) -> String {
    match p.pod_name() {
        Some(pod) => format!("{pod}:{}", p.port),
        None => format!("{}:{}", p.ip, p.port),
    }
}

/// `HH:MM:SS.mmm` (UTC) out of the RFC 3339 time.
fn clock(f: &Flow) -> &str {
    f.time.get(11..23).unwrap_or(&f.time)
}

/// The one-line form:
/// `12:01:02.345  default/client:40312 -> default/web (10.96.0.10:80) -> default/web-2:8080  TCP SYN  FORWARDED`
pub fn compact(f: &Flow) -> String {
    let mut line = format!("{}  {}", clock(f), side(&f.source));
    if f.reply {
        // A backend's reply: show who it really came from and what the
        // client sees as its source.
        line.push_str(&format!(
            " (as {}:{}) -> {}",
            f.translated_source.ip,
            f.translated_source.port,
            side(&f.translated_destination)
        ));
    } else if let Some(svc) = &f.service {
        line.push_str(&format!(
            " -> {} ({}:{})",
            svc.name, f.destination.ip, f.destination.port
        ));
        if f.translated_destination != f.destination {
            line.push_str(&format!(" -> {}", side(&f.translated_destination)));
        }
    } else {
        line.push_str(&format!(" -> {}", side(&f.destination)));
        if f.translated_destination != f.destination {
            line.push_str(&format!(" -> {}", side(&f.translated_destination)));
        }
    }
    line.push_str(&format!("  {}", f.protocol));
    if !f.tcp_flags.is_empty() {
        line.push_str(&format!(" {}", f.tcp_flags.join("|")));
    }
    line.push_str(&format!("  {}", f.verdict.as_str()));
    if let Some(r) = &f.drop_reason {
        let how = match (f.refused, f.protocol.as_str()) {
            (true, "TCP") => ", refused with RST",
            (true, _) => ", refused with ICMP port unreachable",
            _ => "",
        };
        line.push_str(&format!(" ({r}{how})"));
    }
    line
}

pub async fn run(client: &Client, a: ObserveArgs) -> Result<()> {
    if let Some(on) = a.trace_packets {
        let cfg: TraceConfig = client
            .put("/v1/config/trace", &TraceConfig { per_packet: on })
            .await?;
        println!(
            "per-packet tracing {}",
            if cfg.per_packet { "on" } else { "off" }
        );
        return Ok(());
    }
    let q = FlowQuery {
        last: a.last,
        follow: a.follow,
        pod: a.pod,
        from_pod: a.from_pod,
        to_pod: a.to_pod,
        namespace: a.namespace,
        service: a.service,
        port: a.port,
        protocol: a.protocol,
        verdict: a.verdict,
        drop_reason: a.drop_reason,
    };
    let path = format!("/v1/flows?{}", q.to_query_string());
    let mut out = std::io::stdout().lock();
    let mut write_err = None;
    client
        .get_stream::<Flow>(&path, |f| {
            let line = match a.output {
                ObserveOutput::Json => serde_json::to_string(&f).unwrap_or_default(),
                ObserveOutput::Compact => compact(&f),
            };
            // A closed pipe (`| head`) ends the stream quietly.
            match writeln!(out, "{line}").and_then(|_| out.flush()) {
                Ok(()) => true,
                Err(e) => {
                    write_err = Some(e);
                    false
                }
            }
        })
        .await
        .context("cannot read flows from the agent")?;
    match write_err {
        Some(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}
