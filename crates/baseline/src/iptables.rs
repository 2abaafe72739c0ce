//! kube-proxy's iptables mode: `iptables-restore` input for the `filter` and
//! `nat` tables, in the shapes a real node's `iptables-save` shows.
//!
//! Rules are written in `iptables-save`'s canonical option order so that a
//! render can be compared line by line with what the kernel reports back.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::names::{ext_chain, sep_chain, svc_chain};
use crate::views::ServicePortView;
use crate::Options;

/// One chain and its rules (each rule without the `-A CHAIN ` prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Chain {
    pub name: String,
    pub rules: Vec<String>,
}

impl Chain {
    fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            rules: Vec::new(),
        }
    }
}

/// A rule in a built-in chain that sends packets to kube-proxy's chains.
/// kube-proxy installs these with `iptables -C`/`-I` outside the restore,
/// because a restore can only append to a built-in chain it does not flush.
pub(crate) struct Jump {
    pub table: &'static str,
    pub chain: &'static str,
    pub rule: &'static str,
}

pub(crate) const JUMPS: &[Jump] = &[
    Jump {
        table: "filter",
        chain: "INPUT",
        rule: "-m conntrack --ctstate NEW -m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES",
    },
    Jump {
        table: "filter",
        chain: "FORWARD",
        rule: "-m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD",
    },
    Jump {
        table: "filter",
        chain: "FORWARD",
        rule: "-m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
    },
    Jump {
        table: "filter",
        chain: "FORWARD",
        rule: "-m conntrack --ctstate NEW -m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES",
    },
    Jump {
        table: "filter",
        chain: "OUTPUT",
        rule: "-m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
    },
    Jump {
        table: "nat",
        chain: "PREROUTING",
        rule: "-m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
    },
    Jump {
        table: "nat",
        chain: "OUTPUT",
        rule: "-m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
    },
    Jump {
        table: "nat",
        chain: "POSTROUTING",
        rule: "-m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING",
    },
];

/// The masquerade mark kube-proxy uses by default (`--iptables-masquerade-bit 14`).
const MASQ_MARK: &str = "0x4000/0x4000";

/// `iptables -m statistic --probability` for the i-th of `n` remaining
/// endpoints: 1/n, as iptables stores it (a u32 fraction of 2^31) and prints
/// it back (11 decimals), so a render equals `iptables-save` output.
pub fn probability(n: usize) -> String {
    let scale = f64::from(0x8000_0000u32);
    // Computed in f64 as iptables does; n is a small endpoint count.
    #[allow(clippy::cast_precision_loss)]
    let stored = (scale / n as f64).round();
    format!("{:.11}", stored / scale)
}

/// The `filter` table's chains: REJECT for Service ports without endpoints,
/// plus kube-proxy's forwarding rules for marked and established traffic.
pub(crate) fn filter_chains(views: &[ServicePortView]) -> Vec<Chain> {
    let mut services = Chain::new("KUBE-SERVICES");
    let mut external = Chain::new("KUBE-EXTERNAL-SERVICES");
    for v in views.iter().filter(|v| v.endpoints.is_empty()) {
        let p = v.proto_lower();
        let id = v.port_id();
        services.rules.push(format!(
            "-d {}/32 -p {p} -m comment --comment \"{id} has no endpoints\" -m {p} --dport {} -j REJECT --reject-with icmp-port-unreachable",
            v.cluster_ip, v.port
        ));
        if let Some(np) = v.node_port {
            external.rules.push(format!(
                "-p {p} -m comment --comment \"{id} has no endpoints\" -m addrtype --dst-type LOCAL -m {p} --dport {np} -j REJECT --reject-with icmp-port-unreachable"
            ));
        }
    }
    let mut forward = Chain::new("KUBE-FORWARD");
    forward.rules = vec![
        "-m conntrack --ctstate INVALID -j DROP".into(),
        format!("-m comment --comment \"kubernetes forwarding rules\" -m mark --mark {MASQ_MARK} -j ACCEPT"),
        "-m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT".into(),
    ];
    vec![services, external, forward]
}

/// The `nat` chains that are rewritten whole on every sync, KUBE-SERVICES
/// first: its length (one rule per Service port) is what makes kube-proxy's
/// per-packet cost grow with the number of Services.
pub(crate) fn nat_top_chains(views: &[ServicePortView]) -> Vec<Chain> {
    let mut services = Chain::new("KUBE-SERVICES");
    let mut nodeports = Chain::new("KUBE-NODEPORTS");
    for v in views.iter().filter(|v| !v.endpoints.is_empty()) {
        let p = v.proto_lower();
        let id = v.port_id();
        services.rules.push(format!(
            "-d {}/32 -p {p} -m comment --comment \"{id} cluster IP\" -m {p} --dport {} -j {}",
            v.cluster_ip,
            v.port,
            svc_chain(v)
        ));
        if let Some(np) = v.node_port {
            nodeports.rules.push(format!(
                "-p {p} -m comment --comment \"{id}\" -m {p} --dport {np} -j {}",
                ext_chain(v)
            ));
        }
    }
    services.rules.push(
        "-m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS".into(),
    );
    let mut post = Chain::new("KUBE-POSTROUTING");
    post.rules = vec![
        format!("-m mark ! --mark {MASQ_MARK} -j RETURN"),
        // Clear the bit so a packet that is re-routed is not masqueraded twice.
        "-j MARK --set-xmark 0x4000/0x0".into(),
        "-m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully".into(),
    ];
    let mut mark = Chain::new("KUBE-MARK-MASQ");
    mark.rules = vec![format!("-j MARK --set-xmark {MASQ_MARK}")];
    vec![services, nodeports, post, mark]
}

/// The chains of one Service port: KUBE-SVC (endpoint selection), KUBE-EXT
/// for a NodePort, one KUBE-SEP per endpoint. None without endpoints: such a
/// port only has its REJECT rules in the filter table.
pub(crate) fn service_chains(v: &ServicePortView, opts: &Options) -> Vec<Chain> {
    if v.endpoints.is_empty() {
        return Vec::new();
    }
    let p = v.proto_lower();
    let id = v.port_id();
    let svc_name = svc_chain(v);
    let mut svc = Chain::new(svc_name.clone());
    if let Some(cidr) = opts.cluster_cidr {
        // Traffic from outside the pod network must be SNATed, or replies
        // from the endpoint would bypass this node's conntrack.
        svc.rules.push(format!(
            "! -s {cidr} -d {}/32 -p {p} -m comment --comment \"{id} cluster IP\" -m {p} --dport {} -j KUBE-MARK-MASQ",
            v.cluster_ip, v.port
        ));
    }
    let mut out = Vec::with_capacity(v.endpoints.len() + 2);
    let n = v.endpoints.len();
    let mut seps = Vec::with_capacity(n);
    for (i, ep) in v.endpoints.iter().enumerate() {
        let sep_name = sep_chain(v, ep.ip, ep.port);
        // Rules are tried in order, so the i-th must match with 1/(remaining)
        // for every endpoint to get 1/n overall; the last needs no match.
        let stat = if i + 1 < n {
            format!(
                " -m statistic --mode random --probability {}",
                probability(n - i)
            )
        } else {
            String::new()
        };
        svc.rules.push(format!(
            "-m comment --comment \"{id} -> {}:{}\"{stat} -j {sep_name}",
            ep.ip, ep.port
        ));
        let mut sep = Chain::new(sep_name);
        // Hairpin: an endpoint reaching itself through the Service must be
        // SNATed, or it would answer itself directly.
        sep.rules.push(format!(
            "-s {}/32 -m comment --comment \"{id}\" -j KUBE-MARK-MASQ",
            ep.ip
        ));
        sep.rules.push(format!(
            "-p {p} -m comment --comment \"{id}\" -m {p} -j DNAT --to-destination {}:{}",
            ep.ip, ep.port
        ));
        seps.push(sep);
    }
    out.push(svc);
    if v.node_port.is_some() {
        let mut ext = Chain::new(ext_chain(v));
        ext.rules.push(format!(
            "-m comment --comment \"masquerade traffic for {id} external destinations\" -j KUBE-MARK-MASQ"
        ));
        ext.rules.push(format!("-j {svc_name}"));
        out.push(ext);
    }
    out.extend(seps);
    out
}

/// What one restore writes to one table.
pub(crate) struct TableWrite<'a> {
    pub table: &'static str,
    /// Declared (created, or flushed when they exist) and filled.
    pub chains: Vec<&'a Chain>,
    /// Flushed and deleted, after the rules that referenced them are gone.
    pub delete: Vec<&'a str>,
    /// Built-in chain jumps, for a standalone render only.
    pub jumps: bool,
}

/// `iptables-restore` text. Declarations come first and deletions last, as
/// kube-proxy writes them: a chain can only be deleted once nothing in the
/// same transaction still jumps to it.
pub(crate) fn restore_text(tables: &[TableWrite<'_>]) -> String {
    let mut out = String::new();
    for t in tables {
        let _ = writeln!(out, "*{}", t.table);
        for c in &t.chains {
            let _ = writeln!(out, ":{} - [0:0]", c.name);
        }
        for name in &t.delete {
            let _ = writeln!(out, ":{name} - [0:0]");
        }
        if t.jumps {
            for j in JUMPS.iter().filter(|j| j.table == t.table) {
                let _ = writeln!(out, "-A {} {}", j.chain, j.rule);
            }
        }
        for c in &t.chains {
            for r in &c.rules {
                let _ = writeln!(out, "-A {} {r}", c.name);
            }
        }
        for name in &t.delete {
            let _ = writeln!(out, "-X {name}");
        }
        out.push_str("COMMIT\n");
    }
    out
}

/// Everything kube-proxy's iptables mode would install for `views`, as one
/// `iptables-restore` input (filter and nat), including the jumps from the
/// built-in chains. Loading it without `--noflush` replaces both tables.
pub fn render_iptables(views: &[ServicePortView], opts: &Options) -> String {
    let filter = filter_chains(views);
    let nat = all_nat_chains(views, opts);
    let mut out = String::from(
        "# kube-proxy iptables mode, as rendered by sluice-baseline (load with iptables-restore)\n",
    );
    out.push_str(&full_restore_text(&filter, &nat));
    out
}

/// `iptables-restore` input that replaces the filter and nat tables with
/// `filter` and `nat` (jumps from the built-in chains included).
pub(crate) fn full_restore_text(filter: &[Chain], nat: &[Chain]) -> String {
    restore_text(&[
        TableWrite {
            table: "filter",
            chains: filter.iter().collect(),
            delete: Vec::new(),
            jumps: true,
        },
        TableWrite {
            table: "nat",
            chains: nat.iter().collect(),
            delete: Vec::new(),
            jumps: true,
        },
    ])
}

pub(crate) fn all_nat_chains(views: &[ServicePortView], opts: &Options) -> Vec<Chain> {
    let mut nat = nat_top_chains(views);
    for v in views {
        nat.extend(service_chains(v, opts));
    }
    nat
}

/// Per-Service-port chains that differ between two states: (to write,
/// to delete). Unchanged Service ports are skipped without rendering, so
/// the cost is in the comparison, not in building rules.
pub(crate) fn changed_chains<C: PartialEq>(
    before: &[ServicePortView],
    after: &[ServicePortView],
    build: impl Fn(&ServicePortView) -> Vec<C>,
    name: impl Fn(&C) -> &str,
) -> (Vec<C>, Vec<String>) {
    let old: BTreeMap<_, _> = before.iter().map(|v| (v.key(), v)).collect();
    let new: BTreeMap<_, _> = after.iter().map(|v| (v.key(), v)).collect();
    let mut write = Vec::new();
    let mut delete = Vec::new();
    let keys: std::collections::BTreeSet<_> = old.keys().chain(new.keys()).collect();
    for k in keys {
        let (o, n) = (old.get(k), new.get(k));
        if o == n {
            continue;
        }
        let old_chains = o.map(|v| build(v)).unwrap_or_default();
        let new_chains = n.map(|v| build(v)).unwrap_or_default();
        for c in &old_chains {
            if !new_chains.iter().any(|x| name(x) == name(c)) {
                delete.push(name(c).to_string());
            }
        }
        for c in new_chains {
            if !old_chains.contains(&c) {
                write.push(c);
            }
        }
    }
    (write, delete)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probabilities_round_trip_like_iptables_save() {
        assert_eq!(probability(1), "1.00000000000");
        assert_eq!(probability(2), "0.50000000000");
        assert_eq!(probability(3), "0.33333333349");
        assert_eq!(probability(4), "0.25000000000");
        assert_eq!(probability(5), "0.20000000019");
    }
}
