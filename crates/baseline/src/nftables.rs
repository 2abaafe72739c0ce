//! kube-proxy's nftables mode: one `ip kube-proxy` table whose service
//! lookup is a verdict map (constant cost per packet), written as the
//! `nft -f` command stream kube-proxy itself sends.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use crate::iptables::Chain;
use crate::names::{nft_endpoint_chain, nft_svc_base};
use crate::views::ServicePortView;
use crate::Options;

pub(crate) const TABLE: &str = "ip kube-proxy";

/// One element of a set or map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Element {
    pub set: &'static str,
    pub key: String,
    /// Everything after the key (` comment "…" : goto …`); empty for sets.
    pub rest: String,
}

/// What one Service port contributes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct NftService {
    pub chains: Vec<Chain>,
    pub elements: Vec<Element>,
}

/// Chains, hooks and maps that do not depend on the Services: (declaration
/// line, rules). Base chains sit at kube-proxy's priorities: the endpoint
/// checks (-110) must run before DNAT (dstnat, -100) rewrites the address.
fn fixed(opts: &Options) -> Vec<(String, String, Vec<String>)> {
    let nodeport_match = if opts.node_ips.is_empty() {
        // kube-proxy's default (no --nodeport-addresses): every local
        // address but loopback, the nft twin of `-m addrtype --dst-type LOCAL`.
        "fib daddr type local ip daddr != 127.0.0.0/8"
    } else {
        "ip daddr @nodeport-ips"
    };
    let base = |hook: &str, prio: &str| format!("{{ type {hook} priority {prio} ; }}");
    let mut v = vec![
        (
            "nat-prerouting".into(),
            base("nat hook prerouting", "dstnat"),
            vec!["jump services".into()],
        ),
        (
            "nat-output".into(),
            base("nat hook output", "-100"),
            vec!["jump services".into()],
        ),
        (
            "nat-postrouting".into(),
            base("nat hook postrouting", "srcnat"),
            vec!["jump masquerading".into()],
        ),
        (
            "filter-input".into(),
            base("filter hook input", "-110"),
            vec![
                "ct state new jump nodeport-endpoints-check".into(),
                "ct state new jump service-endpoints-check".into(),
            ],
        ),
        (
            "filter-forward".into(),
            base("filter hook forward", "-110"),
            vec![
                "ct state new jump service-endpoints-check".into(),
                "ct state new jump cluster-ips-check".into(),
            ],
        ),
        (
            "filter-output".into(),
            base("filter hook output", "-110"),
            vec!["ct state new jump service-endpoints-check".into()],
        ),
        (
            // After DNAT: what still goes to a cluster IP matched no port.
            "filter-output-post-dnat".into(),
            base("filter hook output", "-90"),
            vec!["ct state new jump cluster-ips-check".into()],
        ),
        (
            "services".into(),
            String::new(),
            vec![
                "ip daddr . meta l4proto . th dport vmap @service-ips".into(),
                format!("{nodeport_match} meta l4proto . th dport vmap @service-nodeports"),
            ],
        ),
        (
            "service-endpoints-check".into(),
            String::new(),
            vec!["ip daddr . meta l4proto . th dport vmap @no-endpoint-services".into()],
        ),
        (
            "nodeport-endpoints-check".into(),
            String::new(),
            vec![format!(
                "{nodeport_match} meta l4proto . th dport vmap @no-endpoint-nodeports"
            )],
        ),
        (
            "cluster-ips-check".into(),
            String::new(),
            vec![
                "ip daddr @cluster-ips reject comment \"Reject traffic to invalid ports of ClusterIPs\""
                    .into(),
            ],
        ),
        (
            "mark-for-masquerade".into(),
            String::new(),
            vec!["mark set mark or 0x4000".into()],
        ),
        (
            "masquerading".into(),
            String::new(),
            vec![
                "mark and 0x4000 == 0 return".into(),
                // Clear the bit so a re-routed packet is not masqueraded twice.
                "mark set mark xor 0x4000".into(),
                "masquerade fully-random".into(),
            ],
        ),
        (
            // Verdict maps hold verdicts, not statements: `reject` needs a chain.
            "reject-chain".into(),
            "{ comment \"helper for @no-endpoint-services / @no-endpoint-nodeports\" ; }".into(),
            vec!["reject".into()],
        ),
    ];
    v.shrink_to_fit();
    v
}

const SETS: &[(&str, &str, &str, &str)] = &[
    ("set", "cluster-ips", "ipv4_addr", "Active ClusterIPs"),
    (
        "set",
        "nodeport-ips",
        "ipv4_addr",
        "IPs that accept NodePort traffic",
    ),
    (
        "map",
        "service-ips",
        "ipv4_addr . inet_proto . inet_service : verdict",
        "ClusterIP, ExternalIP and LoadBalancer IP traffic",
    ),
    (
        "map",
        "service-nodeports",
        "inet_proto . inet_service : verdict",
        "NodePort traffic",
    ),
    (
        "map",
        "no-endpoint-services",
        "ipv4_addr . inet_proto . inet_service : verdict",
        "vmap to drop or reject packets to services with no endpoints",
    ),
    (
        "map",
        "no-endpoint-nodeports",
        "inet_proto . inet_service : verdict",
        "vmap to drop or reject packets to service nodeports with no endpoints",
    ),
];

/// The chains and map elements of one Service port.
pub(crate) fn service(v: &ServicePortView, opts: &Options) -> NftService {
    let p = v.proto_lower();
    let id = v.port_id();
    let mut out = NftService::default();
    if v.endpoints.is_empty() {
        out.elements.push(Element {
            set: "no-endpoint-services",
            key: format!("{} . {p} . {}", v.cluster_ip, v.port),
            rest: format!(" comment \"{id}\" : goto reject-chain"),
        });
        if let Some(np) = v.node_port {
            out.elements.push(Element {
                set: "no-endpoint-nodeports",
                key: format!("{p} . {np}"),
                rest: format!(" comment \"{id}\" : goto reject-chain"),
            });
        }
        return out;
    }
    let base = nft_svc_base(v);
    let svc_name = format!("service-{base}");
    let mut svc = Chain {
        name: svc_name.clone(),
        rules: Vec::new(),
    };
    if let Some(cidr) = opts.cluster_cidr {
        svc.rules.push(format!(
            "ip daddr {} {p} dport {} ip saddr != {cidr} jump mark-for-masquerade",
            v.cluster_ip, v.port
        ));
    }
    let mut eps = Vec::with_capacity(v.endpoints.len());
    let mut arms = Vec::with_capacity(v.endpoints.len());
    for (i, ep) in v.endpoints.iter().enumerate() {
        let name = nft_endpoint_chain(v, ep.ip, ep.port);
        arms.push(format!("{i} : goto {name}"));
        eps.push(Chain {
            name,
            rules: vec![
                // Hairpin: an endpoint reaching itself must be SNATed.
                format!("ip saddr {} jump mark-for-masquerade", ep.ip),
                format!("meta l4proto {p} dnat to {}:{}", ep.ip, ep.port),
            ],
        });
    }
    svc.rules.push(format!(
        "numgen random mod {} vmap {{ {} }}",
        v.endpoints.len(),
        arms.join(" , ")
    ));
    out.elements.push(Element {
        set: "service-ips",
        key: format!("{} . {p} . {}", v.cluster_ip, v.port),
        rest: format!(" : goto {svc_name}"),
    });
    out.chains.push(svc);
    if let Some(np) = v.node_port {
        let ext_name = format!("external-{base}");
        out.chains.push(Chain {
            name: ext_name.clone(),
            rules: vec![
                "jump mark-for-masquerade".into(),
                format!("goto {svc_name}"),
            ],
        });
        out.elements.push(Element {
            set: "service-nodeports",
            key: format!("{p} . {np}"),
            rest: format!(" : goto {ext_name}"),
        });
    }
    out.chains.extend(eps);
    out
}

/// Cluster IPs for the `cluster-ips` set; a multi-port Service has one.
fn cluster_ips(views: &[ServicePortView]) -> BTreeSet<Ipv4Addr> {
    views.iter().map(|v| v.cluster_ip).collect()
}

fn add_chain(out: &mut String, c: &Chain) {
    let _ = writeln!(out, "add chain {TABLE} {}", c.name);
}

fn add_rules(out: &mut String, c: &Chain) {
    for r in &c.rules {
        let _ = writeln!(out, "add rule {TABLE} {} {r}", c.name);
    }
}

fn add_element(out: &mut String, e: &Element) {
    let _ = writeln!(
        out,
        "add element {TABLE} {} {{ {}{} }}",
        e.set, e.key, e.rest
    );
}

fn delete_element(out: &mut String, e: &Element) {
    let _ = writeln!(out, "delete element {TABLE} {} {{ {} }}", e.set, e.key);
}

/// The whole `ip kube-proxy` table as `nft -f` input, kube-proxy's nftables
/// mode for `views`. Loads into a namespace that has no such table yet.
pub fn render_nftables(views: &[ServicePortView], opts: &Options) -> String {
    let mut out = String::from(
        "# kube-proxy nftables mode, as rendered by sluice-baseline (load with nft -f)\n",
    );
    write_table(&mut out, views, opts);
    out
}

pub(crate) fn write_table(out: &mut String, views: &[ServicePortView], opts: &Options) {
    let _ = writeln!(
        out,
        "add table {TABLE} {{ comment \"rules for kube-proxy\" ; }}"
    );
    for (kind, name, ty, comment) in SETS {
        let _ = writeln!(
            out,
            "add {kind} {TABLE} {name} {{ type {ty} ; comment \"{comment}\" ; }}"
        );
    }
    let fixed = fixed(opts);
    for (name, decl, _) in &fixed {
        if decl.is_empty() {
            let _ = writeln!(out, "add chain {TABLE} {name}");
        } else {
            let _ = writeln!(out, "add chain {TABLE} {name} {decl}");
        }
    }
    let services: Vec<NftService> = views.iter().map(|v| service(v, opts)).collect();
    // Every chain exists before any rule or element refers to it.
    for s in &services {
        for c in &s.chains {
            add_chain(out, c);
        }
    }
    for (name, _, rules) in &fixed {
        for r in rules {
            let _ = writeln!(out, "add rule {TABLE} {name} {r}");
        }
    }
    for s in &services {
        for c in &s.chains {
            add_rules(out, c);
        }
    }
    for ip in &opts.node_ips {
        let _ = writeln!(out, "add element {TABLE} nodeport-ips {{ {ip} }}");
    }
    for ip in cluster_ips(views) {
        let _ = writeln!(out, "add element {TABLE} cluster-ips {{ {ip} }}");
    }
    for s in &services {
        for e in &s.elements {
            add_element(out, e);
        }
    }
}

/// One transaction moving the table from `before` to `after` the way
/// kube-proxy's nftables mode syncs a change: map elements added and
/// deleted, changed chains flushed and refilled, stale chains deleted.
/// Unchanged Service ports are not touched.
pub(crate) fn change_text(
    before: &[ServicePortView],
    after: &[ServicePortView],
    opts: &Options,
) -> String {
    let old: BTreeMap<_, _> = before.iter().map(|v| (v.key(), v)).collect();
    let new: BTreeMap<_, _> = after.iter().map(|v| (v.key(), v)).collect();
    let keys: BTreeSet<_> = old.keys().chain(new.keys()).collect();
    let (mut add_chains, mut flush_chains, mut fill, mut del_chains) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut del_elems, mut add_elems) = (Vec::new(), Vec::new());
    for k in keys {
        let (o, n) = (old.get(k), new.get(k));
        if o == n {
            continue;
        }
        let os = o.map(|v| service(v, opts)).unwrap_or_default();
        let ns = n.map(|v| service(v, opts)).unwrap_or_default();
        for c in &os.chains {
            if !ns.chains.iter().any(|x| x.name == c.name) {
                del_chains.push(c.name.clone());
            }
        }
        for c in ns.chains {
            match os.chains.iter().find(|x| x.name == c.name) {
                Some(prev) if *prev == c => {}
                Some(_) => {
                    flush_chains.push(c.name.clone());
                    fill.push(c);
                }
                None => {
                    add_chains.push(c.name.clone());
                    fill.push(c);
                }
            }
        }
        for e in &os.elements {
            if !ns.elements.contains(e) {
                del_elems.push(e.clone());
            }
        }
        for e in ns.elements {
            if !os.elements.contains(&e) {
                add_elems.push(e);
            }
        }
    }
    let (old_ips, new_ips) = (cluster_ips(before), cluster_ips(after));
    let mut out = String::new();
    for name in &add_chains {
        let _ = writeln!(out, "add chain {TABLE} {name}");
    }
    for name in &flush_chains {
        let _ = writeln!(out, "flush chain {TABLE} {name}");
    }
    for c in &fill {
        add_rules(&mut out, c);
    }
    // Deletions first: a key whose verdict changed is deleted and re-added.
    for e in &del_elems {
        delete_element(&mut out, e);
    }
    for ip in old_ips.difference(&new_ips) {
        let _ = writeln!(out, "delete element {TABLE} cluster-ips {{ {ip} }}");
    }
    for e in &add_elems {
        add_element(&mut out, e);
    }
    for ip in new_ips.difference(&old_ips) {
        let _ = writeln!(out, "add element {TABLE} cluster-ips {{ {ip} }}");
    }
    // Stale chains go last, once no rule or element refers to them.
    for name in &del_chains {
        let _ = writeln!(out, "flush chain {TABLE} {name}");
    }
    for name in &del_chains {
        let _ = writeln!(out, "delete chain {TABLE} {name}");
    }
    out
}

/// (chains, rules, map and set elements) of the table for `views`.
pub(crate) fn counts(views: &[ServicePortView], opts: &Options) -> (usize, usize, usize) {
    let fixed = fixed(opts);
    let mut chains = fixed.len();
    let mut rules: usize = fixed.iter().map(|(_, _, r)| r.len()).sum();
    let mut elements = opts.node_ips.len() + cluster_ips(views).len();
    for v in views {
        let s = service(v, opts);
        chains += s.chains.len();
        rules += s.chains.iter().map(|c| c.rules.len()).sum::<usize>();
        elements += s.elements.len();
    }
    (chains, rules, elements)
}
