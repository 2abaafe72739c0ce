//! Packet tests of the kernel programs through BPF_PROG_TEST_RUN: build a
//! packet, run the program, assert the verdict and the packet it produced
//! (addresses, ports, and checksums recomputed from scratch). Needs root.
#![allow(clippy::unwrap_used)]

use etherparse::{Icmpv4Header, Icmpv4Type, NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use sluice_datapath::bindings::{affinity_entry, affinity_key};
use sluice_datapath::events::{
    reason_code, EventKind, FlowEvent, SLUICE_EVENT_F_NEW_FLOW, SLUICE_EVENT_F_POLICY_INGRESS,
    SLUICE_EVENT_F_REPLIED, SLUICE_EVENT_F_REPLY,
};
use sluice_datapath::loader::{pin_dir, NetConfig, Program};
use sluice_datapath::maps::{BackendEntry, FrontendKey, NODE_ADDR_NODEPORT};
use sluice_datapath::{
    Datapath, DatapathConfig, EndpointValue, EventReader, IpcacheKey, LbMaps, NodeAddrMap, ObsMaps,
    PolicyMaps, PolicyMatch, PolicyValue, SrcRange, SrcRangeMap,
};
use std::net::Ipv4Addr;
use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;
const TCP: u8 = 6;
const UDP: u8 = 17;

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 2);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const BACKEND_A: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 5);
const BACKEND_B: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 6);
const NODE: Ipv4Addr = Ipv4Addr::new(172, 31, 9, 1);
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(172, 31, 9, 2);
const NODE_2: Ipv4Addr = Ipv4Addr::new(172, 31, 10, 1);
const REMOTE_POD: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 7);
const LB_FLAG_NODEPORT: u8 = 1;
const LB_FLAG_DROP_NO_BACKEND_: u8 = 4;
const LB_FLAG_EXTERNAL: u8 = 16;
const LB_FLAG_ETP_LOCAL: u8 = 32;
const LB_FLAG_SOURCE_RANGES: u8 = 64;
const POD_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const HOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

/// A datapath loaded under a unique node name; its pins are removed on drop.
struct Harness {
    dp: Datapath,
    maps: LbMaps,
    obs: ObsMaps,
    events: EventReader,
    _pins: PinGuard,
}

/// Removes a pin directory, also when loading fails half-way.
struct PinGuard(PathBuf);

impl Drop for PinGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Harness {
    fn new() -> Self {
        assert!(
            unsafe { libc::geteuid() } == 0,
            "packet tests load BPF programs and need root"
        );
        static N: AtomicU32 = AtomicU32::new(0);
        let node = format!(
            "slctest-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let mut cfg = DatapathConfig::new("/sys/fs/bpf", node.clone());
        // Pods are 10.244.0.0/16; NODE is the masquerade address and
        // serves NodePorts, NODE_2 is a node address that does not.
        cfg.net = NetConfig {
            node_ip: Some(NODE),
            cluster_cidrs: vec![(Ipv4Addr::new(10, 244, 0, 0), 16)],
            host_netns_cookie: 0,
        };
        let pins = PinGuard(pin_dir(&cfg.bpffs_root, &node));
        let dp = Datapath::load(&cfg).unwrap();
        NodeAddrMap::open(dp.pin_dir())
            .unwrap()
            .sync(&[(NODE, NODE_ADDR_NODEPORT), (NODE_2, 0)])
            .unwrap();
        let maps = LbMaps::open(dp.pin_dir()).unwrap();
        let obs = ObsMaps::open(dp.pin_dir()).unwrap();
        let events = EventReader::open(dp.pin_dir()).unwrap();
        Self {
            dp,
            maps,
            obs,
            events,
            _pins: pins,
        }
    }

    fn service(
        &mut self,
        f: FrontendKey,
        rev_nat: u32,
        nodeport: bool,
        backends: &[(u32, Ipv4Addr, u16)],
    ) {
        for (slot, (id, ip, port)) in backends.iter().enumerate() {
            self.maps
                .upsert_backend(
                    *id,
                    BackendEntry {
                        ip: *ip,
                        port: *port,
                        proto: f.proto,
                    },
                )
                .unwrap();
            self.maps.upsert_slot(f, slot as u16 + 1, *id).unwrap();
        }
        self.maps.upsert_revnat(rev_nat, f).unwrap();
        self.maps
            .upsert_master(
                f,
                backends.len() as u16,
                rev_nat,
                if nodeport {
                    LB_FLAG_NODEPORT | LB_FLAG_EXTERNAL
                } else {
                    0
                },
                0,
            )
            .unwrap();
    }

    /// A frontend with explicit master flags (scope in `f`).
    fn service_flags(
        &mut self,
        f: FrontendKey,
        rev_nat: u32,
        flags: u8,
        backends: &[(u32, Ipv4Addr, u16)],
    ) {
        self.service(f, rev_nat, false, backends);
        self.maps
            .upsert_master(f, backends.len() as u16, rev_nat, flags, 0)
            .unwrap();
    }

    fn run(&mut self, p: Program, pkt: &[u8]) -> (u32, Vec<u8>) {
        self.dp.test_run(p, pkt).unwrap()
    }

    /// Every event emitted since the last call.
    fn drain_events(&mut self) -> Vec<FlowEvent> {
        let mut out = Vec::new();
        while let Some(e) = self.events.next() {
            out.push(e.unwrap());
        }
        out
    }
}

fn sa(ip: Ipv4Addr, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(ip, port)
}

fn fe(ip: Ipv4Addr, port: u16, proto: u8) -> FrontendKey {
    FrontendKey {
        ip,
        port,
        proto,
        scope: 0,
    }
}

fn tcp_syn(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), with_options: bool) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(POD_MAC, HOST_MAC)
        .ipv4(src.0.octets(), dst.0.octets(), 64)
        .tcp(src.1, dst.1, 1000, 64240)
        .syn();
    let b = if with_options {
        b.options(&[
            etherparse::TcpOptionElement::MaximumSegmentSize(1460),
            etherparse::TcpOptionElement::SelectiveAcknowledgementPermitted,
            etherparse::TcpOptionElement::WindowScale(7),
            etherparse::TcpOptionElement::Noop,
        ])
        .unwrap()
    } else {
        b
    };
    let mut out = Vec::new();
    b.write(&mut out, &[]).unwrap();
    out
}

fn tcp_ack(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(POD_MAC, HOST_MAC)
        .ipv4(src.0.octets(), dst.0.octets(), 64)
        .tcp(src.1, dst.1, 5000, 64240)
        .ack(1001);
    let mut out = Vec::new();
    b.write(&mut out, payload).unwrap();
    out
}

fn udp(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(POD_MAC, HOST_MAC)
        .ipv4(src.0.octets(), dst.0.octets(), 64)
        .udp(src.1, dst.1);
    let mut out = Vec::new();
    b.write(&mut out, payload).unwrap();
    out
}

/// Addresses and ports of a TCP/UDP packet, after checking both checksums
/// against a from-scratch computation.
fn tuple_checked(pkt: &[u8]) -> ((Ipv4Addr, u16), (Ipv4Addr, u16)) {
    let sliced = SlicedPacket::from_ethernet(pkt).unwrap();
    let Some(NetSlice::Ipv4(ip)) = sliced.net else {
        panic!("not IPv4")
    };
    let h = ip.header().to_header();
    assert_eq!(
        h.header_checksum,
        h.calc_header_checksum(),
        "IP header checksum"
    );
    let src = Ipv4Addr::from(h.source);
    let dst = Ipv4Addr::from(h.destination);
    match sliced.transport {
        Some(TransportSlice::Tcp(t)) => {
            let want = t.to_header().calc_checksum_ipv4(&h, t.payload()).unwrap();
            assert_eq!(t.checksum(), want, "TCP checksum");
            ((src, t.source_port()), (dst, t.destination_port()))
        }
        Some(TransportSlice::Udp(u)) => {
            if u.checksum() != 0 {
                let want = u.to_header().calc_checksum_ipv4(&h, u.payload()).unwrap();
                assert_eq!(u.checksum(), want, "UDP checksum");
            }
            ((src, u.source_port()), (dst, u.destination_port()))
        }
        other => panic!("unexpected transport {other:?}"),
    }
}

#[test]
fn dnat_then_reverse_nat_with_valid_checksums() {
    let mut h = Harness::new();
    let f = fe(VIP, 80, TCP);
    h.service(f, 1, false, &[(1, BACKEND_A, 8080)]);

    let (verdict, out) = h.run(Program::FromPod, &tcp_syn((CLIENT, 40000), (VIP, 80), true));
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(tuple_checked(&out), ((CLIENT, 40000), (BACKEND_A, 8080)));

    // Later packets of the flow follow conntrack.
    let (verdict, out) = h.run(
        Program::FromPod,
        &tcp_ack((CLIENT, 40000), (VIP, 80), b"GET / HTTP/1.1\r\n\r\n"),
    );
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(tuple_checked(&out), ((CLIENT, 40000), (BACKEND_A, 8080)));

    // The backend's reply leaves its pod and gets the Service address back.
    let (verdict, out) = h.run(
        Program::FromPod,
        &tcp_ack(
            (BACKEND_A, 8080),
            (CLIENT, 40000),
            b"HTTP/1.1 200 OK\r\n\r\n",
        ),
    );
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(tuple_checked(&out), ((VIP, 80), (CLIENT, 40000)));

    let ct = h.maps.ct_rows().unwrap();
    assert_eq!(ct.len(), 2, "forward and reply entries: {ct:?}");
    assert!(ct
        .iter()
        .any(|r| !r.reply && r.nat == (BACKEND_A, 8080) && r.rev_nat_id == 1));
    assert!(ct.iter().any(|r| r.reply && r.nat == (VIP, 80)));
}

#[test]
fn reverse_nat_on_to_pod_for_non_pod_backends() {
    let mut h = Harness::new();
    h.service(fe(VIP, 53, UDP), 2, false, &[(1, NODE, 5353)]);
    let (_, out) = h.run(Program::FromPod, &udp((CLIENT, 3333), (VIP, 53), b"query"));
    assert_eq!(tuple_checked(&out), ((CLIENT, 3333), (NODE, 5353)));
    let (verdict, out) = h.run(
        Program::ToPod,
        &udp((NODE, 5353), (CLIENT, 3333), b"answer"),
    );
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(tuple_checked(&out), ((VIP, 53), (CLIENT, 3333)));
}

#[test]
fn udp_without_checksum_keeps_zero_checksum() {
    let mut h = Harness::new();
    h.service(fe(VIP, 53, UDP), 3, false, &[(1, BACKEND_A, 53)]);
    let mut pkt = udp((CLIENT, 3333), (VIP, 53), b"q");
    let udp_csum = 14 + 20 + 6;
    pkt[udp_csum] = 0;
    pkt[udp_csum + 1] = 0;
    let (_, out) = h.run(Program::FromPod, &pkt);
    assert_eq!(tuple_checked(&out), ((CLIENT, 3333), (BACKEND_A, 53)));
    assert_eq!(&out[udp_csum..udp_csum + 2], &[0, 0]);
}

#[test]
fn traffic_that_is_not_for_a_service_passes_untouched() {
    let mut h = Harness::new();
    h.service(fe(VIP, 80, TCP), 1, false, &[(1, BACKEND_A, 8080)]);
    for pkt in [
        tcp_syn((CLIENT, 40000), (BACKEND_B, 80), false),
        tcp_syn((CLIENT, 40000), (VIP, 81), false),
        udp((CLIENT, 40000), (VIP, 80), b"x"),
    ] {
        let (verdict, out) = h.run(Program::FromPod, &pkt);
        assert_eq!(verdict, TC_ACT_OK);
        assert_eq!(out, pkt);
    }
}

#[test]
fn no_endpoint_tcp_gets_rst_ack_with_valid_checksum() {
    let mut h = Harness::new();
    h.service(fe(VIP, 80, TCP), 1, false, &[]);
    for with_options in [false, true] {
        let (verdict, out) = h.run(
            Program::FromPod,
            &tcp_syn((CLIENT, 40001), (VIP, 80), with_options),
        );
        assert_eq!(verdict, TC_ACT_REDIRECT, "sent back to the client");
        assert_eq!(out.len(), 14 + 20 + 20, "no options, no payload");
        assert_eq!(&out[0..6], &POD_MAC, "MACs swapped");
        assert_eq!(tuple_checked(&out), ((VIP, 80), (CLIENT, 40001)));
        let sliced = SlicedPacket::from_ethernet(&out).unwrap();
        let Some(TransportSlice::Tcp(t)) = sliced.transport else {
            panic!()
        };
        assert!(t.rst() && t.ack() && !t.syn());
        assert_eq!(t.acknowledgment_number(), 1001, "acks the SYN");
        assert_eq!(t.sequence_number(), 0);
    }
    let m = h.maps.metrics().unwrap();
    assert_eq!(m[5], 2, "reject counter: {m:?}");
}

#[test]
fn no_endpoint_tcp_ack_gets_rst_with_its_sequence() {
    let mut h = Harness::new();
    h.service(fe(VIP, 80, TCP), 1, false, &[]);
    let (verdict, out) = h.run(Program::FromPod, &tcp_ack((CLIENT, 40002), (VIP, 80), &[]));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let sliced = SlicedPacket::from_ethernet(&out).unwrap();
    let Some(TransportSlice::Tcp(t)) = sliced.transport else {
        panic!()
    };
    assert!(t.rst() && !t.ack());
    assert_eq!(
        t.sequence_number(),
        1001,
        "RST takes the segment's ACK number"
    );
    tuple_checked(&out);
}

#[test]
fn no_endpoint_udp_gets_icmp_port_unreachable() {
    let mut h = Harness::new();
    h.service(fe(VIP, 53, UDP), 1, false, &[]);
    let original = udp(
        (CLIENT, 5000),
        (VIP, 53),
        b"a longer payload than eight bytes",
    );
    let (verdict, out) = h.run(Program::FromPod, &original);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(&out[0..6], &POD_MAC);
    let sliced = SlicedPacket::from_ethernet(&out).unwrap();
    let Some(NetSlice::Ipv4(ip)) = sliced.net else {
        panic!()
    };
    let iph = ip.header().to_header();
    assert_eq!(iph.header_checksum, iph.calc_header_checksum());
    assert_eq!(Ipv4Addr::from(iph.source), VIP);
    assert_eq!(Ipv4Addr::from(iph.destination), CLIENT);
    let Some(TransportSlice::Icmpv4(icmp)) = sliced.transport else {
        panic!("not ICMP")
    };
    assert!(matches!(
        icmp.icmp_type(),
        Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::Port)
    ));
    let want = Icmpv4Header::with_checksum(icmp.icmp_type(), icmp.payload());
    assert_eq!(icmp.checksum(), want.checksum, "ICMP checksum");
    // The quote is the original IP header and the first 8 bytes of UDP.
    assert_eq!(icmp.payload(), &original[14..14 + 28]);
}

#[test]
fn established_flow_keeps_its_backend_after_removal_new_flows_do_not_get_it() {
    let mut h = Harness::new();
    let f = fe(VIP, 80, TCP);
    h.service(f, 1, false, &[(1, BACKEND_A, 8080)]);
    let (_, out) = h.run(
        Program::FromPod,
        &tcp_syn((CLIENT, 41000), (VIP, 80), false),
    );
    assert_eq!(tuple_checked(&out).1, (BACKEND_A, 8080));

    // Backend A leaves; B joins (slot 1 now names B).
    h.maps
        .upsert_backend(
            2,
            BackendEntry {
                ip: BACKEND_B,
                port: 8080,
                proto: TCP,
            },
        )
        .unwrap();
    h.maps.upsert_slot(f, 1, 2).unwrap();
    h.maps.delete_backend(1).unwrap();

    let (_, out) = h.run(Program::FromPod, &tcp_ack((CLIENT, 41000), (VIP, 80), b"x"));
    assert_eq!(
        tuple_checked(&out).1,
        (BACKEND_A, 8080),
        "established flow stays"
    );
    for port in 41001..41021 {
        let (_, out) = h.run(Program::FromPod, &tcp_syn((CLIENT, port), (VIP, 80), false));
        assert_eq!(
            tuple_checked(&out).1,
            (BACKEND_B, 8080),
            "new flows avoid the removed backend"
        );
    }
}

#[test]
fn new_flows_spread_over_all_backends() {
    let mut h = Harness::new();
    h.service(
        fe(VIP, 80, TCP),
        1,
        false,
        &[(1, BACKEND_A, 8080), (2, BACKEND_B, 8080)],
    );
    let mut seen = std::collections::BTreeMap::new();
    for port in 42000..42200 {
        let (_, out) = h.run(Program::FromPod, &tcp_syn((CLIENT, port), (VIP, 80), false));
        *seen.entry(tuple_checked(&out).1 .0).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen.values().all(|&n| n >= 60), "roughly even: {seen:?}");
}

/// eTP Cluster NodePort from outside: DNAT and masquerade (the client's
/// port kept while free); the reply gets the NodePort back as its source
/// and the client back as its destination, and is redirected out of the
/// device the request came in on.
#[test]
fn nodeport_from_outside_is_masqueraded_and_the_reply_restores_the_client() {
    let mut h = Harness::new();
    h.service(
        fe(Ipv4Addr::UNSPECIFIED, 30080, TCP),
        7,
        true,
        &[(1, BACKEND_A, 8080)],
    );
    let (verdict, out) = h.run(
        Program::NodePort,
        &tcp_syn((OUTSIDE, 50000), (NODE, 30080), true),
    );
    assert_masquerade_verdict(verdict);
    let first_port = masq_port(&out, (BACKEND_A, 8080));
    // Later packets follow conntrack, masquerade included.
    let (_, out) = h.run(
        Program::NodePort,
        &tcp_ack((OUTSIDE, 50000), (NODE, 30080), b"GET /"),
    );
    assert_eq!(tuple_checked(&out), ((NODE, first_port), (BACKEND_A, 8080)));
    // Another client with the same source port gets another SNAT port.
    let other = Ipv4Addr::new(172, 31, 9, 3);
    let (_, out) = h.run(
        Program::NodePort,
        &tcp_syn((other, 50000), (NODE, 30080), false),
    );
    let snat_port = masq_port(&out, (BACKEND_A, 8080));
    assert_ne!(snat_port, first_port);
    // The replies leave the backend pod; NodePort and clients come back.
    let (verdict, out) = h.run(
        Program::FromPod,
        &tcp_ack((BACKEND_A, 8080), (NODE, first_port), b"ok"),
    );
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(tuple_checked(&out), ((NODE, 30080), (OUTSIDE, 50000)));
    let (verdict, out) = h.run(
        Program::FromPod,
        &tcp_ack((BACKEND_A, 8080), (NODE, snat_port), b"ok"),
    );
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(tuple_checked(&out), ((NODE, 30080), (other, 50000)));
    let ct = h.maps.ct_rows().unwrap();
    assert!(ct
        .iter()
        .any(|r| !r.reply && r.src == (OUTSIDE, 50000) && r.peer == (NODE, first_port)));
    assert!(ct
        .iter()
        .any(|r| r.reply && r.dst == (NODE, snat_port) && r.peer == (other, 50000)));
}

/// A masqueraded packet is redirected to the device of the route to its
/// backend (its source is a node address the stack's input routing would
/// drop); under BPF_PROG_TEST_RUN that route depends on the host running
/// the test, and without one the packet is passed on.
fn assert_masquerade_verdict(verdict: u32) {
    assert!(
        verdict == TC_ACT_OK || verdict == TC_ACT_REDIRECT,
        "{verdict}"
    );
}

/// The masquerade port of a translated packet going to `dst`: its source
/// is the node address with a port of the SNAT range (below the kernel's
/// ephemeral range, so it never collides with the node's own connections).
fn masq_port(out: &[u8], dst: (Ipv4Addr, u16)) -> u16 {
    let ((src, port), to) = tuple_checked(out);
    assert_eq!((src, to), (NODE, dst));
    assert!((1024..=32767).contains(&port), "{port}");
    port
}

/// A pod reaching a NodePort on a node address is served by tc and
/// masqueraded (kube-proxy: pod to NodePort, masq true); its reply goes
/// back to the pod's veth (its source is a node address again).
#[test]
fn pod_to_nodeport_is_masqueraded_and_redirected_back() {
    let mut h = Harness::new();
    h.service(
        fe(Ipv4Addr::UNSPECIFIED, 30080, TCP),
        7,
        true,
        &[(1, BACKEND_A, 8080)],
    );
    let (verdict, out) = h.run(
        Program::FromPod,
        &tcp_syn((CLIENT, 50001), (NODE, 30080), false),
    );
    assert_masquerade_verdict(verdict);
    let port = masq_port(&out, (BACKEND_A, 8080));
    let (verdict, out) = h.run(
        Program::FromPod,
        &tcp_ack((BACKEND_A, 8080), (NODE, port), b"ok"),
    );
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(tuple_checked(&out), ((NODE, 30080), (CLIENT, 50001)));
}

/// A host-network backend (a node address) is not masqueraded to: the node
/// answers itself through its stack, and the reply is translated back on
/// the client's veth.
#[test]
fn a_host_network_backend_is_not_masqueraded_to() {
    let mut h = Harness::new();
    h.service(
        fe(Ipv4Addr::UNSPECIFIED, 30080, TCP),
        7,
        true,
        &[(1, NODE, 8080)],
    );
    let (verdict, out) = h.run(
        Program::FromPod,
        &tcp_syn((CLIENT, 50010), (NODE, 30080), false),
    );
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(tuple_checked(&out), ((CLIENT, 50010), (NODE, 8080)));
    let (_, out) = h.run(
        Program::ToPod,
        &tcp_ack((NODE, 8080), (CLIENT, 50010), b"ok"),
    );
    assert_eq!(tuple_checked(&out), ((NODE, 30080), (CLIENT, 50010)));
}

/// NodePorts are served only on node addresses flagged for them
/// (--nodeport-addresses), never on loopback or foreign addresses.
#[test]
fn nodeport_on_an_address_that_does_not_serve_nodeports_is_untouched() {
    let mut h = Harness::new();
    h.service(
        fe(Ipv4Addr::UNSPECIFIED, 30080, TCP),
        7,
        true,
        &[(1, BACKEND_A, 8080)],
    );
    for dst in [NODE_2, Ipv4Addr::LOCALHOST, Ipv4Addr::new(192, 0, 2, 1)] {
        for p in [Program::NodePort, Program::FromPod] {
            let pkt = tcp_syn((OUTSIDE, 50002), (dst, 30080), false);
            let (verdict, out) = h.run(p, &pkt);
            assert_eq!((verdict, out), (TC_ACT_OK, pkt), "{dst} {p:?}");
        }
    }
}

/// A pod to a ClusterIP keeps its address; a pod reaching itself through
/// its Service (hairpin) is masqueraded so the reply comes back through
/// the translation; a ClusterIP from outside the cluster is masqueraded.
#[test]
fn cluster_ip_masquerades_only_hairpin_and_non_pod_sources() {
    let mut h = Harness::new();
    h.service(fe(VIP, 80, TCP), 1, false, &[(1, CLIENT, 8080)]);
    let (_, out) = h.run(
        Program::FromPod,
        &tcp_syn((CLIENT, 40001), (VIP, 80), false),
    );
    let port = masq_port(&out, (CLIENT, 8080));
    let (verdict, out) = h.run(
        Program::FromPod,
        &tcp_ack((CLIENT, 8080), (NODE, port), b"ok"),
    );
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(tuple_checked(&out), ((VIP, 80), (CLIENT, 40001)));

    h.service(fe(VIP, 81, TCP), 2, false, &[(2, BACKEND_A, 8080)]);
    let (_, out) = h.run(
        Program::FromPod,
        &tcp_syn((CLIENT, 40002), (VIP, 81), false),
    );
    assert_eq!(tuple_checked(&out), ((CLIENT, 40002), (BACKEND_A, 8080)));
    let (_, out) = h.run(
        Program::NodePort,
        &tcp_syn((OUTSIDE, 40003), (VIP, 81), false),
    );
    masq_port(&out, (BACKEND_A, 8080));
}

/// The reply of a backend on another node comes back on the node device
/// (addressed to the masquerade address, or to a local client pod) and is
/// translated there.
#[test]
fn replies_from_remote_backends_are_translated_on_the_node_device() {
    let mut h = Harness::new();
    h.service(
        fe(Ipv4Addr::UNSPECIFIED, 30080, TCP),
        7,
        true,
        &[(1, REMOTE_POD, 8080)],
    );
    let (_, out) = h.run(
        Program::NodePort,
        &tcp_syn((OUTSIDE, 50003), (NODE, 30080), false),
    );
    let port = masq_port(&out, (REMOTE_POD, 8080));
    let (verdict, out) = h.run(
        Program::NodePort,
        &tcp_ack((REMOTE_POD, 8080), (NODE, port), b"ok"),
    );
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(tuple_checked(&out), ((NODE, 30080), (OUTSIDE, 50003)));

    h.service(fe(VIP, 80, TCP), 2, false, &[(2, REMOTE_POD, 8080)]);
    let (_, out) = h.run(
        Program::FromPod,
        &tcp_syn((CLIENT, 50004), (VIP, 80), false),
    );
    assert_eq!(tuple_checked(&out), ((CLIENT, 50004), (REMOTE_POD, 8080)));
    let (verdict, out) = h.run(
        Program::NodePort,
        &tcp_ack((REMOTE_POD, 8080), (CLIENT, 50004), b"ok"),
    );
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(tuple_checked(&out), ((VIP, 80), (CLIENT, 50004)));
}

fn scoped(ip: Ipv4Addr, port: u16, proto: u8, scope: u8) -> FrontendKey {
    FrontendKey {
        ip,
        port,
        proto,
        scope,
    }
}

/// externalTrafficPolicy Local: an external client gets only the local
/// set (client address kept); none local while the cluster has some:
/// dropped, with its reason; pods short-circuit to the cluster set,
/// unmasqueraded.
#[test]
fn etp_local_external_clients_get_local_endpoints_or_a_drop() {
    let mut h = Harness::new();
    let np = Ipv4Addr::UNSPECIFIED;
    h.service_flags(
        scoped(np, 30090, TCP, 0),
        7,
        LB_FLAG_NODEPORT | LB_FLAG_EXTERNAL | LB_FLAG_ETP_LOCAL,
        &[(1, REMOTE_POD, 8080)],
    );
    h.service_flags(
        scoped(np, 30090, TCP, 1),
        8,
        LB_FLAG_NODEPORT | LB_FLAG_EXTERNAL | LB_FLAG_DROP_NO_BACKEND_,
        &[],
    );
    let (verdict, _) = h.run(
        Program::NodePort,
        &tcp_syn((OUTSIDE, 50005), (NODE, 30090), false),
    );
    assert_eq!(verdict, TC_ACT_SHOT);
    let ev = h.drain_events();
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(Some(ev[0].reason), reason_code("no_local_backend"));
    assert!(!ev[0].has_flag(SLUICE_EVENT_F_REPLIED));

    // A pod: the cluster set, its own address kept.
    let (_, out) = h.run(
        Program::FromPod,
        &tcp_syn((CLIENT, 50006), (NODE, 30090), false),
    );
    assert_eq!(tuple_checked(&out), ((CLIENT, 50006), (REMOTE_POD, 8080)));

    // With a local endpoint: external clients reach it, unmasqueraded.
    h.service_flags(
        scoped(np, 30090, TCP, 1),
        8,
        LB_FLAG_NODEPORT | LB_FLAG_EXTERNAL | LB_FLAG_DROP_NO_BACKEND_,
        &[(2, BACKEND_A, 8080)],
    );
    let (_, out) = h.run(
        Program::NodePort,
        &tcp_syn((OUTSIDE, 50007), (NODE, 30090), false),
    );
    assert_eq!(tuple_checked(&out), ((OUTSIDE, 50007), (BACKEND_A, 8080)));
    let (verdict, out) = h.run(
        Program::FromPod,
        &tcp_ack((BACKEND_A, 8080), (OUTSIDE, 50007), b"ok"),
    );
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(tuple_checked(&out), ((NODE, 30090), (OUTSIDE, 50007)));
}

/// loadBalancerSourceRanges: sources outside the ranges are dropped with
/// their own reason; sources inside are served (and masqueraded, eTP
/// Cluster).
#[test]
fn source_ranges_drop_other_sources_of_lb_ips() {
    let mut h = Harness::new();
    let lb = Ipv4Addr::new(198, 51, 100, 9);
    h.service_flags(
        fe(lb, 80, TCP),
        9,
        LB_FLAG_EXTERNAL | LB_FLAG_SOURCE_RANGES,
        &[(1, BACKEND_A, 8080)],
    );
    SrcRangeMap::open(h.dp.pin_dir())
        .unwrap()
        .insert(SrcRange {
            rev_nat_id: 9,
            addr: Ipv4Addr::new(203, 0, 113, 0),
            prefix_len: 25,
        })
        .unwrap();
    let allowed = Ipv4Addr::new(203, 0, 113, 2);
    let (verdict, out) = h.run(
        Program::NodePort,
        &tcp_syn((allowed, 50008), (lb, 80), false),
    );
    assert_masquerade_verdict(verdict);
    masq_port(&out, (BACKEND_A, 8080));
    h.drain_events();
    for (p, src) in [
        (Program::NodePort, Ipv4Addr::new(203, 0, 113, 130)),
        (Program::FromPod, CLIENT),
    ] {
        let (verdict, _) = h.run(p, &tcp_syn((src, 50009), (lb, 80), false));
        assert_eq!(verdict, TC_ACT_SHOT, "{src}");
        let ev = h.drain_events();
        assert_eq!(ev.len(), 1, "{ev:?}");
        assert_eq!(Some(ev[0].reason), reason_code("source_range"));
    }
}

#[test]
fn inconsistent_master_drops_instead_of_misrouting() {
    let mut h = Harness::new();
    let f = fe(VIP, 80, TCP);
    h.maps.upsert_master(f, 3, 1, 0, 0).unwrap(); // slots never written
    let (verdict, _) = h.run(
        Program::FromPod,
        &tcp_syn((CLIENT, 43000), (VIP, 80), false),
    );
    assert_eq!(verdict, TC_ACT_SHOT);
}

#[test]
fn a_new_flow_emits_one_trace_event_and_established_packets_none() {
    let mut h = Harness::new();
    h.service(fe(VIP, 80, TCP), 4, false, &[(9, BACKEND_A, 8080)]);
    let syn = tcp_syn((CLIENT, 44000), (VIP, 80), false);
    h.run(Program::FromPod, &syn);
    let ev = h.drain_events();
    assert_eq!(ev.len(), 1, "one event for the new flow: {ev:?}");
    let e = ev[0];
    assert_eq!(e.kind, EventKind::Trace);
    assert!(e.has_flag(SLUICE_EVENT_F_NEW_FLOW));
    assert_eq!((e.reason, e.point, e.proto), (0, 0, TCP));
    assert_eq!(e.tcp_flags & 0x12, 0x02, "SYN without ACK");
    assert_eq!((e.orig_src, e.orig_dst), (sa(CLIENT, 44000), sa(VIP, 80)));
    assert_eq!(
        (e.xlat_src, e.xlat_dst),
        (sa(CLIENT, 44000), sa(BACKEND_A, 8080))
    );
    assert_eq!((e.rev_nat_id, e.backend_id), (4, 9));
    assert_eq!(e.len as usize, syn.len());
    assert!(e.timestamp_ns > 0);

    // Conntrack hits and replies: no event by default.
    h.run(Program::FromPod, &tcp_ack((CLIENT, 44000), (VIP, 80), b"x"));
    h.run(
        Program::FromPod,
        &tcp_ack((BACKEND_A, 8080), (CLIENT, 44000), b"y"),
    );
    assert_eq!(
        h.drain_events(),
        vec![],
        "established packets are not traced"
    );

    // Per-packet tracing switched on at run time: every translated packet.
    h.obs.set_trace_packets(true).unwrap();
    assert!(h.obs.trace_packets().unwrap());
    h.run(Program::FromPod, &tcp_ack((CLIENT, 44000), (VIP, 80), b"x"));
    h.run(
        Program::FromPod,
        &tcp_ack((BACKEND_A, 8080), (CLIENT, 44000), b"y"),
    );
    // Traffic that is not for a Service is still not traced.
    h.run(
        Program::FromPod,
        &tcp_ack((CLIENT, 44001), (BACKEND_B, 80), b"z"),
    );
    let ev = h.drain_events();
    assert_eq!(ev.len(), 2, "{ev:?}");
    assert!(!ev[0].has_flag(SLUICE_EVENT_F_NEW_FLOW));
    assert_eq!(ev[0].xlat_dst, sa(BACKEND_A, 8080));
    assert!(ev[1].has_flag(SLUICE_EVENT_F_REPLY));
    assert_eq!(
        (ev[1].orig_src, ev[1].xlat_src, ev[1].xlat_dst),
        (sa(BACKEND_A, 8080), sa(VIP, 80), sa(CLIENT, 44000))
    );
    h.obs.set_trace_packets(false).unwrap();
    h.run(Program::FromPod, &tcp_ack((CLIENT, 44000), (VIP, 80), b"x"));
    assert_eq!(h.drain_events(), vec![]);

    // Every packet counted once, as forwarded, with its bytes.
    let t = h.obs.traffic().unwrap();
    let fwd: u64 = t.iter().filter(|r| r.reason == 0).map(|r| r.packets).sum();
    assert_eq!(fwd, 7, "{t:?}");
    assert!(t.iter().all(|r| r.reason == 0 && r.bytes >= r.packets * 54));
}

#[test]
fn a_refused_connection_emits_a_drop_event_with_its_reason() {
    let mut h = Harness::new();
    h.service(fe(VIP, 80, TCP), 5, false, &[]);
    let syn = tcp_syn((CLIENT, 45000), (VIP, 80), true);
    let (verdict, _) = h.run(Program::FromPod, &syn);
    assert_eq!(verdict, TC_ACT_REDIRECT, "refused with a RST");
    let ev = h.drain_events();
    assert_eq!(ev.len(), 1, "{ev:?}");
    let e = ev[0];
    assert_eq!(e.kind, EventKind::Drop);
    assert_eq!(Some(e.reason), reason_code("no_service_backend"));
    assert!(e.has_flag(SLUICE_EVENT_F_REPLIED), "the refusal was sent");
    assert_eq!(e.rev_nat_id, 5, "names the Service");
    assert_eq!((e.orig_src, e.orig_dst), (sa(CLIENT, 45000), sa(VIP, 80)));
    assert_eq!(e.xlat_dst, e.orig_dst, "nothing translated");
    assert_eq!(e.len as usize, syn.len(), "length on arrival");

    let t = h.obs.traffic().unwrap();
    let drop = t.iter().find(|r| r.reason == 1).expect("drop counted");
    assert_eq!(
        (drop.point, drop.packets, drop.bytes),
        (0, 1, syn.len() as u64)
    );
}

#[test]
fn an_inconsistent_service_drop_is_reported() {
    let mut h = Harness::new();
    h.maps.upsert_master(fe(VIP, 80, TCP), 2, 6, 0, 0).unwrap();
    let (verdict, _) = h.run(
        Program::FromPod,
        &tcp_syn((CLIENT, 46000), (VIP, 80), false),
    );
    assert_eq!(verdict, TC_ACT_SHOT);
    let ev = h.drain_events();
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0].kind, EventKind::Drop);
    assert_eq!(Some(ev[0].reason), reason_code("inconsistent_service_slot"));
    assert!(!ev[0].has_flag(SLUICE_EVENT_F_REPLIED));
}

#[test]
fn a_nodeport_flow_is_traced_at_the_node_device() {
    let mut h = Harness::new();
    h.service(
        fe(Ipv4Addr::UNSPECIFIED, 30080, TCP),
        7,
        true,
        &[(1, BACKEND_A, 8080)],
    );
    h.run(
        Program::NodePort,
        &tcp_syn((OUTSIDE, 50000), (NODE, 30080), false),
    );
    let ev = h.drain_events();
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0].point, 2, "node device");
    assert_eq!(
        (ev[0].orig_dst, ev[0].xlat_dst),
        (sa(NODE, 30080), sa(BACKEND_A, 8080))
    );
    assert_eq!(ev[0].orig_src, sa(OUTSIDE, 50000));
    assert_eq!(*ev[0].xlat_src.ip(), NODE, "masqueraded");
}

#[test]
fn a_full_ring_buffer_counts_lost_events() {
    let mut h = Harness::new();
    h.service(fe(VIP, 80, TCP), 1, false, &[(1, BACKEND_A, 8080)]);
    h.run(
        Program::FromPod,
        &tcp_syn((CLIENT, 47000), (VIP, 80), false),
    );
    h.obs.set_trace_packets(true).unwrap();
    // 1 MiB of 72-byte records holds ~14500 events; nobody reads meanwhile.
    let ack = tcp_ack((CLIENT, 47000), (VIP, 80), b"x");
    for _ in 0..16000 {
        h.run(Program::FromPod, &ack);
    }
    let lost = h.maps.metrics().unwrap()[12];
    let got = h.drain_events().len() as u64;
    assert!(lost > 0, "loss is counted");
    assert_eq!(got + lost, 16001, "every event delivered or counted lost");
}

fn tcp_with(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), flags: &str) -> Vec<u8> {
    let mut b = PacketBuilder::ethernet2(POD_MAC, HOST_MAC)
        .ipv4(src.0.octets(), dst.0.octets(), 64)
        .tcp(src.1, dst.1, 7000, 64240);
    for f in flags.split('|') {
        b = match f {
            "syn" => b.syn(),
            "ack" => b.ack(1001),
            "rst" => b.rst(),
            "fin" => b.fin(),
            other => panic!("flag {other}"),
        };
    }
    let mut out = Vec::new();
    b.write(&mut out, &[]).unwrap();
    out
}

/// A client closes a Service connection and, from the same port, connects
/// straight to the backend pod: the backend's SYN-ACK and everything after
/// must not be "reverse-translated" with the dead flow's entry.
#[test]
fn a_closed_flows_tuple_reused_for_a_direct_connection_is_not_translated() {
    let mut h = Harness::new();
    h.service(fe(VIP, 80, TCP), 1, false, &[(1, BACKEND_A, 8080)]);
    let (_, out) = h.run(
        Program::FromPod,
        &tcp_syn((CLIENT, 44000), (VIP, 80), false),
    );
    assert_eq!(tuple_checked(&out).1, (BACKEND_A, 8080));
    // The client aborts (RST): both entries learn the flow is closing.
    h.run(
        Program::FromPod,
        &tcp_with((CLIENT, 44000), (VIP, 80), "rst|ack"),
    );
    assert!(
        h.maps
            .ct_rows()
            .unwrap()
            .iter()
            .all(|r| r.flags & 0b11 != 0),
        "both entries closing"
    );

    // Direct connection client:44000 → backend:8080; the backend answers.
    let syn_ack = tcp_with((BACKEND_A, 8080), (CLIENT, 44000), "syn|ack");
    let (verdict, out) = h.run(Program::FromPod, &syn_ack);
    assert_eq!((verdict, &out), (TC_ACT_OK, &syn_ack), "SYN-ACK untouched");
    let data = tcp_ack((BACKEND_A, 8080), (CLIENT, 44000), b"hello");
    let (_, out) = h.run(Program::FromPod, &data);
    assert_eq!(out, data, "later packets untouched too");
}

/// One FIN is a half-close: the flow stays open (long timeout) until the
/// other side's FIN; then both entries know it is closed, and a new SYN from
/// the same client port picks a backend afresh.
#[test]
fn a_flow_closed_by_both_fins_lets_a_new_syn_reselect() {
    const FIN: u8 = 1;
    const FIN_PEER: u8 = 8;
    let mut h = Harness::new();
    let f = fe(VIP, 80, TCP);
    h.service(f, 1, false, &[(1, BACKEND_A, 8080)]);
    h.run(
        Program::FromPod,
        &tcp_syn((CLIENT, 45000), (VIP, 80), false),
    );
    let fins = |h: &Harness, reply: bool| {
        let rows = h.maps.ct_rows().unwrap();
        rows.iter().find(|r| r.reply == reply).unwrap().flags & (FIN | FIN_PEER)
    };
    h.run(
        Program::FromPod,
        &tcp_with((BACKEND_A, 8080), (CLIENT, 45000), "fin|ack"),
    );
    assert_eq!(
        (fins(&h, true), fins(&h, false)),
        (FIN, FIN_PEER),
        "half-closed only"
    );
    h.run(
        Program::FromPod,
        &tcp_with((CLIENT, 45000), (VIP, 80), "fin|ack"),
    );
    assert_eq!(
        (fins(&h, true), fins(&h, false)),
        (FIN | FIN_PEER, FIN | FIN_PEER),
        "closed"
    );
    // Backend A leaves the Service; B takes slot 1.
    h.maps
        .upsert_backend(
            2,
            BackendEntry {
                ip: BACKEND_B,
                port: 8080,
                proto: TCP,
            },
        )
        .unwrap();
    h.maps.upsert_slot(f, 1, 2).unwrap();
    let (_, out) = h.run(
        Program::FromPod,
        &tcp_syn((CLIENT, 45000), (VIP, 80), false),
    );
    assert_eq!(tuple_checked(&out).1, (BACKEND_B, 8080));
}

// ---------------------------------------------------------------- NetworkPolicy

const ID_CLIENT: u32 = 300;
const ID_BACKEND: u32 = 301;
const ID_OTHER: u32 = 302;
const OTHER_POD: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 9);
const INGRESS: u8 = 0;
const EGRESS: u8 = 1;

fn pm(
    endpoint: Ipv4Addr,
    identity: u32,
    direction: u8,
    proto: u8,
    port: u16,
    bits: u8,
) -> PolicyMatch {
    PolicyMatch {
        endpoint,
        identity,
        direction,
        proto,
        port,
        port_prefix_len: bits,
    }
}

impl Harness {
    /// Local pods CLIENT, BACKEND_A and OTHER_POD with their identities;
    /// `enforced`: (pod, ingress, egress).
    fn policy_world(&mut self, enforced: &[(Ipv4Addr, bool, bool)]) -> PolicyMaps {
        let mut p = PolicyMaps::open(self.dp.pin_dir()).unwrap();
        for (ip, id) in [
            (CLIENT, ID_CLIENT),
            (BACKEND_A, ID_BACKEND),
            (OTHER_POD, ID_OTHER),
        ] {
            let (ingress, egress) = enforced
                .iter()
                .find(|(e, _, _)| *e == ip)
                .map_or((false, false), |(_, i, e)| (*i, *e));
            p.upsert_ipcache(
                IpcacheKey {
                    addr: ip,
                    prefix_len: 32,
                },
                id,
            )
            .unwrap();
            p.upsert_endpoint(
                ip,
                EndpointValue {
                    identity: id,
                    ingress_enforced: ingress,
                    egress_enforced: egress,
                },
            )
            .unwrap();
        }
        self.obs.set_policy(true, 1).unwrap();
        p
    }
}

#[test]
fn ingress_policy_is_judged_after_service_translation() {
    let mut h = Harness::new();
    h.service(fe(VIP, 80, TCP), 1, false, &[(1, BACKEND_A, 8080)]);
    let mut p = h.policy_world(&[(BACKEND_A, true, false)]);
    let allow = PolicyValue {
        rule_id: 7,
        deny: false,
    };
    p.upsert_policy(pm(BACKEND_A, ID_CLIENT, INGRESS, TCP, 8080, 16), allow)
        .unwrap();

    // The client's identity may reach the backend's port 8080 via the Service.
    let (verdict, out) = h.run(
        Program::FromPod,
        &tcp_syn((CLIENT, 41000), (VIP, 80), false),
    );
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(tuple_checked(&out), ((CLIENT, 41000), (BACKEND_A, 8080)));
    // Delivered to the backend: the same flow, not judged as a new one.
    let (verdict, _) = h.run(Program::ToPod, &out);
    assert_eq!(verdict, TC_ACT_OK);
    // Its reply passes (stateful) although nothing allows backend → client.
    let (verdict, _) = h.run(
        Program::FromPod,
        &tcp_with((BACKEND_A, 8080), (CLIENT, 41000), "syn|ack"),
    );
    assert_eq!(verdict, TC_ACT_OK);
    let ev = h.drain_events();
    assert_eq!(
        ev.iter()
            .filter(|e| e.has_flag(SLUICE_EVENT_F_NEW_FLOW))
            .count(),
        1,
        "one flow event: {ev:?}"
    );

    // Another pod has no rule: default deny, reported with the identities.
    let (verdict, _) = h.run(
        Program::FromPod,
        &tcp_syn((OTHER_POD, 41001), (VIP, 80), false),
    );
    assert_eq!(verdict, TC_ACT_SHOT);
    let ev = h.drain_events();
    let e = ev
        .iter()
        .find(|e| e.kind == EventKind::Drop)
        .expect("drop event");
    assert_eq!(Some(e.reason), reason_code("policy_denied"));
    assert_eq!(e.rule_id, 0, "default deny");
    assert!(e.has_flag(SLUICE_EVENT_F_POLICY_INGRESS));
    assert_eq!((e.src_identity, e.dst_identity), (ID_OTHER, ID_BACKEND));
    assert_eq!(e.xlat_dst, sa(BACKEND_A, 8080), "after translation");

    // The same client on another port of the backend: not allowed either.
    let (verdict, _) = h.run(
        Program::FromPod,
        &tcp_syn((CLIENT, 41002), (BACKEND_A, 9090), false),
    );
    assert_eq!(verdict, TC_ACT_SHOT);
}

#[test]
fn a_deny_beats_an_allow_and_port_blocks_match_ranges() {
    let mut h = Harness::new();
    let mut p = h.policy_world(&[(BACKEND_A, true, false)]);
    // Any peer on TCP 80-81 (one /15 block), but CLIENT denied on 81.
    p.upsert_policy(
        pm(BACKEND_A, 0, INGRESS, TCP, 80, 15),
        PolicyValue {
            rule_id: 1,
            deny: false,
        },
    )
    .unwrap();
    p.upsert_policy(
        pm(BACKEND_A, ID_CLIENT, INGRESS, TCP, 81, 16),
        PolicyValue {
            rule_id: 2,
            deny: true,
        },
    )
    .unwrap();
    let run = |h: &mut Harness, src: Ipv4Addr, sport: u16, port: u16| {
        h.run(
            Program::ToPod,
            &tcp_syn((src, sport), (BACKEND_A, port), false),
        )
        .0
    };
    assert_eq!(run(&mut h, CLIENT, 42000, 80), TC_ACT_OK);
    assert_eq!(run(&mut h, OTHER_POD, 42001, 81), TC_ACT_OK);
    assert_eq!(run(&mut h, CLIENT, 42002, 81), TC_ACT_SHOT);
    assert_eq!(
        run(&mut h, OTHER_POD, 42003, 82),
        TC_ACT_SHOT,
        "outside the block"
    );
    let ev = h.drain_events();
    let denied: Vec<u32> = ev
        .iter()
        .filter(|e| e.kind == EventKind::Drop)
        .map(|e| e.rule_id)
        .collect();
    assert_eq!(denied, vec![2, 0], "the deny rule, then default deny");
}

#[test]
fn egress_to_a_cidr_uses_the_ipcache_and_world_is_the_rest() {
    let mut h = Harness::new();
    let mut p = h.policy_world(&[(CLIENT, false, true)]);
    const ID_CIDR: u32 = 1 << 24 | 5;
    // 10.244.0.0/16 minus BACKEND_A (an except: its /32 keeps the pod identity).
    p.upsert_ipcache(
        IpcacheKey {
            addr: Ipv4Addr::new(10, 244, 0, 0),
            prefix_len: 16,
        },
        ID_CIDR,
    )
    .unwrap();
    p.upsert_policy(
        pm(CLIENT, ID_CIDR, EGRESS, 0, 0, 0),
        PolicyValue {
            rule_id: 3,
            deny: false,
        },
    )
    .unwrap();
    let unknown_pod = Ipv4Addr::new(10, 244, 3, 3);
    let (v, _) = h.run(
        Program::FromPod,
        &udp((CLIENT, 5000), (unknown_pod, 53), b"q"),
    );
    assert_eq!(v, TC_ACT_OK, "inside the CIDR");
    let (v, _) = h.run(
        Program::FromPod,
        &udp((CLIENT, 5001), (BACKEND_A, 53), b"q"),
    );
    assert_eq!(v, TC_ACT_SHOT, "a pod identity, not the CIDR's");
    let (v, _) = h.run(
        Program::FromPod,
        &udp((CLIENT, 5002), (Ipv4Addr::new(8, 8, 8, 8), 53), b"q"),
    );
    assert_eq!(v, TC_ACT_SHOT, "world");
    let ev = h.drain_events();
    let world = ev.iter().rfind(|e| e.kind == EventKind::Drop).unwrap();
    assert_eq!(world.dst_identity, 2, "reserved identity world");
}

#[test]
fn a_udp_flow_is_judged_again_after_a_policy_change() {
    let mut h = Harness::new();
    let mut p = h.policy_world(&[(BACKEND_A, true, false)]);
    let key = pm(BACKEND_A, ID_CLIENT, INGRESS, UDP, 53, 16);
    p.upsert_policy(
        key,
        PolicyValue {
            rule_id: 4,
            deny: false,
        },
    )
    .unwrap();
    let q = udp((CLIENT, 5300), (BACKEND_A, 53), b"q");
    assert_eq!(h.run(Program::ToPod, &q).0, TC_ACT_OK);
    // The reply passes, the flow's next packet too.
    let (v, _) = h.run(
        Program::FromPod,
        &udp((BACKEND_A, 53), (CLIENT, 5300), b"a"),
    );
    assert_eq!(v, TC_ACT_OK);
    p.delete_policy(key).unwrap();
    assert_eq!(
        h.run(Program::ToPod, &q).0,
        TC_ACT_OK,
        "same revision: established"
    );
    h.obs.set_policy(true, 2).unwrap();
    assert_eq!(
        h.run(Program::ToPod, &q).0,
        TC_ACT_SHOT,
        "new revision: judged again"
    );
    // Switched off node-wide: nothing is judged.
    h.obs.set_policy(false, 3).unwrap();
    assert_eq!(h.run(Program::ToPod, &q).0, TC_ACT_OK);
}

#[test]
fn a_tcp_syn_is_judged_again_after_a_policy_change_established_flows_are_not() {
    let mut h = Harness::new();
    let mut p = h.policy_world(&[(BACKEND_A, true, false)]);
    let key = pm(BACKEND_A, ID_CLIENT, INGRESS, TCP, 80, 16);
    p.upsert_policy(
        key,
        PolicyValue {
            rule_id: 5,
            deny: false,
        },
    )
    .unwrap();
    let syn = tcp_syn((CLIENT, 43000), (BACKEND_A, 80), false);
    assert_eq!(h.run(Program::ToPod, &syn).0, TC_ACT_OK);
    // The agent removes the allow and bumps the revision.
    p.delete_policy(key).unwrap();
    h.obs.set_policy(true, 2).unwrap();
    let ack = tcp_ack((CLIENT, 43000), (BACKEND_A, 80), b"x");
    assert_eq!(
        h.run(Program::ToPod, &ack).0,
        TC_ACT_OK,
        "established TCP keeps going"
    );
    assert_eq!(
        h.run(Program::ToPod, &syn).0,
        TC_ACT_SHOT,
        "a new connection on the same tuple is judged again"
    );
}

#[test]
fn sctp_is_translated_by_address_and_judged_by_policy() {
    let mut h = Harness::new();
    const SCTP: u8 = 132;
    h.service(fe(VIP, 81, SCTP), 1, false, &[(1, BACKEND_A, 81)]);
    // SCTP common header + an INIT chunk header; the CRC is not checked by
    // the datapath and must come out unchanged (it covers no IP header).
    let mut payload = vec![0xa0, 0x00, 0x00, 0x51, 0, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef];
    payload.extend_from_slice(&[
        1, 0, 0, 20, 0, 0, 0, 1, 0, 0, 0x10, 0, 0, 1, 0, 1, 0, 0, 0, 1,
    ]);
    let pkt = {
        let b = PacketBuilder::ethernet2(POD_MAC, HOST_MAC).ipv4(CLIENT.octets(), VIP.octets(), 64);
        let mut out = Vec::new();
        b.write(&mut out, etherparse::IpNumber(SCTP), &payload)
            .unwrap();
        out
    };
    let (v, out) = h.run(Program::FromPod, &pkt);
    assert_eq!(v, TC_ACT_OK);
    let sliced = SlicedPacket::from_ethernet(&out).unwrap();
    let Some(NetSlice::Ipv4(ip)) = sliced.net else {
        panic!("not IPv4")
    };
    let hdr = ip.header().to_header();
    assert_eq!(hdr.header_checksum, hdr.calc_header_checksum());
    assert_eq!(Ipv4Addr::from(hdr.destination), BACKEND_A);
    assert_eq!(ip.payload().payload, &payload[..], "SCTP bytes untouched");

    let _p = h.policy_world(&[(BACKEND_A, true, false)]);
    let (v, _) = h.run(Program::FromPod, &pkt);
    assert_eq!(v, TC_ACT_SHOT, "isolated for SCTP too");
}

/// A pod isolated for ingress opens a connection to an open pod: the answer
/// comes back although no rule allows that pod's ingress from the peer.
#[test]
fn replies_to_an_ingress_isolated_pods_own_connection_pass() {
    let mut h = Harness::new();
    let _p = h.policy_world(&[(CLIENT, true, false)]);
    let syn = tcp_syn((CLIENT, 44000), (OTHER_POD, 80), false);
    assert_eq!(h.run(Program::FromPod, &syn).0, TC_ACT_OK);
    let syn_ack = tcp_with((OTHER_POD, 80), (CLIENT, 44000), "syn|ack");
    assert_eq!(
        h.run(Program::FromPod, &syn_ack).0,
        TC_ACT_OK,
        "reply at the peer's veth"
    );
    assert_eq!(
        h.run(Program::ToPod, &syn_ack).0,
        TC_ACT_OK,
        "reply delivered"
    );
    // A new connection from the peer is judged: default deny.
    let syn = tcp_syn((OTHER_POD, 44001), (CLIENT, 80), false);
    assert_eq!(h.run(Program::FromPod, &syn).0, TC_ACT_SHOT);
}

/// The same, through a Service on the per-packet path: the local backend's
/// reply is rev-NATed as it leaves the backend and arrives at the client
/// from the Service address; it is still recognised as the flow's reply.
#[test]
fn a_rev_natted_reply_to_an_isolated_client_passes() {
    let mut h = Harness::new();
    h.service(fe(VIP, 80, TCP), 1, false, &[(1, BACKEND_A, 8080)]);
    let _p = h.policy_world(&[(CLIENT, true, false)]);
    let (v, _) = h.run(
        Program::FromPod,
        &tcp_syn((CLIENT, 44100), (VIP, 80), false),
    );
    assert_eq!(v, TC_ACT_OK);
    let (v, reply) = h.run(
        Program::FromPod,
        &tcp_with((BACKEND_A, 8080), (CLIENT, 44100), "syn|ack"),
    );
    assert_eq!(v, TC_ACT_OK);
    assert_eq!(tuple_checked(&reply), ((VIP, 80), (CLIENT, 44100)));
    assert_eq!(
        h.run(Program::ToPod, &reply).0,
        TC_ACT_OK,
        "delivered to the client"
    );
    // A datagram from the Service address that belongs to no flow is
    // judged: the isolated client does not take it.
    let stray = udp((VIP, 80), (CLIENT, 44101), b"x");
    assert_eq!(h.run(Program::ToPod, &stray).0, TC_ACT_SHOT);
}

/// A pod opened connections, then became isolated for ingress: the answers
/// on those connections still reach it (TCP segments that cannot open a
/// connection; Service replies conntrack knows), while a new connection or a
/// bare datagram to it is denied.
#[test]
fn replies_to_flows_opened_before_isolation_pass() {
    let mut h = Harness::new();
    h.service(fe(VIP, 53, UDP), 1, false, &[(1, BACKEND_A, 5353)]);
    // Opened while no policy selected CLIENT: nothing recorded.
    let (v, _) = h.run(
        Program::FromPod,
        &tcp_syn((CLIENT, 47000), (OTHER_POD, 80), false),
    );
    assert_eq!(v, TC_ACT_OK);
    let (v, _) = h.run(Program::FromPod, &udp((CLIENT, 47001), (VIP, 53), b"q"));
    assert_eq!(v, TC_ACT_OK);
    let _p = h.policy_world(&[(CLIENT, true, false)]);
    let data = tcp_ack((OTHER_POD, 80), (CLIENT, 47000), b"late answer");
    assert_eq!(
        h.run(Program::FromPod, &data).0,
        TC_ACT_OK,
        "at the peer's veth"
    );
    assert_eq!(h.run(Program::ToPod, &data).0, TC_ACT_OK, "delivered");
    let (v, answer) = h.run(
        Program::FromPod,
        &udp((BACKEND_A, 5353), (CLIENT, 47001), b"a"),
    );
    assert_eq!(v, TC_ACT_OK, "the Service's UDP answer leaves its backend");
    assert_eq!(
        h.run(Program::ToPod, &answer).0,
        TC_ACT_OK,
        "and is delivered"
    );
    // Not a reply of anything: denied.
    let syn = tcp_syn((OTHER_POD, 47002), (CLIENT, 80), false);
    assert_eq!(h.run(Program::FromPod, &syn).0, TC_ACT_SHOT);
    let dgram = udp((OTHER_POD, 47003), (CLIENT, 53), b"q");
    assert_eq!(h.run(Program::FromPod, &dgram).0, TC_ACT_SHOT);
}

// ---------------------------------------------------------------- session affinity

const LB_FLAG_AFFINITY: u8 = 2;
const BACKEND_C: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 7);

impl Harness {
    /// A frontend whose backends sit in address order, as the agent writes them.
    fn affinity_service(&mut self, f: FrontendKey, timeout: u32, backends: &[(u32, Ipv4Addr)]) {
        for (slot, (id, ip)) in backends.iter().enumerate() {
            self.maps
                .upsert_backend(
                    *id,
                    BackendEntry {
                        ip: *ip,
                        port: 8080,
                        proto: f.proto,
                    },
                )
                .unwrap();
            self.maps.upsert_slot(f, slot as u16 + 1, *id).unwrap();
        }
        self.maps.upsert_revnat(9, f).unwrap();
        let flags = if timeout > 0 { LB_FLAG_AFFINITY } else { 0 };
        self.maps
            .upsert_master(f, backends.len() as u16, 9, flags, timeout)
            .unwrap();
    }

    fn backend_of_new_flow(&mut self, client: Ipv4Addr, sport: u16) -> Ipv4Addr {
        let (v, out) = self.run(
            Program::FromPod,
            &tcp_syn((client, sport), (VIP, 80), false),
        );
        assert_eq!(v, TC_ACT_OK);
        tuple_checked(&out).1 .0
    }

    fn affinity_map(&self) -> aya::maps::HashMap<aya::maps::MapData, affinity_key, affinity_entry> {
        let data = aya::maps::MapData::from_pin(self.dp.pin_dir().join("sl_affinity")).unwrap();
        aya::maps::Map::from_map_data(data)
            .unwrap()
            .try_into()
            .unwrap()
    }
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[test]
fn session_affinity_keeps_a_client_on_its_backend_and_survives_slot_moves() {
    let mut h = Harness::new();
    let f = fe(VIP, 80, TCP);
    let all = [(1, BACKEND_A), (2, BACKEND_B), (3, BACKEND_C)];
    h.affinity_service(f, 60, &all);
    let first = h.backend_of_new_flow(CLIENT, 50000);
    for sport in 50001..50030 {
        assert_eq!(h.backend_of_new_flow(CLIENT, sport), first, "sticky");
    }
    // 16 clients are on C (slot 3, written here so the case is the same
    // every run); A leaves and C moves to slot 2 (slots stay in address
    // order): the stale slot is searched and every client keeps C (picking
    // at random instead would keep all 16 with probability 2^-16).
    let clients: Vec<Ipv4Addr> = (1..=16).map(|i| Ipv4Addr::new(10, 244, 1, i)).collect();
    let mut aff = h.affinity_map();
    for c in &clients {
        let key = affinity_key {
            client: u64::from(u32::from_ne_bytes(c.octets())),
            rev_nat_id: 9,
            pad0: 0,
        };
        let on_c = affinity_entry {
            last_used_ns: monotonic_ns(),
            backend_id: 3,
            slot: 3,
            pad0: 0,
        };
        aff.insert(key, on_c, 0).unwrap();
    }
    assert_eq!(h.backend_of_new_flow(clients[0], 50030), BACKEND_C);
    h.maps.upsert_slot(f, 1, 2).unwrap();
    h.maps.upsert_slot(f, 2, 3).unwrap();
    h.maps.upsert_master(f, 2, 9, LB_FLAG_AFFINITY, 60).unwrap();
    h.maps.delete_service_entry(f, 3).unwrap();
    for c in &clients {
        assert_eq!(
            h.backend_of_new_flow(*c, 50031),
            BACKEND_C,
            "after the move"
        );
    }
    // Their backend leaves: they get the one left, and stick to it.
    h.maps.upsert_master(f, 1, 9, LB_FLAG_AFFINITY, 60).unwrap();
    h.maps.delete_service_entry(f, 2).unwrap();
    for sport in 50040..50045 {
        assert_eq!(h.backend_of_new_flow(clients[1], sport), BACKEND_B);
    }
}

#[test]
fn without_affinity_new_flows_spread_and_an_expired_affinity_reselects() {
    let mut h = Harness::new();
    let f = fe(VIP, 80, TCP);
    h.affinity_service(f, 0, &[(1, BACKEND_A), (2, BACKEND_B), (3, BACKEND_C)]);
    let seen: std::collections::BTreeSet<Ipv4Addr> = (0..40)
        .map(|i| h.backend_of_new_flow(CLIENT, 51000 + i))
        .collect();
    assert!(seen.len() > 1, "switched off: spread ({seen:?})");

    // Switched on live, with a 5 s timeout. An entry older than that is
    // not honoured: over 20 tries at least one new flow must land elsewhere
    // than the stale entry says (each try: 1/3 chance to match by luck).
    h.maps.upsert_master(f, 3, 9, LB_FLAG_AFFINITY, 5).unwrap();
    let key = affinity_key {
        client: u64::from(u32::from_ne_bytes(CLIENT.octets())),
        rev_nat_id: 9,
        pad0: 0,
    };
    let mut aff = h.affinity_map();
    let mut moved = false;
    for i in 0..20 {
        let stale = affinity_entry {
            last_used_ns: monotonic_ns() - 6_000_000_000,
            backend_id: 1,
            slot: 1,
            pad0: 0,
        };
        aff.insert(key, stale, 0).unwrap();
        if h.backend_of_new_flow(CLIENT, 52000 + i) != BACKEND_A {
            moved = true;
            break;
        }
    }
    assert!(moved, "a stale affinity entry was honoured");
    // A fresh one is.
    let fresh = affinity_entry {
        last_used_ns: monotonic_ns(),
        backend_id: 2,
        slot: 2,
        pad0: 0,
    };
    aff.insert(key, fresh, 0).unwrap();
    for i in 0..10 {
        assert_eq!(h.backend_of_new_flow(CLIENT, 53000 + i), BACKEND_B);
    }
}

/// internalTrafficPolicy Local with no local endpoint: dropped (and said
/// why), not refused as a Service without endpoints is.
#[test]
fn no_local_endpoint_drops_instead_of_refusing() {
    let mut h = Harness::new();
    const LB_FLAG_DROP_NO_BACKEND: u8 = 4;
    h.maps
        .upsert_master(fe(VIP, 80, TCP), 0, 7, LB_FLAG_DROP_NO_BACKEND, 0)
        .unwrap();
    let (v, _) = h.run(
        Program::FromPod,
        &tcp_syn((CLIENT, 46000), (VIP, 80), false),
    );
    assert_eq!(v, TC_ACT_SHOT);
    let ev = h.drain_events();
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(Some(ev[0].reason), reason_code("no_local_backend"));
    assert!(!ev[0].has_flag(SLUICE_EVENT_F_REPLIED));
}

// ---------------------------------------------------------------- Maglev

const LB_FLAG_MAGLEV: u8 = 8;

impl Harness {
    /// A Maglev frontend over A, B, C (slots in address order) with the
    /// table the agent would write.
    fn maglev_service(&mut self, f: FrontendKey) {
        let backends = [(1, BACKEND_A), (2, BACKEND_B), (3, BACKEND_C)];
        self.affinity_service(f, 0, &backends);
        self.maps.upsert_master(f, 3, 9, LB_FLAG_MAGLEV, 0).unwrap();
        let addrs: Vec<sluice_core::BackendAddr> = backends
            .iter()
            .map(|(_, ip)| sluice_core::BackendAddr {
                ip: *ip,
                port: 8080,
                proto: sluice_core::Protocol::Tcp,
            })
            .collect();
        let table = sluice_core::maglev::slot_table(&addrs, 16381).unwrap();
        let mut m = sluice_datapath::MaglevMap::open(self.dp.pin_dir()).unwrap();
        for (c, chunk) in table
            .chunks(sluice_datapath::maps::MAGLEV_CHUNK)
            .enumerate()
        {
            m.upsert_chunk(9, c as u32, chunk).unwrap();
        }
    }
}

/// Two nodes with the same backends pick the same backend for each flow
/// (a flow's hash indexes the same table), and flows spread over all.
#[test]
fn maglev_picks_the_same_backend_for_a_flow_on_every_node() {
    let f = fe(VIP, 80, TCP);
    let (mut node1, mut node2) = (Harness::new(), Harness::new());
    node1.maglev_service(f);
    node2.maglev_service(f);
    let mut seen = std::collections::BTreeSet::new();
    for sport in 55000..55060 {
        let a = node1.backend_of_new_flow(CLIENT, sport);
        let b = node2.backend_of_new_flow(CLIENT, sport);
        assert_eq!(a, b, "flow from port {sport}");
        // The same flow again (a new SYN after the first closed) keeps it.
        seen.insert(a);
    }
    assert_eq!(seen.len(), 3, "spread over every backend: {seen:?}");
    // Without a table (mid-update, or never written) it falls back to random.
    let mut m = sluice_datapath::MaglevMap::open(node1.dp.pin_dir()).unwrap();
    for c in 0..8 {
        m.delete_chunk(9, c).unwrap();
    }
    let spread: std::collections::BTreeSet<Ipv4Addr> = (0..40)
        .map(|i| node1.backend_of_new_flow(OTHER_POD, 56000 + i))
        .collect();
    assert!(spread.len() > 1, "{spread:?}");
}

// ---------------------------------------------------------------- restarts

/// Creates and pins an LRU hash map with the given sizes (what an older
/// agent would have left), through the raw bpf syscall.
fn pin_lru_map(path: &std::path::Path, key_size: u32, value_size: u32) {
    #[repr(C)]
    struct MapCreate {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        map_flags: u32,
        pad: [u8; 108],
    }
    #[repr(C)]
    struct ObjPin {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
        pad: [u8; 112],
    }
    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_OBJ_PIN: libc::c_long = 6;
    const BPF_MAP_TYPE_LRU_HASH: u32 = 9;
    let attr = MapCreate {
        map_type: BPF_MAP_TYPE_LRU_HASH,
        key_size,
        value_size,
        max_entries: 64,
        map_flags: 0,
        pad: [0; 108],
    };
    // SAFETY: bpf(2) with a correctly sized, zero-padded attribute.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_CREATE,
            &attr as *const MapCreate,
            std::mem::size_of::<MapCreate>(),
        )
    };
    assert!(fd >= 0, "map create: {}", std::io::Error::last_os_error());
    let cpath = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let pin = ObjPin {
        pathname: cpath.as_ptr() as u64,
        bpf_fd: fd as u32,
        file_flags: 0,
        pad: [0; 112],
    };
    // SAFETY: as above; the path outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_PIN,
            &pin as *const ObjPin,
            std::mem::size_of::<ObjPin>(),
        )
    };
    assert_eq!(r, 0, "pin: {}", std::io::Error::last_os_error());
    // SAFETY: our descriptor; the pin keeps the map.
    unsafe { libc::close(fd as i32) };
}

/// A conntrack map pinned by an agent with the older (40-byte) entry layout
/// does not stop the programs from loading: it is replaced (conntrack reset).
#[test]
fn a_conntrack_map_with_an_older_layout_is_replaced_at_load() {
    assert!(unsafe { libc::geteuid() } == 0, "needs root");
    let node = format!("slctest-{}-oldct", std::process::id());
    let cfg = DatapathConfig::new("/sys/fs/bpf", node.clone());
    let dir = pin_dir(&cfg.bpffs_root, &node);
    let _pins = PinGuard(dir.clone());
    std::fs::create_dir_all(&dir).unwrap();
    pin_lru_map(&dir.join("sl_ct"), 16, 40);
    let mut dp = Datapath::load(&cfg).unwrap();
    let info = sluice_datapath::mapinfo::describe(&dir.join("sl_ct")).unwrap();
    assert_eq!(info.value_size, 48);
    // And it works: a flow through the new map.
    let mut maps = LbMaps::open(dp.pin_dir()).unwrap();
    maps.upsert_backend(
        1,
        BackendEntry {
            ip: BACKEND_A,
            port: 8080,
            proto: TCP,
        },
    )
    .unwrap();
    maps.upsert_slot(fe(VIP, 80, TCP), 1, 1).unwrap();
    maps.upsert_master(fe(VIP, 80, TCP), 1, 1, 0, 0).unwrap();
    let (_, out) = dp
        .test_run(
            Program::FromPod,
            &tcp_syn((CLIENT, 40000), (VIP, 80), false),
        )
        .unwrap();
    assert_eq!(tuple_checked(&out).1, (BACKEND_A, 8080));
}

use sluice_datapath::bindings::sluice_metric;
const METRIC_SERVICE_NEW_FLOW: usize = sluice_metric::METRIC_SERVICE_NEW_FLOW as usize;
const METRIC_SERVICE_CT_HIT: usize = sluice_metric::METRIC_SERVICE_CT_HIT as usize;
const METRIC_REVNAT: usize = sluice_metric::METRIC_REVNAT as usize;
const METRIC_FRAG_NO_FIRST: usize = sluice_metric::METRIC_FRAG_NO_FIRST as usize;

/// An IPv4 packet with the given fragment fields around `payload` (which
/// is the datagram's bytes from `offset_bytes` on).
fn ipv4_fragment(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    id: u16,
    offset_bytes: usize,
    more: bool,
    payload: &[u8],
) -> Vec<u8> {
    let mut ip = etherparse::Ipv4Header::new(
        payload.len() as u16,
        64,
        etherparse::IpNumber(proto),
        src.octets(),
        dst.octets(),
    )
    .unwrap();
    ip.identification = id;
    ip.more_fragments = more;
    ip.fragment_offset = etherparse::IpFragOffset::try_new((offset_bytes / 8) as u16).unwrap();
    ip.header_checksum = ip.calc_header_checksum();
    let mut out = Vec::new();
    etherparse::Ethernet2Header {
        source: POD_MAC,
        destination: HOST_MAC,
        ether_type: etherparse::EtherType::IPV4,
    }
    .write(&mut out)
    .unwrap();
    ip.write(&mut out).unwrap();
    out.extend_from_slice(payload);
    out
}

/// A UDP datagram (with its checksum) cut into two fragments, the first
/// carrying the UDP header and `first_len - 8` payload bytes.
fn udp_fragments(
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    id: u16,
    payload: &[u8],
    first_len: usize,
) -> (Vec<u8>, Vec<u8>) {
    assert_eq!(first_len % 8, 0);
    let whole = udp(src, dst, payload);
    let datagram = &whole[14 + 20..];
    (
        ipv4_fragment(src.0, dst.0, UDP, id, 0, true, &datagram[..first_len]),
        ipv4_fragment(
            src.0,
            dst.0,
            UDP,
            id,
            first_len,
            false,
            &datagram[first_len..],
        ),
    )
}

/// Addresses, IP id, fragment offset (bytes) and MF of a fragment after
/// checking its IP header checksum; and its payload.
fn fragment_checked(pkt: &[u8]) -> ((Ipv4Addr, Ipv4Addr, u16, usize, bool), Vec<u8>) {
    let (h, _) = etherparse::Ipv4Header::from_slice(&pkt[14..]).unwrap();
    assert_eq!(
        h.header_checksum,
        h.calc_header_checksum(),
        "IP header checksum"
    );
    let start = 14 + h.header_len();
    let end = 14 + h.total_len as usize;
    (
        (
            Ipv4Addr::from(h.source),
            Ipv4Addr::from(h.destination),
            h.identification,
            h.fragment_offset.byte_offset() as usize,
            h.more_fragments,
        ),
        pkt[start..end].to_vec(),
    )
}

/// Reassembles two translated fragments of a UDP datagram and returns its
/// tuple, the UDP checksum checked against the (new) addresses.
fn reassembled_udp(first: &[u8], second: &[u8]) -> ((Ipv4Addr, u16), (Ipv4Addr, u16)) {
    let ((s1, d1, id1, off1, mf1), p1) = fragment_checked(first);
    let ((s2, d2, id2, off2, mf2), p2) = fragment_checked(second);
    assert_eq!((s1, d1, id1), (s2, d2, id2), "fragments disagree");
    assert_eq!((off1, mf1, off2, mf2), (0, true, p1.len(), false));
    let mut datagram = p1;
    datagram.extend_from_slice(&p2);
    let whole = ipv4_fragment(s1, d1, UDP, id1, 0, false, &datagram);
    tuple_checked(&whole)
}

#[test]
fn a_fragmented_udp_datagram_to_a_cluster_ip_is_translated_fragment_by_fragment() {
    let mut h = Harness::new();
    h.service(fe(VIP, 53, UDP), 1, false, &[(1, BACKEND_A, 5353)]);
    let payload: Vec<u8> = (0..2000u32).map(|i| (i * 7 + 3) as u8).collect();
    let (f1, f2) = udp_fragments((CLIENT, 40000), (VIP, 53), 0x1234, &payload, 1480);

    let (v1, o1) = h.run(Program::FromPod, &f1);
    let (v2, o2) = h.run(Program::FromPod, &f2);
    assert_eq!((v1, v2), (TC_ACT_OK, TC_ACT_OK));
    assert_eq!(
        fragment_checked(&o2).0 .1,
        BACKEND_A,
        "the later fragment follows the first"
    );
    assert_eq!(
        fragment_checked(&o2).1,
        fragment_checked(&f2).1,
        "a later fragment's bytes are payload: untouched"
    );
    assert_eq!(
        reassembled_udp(&o1, &o2),
        ((CLIENT, 40000), (BACKEND_A, 5353))
    );
    let m = h.maps.metrics().unwrap();
    assert_eq!(m[METRIC_SERVICE_NEW_FLOW], 1);
    assert_eq!(
        m[METRIC_SERVICE_CT_HIT], 1,
        "the later fragment hit conntrack"
    );

    // The reply, fragmented too, leaves the backend pod: rev-NAT on both.
    let answer: Vec<u8> = payload.iter().rev().copied().collect();
    let (r1, r2) = udp_fragments((BACKEND_A, 5353), (CLIENT, 40000), 0x4321, &answer, 1480);
    let (v1, o1) = h.run(Program::FromPod, &r1);
    let (v2, o2) = h.run(Program::FromPod, &r2);
    assert_eq!((v1, v2), (TC_ACT_OK, TC_ACT_OK));
    assert_eq!(reassembled_udp(&o1, &o2), ((VIP, 53), (CLIENT, 40000)));
    assert_eq!(h.maps.metrics().unwrap()[METRIC_REVNAT], 2);

    // The first fragment of the next datagram follows conntrack as well.
    let (f1, f2) = udp_fragments((CLIENT, 40000), (VIP, 53), 0x1235, &payload, 1024);
    let (_, o1) = h.run(Program::FromPod, &f1);
    let (_, o2) = h.run(Program::FromPod, &f2);
    assert_eq!(
        reassembled_udp(&o1, &o2),
        ((CLIENT, 40000), (BACKEND_A, 5353))
    );
}

#[test]
fn a_later_fragment_whose_first_was_not_seen_passes_untouched() {
    let mut h = Harness::new();
    h.service(fe(VIP, 53, UDP), 1, false, &[(1, BACKEND_A, 5353)]);
    let payload = vec![0x5a; 2000];
    let (f1, f2) = udp_fragments((CLIENT, 40001), (VIP, 53), 0x7777, &payload, 1480);
    let (v, out) = h.run(Program::FromPod, &f2);
    assert_eq!(v, TC_ACT_OK);
    assert_eq!(out, f2, "untouched");
    assert_eq!(h.maps.metrics().unwrap()[METRIC_FRAG_NO_FIRST], 1);
    // Its first fragment, coming late, is still translated (and the next
    // later fragment of that datagram would follow it).
    let (_, out) = h.run(Program::FromPod, &f1);
    assert_eq!(fragment_checked(&out).0 .1, BACKEND_A);
    // Another datagram's id does not borrow this one's ports.
    let (_, f2_other) = udp_fragments((CLIENT, 40001), (VIP, 53), 0x7778, &payload, 1480);
    let (_, out) = h.run(Program::FromPod, &f2_other);
    assert_eq!(out, f2_other);
}

#[test]
fn a_fragmented_nodeport_datagram_is_masqueraded_fragment_by_fragment() {
    let mut h = Harness::new();
    h.service(
        fe(Ipv4Addr::UNSPECIFIED, 30053, UDP),
        7,
        true,
        &[(1, BACKEND_A, 5353)],
    );
    let payload: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
    let (f1, f2) = udp_fragments((OUTSIDE, 50000), (NODE, 30053), 0x99, &payload, 1480);
    let (v1, o1) = h.run(Program::NodePort, &f1);
    let (v2, o2) = h.run(Program::NodePort, &f2);
    assert_masquerade_verdict(v1);
    assert_masquerade_verdict(v2);
    let ((src, port), dst) = reassembled_udp(&o1, &o2);
    assert_eq!((src, dst), (NODE, (BACKEND_A, 5353)));
    // The reply leaves the backend pod: NodePort and client come back.
    let (r1, r2) = udp_fragments((BACKEND_A, 5353), (NODE, port), 0x9a, &payload, 1480);
    let (v1, o1) = h.run(Program::FromPod, &r1);
    let (v2, o2) = h.run(Program::FromPod, &r2);
    assert_eq!((v1, v2), (TC_ACT_REDIRECT, TC_ACT_REDIRECT));
    assert_eq!(reassembled_udp(&o1, &o2), ((NODE, 30053), (OUTSIDE, 50000)));
}

const SCTP: u8 = 132;
static CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// CRC32c of SCTP bytes, the checksum field counted as zero (RFC 9260 §6.8).
fn sctp_crc(sctp: &[u8]) -> u32 {
    let mut d = CRC32C.digest();
    d.update(&sctp[..8]);
    d.update(&[0; 4]);
    d.update(&sctp[12..]);
    d.finalize()
}

/// An SCTP packet with one chunk (type `chunk`, `body` after its header,
/// padded to 4 bytes) and a valid CRC32c (least significant byte first).
fn sctp(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), chunk: u8, body: &[u8]) -> Vec<u8> {
    let mut s = Vec::new();
    s.extend_from_slice(&src.1.to_be_bytes());
    s.extend_from_slice(&dst.1.to_be_bytes());
    s.extend_from_slice(&0x0102_0304u32.to_be_bytes());
    s.extend_from_slice(&[0; 4]);
    s.extend_from_slice(&[chunk, 0]);
    s.extend_from_slice(&((4 + body.len()) as u16).to_be_bytes());
    s.extend_from_slice(body);
    while s.len() % 4 != 0 {
        s.push(0);
    }
    let crc = sctp_crc(&s);
    s[8..12].copy_from_slice(&crc.to_le_bytes());
    let b = PacketBuilder::ethernet2(POD_MAC, HOST_MAC).ipv4(src.0.octets(), dst.0.octets(), 64);
    let mut out = Vec::new();
    b.write(&mut out, etherparse::IpNumber(SCTP), &s).unwrap();
    out
}

/// The tuple of an SCTP packet, after checking its IP header checksum and
/// its CRC32c against a from-scratch computation.
fn sctp_checked(pkt: &[u8]) -> ((Ipv4Addr, u16), (Ipv4Addr, u16)) {
    let ((src, dst, _, off, mf), s) = fragment_checked(pkt);
    assert_eq!((off, mf), (0, false));
    let carried = u32::from_le_bytes(s[8..12].try_into().unwrap());
    assert_eq!(carried, sctp_crc(&s), "SCTP CRC32c");
    (
        (src, u16::from_be_bytes([s[0], s[1]])),
        (dst, u16::from_be_bytes([s[2], s[3]])),
    )
}

/// An INIT chunk's body: initiate tag, a_rwnd, streams, initial TSN, and
/// `extra` bytes of parameters (to vary the length).
fn init_body(extra: usize) -> Vec<u8> {
    let mut b = vec![0xca, 0xfe, 0xba, 0xbe, 0, 1, 0, 0, 0, 10, 0, 10, 0, 0, 0, 1];
    if extra > 0 {
        // An unrecognized parameter type 0x8001 carrying filler bytes.
        let len = 4 + extra;
        b.extend_from_slice(&[0x80, 0x01]);
        b.extend_from_slice(&(len as u16).to_be_bytes());
        b.extend((0..extra).map(|i| (i * 13 + 1) as u8));
    }
    b
}

#[test]
fn sctp_nodeport_with_another_target_port_gets_a_valid_crc_both_ways() {
    let mut h = Harness::new();
    h.service(
        fe(Ipv4Addr::UNSPECIFIED, 30132, SCTP),
        7,
        true,
        &[(1, BACKEND_A, 132)],
    );
    let (v, out) = h.run(
        Program::NodePort,
        &sctp((OUTSIDE, 5000), (NODE, 30132), 1, &init_body(0)),
    );
    assert_masquerade_verdict(v);
    let ((src, first_port), dst) = sctp_checked(&out);
    assert_eq!((src, dst), (NODE, (BACKEND_A, 132)));
    // The INIT-ACK from the backend port: rev-NAT to the NodePort.
    let (v, out) = h.run(
        Program::FromPod,
        &sctp((BACKEND_A, 132), (NODE, first_port), 2, &init_body(40)),
    );
    assert_eq!(v, TC_ACT_REDIRECT);
    assert_eq!(sctp_checked(&out), ((NODE, 30132), (OUTSIDE, 5000)));

    // Another client on the same source port: masqueraded to another
    // port too, so both ports change (two CRC updates in one packet).
    let other = Ipv4Addr::new(172, 31, 9, 3);
    let (_, out) = h.run(
        Program::NodePort,
        &sctp((other, 5000), (NODE, 30132), 1, &init_body(1200)),
    );
    let ((snat, snat_port), dst) = sctp_checked(&out);
    assert_eq!((snat, dst), (NODE, (BACKEND_A, 132)));
    assert_ne!(snat_port, first_port);
    let (_, out) = h.run(
        Program::FromPod,
        &sctp((BACKEND_A, 132), (NODE, snat_port), 2, &init_body(1200)),
    );
    assert_eq!(sctp_checked(&out), ((NODE, 30132), (other, 5000)));
}

#[test]
fn sctp_cluster_ip_port_translation_keeps_the_crc_valid_and_a_bad_one_bad() {
    let mut h = Harness::new();
    h.service(fe(VIP, 81, SCTP), 1, false, &[(1, BACKEND_A, 8181)]);
    for extra in [0, 3, 500, 1400] {
        let (v, out) = h.run(
            Program::FromPod,
            &sctp(
                (CLIENT, 6000 + extra as u16),
                (VIP, 81),
                1,
                &init_body(extra),
            ),
        );
        assert_eq!(v, TC_ACT_OK, "{extra}");
        assert_eq!(
            sctp_checked(&out),
            ((CLIENT, 6000 + extra as u16), (BACKEND_A, 8181))
        );
        let (_, out) = h.run(
            Program::FromPod,
            &sctp(
                (BACKEND_A, 8181),
                (CLIENT, 6000 + extra as u16),
                2,
                &init_body(extra),
            ),
        );
        assert_eq!(
            sctp_checked(&out),
            ((VIP, 81), (CLIENT, 6000 + extra as u16))
        );
    }
    // A corrupt packet stays corrupt: the CRC is updated, not recomputed.
    let mut bad = sctp((CLIENT, 7000), (VIP, 81), 1, &init_body(8));
    bad[14 + 20 + 8] ^= 0x55;
    let (_, out) = h.run(Program::FromPod, &bad);
    let (_, s) = fragment_checked(&out);
    assert_eq!(u16::from_be_bytes([s[2], s[3]]), 8181);
    assert_ne!(
        u32::from_le_bytes(s[8..12].try_into().unwrap()),
        sctp_crc(&s)
    );
    // A CRC not computed yet (0: CRC offload) is left for the stack.
    let mut partial = sctp((CLIENT, 7001), (VIP, 81), 1, &init_body(8));
    partial[14 + 20 + 8..14 + 20 + 12].copy_from_slice(&[0; 4]);
    let (_, out) = h.run(Program::FromPod, &partial);
    let (_, s) = fragment_checked(&out);
    assert_eq!(u16::from_be_bytes([s[2], s[3]]), 8181);
    assert_eq!(&s[8..12], &[0; 4]);
}

#[test]
fn later_fragments_are_judged_by_policy_with_their_first_fragments_ports() {
    let mut h = Harness::new();
    let mut p = h.policy_world(&[(BACKEND_A, true, false)]);
    p.upsert_policy(
        pm(BACKEND_A, ID_CLIENT, INGRESS, UDP, 53, 16),
        PolicyValue {
            rule_id: 4,
            deny: false,
        },
    )
    .unwrap();
    let payload = vec![7u8; 2000];
    let (f1, f2) = udp_fragments((CLIENT, 5400), (BACKEND_A, 53), 0x501, &payload, 1480);
    assert_eq!(h.run(Program::ToPod, &f1).0, TC_ACT_OK);
    assert_eq!(h.run(Program::ToPod, &f2).0, TC_ACT_OK, "allowed port");
    let (f1, f2) = udp_fragments((CLIENT, 5401), (BACKEND_A, 54), 0x502, &payload, 1480);
    assert_eq!(h.run(Program::ToPod, &f1).0, TC_ACT_SHOT);
    assert_eq!(
        h.run(Program::ToPod, &f2).0,
        TC_ACT_SHOT,
        "a denied datagram's later fragment is denied too"
    );
}

/// RFC 1858's tiny fragment: a TCP SYN split so the first fragment holds
/// only 8 bytes of TCP header. Passing it would let the reassembled SYN
/// (its later fragment finds no ports either) escape Service translation
/// and NetworkPolicy: it is dropped, and counted as invalid, on every path.
#[test]
fn a_first_fragment_too_short_for_its_tcp_header_is_dropped() {
    let mut h = Harness::new();
    h.service(fe(VIP, 80, TCP), 1, false, &[(1, BACKEND_A, 8080)]);
    let syn = tcp_syn((CLIENT, 40002), (VIP, 80), false);
    let segment = &syn[14 + 20..];
    let tiny = ipv4_fragment(CLIENT, VIP, TCP, 0x4242, 0, true, &segment[..8]);
    let rest = ipv4_fragment(CLIENT, VIP, TCP, 0x4242, 8, false, &segment[8..]);
    for prog in [Program::FromPod, Program::ToPod, Program::NodePort] {
        let (v, _) = h.run(prog, &tiny);
        assert_eq!(v, TC_ACT_SHOT, "{prog:?}");
    }
    // Its later fragment knows no ports: untouched (and harmless alone).
    let (v, out) = h.run(Program::FromPod, &rest);
    assert_eq!((v, out), (TC_ACT_OK, rest.clone()));
    // A first fragment holding the whole TCP header is translated.
    let syn_opts = tcp_syn((CLIENT, 40003), (VIP, 80), true);
    let with_options = &syn_opts[14 + 20..];
    assert!(with_options.len() > 24);
    let whole_header = ipv4_fragment(CLIENT, VIP, TCP, 0x4343, 0, true, &with_options[..24]);
    let (v, out) = h.run(Program::FromPod, &whole_header);
    assert_ne!(v, TC_ACT_SHOT);
    assert_eq!(fragment_checked(&out).0 .1, BACKEND_A);
}
