//! Root tests: the baselines applied in a private network namespace, and
//! real connections through the rules.
#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sluice_baseline::{
    svc_chain, synthetic_views, Baseline, EndpointView, IptablesBackend, Mode, ServicePortView,
};
use sluice_core::Protocol;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `ip netns add slcbl-<pid>-<tag>`, deleted on drop (also when a test panics).
struct Netns {
    name: String,
    path: PathBuf,
}

impl Netns {
    fn new(tag: &str) -> Self {
        let name = format!("slcbl-{}-{tag}", std::process::id());
        sh(&["ip", "netns", "add", &name]);
        let ns = Netns {
            path: PathBuf::from("/run/netns").join(&name),
            name,
        };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    fn ip(&self, args: &[&str]) {
        let mut full = vec!["ip", "-n", &self.name];
        full.extend_from_slice(args);
        sh(&full);
    }

    fn run(&self, args: &[&str]) -> String {
        let ns = format!("--net={}", self.path.display());
        let mut full = vec!["nsenter", ns.as_str()];
        full.extend_from_slice(args);
        sh(&full)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `f` on a fresh thread that joined the namespace (setns only moves
/// the calling thread, so the test's own thread stays where it is).
fn in_netns<T: Send>(path: &Path, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let ns = File::open(path).unwrap();
            // SAFETY: a valid namespace fd; affects only this thread.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap()
    })
}

fn view(name: &str, vip: [u8; 4], endpoints: &[([u8; 4], u16)]) -> ServicePortView {
    ServicePortView {
        service: format!("test/{name}"),
        port_name: "http".into(),
        protocol: Protocol::Tcp,
        cluster_ip: Ipv4Addr::from(vip),
        port: 80,
        node_port: None,
        endpoints: endpoints
            .iter()
            .map(|&(ip, port)| EndpointView {
                ip: Ipv4Addr::from(ip),
                port,
            })
            .collect(),
    }
}

fn listing(ns: &Netns, mode: Mode) -> String {
    match mode {
        Mode::Iptables => {
            ns.run(&["iptables-save", "-t", "nat"]) + &ns.run(&["iptables-save", "-t", "filter"])
        }
        Mode::Nftables => ns.run(&["nft", "list", "ruleset"]),
    }
}

fn sync_and_change(mode: Mode) {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let ns = Netns::new(&format!("sync-{mode}"));
    let mut b = Baseline::new(mode, &ns.path).unwrap();
    if mode == Mode::Iptables {
        assert!(b.backend().is_some());
    }
    let views = synthetic_views(1000, 2);
    let t = b.full_sync(&views).unwrap();
    eprintln!("{mode}: full_sync 1000 Services: {t:?}");
    let text = listing(&ns, mode);
    assert!(text.contains("bench/svc-999"), "last Service missing");

    let mut after = views.clone();
    after.push(view("new", [10, 100, 0, 1], &[([10, 245, 0, 1], 8080)]));
    after.sort();
    let t = b.apply_change(&views, &after).unwrap();
    eprintln!("{mode}: apply_change (add one) with 1000 present: {t:?}");
    let text = listing(&ns, mode);
    match mode {
        Mode::Iptables => {
            assert!(text.contains(
                "-A KUBE-SERVICES -d 10.100.0.1/32 -p tcp -m comment --comment \"test/new:http cluster IP\" -m tcp --dport 80 -j KUBE-SVC-"
            ), "{text}");
            assert!(text.contains("--to-destination 10.245.0.1:8080"));
            // Unchanged chains survive a partial restore.
            assert!(text.contains(&format!(":{} ", svc_chain(&views[0]))));
        }
        Mode::Nftables => {
            assert!(
                text.contains("10.100.0.1 . tcp . 80 : goto service-"),
                "{text}"
            );
            assert!(text.contains("dnat to 10.245.0.1:8080"));
        }
    }

    // Endpoints of one Service change, then the new one goes away again.
    let mut changed = after.clone();
    let i = changed
        .iter()
        .position(|v| v.service == "test/new")
        .unwrap();
    changed[i].endpoints[0].port = 9090;
    b.apply_change(&after, &changed).unwrap();
    let text = listing(&ns, mode);
    assert!(text.contains("10.245.0.1:9090") && !text.contains("10.245.0.1:8080"));
    b.apply_change(&changed, &views).unwrap();
    let text = listing(&ns, mode);
    assert!(
        !text.contains("10.100.0.1") && !text.contains("10.245.0.1"),
        "{text}"
    );

    // The old way: a full restore for one change.
    let t = b.apply_change_full(&views, &after).unwrap();
    eprintln!("{mode}: apply_change_full (add one) with 1000 present: {t:?}");
    assert!(listing(&ns, mode).contains("10.245.0.1:8080"));

    b.cleanup().unwrap();
    let text = listing(&ns, mode);
    assert!(
        !text.contains("KUBE-") && !text.contains("kube-proxy"),
        "left behind:\n{text}"
    );
}

#[test]
fn iptables_sync_and_partial_change() {
    sync_and_change(Mode::Iptables);
}

#[test]
fn nftables_sync_and_partial_change() {
    sync_and_change(Mode::Nftables);
}

/// Accepts one connection and answers with `tag`.
fn serve_once(listener: TcpListener, tag: &'static [u8]) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let _ = s.write_all(tag);
        }
    })
}

fn connect(ns: &Path, addr: &str) -> std::io::Result<Vec<u8>> {
    let addr: SocketAddr = addr.parse().unwrap();
    in_netns(ns, move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf)?;
        Ok(buf)
    })
}

/// The rules really forward: a connection to a Service VIP from the
/// namespace reaches the endpoint (OUTPUT DNAT), after a full sync and
/// after a partial change; a Service without endpoints is refused at once.
fn traffic(mode: Mode) {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let ns = Netns::new(&format!("traffic-{mode}"));
    // A veth pair rather than a dummy device: the dummy module is not
    // always available. The endpoint address sits on one end.
    ns.ip(&["link", "add", "d0", "type", "veth", "peer", "name", "d1"]);
    ns.ip(&["addr", "add", "10.250.0.2/24", "dev", "d0"]);
    ns.ip(&["link", "set", "d0", "up"]);
    ns.ip(&["link", "set", "d1", "up"]);
    // Service VIPs need a route for the first lookup, before DNAT.
    ns.ip(&["route", "add", "10.96.0.0/12", "dev", "d0"]);
    let (l1, l2) = in_netns(&ns.path, || {
        (
            TcpListener::bind("10.250.0.2:8080").unwrap(),
            TcpListener::bind("10.250.0.2:8081").unwrap(),
        )
    });

    let mut b = Baseline::new(mode, &ns.path).unwrap();
    let before = vec![
        view("web", [10, 96, 0, 1], &[([10, 250, 0, 2], 8080)]),
        view("empty", [10, 96, 0, 2], &[]),
    ];
    b.full_sync(&before).unwrap();

    let server = serve_once(l1, b"one");
    assert_eq!(connect(&ns.path, "10.96.0.1:80").unwrap(), b"one");
    server.join().unwrap();

    let t0 = Instant::now();
    let err = connect(&ns.path, "10.96.0.2:80").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "refusal took {:?}",
        t0.elapsed()
    );

    // A partial change moves the Service to the other listener.
    let after = vec![
        view("web", [10, 96, 0, 1], &[([10, 250, 0, 2], 8081)]),
        view("empty", [10, 96, 0, 2], &[]),
    ];
    b.apply_change(&before, &after).unwrap();
    let server = serve_once(l2, b"two");
    assert_eq!(connect(&ns.path, "10.96.0.1:80").unwrap(), b"two");
    server.join().unwrap();

    // Dropping the baseline removes its rules: the VIP no longer answers.
    drop(b);
    assert!(
        connect(&ns.path, "10.96.0.2:80").is_err_and(|e| e.kind() != ErrorKind::ConnectionRefused)
    );
}

#[test]
fn iptables_traffic_reaches_endpoint() {
    traffic(Mode::Iptables);
}

#[test]
fn nftables_traffic_reaches_endpoint() {
    traffic(Mode::Nftables);
}

#[test]
fn backend_is_the_iptables_alternative() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let ns = Netns::new("backend");
    let b = Baseline::new(Mode::Iptables, &ns.path).unwrap();
    let version = sh(&["iptables", "--version"]);
    let want = if version.contains("nf_tables") {
        IptablesBackend::Nft
    } else {
        IptablesBackend::Legacy
    };
    assert_eq!(b.backend(), Some(want));
    assert!(Baseline::new(Mode::Nftables, "/run/netns/slcbl-does-not-exist").is_err());
}

/// `sluice baseline render` output loads as is, and iptables reads it back
/// rule for rule (the render uses `iptables-save`'s canonical form).
#[test]
fn renders_load_and_read_back_identically() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let mut views = synthetic_views(5, 3);
    views[1].node_port = Some(30001);
    views[2].endpoints.clear();
    views[2].node_port = Some(30002);
    let opts = sluice_baseline::Options::default();

    let ns = Netns::new("render-ipt");
    let text = sluice_baseline::render_iptables(&views, &opts);
    let file = std::env::temp_dir().join(format!("{}.rules", ns.name));
    std::fs::write(&file, &text).unwrap();
    ns.run(&["iptables-restore", file.to_str().unwrap()]);
    let _ = std::fs::remove_file(&file);
    let saved = ns.run(&["iptables-save"]);
    let rules = |t: &str| {
        let mut v: Vec<String> = t
            .lines()
            .filter(|l| l.starts_with("-A "))
            .map(String::from)
            .collect();
        v.sort();
        v
    };
    assert_eq!(rules(&text), rules(&saved));

    let ns = Netns::new("render-nft");
    let text = sluice_baseline::render_nftables(&views, &opts);
    let file = std::env::temp_dir().join(format!("{}.nft", ns.name));
    std::fs::write(&file, &text).unwrap();
    ns.run(&["nft", "-f", file.to_str().unwrap()]);
    let _ = std::fs::remove_file(&file);
    let listed = ns.run(&["nft", "list", "table", "ip", "kube-proxy"]);
    assert!(listed.contains("numgen random mod 3 vmap"), "{listed}");
    assert!(
        listed.contains("tcp . 30002 comment \"bench/svc-2:http\" : goto reject-chain"),
        "{listed}"
    );
}

/// Quick timings for the report (not a benchmark): `cargo test --release
/// -p sluice-baseline --test apply -- --ignored --nocapture timings`.
#[test]
#[ignore = "slow; prints timings"]
fn timings() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    for n in [1000, 10_000] {
        for mode in [Mode::Iptables, Mode::Nftables] {
            let ns = Netns::new(&format!("time-{mode}-{n}"));
            let mut b = Baseline::new(mode, &ns.path).unwrap();
            let views = synthetic_views(n, 2);
            let full = b.full_sync(&views).unwrap();
            let mut after = views.clone();
            after.push(view("new", [10, 100, 0, 1], &[([10, 245, 0, 1], 8080)]));
            after.sort();
            let partial = b.apply_change(&views, &after).unwrap();
            let old_way = b.apply_change_full(&after, &views).unwrap();
            let t0 = Instant::now();
            b.cleanup().unwrap();
            eprintln!(
                "{mode:>8} n={n:>6}: full_sync {full:>10.1?}  apply_change {partial:>10.1?}  apply_change_full {old_way:>10.1?}  cleanup {:>10.1?}",
                t0.elapsed()
            );
        }
    }
}
