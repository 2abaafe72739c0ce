//! Which runner each behaviour gets: a table replay, a scenario function
//! (prose behaviours, keyed by id, built from the same primitives and
//! taking every address, port and name it can from the file), or
//! UNSUPPORTED with the precise reason.

use super::cases::Behaviour;
use super::report::BehaviourReport;
use super::{run_table, table, Ctx};

/// Why a behaviour cannot run here at all.
fn not_runnable(short: &str) -> &'static str {
    match short {
        "svc-028" => "publishNotReadyAddresses is applied by the EndpointSlice controller (it publishes unready pods as ready), not by the proxy; Sluice has no such controller and derives selector endpoints from CNI-registered Pods without readiness; the proxy-side rule (ready, serving, terminating) is replayed in svc-025/svc-026",
        "svc-032" => "a unit test of kube-proxy's conntrack cleanup against a fabricated conntrack table; Sluice keeps its own BPF conntrack and has no such table to seed; the packet-level consequence (a UDP flow moves to the new backend) is svc-033",
        "svc-034" => "needs the regression-issue-74839 server that injects out-of-window TCP segments (raw packet forging); not built (the second node with its own agent is: see svc-009)",
        "svc-035" => "needs nodes in three zones, each with its own agent (the runner builds one further node, without a zone), and zone hints from the EndpointSlice controller; not built",
        "svc-036" => "IPv6 and dual-stack are a separate issue: Sluice and the sandbox are IPv4 only",
        _ => "not runnable here",
    }
}

/// The `svc-NNN` part of an id.
fn short(id: &str) -> &str {
    id.get(..7).unwrap_or(id)
}

pub async fn run(ctx: &Ctx<'_>, b: &Behaviour) -> BehaviourReport {
    match short(&b.id) {
        "svc-020" | "svc-025" | "svc-026" => super::percase::run(ctx, b).await,
        "svc-012" => super::variants::nodeport_addresses(ctx, b).await,
        "svc-018" => super::variants::lb_ipmode(ctx, b).await,
        "svc-029" | "svc-030" => super::inspect::ignored(ctx, b).await,
        "svc-043" => super::inspect::tolerant(ctx, b).await,
        "svc-022" => super::e2e::affinity(ctx, b).await,
        "svc-023" => super::e2e::affinity_timeout(ctx, b).await,
        "svc-024" => super::e2e::affinity_switch(ctx, b).await,
        "svc-033" => super::e2e::udp_backend_change(ctx, b).await,
        "svc-038" => super::e2e::lifecycle(ctx, b).await,
        "svc-005" => super::e2e_ports::named_ports(ctx, b).await,
        "svc-006" => super::e2e_ports::multiple_slices(ctx, b).await,
        "svc-040" => super::e2e_ports::nodeport_tcp_udp(ctx, b).await,
        "svc-044" => super::e2e_ports::sctp(ctx, b).await,
        "svc-031" => super::e2e_ports::proxy_name(ctx, b).await,
        "svc-041" => super::e2e_ports::host_network(ctx, b).await,
        "svc-009" => super::e2e_nodes::source_ip(ctx, b).await,
        "svc-021" => super::e2e_nodes::itp_local(ctx, b).await,
        "svc-015" => super::e2e_nodes::health_check(ctx, b).await,
        "svc-027" => super::e2e_nodes::terminating(ctx, b).await,
        "svc-037" => super::e2e_nodes::localhost_nodeport(ctx, b).await,
        "svc-039" => super::e2e_nodes::same_selector(ctx, b).await,
        "svc-042" => super::e2e_nodes::matrix(ctx, b).await,
        id @ ("svc-028" | "svc-032" | "svc-034" | "svc-035" | "svc-036") => {
            BehaviourReport::unsupported(&b.id, &b.title, not_runnable(id))
        }
        _ => match table::plan(b, ctx.conv, ctx.all) {
            Ok(plan) => run_table(ctx, b, plan).await,
            Err(why) => BehaviourReport::unsupported(
                &b.id,
                &b.title,
                format!("no packet-flow table the runner can replay and no scenario for it: {why}"),
            ),
        },
    }
}
