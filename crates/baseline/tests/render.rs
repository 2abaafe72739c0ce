//! Render tests: golden files for the demo objects, probabilities, names.
#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::path::PathBuf;

use sluice_baseline::{
    probability, render_iptables, render_nftables, rule_stats, sep_chain, svc_chain, views_from,
    EndpointView, Mode, Options, ServicePortView,
};
use sluice_core::{parse_documents, CompileConfig, Engine, Protocol, Store};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The demo's Services and pods, with fixed pod IPs (as the CNI would give).
fn demo_views() -> Vec<ServicePortView> {
    let mut store = Store::new();
    let mut changes = Vec::new();
    for file in ["services.yaml", "pods.yaml"] {
        let text = std::fs::read_to_string(repo().join("examples/demo").join(file)).unwrap();
        let outcome = parse_documents(file, &text);
        assert!(outcome.rejections.is_empty(), "{:?}", outcome.rejections);
        changes.extend(store.replace_file(file, outcome));
    }
    for (pod, ip) in [
        ("web-1", [10, 244, 0, 11]),
        ("web-2", [10, 244, 0, 12]),
        ("web-3", [10, 244, 0, 13]),
        ("client", [10, 244, 0, 20]),
    ] {
        changes.extend(store.set_pod_ip("default", pod, Some(Ipv4Addr::from(ip))));
    }
    let mut engine = Engine::new(CompileConfig::default());
    let plan = engine.apply(&changes);
    assert!(plan.errors.is_empty(), "{:?}", plan.errors);
    views_from(engine.desired())
}

fn check_golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
    if expected != actual {
        let diff: Vec<String> = expected
            .lines()
            .zip(actual.lines())
            .enumerate()
            .filter(|(_, (e, a))| e != a)
            .take(5)
            .map(|(i, (e, a))| format!("line {}:\n  golden: {e}\n  actual: {a}", i + 1))
            .collect();
        panic!(
            "{} differs from the render ({} vs {} lines); UPDATE_GOLDEN=1 regenerates it\n{}",
            path.display(),
            expected.lines().count(),
            actual.lines().count(),
            diff.join("\n")
        );
    }
}

#[test]
fn demo_views_group_ports() {
    let views = demo_views();
    let ids: Vec<String> = views.iter().map(ServicePortView::port_id).collect();
    assert_eq!(
        ids,
        ["default/dns:dns", "default/nobody-home", "default/web:http"]
    );
    let web = &views[2];
    assert_eq!(web.node_port, Some(30080));
    assert_eq!(
        (web.cluster_ip, web.port),
        (Ipv4Addr::new(10, 96, 0, 10), 80)
    );
    assert_eq!(web.endpoints.len(), 3);
    assert_eq!(
        web.endpoints[0],
        EndpointView {
            ip: Ipv4Addr::new(10, 244, 0, 11),
            port: 8080
        }
    );
    assert_eq!(views[0].protocol, Protocol::Udp);
    assert_eq!(views[0].endpoints[0].port, 5353);
    assert!(views[1].endpoints.is_empty());
}

#[test]
fn golden_iptables() {
    check_golden(
        "iptables.txt",
        &render_iptables(&demo_views(), &Options::default()),
    );
}

#[test]
fn golden_nftables() {
    check_golden(
        "nftables.txt",
        &render_nftables(&demo_views(), &Options::default()),
    );
}

#[test]
fn iptables_shapes() {
    let text = render_iptables(&demo_views(), &Options::default());
    let web = &demo_views()[2];
    let svc = svc_chain(web);
    let must = [
        "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES".to_string(),
        "-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING".into(),
        format!("-A KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m comment --comment \"default/web:http cluster IP\" -m tcp --dport 80 -j {svc}"),
        format!("-A {svc} ! -s 10.244.0.0/16 -d 10.96.0.10/32 -p tcp -m comment --comment \"default/web:http cluster IP\" -m tcp --dport 80 -j KUBE-MARK-MASQ"),
        format!("-A {svc} -m comment --comment \"default/web:http -> 10.244.0.11:8080\" -m statistic --mode random --probability 0.33333333349 -j {}", sep_chain(web, Ipv4Addr::new(10, 244, 0, 11), 8080)),
        format!("-A {svc} -m comment --comment \"default/web:http -> 10.244.0.13:8080\" -j {}", sep_chain(web, Ipv4Addr::new(10, 244, 0, 13), 8080)),
        "-A KUBE-SERVICES -d 10.96.0.99/32 -p tcp -m comment --comment \"default/nobody-home has no endpoints\" -m tcp --dport 80 -j REJECT --reject-with icmp-port-unreachable".into(),
        "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN".into(),
        "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000".into(),
    ];
    for line in &must {
        assert!(text.lines().any(|l| l == line), "missing: {line}\n{text}");
    }
    // The NodePort jump is the last rule of nat KUBE-SERVICES.
    let nat = text.split("*nat").nth(1).unwrap();
    let last = nat
        .lines()
        .rfind(|l| l.starts_with("-A KUBE-SERVICES "))
        .unwrap();
    assert!(
        last.ends_with("-m addrtype --dst-type LOCAL -j KUBE-NODEPORTS"),
        "{last}"
    );
}

#[test]
fn probabilities_for_one_to_five_endpoints() {
    let expect: [&[&str]; 5] = [
        &[],
        &["0.50000000000"],
        &["0.33333333349", "0.50000000000"],
        &["0.25000000000", "0.33333333349", "0.50000000000"],
        &[
            "0.20000000019",
            "0.25000000000",
            "0.33333333349",
            "0.50000000000",
        ],
    ];
    for (n, want) in (1..=5).zip(expect) {
        let mut v = sample_view();
        v.endpoints = (0..n)
            .map(|i| EndpointView {
                ip: Ipv4Addr::new(10, 244, 1, i + 1),
                port: 8080,
            })
            .collect();
        let text = render_iptables(std::slice::from_ref(&v), &Options::default());
        let svc = svc_chain(&v);
        let rules: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with(&format!("-A {svc} -m comment")))
            .collect();
        assert_eq!(rules.len(), usize::from(n));
        let probs: Vec<&str> = rules
            .iter()
            .filter_map(|l| l.split("--probability ").nth(1))
            .map(|rest| rest.split(' ').next().unwrap())
            .collect();
        assert_eq!(probs, want, "n={n}");
        // The last endpoint catches whatever the others did not.
        assert!(!rules.last().unwrap().contains("statistic"));
    }
    assert_eq!(probability(3), "0.33333333349");
}

fn sample_view() -> ServicePortView {
    ServicePortView {
        service: "default/kubernetes".into(),
        port_name: "https".into(),
        protocol: Protocol::Tcp,
        cluster_ip: Ipv4Addr::new(10, 96, 0, 1),
        port: 443,
        node_port: None,
        endpoints: vec![EndpointView {
            ip: Ipv4Addr::new(192, 168, 20, 100),
            port: 6443,
        }],
    }
}

/// Chain names follow kube-proxy's public convention, so they are stable
/// across runs and equal to those on real clusters (values seen on one).
#[test]
fn chain_names_are_stable_and_match_kube_proxy() {
    let v = sample_view();
    assert_eq!(svc_chain(&v), "KUBE-SVC-NPX46M4PTMTKRN6Y");
    assert_eq!(
        sep_chain(&v, Ipv4Addr::new(192, 168, 20, 100), 6443),
        "KUBE-SEP-U7HH75UFG3U5VGYY"
    );
    let mut webpod = v.clone();
    webpod.service = "default/webpod".into();
    webpod.port_name = String::new();
    assert_eq!(svc_chain(&webpod), "KUBE-SVC-CNZCPOCNCNOROALA");
    let mut dns = v.clone();
    dns.service = "kube-system/kube-dns".into();
    dns.port_name = "dns".into();
    dns.protocol = Protocol::Udp;
    assert_eq!(svc_chain(&dns), "KUBE-SVC-TCOU7JCQXEZGVUNU");
    // Same port name, other protocol: another chain.
    dns.protocol = Protocol::Tcp;
    assert_ne!(svc_chain(&dns), "KUBE-SVC-TCOU7JCQXEZGVUNU");
}

#[test]
fn nftables_shapes() {
    let text = render_nftables(&demo_views(), &Options::default());
    for needle in [
        "add map ip kube-proxy service-ips { type ipv4_addr . inet_proto . inet_service : verdict ;",
        "add rule ip kube-proxy services ip daddr . meta l4proto . th dport vmap @service-ips",
        "numgen random mod 3 vmap { 0 : goto endpoint-",
        "add element ip kube-proxy no-endpoint-services { 10.96.0.99 . tcp . 80 comment \"default/nobody-home\" : goto reject-chain }",
        "add element ip kube-proxy service-nodeports { tcp . 30080 : goto external-",
        "meta l4proto udp dnat to 10.244.0.11:5353",
        "add rule ip kube-proxy masquerading masquerade fully-random",
    ] {
        assert!(text.contains(needle), "missing: {needle}\n{text}");
    }
}

#[test]
fn rule_stats_grow_with_services() {
    let views = sluice_baseline::synthetic_views(100, 2);
    let ipt = rule_stats(Mode::Iptables, &views, &Options::default());
    // Per Service: 1 KUBE-SERVICES rule, SVC (masq + 2), 2 SEPs (2 each).
    assert_eq!(ipt.chains, 3 + 4 + 100 * 3);
    assert_eq!(ipt.rules, 8 + 3 + 1 + 3 + 1 + 100 * (1 + 3 + 4));
    let nft = rule_stats(Mode::Nftables, &views, &Options::default());
    assert_eq!(nft.elements, 100 * 2);
    assert_eq!(
        sluice_baseline::rule_count(Mode::Nftables, &views),
        nft.rules + nft.elements
    );
}
