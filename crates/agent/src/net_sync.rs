//! The node's network facts the datapath needs besides Services: which
//! addresses are the node's (and serve NodePorts), and the
//! loadBalancerSourceRanges of LB IP frontends.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use sluice_core::{DesiredState, FrontendKind, FrontendScope};
use sluice_datapath::maps::NODE_ADDR_NODEPORT;
use sluice_datapath::{MapsError, NodeAddrMap, SrcRange, SrcRangeMap};

/// `sl_node_addrs` content: every node address, flagged when it is inside
/// one of the `--nodeport-addresses` CIDRs (kube-proxy serves NodePorts
/// only there). Loopback never serves NodePorts.
pub fn node_addr_entries(addrs: &[Ipv4Addr], nodeport_cidrs: &[Ipv4Net]) -> Vec<(Ipv4Addr, u32)> {
    addrs
        .iter()
        .map(|ip| {
            let np = !ip.is_loopback() && nodeport_cidrs.iter().any(|n| n.contains(ip));
            (*ip, if np { NODE_ADDR_NODEPORT } else { 0 })
        })
        .collect()
}

/// Writes `sl_node_addrs` (replacing whatever an earlier agent left).
pub fn write_node_addrs(
    pin_dir: &std::path::Path,
    entries: &[(Ipv4Addr, u32)],
) -> Result<(), MapsError> {
    NodeAddrMap::open(pin_dir)?.sync(entries)
}

/// The `sl_src_ranges` entries `desired` needs. A range that contains a
/// node address also admits the Service's LB IPs as sources (traffic the
/// node sends to its own LB and the load balancer hairpins back arrives
/// SNATed to the LB IP), as kube-proxy does.
pub fn desired_src_ranges(desired: &DesiredState, node_ips: &[Ipv4Addr]) -> BTreeSet<SrcRange> {
    let mut lb_ips: BTreeMap<&str, BTreeSet<Ipv4Addr>> = BTreeMap::new();
    for d in desired.services.values() {
        if d.kind == FrontendKind::LoadBalancer {
            lb_ips.entry(&d.service).or_default().insert(d.frontend.ip);
        }
    }
    let mut out = BTreeSet::new();
    for d in desired.services.values() {
        if d.source_ranges.is_empty() || d.frontend.scope != FrontendScope::All {
            continue;
        }
        for net in &d.source_ranges {
            out.insert(SrcRange {
                rev_nat_id: d.rev_nat_id,
                addr: net.network(),
                prefix_len: net.prefix_len(),
            });
        }
        let covers_node = d
            .source_ranges
            .iter()
            .any(|n| node_ips.iter().any(|ip| n.contains(ip)));
        if covers_node {
            for ip in lb_ips.get(d.service.as_str()).into_iter().flatten() {
                out.insert(SrcRange {
                    rev_nat_id: d.rev_nat_id,
                    addr: *ip,
                    prefix_len: 32,
                });
            }
        }
    }
    out
}

/// Keeps `sl_src_ranges` equal to what the compiled Services need. New
/// entries are written before the masters that start checking them (a
/// range keyed by a not-yet-used rev-NAT id is inert), stale ones removed
/// after: allowed sources are never dropped in between.
pub struct SrcRangeSync {
    map: SrcRangeMap,
    applied: BTreeSet<SrcRange>,
    node_ips: Vec<Ipv4Addr>,
}

impl SrcRangeSync {
    pub fn open(pin_dir: &std::path::Path, node_ips: Vec<Ipv4Addr>) -> Result<Self, MapsError> {
        let map = SrcRangeMap::open(pin_dir)?;
        let applied = map.entries().into_iter().collect();
        Ok(Self {
            map,
            applied,
            node_ips,
        })
    }

    /// Before the service writes: adds what `desired` needs.
    pub fn add(&mut self, desired: &DesiredState) -> Result<(), MapsError> {
        for r in desired_src_ranges(desired, &self.node_ips) {
            if !self.applied.contains(&r) {
                self.map.insert(r)?;
                self.applied.insert(r);
            }
        }
        Ok(())
    }

    /// After the service writes: removes what `desired` no longer needs.
    pub fn remove_stale(&mut self, desired: &DesiredState) -> Result<(), MapsError> {
        let want = desired_src_ranges(desired, &self.node_ips);
        let stale: Vec<SrcRange> = self.applied.difference(&want).copied().collect();
        for r in stale {
            self.map.remove(r)?;
            self.applied.remove(&r);
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use sluice_core::model::Change;
    use sluice_core::{parse_documents, CompileConfig, Engine};

    fn compiled(ranges: &str) -> DesiredState {
        let text = format!("kind: Service\nmetadata: {{name: lb}}\nspec:\n  type: LoadBalancer\n  clusterIP: 10.96.0.51\n  externalIPs: [203.0.113.77]\n  loadBalancerSourceRanges: [{ranges}]\n  ports: [{{port: 80, nodePort: 30051}}]\nstatus: {{loadBalancer: {{ingress: [{{ip: 1.2.3.4}}, {{ip: 5.6.7.8}}]}}}}\n");
        let out = parse_documents("t.yaml", &text);
        assert!(out.rejections.is_empty(), "{:?}", out.rejections);
        let changes: Vec<Change> = out
            .objects
            .into_iter()
            .map(|(o, _)| Change::Upsert(o))
            .collect();
        let mut e = Engine::new(CompileConfig::default());
        e.apply(&changes);
        e.desired().clone()
    }

    fn rendered(set: &BTreeSet<SrcRange>) -> Vec<String> {
        set.iter()
            .map(|r| format!("{} {}/{}", r.rev_nat_id, r.addr, r.prefix_len))
            .collect()
    }

    /// Ranges guard the LB IPs only; when one contains a node address the
    /// LB IPs themselves become allowed sources too (svc-017).
    #[test]
    fn source_ranges_guard_lb_ips_and_admit_them_when_a_range_holds_a_node_ip() {
        let node = [Ipv4Addr::new(192, 168, 0, 2)];
        let d = compiled("203.0.113.0/25");
        let ids: Vec<u32> = d
            .services
            .values()
            .filter(|s| s.kind == FrontendKind::LoadBalancer)
            .map(|s| s.rev_nat_id)
            .collect();
        assert_eq!(ids.len(), 2);
        let want: Vec<String> = ids
            .iter()
            .map(|id| format!("{id} 203.0.113.0/25"))
            .collect();
        assert_eq!(rendered(&desired_src_ranges(&d, &node)), want);

        let d = compiled("192.168.0.0/24, ' 203.0.113.0/25'");
        let got = rendered(&desired_src_ranges(&d, &node));
        for id in &ids {
            for r in [
                "192.168.0.0/24",
                "203.0.113.0/25",
                "1.2.3.4/32",
                "5.6.7.8/32",
            ] {
                assert!(got.contains(&format!("{id} {r}")), "{id} {r}: {got:?}");
            }
        }
        assert_eq!(got.len(), 8, "{got:?}");
    }

    #[test]
    fn only_nodeport_cidrs_serve_nodeports_and_never_loopback() {
        let addrs = [
            Ipv4Addr::new(192, 168, 0, 2),
            Ipv4Addr::new(192, 168, 1, 2),
            Ipv4Addr::new(127, 0, 0, 1),
        ];
        let cidrs: Vec<Ipv4Net> = vec![
            "192.168.0.2/32".parse().unwrap_or_default(),
            "127.0.0.0/8".parse().unwrap_or_default(),
        ];
        assert_eq!(
            node_addr_entries(&addrs, &cidrs),
            vec![(addrs[0], NODE_ADDR_NODEPORT), (addrs[1], 0), (addrs[2], 0)]
        );
    }
}
