//! End-to-end: a sandbox node, pods wired by the real sluice-cni, the real
//! agent on Kubernetes YAML, and real TCP/UDP traffic through the kernel.
//! Needs root (CI runs as root); every sandbox is removed, also on failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sluice_api::{Client, EndpointInfo, EndpointState, ServiceInfo, Status};
use sluice_testbed::{
    http_get, http_get_path, run_in_netns, tcp_request, udp_request, Pod, ProbeKind, ProbeOutcome,
    Sandbox, SandboxOptions, WorkloadPorts,
};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const HTTP: u16 = 8080;
const ECHO: u16 = 9000;
const UDP: u16 = 5353;
const T: Duration = Duration::from_secs(2);

fn sluice_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sluice"))
}

fn require_root() {
    assert!(
        sluice_testbed::is_root(),
        "end-to-end tests create namespaces and load BPF programs: run them as root"
    );
}

fn pods_yaml(labels: &[(&str, &str)]) -> String {
    let mut s = String::new();
    for (name, app) in labels {
        s.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: default\n  labels:\n    app: {app}\nspec:\n  containers:\n  - name: c\n    ports:\n    - name: http\n      containerPort: {HTTP}\n"
        ));
    }
    s
}

const SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  type: NodePort
  clusterIP: 10.96.0.10
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http, nodePort: 30080}
  - {name: echo, port: 9000, targetPort: 9000}
  - {name: dns, port: 53, protocol: UDP, targetPort: 5353, nodePort: 30053}
---
apiVersion: v1
kind: Service
metadata: {name: empty, namespace: default}
spec:
  clusterIP: 10.96.0.99
  selector: {app: nothing}
  ports:
  - {port: 80, targetPort: 8080}
  - {name: dns, port: 53, protocol: UDP, targetPort: 5353}
"#;

struct Env {
    sb: Sandbox,
    client: Pod,
    web: Vec<Pod>,
    api: Client,
}

async fn setup(web_pods: usize, services: &str) -> Env {
    require_root();
    let mut sb = Sandbox::create(SandboxOptions::default()).expect("sandbox");
    sb.start_agent(&sluice_bin(), &[]).await.expect("agent");
    let client = sb.add_pod("default", "client").await.expect("client pod");
    let mut web = Vec::new();
    let mut labels = vec![("client", "client")];
    let names: Vec<String> = (1..=web_pods).map(|i| format!("web-{i}")).collect();
    for n in &names {
        let p = sb.add_pod("default", n).await.expect("web pod");
        let ports = WorkloadPorts {
            tcp: Some(ECHO),
            udp: Some(UDP),
            http: Some(HTTP),
        };
        sb.spawn_workload(&p, ports).await.expect("workload");
        web.push(p);
        labels.push((n.as_str(), "web"));
    }
    std::fs::write(sb.manifests_dir().join("pods.yaml"), pods_yaml(&labels)).unwrap();
    std::fs::write(sb.manifests_dir().join("services.yaml"), services).unwrap();
    let api = Client::new(sb.agent_socket());
    Env {
        sb,
        client,
        web,
        api,
    }
}

/// Polls the agent until `pred` holds on the service list.
async fn wait_services(
    api: &Client,
    what: &str,
    pred: impl Fn(&[ServiceInfo]) -> bool,
) -> Vec<ServiceInfo> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let list: Vec<ServiceInfo> = api.get("/v1/services").await.expect("services");
        if pred(&list) {
            return list;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for: {what}; services: {list:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn backends_of(list: &[ServiceInfo], svc: &str, port: u16) -> usize {
    list.iter()
        .find(|s| s.service == svc && s.port == port)
        .map(|s| s.backends.len())
        .unwrap_or(usize::MAX)
}

/// HTTP GETs from inside `netns`; body (pod name) → count.
fn http_spread(netns: &Path, target: SocketAddr, n: usize) -> BTreeMap<String, usize> {
    let netns = netns.to_path_buf();
    run_in_netns(&netns, move || {
        let mut seen = BTreeMap::new();
        for _ in 0..n {
            let body = http_get(target, T).unwrap_or_else(|e| panic!("GET {target}: {e}"));
            *seen.entry(body.trim().to_string()).or_insert(0) += 1;
        }
        seen
    })
    .expect("netns")
}

fn ct_backends(sb: &Sandbox, proto: u8, frontend: SocketAddr) -> BTreeMap<String, usize> {
    let pin = sluice_datapath::loader::pin_dir(Path::new("/sys/fs/bpf"), sb.run_id());
    let maps = sluice_datapath::LbMaps::open(&pin).unwrap();
    let mut seen = BTreeMap::new();
    for r in maps.ct_rows().unwrap() {
        if !r.reply && r.proto == proto && SocketAddr::from(r.dst) == frontend {
            *seen.entry(format!("{}:{}", r.nat.0, r.nat.1)).or_insert(0) += 1;
        }
    }
    seen
}

fn echo(stream: &mut TcpStream, msg: &[u8]) -> Vec<u8> {
    stream
        .write_all(msg)
        .expect("write on established connection");
    let mut buf = vec![0u8; msg.len()];
    stream
        .read_exact(&mut buf)
        .expect("read on established connection");
    buf
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_end_to_end_through_the_kernel() {
    let mut env = setup(2, SERVICES).await;
    let api = env.api.clone();
    wait_services(&api, "web has 2 backends on every port", |l| {
        backends_of(l, "default/web", 80) == 2
            && backends_of(l, "default/web", 53) == 2
            && backends_of(l, "default/web", 30080) == 2
            && backends_of(l, "default/empty", 80) == 0
    })
    .await;
    let vip_http = SocketAddr::from(([10, 96, 0, 10], 80));
    let vip_udp = SocketAddr::from(([10, 96, 0, 10], 53));

    // TCP from a pod to the ClusterIP: spread over both backends.
    let seen = http_spread(&env.client.netns, vip_http, 40);
    assert_eq!(
        seen.keys().cloned().collect::<Vec<_>>(),
        ["default/web-1", "default/web-2"],
        "ClusterIP TCP spread: {seen:?}"
    );

    // UDP from a pod: every query echoed, flows spread (seen in conntrack).
    let netns = env.client.netns.clone();
    run_in_netns(&netns, move || {
        for i in 0..40 {
            let q = format!("q{i}");
            let a = udp_request(vip_udp, q.as_bytes(), T)
                .unwrap_or_else(|e| panic!("UDP {vip_udp}: {e}"));
            assert_eq!(a, q.as_bytes());
        }
    })
    .unwrap();
    let udp_seen = ct_backends(&env.sb, 17, vip_udp);
    assert_eq!(
        udp_seen.len(),
        2,
        "UDP flows on both backends: {udp_seen:?}"
    );

    // NodePort from outside the node, TCP and UDP.
    let np = SocketAddr::from((env.sb.node_ip(), 30080));
    let seen = http_spread(&env.sb.outside_netns(), np, 30);
    assert_eq!(seen.len(), 2, "NodePort TCP spread: {seen:?}");
    let np_udp = SocketAddr::from((env.sb.node_ip(), 30053));
    run_in_netns(&env.sb.outside_netns(), move || {
        let a = udp_request(np_udp, b"ping", T).unwrap_or_else(|e| panic!("UDP NodePort: {e}"));
        assert_eq!(a, b"ping");
    })
    .unwrap();

    // No endpoints: refused at once (RST / ICMP), not a timeout.
    let empty_tcp = SocketAddr::from(([10, 96, 0, 99], 80));
    let empty_udp = SocketAddr::from(([10, 96, 0, 99], 53));
    run_in_netns(&netns, move || {
        let t0 = Instant::now();
        let e = tcp_request(empty_tcp, b"x", T).expect_err("no endpoints");
        assert!(e.is_refused(), "TCP to an endpoint-less Service: {e}");
        assert!(
            t0.elapsed() < Duration::from_millis(500),
            "refusal took {:?}",
            t0.elapsed()
        );
        let e = udp_request(empty_udp, b"x", T).expect_err("no endpoints");
        assert!(e.is_refused(), "UDP to an endpoint-less Service: {e}");
    })
    .unwrap();

    // Checksums without offload: with tx checksumming off, packets carry a
    // full checksum that the receiving stack verifies in software, so a
    // translation that got it wrong would lose every packet.
    let mut no_offload = vec![env.client.netns.clone(), env.sb.outside_netns()];
    no_offload.extend(env.web.iter().map(|p| p.netns.clone()));
    for ns in &no_offload {
        let dev = if *ns == env.sb.outside_netns() {
            sluice_testbed::OUTSIDE_DEVICE
        } else {
            "eth0"
        };
        let st = std::process::Command::new("nsenter")
            .arg(format!("--net={}", ns.display()))
            .args(["ethtool", "-K", dev, "tx", "off"])
            .output()
            .expect("ethtool (scripts/setup.sh installs it)");
        assert!(
            st.status.success(),
            "ethtool: {}",
            String::from_utf8_lossy(&st.stderr)
        );
    }
    let seen = http_spread(&env.client.netns, vip_http, 20);
    assert_eq!(seen.len(), 2, "ClusterIP TCP without offload: {seen:?}");
    let seen = http_spread(&env.sb.outside_netns(), np, 20);
    assert_eq!(seen.len(), 2, "NodePort TCP without offload: {seen:?}");
    run_in_netns(&netns, move || {
        let a = udp_request(vip_udp, b"no offload", T)
            .unwrap_or_else(|e| panic!("UDP without offload: {e}"));
        assert_eq!(a, b"no offload");
        let e = tcp_request(empty_tcp, b"x", T).expect_err("no endpoints");
        assert!(e.is_refused(), "RST without offload: {e}");
        let e = udp_request(empty_udp, b"x", T).expect_err("no endpoints");
        assert!(e.is_refused(), "ICMP without offload: {e}");
    })
    .unwrap();

    // An established connection survives kill -9 of the agent and its restart.
    let vip_echo = SocketAddr::from(([10, 96, 0, 10], ECHO));
    let mut conn = run_in_netns(&netns, move || TcpStream::connect_timeout(&vip_echo, T))
        .unwrap()
        .expect("connect to echo Service");
    conn.set_read_timeout(Some(T)).unwrap();
    assert_eq!(echo(&mut conn, b"before"), b"before");
    let ids_before: Vec<(String, u16, u32)> = api
        .get::<Vec<ServiceInfo>>("/v1/services")
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.service, s.port, s.rev_nat_id))
        .collect();
    env.sb.kill_agent().unwrap();
    assert_eq!(echo(&mut conn, b"agent down"), b"agent down");
    let seen = http_spread(&env.client.netns, vip_http, 6);
    assert!(
        !seen.is_empty(),
        "new connections work while the agent is down"
    );
    env.sb.restart_agent().await.unwrap();
    assert_eq!(echo(&mut conn, b"after restart"), b"after restart");
    let status: Status = api.get("/v1/status").await.unwrap();
    assert_eq!(
        status.last_sync_writes, 0,
        "a restart with nothing changed rewrites nothing"
    );
    let list = wait_services(&api, "services restored", |l| {
        backends_of(l, "default/web", 80) == 2
    })
    .await;
    let ids_after: Vec<(String, u16, u32)> = list
        .into_iter()
        .map(|s| (s.service, s.port, s.rev_nat_id))
        .collect();
    assert_eq!(
        ids_before, ids_after,
        "rev-NAT ids are stable across restarts"
    );

    // Remove web-2 from the Service (its label changes): no new connection reaches it.
    let labels = [("client", "client"), ("web-1", "web"), ("web-2", "retired")];
    std::fs::write(env.sb.manifests_dir().join("pods.yaml"), pods_yaml(&labels)).unwrap();
    wait_services(&api, "web down to 1 backend", |l| {
        backends_of(l, "default/web", 80) == 1
    })
    .await;
    let seen = http_spread(&env.client.netns, vip_http, 30);
    assert_eq!(
        seen.keys().cloned().collect::<Vec<_>>(),
        ["default/web-1"],
        "{seen:?}"
    );
    // ...while the established connection, if it was on web-2, stays there.
    assert_eq!(echo(&mut conn, b"still here"), b"still here");
    let _ = &env.web;
    env.sb.teardown().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_manifests_are_rejected_by_name_and_the_rest_keeps_working() {
    let good_and_bad = format!(
        "{SERVICES}---\napiVersion: v1\nkind: Service\nmetadata: {{name: broken, namespace: default}}\nspec:\n  clusterIP: 10.96.0.20\n  ports:\n  - {{port: 70000}}\n---\nkind: Gadget\nmetadata: {{name: x}}\n"
    );
    let mut env = setup(1, &good_and_bad).await;
    let api = env.api.clone();
    wait_services(&api, "web programmed", |l| {
        backends_of(l, "default/web", 80) == 1
    })
    .await;
    let status: Status = api.get("/v1/status").await.unwrap();
    let msgs: Vec<String> = status
        .rejected
        .iter()
        .map(|r| format!("{}: {}: {}", r.file, r.object, r.error))
        .collect();
    assert!(
        msgs.iter()
            .any(|m| m
                .starts_with("services.yaml: Service default/broken: spec.ports[0].port: 70000")),
        "{msgs:?}"
    );
    assert!(msgs.iter().any(|m| m.contains("Gadget")), "{msgs:?}");

    // A bad edit of a programmed Service: the last good version stays in force.
    let bad_edit = SERVICES.replace(
        "port: 80, targetPort: http",
        "port: 99999, targetPort: http",
    );
    std::fs::write(env.sb.manifests_dir().join("services.yaml"), bad_edit).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s: Status = api.get("/v1/status").await.unwrap();
        if s.rejected.iter().any(|r| r.object == "Service default/web") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "bad edit not reported: {:?}",
            s.rejected
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = http_spread(
        &env.client.netns,
        SocketAddr::from(([10, 96, 0, 10], 80)),
        5,
    );
    assert_eq!(
        seen.get("default/web-1"),
        Some(&5),
        "old version still serves: {seen:?}"
    );
    env.sb.teardown().unwrap();
}

/// Runs sluice-cni in the node netns exactly as a runtime would.
fn cni(
    sb: &Sandbox,
    command: &str,
    container: &str,
    netns: &Path,
    pod: &str,
    version: &str,
) -> (bool, serde_json::Value) {
    cni_with(sb, command, container, netns, pod, version, None)
}

fn cni_with(
    sb: &Sandbox,
    command: &str,
    container: &str,
    netns: &Path,
    pod: &str,
    version: &str,
    prev_result: Option<&serde_json::Value>,
) -> (bool, serde_json::Value) {
    let bin = sluice_testbed::find_binary("sluice-cni")
        .expect("sluice-cni built (cargo build --workspace --bins)");
    let mut config = serde_json::json!({
        "cniVersion": version, "name": "sluice", "type": "sluice-cni",
        "agentSocket": sb.agent_socket(),
    });
    if let Some(prev) = prev_result {
        config["prevResult"] = prev.clone();
    }
    let mut child = std::process::Command::new("nsenter")
        .arg(format!("--net={}", sb.node_netns().display()))
        .arg(bin)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/opt/cni/bin")
        .env(
            "CNI_ARGS",
            format!("K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod}"),
        )
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(config.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let json = if out.stdout.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
    };
    (out.status.success(), json)
}

fn ip_out(netns: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .arg("ip")
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct NetnsGuard(String);
impl Drop for NetnsGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cni_protocol_against_the_real_agent() {
    require_root();
    let mut sb = Sandbox::create(SandboxOptions::default()).unwrap();
    // A /30 has exactly one address to give (.2): the second ADD exhausts it.
    let cidr = format!("{}/30", sb.pod_cidr().split('/').next().unwrap());
    sb.start_agent(&sluice_bin(), &["--pod-cidr", &cidr])
        .await
        .unwrap();
    let ns_name = format!("{}-cni", sb.run_id());
    assert!(std::process::Command::new("ip")
        .args(["netns", "add", &ns_name])
        .status()
        .unwrap()
        .success());
    let _guard = NetnsGuard(ns_name.clone());
    let netns = PathBuf::from(format!("/run/netns/{ns_name}"));
    let api = Client::new(sb.agent_socket());

    // VERSION
    let (ok, v) = cni(&sb, "VERSION", "", Path::new(""), "", "1.0.0");
    assert!(
        ok && v["supportedVersions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x == "1.0.0"),
        "{v}"
    );

    // ADD: result JSON and the kernel state on both sides.
    let (ok, res) = cni(&sb, "ADD", "ctr-a", &netns, "pod-a", "1.0.0");
    assert!(ok, "ADD failed: {res}");
    let addr = res["ips"][0]["address"].as_str().unwrap().to_string();
    assert!(addr.ends_with("/32"), "{res}");
    let ip = addr.trim_end_matches("/32").to_string();
    assert!(ip_out(&netns, &["-4", "addr", "show", "eth0"]).contains(&addr));
    assert!(ip_out(&netns, &["route"]).contains("default via 169.254.1.1 dev eth0"));
    assert!(ip_out(&netns, &["neigh"]).contains("169.254.1.1"));
    let host_if = res["interfaces"][0]["name"].as_str().unwrap().to_string();
    assert!(host_if.starts_with("lxc"), "{res}");
    assert!(ip_out(&sb.node_netns(), &["route"]).contains(&format!("{ip} dev {host_if}")));
    let eps: Vec<EndpointInfo> = api.get("/v1/endpoints").await.unwrap();
    assert!(
        eps.iter()
            .any(|e| e.pod == "pod-a" && e.state == EndpointState::Ready && e.ip.to_string() == ip),
        "{eps:?}"
    );

    // CHECK (with the ADD result as prevResult, as the spec says) passes on
    // a healthy pod and fails once its default route is gone.
    let (ok, check) = cni_with(&sb, "CHECK", "ctr-a", &netns, "pod-a", "1.0.0", Some(&res));
    assert!(ok, "CHECK: {check}");
    let _ = ip_out(&netns, &["route", "del", "default"]);
    let (ok, check) = cni_with(&sb, "CHECK", "ctr-a", &netns, "pod-a", "1.0.0", Some(&res));
    assert!(!ok, "CHECK must notice the missing route: {check}");

    // Exhausted pod CIDR: code 100 and nothing half-created.
    let ns2 = format!("{}-cni2", sb.run_id());
    assert!(std::process::Command::new("ip")
        .args(["netns", "add", &ns2])
        .status()
        .unwrap()
        .success());
    let _g2 = NetnsGuard(ns2.clone());
    let netns2 = PathBuf::from(format!("/run/netns/{ns2}"));
    let (ok, err) = cni(&sb, "ADD", "ctr-b", &netns2, "pod-b", "1.0.0");
    assert!(!ok && err["code"] == 100, "{err}");
    assert!(!ip_out(&netns2, &["link"]).contains("eth0"), "rolled back");
    assert_eq!(
        ip_out(&sb.node_netns(), &["link"]).matches("lxc").count(),
        1,
        "only pod-a's veth"
    );

    // Wrong cniVersion: code 1.
    let (ok, err) = cni(&sb, "ADD", "ctr-c", &netns2, "pod-c", "9.9.9");
    assert!(!ok && err["code"] == 1, "{err}");

    // DEL removes everything; a second DEL succeeds.
    let (ok, res) = cni(&sb, "DEL", "ctr-a", &netns, "pod-a", "1.0.0");
    assert!(ok, "DEL: {res}");
    assert!(!ip_out(&sb.node_netns(), &["link"]).contains(&host_if));
    let eps: Vec<EndpointInfo> = api.get("/v1/endpoints").await.unwrap();
    assert!(eps.is_empty(), "{eps:?}");
    let (ok, res) = cni(&sb, "DEL", "ctr-a", &netns, "pod-a", "1.0.0");
    assert!(ok, "second DEL: {res}");
    // The address is free again.
    let (ok, res) = cni(&sb, "ADD", "ctr-b", &netns2, "pod-b", "1.0.0");
    assert!(ok && res["ips"][0]["address"] == addr.as_str(), "{res}");
    let _ = cni(&sb, "DEL", "ctr-b", &netns2, "pod-b", "1.0.0");
    sb.teardown().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_map_loses_nothing_programmed_and_recovers() {
    require_root();
    let svc = |n: u8| {
        format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: s{n}, namespace: default}}\nspec:\n  clusterIP: 10.96.1.{n}\n  selector: {{app: web}}\n  ports:\n  - {{port: 80, targetPort: {HTTP}}}\n"
        )
    };
    let mut sb = Sandbox::create(SandboxOptions::default()).unwrap();
    // Room for 3 frontends with one backend each (master + slot).
    sb.start_agent(&sluice_bin(), &["--services-map-size", "6"])
        .await
        .unwrap();
    let client = sb.add_pod("default", "client").await.unwrap();
    let web = sb.add_pod("default", "web-1").await.unwrap();
    sb.spawn_workload(
        &web,
        WorkloadPorts {
            http: Some(HTTP),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    std::fs::write(
        sb.manifests_dir().join("pods.yaml"),
        pods_yaml(&[("client", "client"), ("web-1", "web")]),
    )
    .unwrap();
    std::fs::write(
        sb.manifests_dir().join("services.yaml"),
        (1..=3).map(svc).collect::<String>(),
    )
    .unwrap();
    let api = Client::new(sb.agent_socket());
    wait_services(&api, "3 services", |l| {
        l.iter().filter(|s| s.backends.len() == 1).count() == 3
    })
    .await;
    let s1 = SocketAddr::from(([10, 96, 1, 1], 80));
    assert_eq!(http_spread(&client.netns, s1, 3).len(), 1);

    // A fourth Service does not fit: the write fails and is counted; what
    // was programmed keeps working.
    std::fs::write(
        sb.manifests_dir().join("services.yaml"),
        (1..=4).map(svc).collect::<String>(),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st: Status = api.get("/v1/status").await.unwrap();
        if st.map_write_errors > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "no write error reported: {st:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        http_spread(&client.netns, s1, 3).get("default/web-1"),
        Some(&3)
    );

    // Room is made (s1 goes): the agent's retry programs s4.
    std::fs::write(
        sb.manifests_dir().join("services.yaml"),
        (2..=4).map(svc).collect::<String>(),
    )
    .unwrap();
    let s4 = SocketAddr::from(([10, 96, 1, 4], 80));
    let deadline = Instant::now() + Duration::from_secs(10);
    let netns = client.netns.clone();
    loop {
        let ok = run_in_netns(&netns, move || {
            http_get(s4, Duration::from_millis(300)).is_ok()
        })
        .unwrap();
        if ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "s4 never programmed after room was made"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sb.teardown().unwrap();
}

/// Runs `sluice ARGS` against the sandbox's agent; stdout lines.
fn sluice_lines(sb: &Sandbox, args: &[&str]) -> Vec<String> {
    let out = std::process::Command::new(sluice_bin())
        .args(args)
        .env("SLUICE_SOCKET", sb.agent_socket())
        .output()
        .expect("run sluice");
    assert!(
        out.status.success(),
        "sluice {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Polls `sluice observe ARGS -o json` until a flow satisfies `pred`.
async fn wait_flow(
    sb: &Sandbox,
    args: &[&str],
    what: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut full = vec!["observe", "-o", "json", "--last", "1000"];
        full.extend_from_slice(args);
        let flows: Vec<serde_json::Value> = sluice_lines(sb, &full)
            .iter()
            .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
            .collect();
        if let Some(f) = flows.iter().find(|f| pred(f)) {
            return f.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no flow {what} in `sluice observe {args:?}`: {flows:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_metrics_and_map_pressure_are_observable() {
    require_root();
    let mut sb = Sandbox::create(SandboxOptions::default()).expect("sandbox");
    // The agent runs in the node netns: the metrics port is private to it.
    sb.start_agent(&sluice_bin(), &["--metrics-addr", "127.0.0.1:9962"])
        .await
        .expect("agent");
    let client = sb.add_pod("default", "client").await.expect("client pod");
    let web = sb.add_pod("default", "web-1").await.expect("web pod");
    sb.spawn_workload(
        &web,
        WorkloadPorts {
            http: Some(HTTP),
            ..Default::default()
        },
    )
    .await
    .expect("workload");
    std::fs::write(
        sb.manifests_dir().join("pods.yaml"),
        pods_yaml(&[("client", "client"), ("web-1", "web")]),
    )
    .unwrap();
    std::fs::write(sb.manifests_dir().join("services.yaml"), SERVICES).unwrap();
    let api = Client::new(sb.agent_socket());
    wait_services(&api, "web and empty programmed", |l| {
        backends_of(l, "default/web", 80) == 1 && backends_of(l, "default/empty", 80) == 0
    })
    .await;

    // A follower started before the traffic sees the forwarded flow live.
    let mut follower = std::process::Command::new(sluice_bin())
        .args([
            "observe",
            "--follow",
            "--last",
            "0",
            "-o",
            "json",
            "--to-pod",
            "default/web-1",
        ])
        .env("SLUICE_SOCKET", sb.agent_socket())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sluice observe --follow");
    let follower_out = follower.stdout.take().unwrap();
    let (line_tx, line_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(follower_out)
            .lines()
            .map_while(Result::ok)
        {
            if line_tx.send(line).is_err() {
                return;
            }
        }
    });
    // Give the follower time to subscribe before the flow happens.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let vip = SocketAddr::from(([10, 96, 0, 10], 80));
    let empty = SocketAddr::from(([10, 96, 0, 99], 80));
    let netns = client.netns.clone();
    run_in_netns(&netns, move || {
        http_get(vip, T).unwrap_or_else(|e| panic!("GET {vip}: {e}"));
        let e = tcp_request(empty, b"x", T).expect_err("no endpoints");
        assert!(e.is_refused(), "{e}");
    })
    .unwrap();

    // The refused connection: DROPPED, the right pod, Service and reason.
    let drop = wait_flow(
        &sb,
        &["--verdict", "DROPPED"],
        "from default/client to default/empty",
        |f| f["service"]["name"] == "default/empty",
    )
    .await;
    assert_eq!(drop["verdict"], "DROPPED", "{drop}");
    assert_eq!(drop["drop_reason"], "no_service_backend", "{drop}");
    assert_eq!(drop["refused"], true, "{drop}");
    assert_eq!(drop["source"]["namespace"], "default", "{drop}");
    assert_eq!(drop["source"]["pod"], "client", "{drop}");
    assert_eq!(drop["destination"]["ip"], "10.96.0.99", "{drop}");
    assert_eq!(drop["destination"]["port"], 80, "{drop}");
    assert_eq!(drop["observation_point"], "from-pod", "{drop}");
    assert!(
        drop["tcp_flags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "SYN"),
        "{drop}"
    );

    // The forwarded flow: original (ClusterIP) and translated (pod) addresses.
    let fwd = wait_flow(
        &sb,
        &["--verdict", "FORWARDED", "--from-pod", "default/client"],
        "client to web",
        |f| f["service"]["name"] == "default/web" && f["new_flow"] == true,
    )
    .await;
    assert_eq!(fwd["destination"]["ip"], "10.96.0.10", "{fwd}");
    assert_eq!(fwd["destination"]["port"], 80, "{fwd}");
    assert_eq!(fwd["translated_destination"]["pod"], "web-1", "{fwd}");
    assert_eq!(
        fwd["translated_destination"]["ip"],
        web.ip.to_string(),
        "{fwd}"
    );
    assert_eq!(fwd["translated_destination"]["port"], HTTP, "{fwd}");
    assert_eq!(fwd["source"], fwd["translated_source"], "{fwd}");

    // Filters exclude what they should.
    let none = sluice_lines(
        &sb,
        &[
            "observe",
            "-o",
            "json",
            "--last",
            "1000",
            "--verdict",
            "DROPPED",
            "--service",
            "default/web",
        ],
    );
    assert!(none.is_empty(), "{none:?}");
    let human = sluice_lines(&sb, &["observe", "--drop-reason", "no_service_backend"]);
    assert!(
        human.iter().any(|l| l.contains("default/client:")
            && l.contains("-> default/empty (10.96.0.99:80)")
            && l.contains("DROPPED (no_service_backend")),
        "{human:?}"
    );

    // The follower got the forwarded flow as it happened.
    let live = line_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("a live flow on the follower");
    let live: serde_json::Value = serde_json::from_str(&live).unwrap();
    assert_eq!(live["translated_destination"]["pod"], "web-1", "{live}");
    let _ = follower.kill();
    let _ = follower.wait();

    // Metrics: scraped in the node netns and parsed as Prometheus text.
    let body = run_in_netns(&sb.node_netns(), || {
        let mut s = TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], 9962)), T)
            .expect("connect to the metrics endpoint");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: sluice\r\n\r\n")
            .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        resp
    })
    .unwrap();
    let (head, text) = body.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.0 200"), "{head}");
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("valid Prometheus text");
    let value = |metric: &str, labels: &[(&str, &str)]| -> f64 {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
            .unwrap_or_else(|| panic!("no {metric} {labels:?} in:\n{text}"))
    };
    assert!(
        value(
            "sluice_drops_total",
            &[("reason", "no_service_backend"), ("point", "from-pod")]
        ) >= 1.0
    );
    assert!(value("sluice_forwarded_packets_total", &[("point", "from-pod")]) >= 1.0);
    assert!(value("sluice_new_flows_total", &[("kind", "service")]) >= 1.0);
    assert_eq!(value("sluice_services", &[]), 2.0);
    assert_eq!(value("sluice_endpoints", &[]), 2.0);
    assert_eq!(value("sluice_events_lost_total", &[]), 0.0);
    assert_eq!(value("sluice_map_capacity", &[("map", "sl_ct")]), 262144.0);
    assert!(value("sluice_map_entries", &[("map", "sl_ct")]) >= 2.0);
    assert!(scrape
        .samples
        .iter()
        .any(|s| s.metric == "sluice_reconcile_duration_seconds"));

    // Map pressure straight from bpffs, and kernel features in status.
    let maps: Vec<serde_json::Value> = serde_json::from_str(
        &sluice_lines(&sb, &["map", "list", "--node", sb.run_id(), "-o", "json"]).join("\n"),
    )
    .unwrap();
    let ct = maps
        .iter()
        .find(|m| m["name"] == "sl_ct")
        .expect("sl_ct listed");
    assert_eq!(ct["type"], "lru_hash");
    assert!(ct["entries"].as_u64().unwrap() >= 2, "{ct}");
    assert!(maps
        .iter()
        .any(|m| m["name"] == "sl_events" && m["type"] == "ringbuf"));
    let status: Status = api.get("/v1/status").await.unwrap();
    assert!(
        status.kernel.ringbuf && status.kernel.tcx,
        "{:?}",
        status.kernel
    );
    assert!(status.events.received >= 2, "{:?}", status.events);
    sb.teardown().unwrap();
}

fn kernel_metrics(sb: &Sandbox) -> Vec<u64> {
    let pin = sluice_datapath::loader::pin_dir(Path::new("/sys/fs/bpf"), sb.run_id());
    sluice_datapath::LbMaps::open(&pin)
        .unwrap()
        .metrics()
        .unwrap()
}

fn metric(m: &[u64], which: sluice_datapath::bindings::sluice_metric) -> u64 {
    m[which as usize]
}

/// Probes from the client pod's own process (inside the pod cgroup, where
/// the socket hooks are attached).
async fn probe(env: &Env, kind: ProbeKind, target: SocketAddr, count: usize) -> Vec<ProbeOutcome> {
    let pod = env.client.clone();
    let sb = &env.sb;
    let out = sb.probe(&pod, kind, &[target], count, T).expect("probe");
    assert_eq!(out.len(), count, "{out:#?}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_lb_balances_at_connect_and_shows_the_service_address() {
    use sluice_datapath::bindings::sluice_metric::*;
    let env = setup(2, SERVICES).await;
    wait_services(&env.api, "web with 2 backends", |l| {
        backends_of(l, "default/web", 80) == 2 && backends_of(l, "default/web", 53) == 2
    })
    .await;
    let status: Status = env.api.get("/v1/status").await.unwrap();
    let sl = &status.socket_lb;
    assert!(sl.enabled && sl.active, "{sl:#?}");
    assert_eq!(
        sl.hooks,
        ["connect4", "sendmsg4", "recvmsg4", "getpeername4"],
        "{sl:#?}"
    );
    assert_eq!(
        sl.cgroup.as_deref(),
        Some(env.sb.cgroup_path().to_str().unwrap())
    );

    let vip: SocketAddr = "10.96.0.10:80".parse().unwrap();
    let before = kernel_metrics(&env.sb);
    let http = probe(&env, ProbeKind::Http, vip, 20).await;
    let mut seen = BTreeMap::new();
    for o in &http {
        assert_eq!(o.error, None, "{o:#?}");
        // getpeername() shows the Service, not the backend it connected to.
        assert_eq!(o.peer, Some(vip), "{o:#?}");
        *seen.entry(o.answer.clone().unwrap()).or_insert(0) += 1;
    }
    assert!(
        seen.contains_key("default/web-1") && seen.contains_key("default/web-2"),
        "both backends answer: {seen:?}"
    );
    let after = kernel_metrics(&env.sb);
    // Translated once at connect(): tc saw backend addresses, no frontend,
    // created no flow and translated no packet.
    assert_eq!(
        metric(&after, METRIC_SOCK_XLATE) - metric(&before, METRIC_SOCK_XLATE),
        20
    );
    assert_eq!(
        metric(&after, METRIC_SERVICE_NEW_FLOW),
        metric(&before, METRIC_SERVICE_NEW_FLOW)
    );
    assert_eq!(
        metric(&after, METRIC_SERVICE_CT_HIT),
        metric(&before, METRIC_SERVICE_CT_HIT)
    );
    assert_eq!(
        metric(&after, METRIC_REVNAT),
        metric(&before, METRIC_REVNAT)
    );
    assert!(
        ct_backends(&env.sb, 6, vip).is_empty(),
        "no conntrack entries"
    );

    // UDP, connected and unconnected: answers come from the Service address.
    let dns: SocketAddr = "10.96.0.10:53".parse().unwrap();
    for kind in [ProbeKind::UdpConnected, ProbeKind::UdpUnconnected] {
        for o in probe(&env, kind, dns, 6).await {
            assert_eq!(o.error, None, "{kind:?}: {o:#?}");
            assert_eq!(o.peer, Some(dns), "{kind:?}: {o:#?}");
            assert_eq!(o.answer.as_deref(), Some("probe"));
        }
    }
    let udp = kernel_metrics(&env.sb);
    assert_eq!(
        metric(&udp, METRIC_SERVICE_NEW_FLOW),
        metric(&before, METRIC_SERVICE_NEW_FLOW),
        "no UDP flow translated by tc"
    );
    assert!(ct_backends(&env.sb, 17, dns).is_empty());

    // No endpoint: connect() itself fails with ECONNREFUSED (no SYN leaves).
    let empty: SocketAddr = "10.96.0.99:80".parse().unwrap();
    for o in probe(&env, ProbeKind::Http, empty, 3).await {
        assert!(o.refused, "{o:#?}");
    }
    for o in probe(
        &env,
        ProbeKind::UdpConnected,
        "10.96.0.99:53".parse().unwrap(),
        1,
    )
    .await
    {
        assert!(o.refused, "connect() of UDP refused too: {o:#?}");
    }
    let refused = kernel_metrics(&env.sb);
    assert_eq!(
        metric(&refused, METRIC_SOCK_NO_BACKEND) - metric(&udp, METRIC_SOCK_NO_BACKEND),
        4
    );
    assert_eq!(
        metric(&refused, METRIC_REJECT_TCP_RST),
        metric(&udp, METRIC_REJECT_TCP_RST),
        "refused at the socket, not by a tc RST"
    );

    // The test's own threads are outside the pod cgroup: tc still serves them.
    let spread = http_spread(&env.client.netns, vip, 4);
    assert_eq!(spread.values().sum::<usize>(), 4);
    let tc = kernel_metrics(&env.sb);
    assert_eq!(
        metric(&tc, METRIC_SERVICE_NEW_FLOW) - metric(&refused, METRIC_SERVICE_NEW_FLOW),
        4
    );

    // A pod that opted out (a sidecar mesh must see the VIP on the wire):
    // its process is in the cgroup, yet tc translates its connections.
    let mut env = env;
    let meshed = env.sb.add_pod("default", "meshed").await.expect("pod");
    std::fs::write(
        env.sb.manifests_dir().join("meshed.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: meshed\n  namespace: default\n  annotations:\n    sluice.io/socket-lb: \"false\"\nspec:\n  containers:\n  - name: c\n",
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s: Status = env.api.get("/v1/status").await.unwrap();
        if s.socket_lb.opted_out_pods == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "opt-out not applied: {:#?}",
            s.socket_lb
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = kernel_metrics(&env.sb);
    let out = env
        .sb
        .probe(&meshed, ProbeKind::Http, &[vip], 4, T)
        .expect("probe");
    for o in &out {
        assert_eq!(o.error, None, "{o:#?}");
        assert_eq!(o.peer, Some(vip), "{o:#?}");
    }
    let after = kernel_metrics(&env.sb);
    assert_eq!(
        metric(&after, METRIC_SOCK_XLATE),
        metric(&before, METRIC_SOCK_XLATE)
    );
    assert_eq!(
        metric(&after, METRIC_SERVICE_NEW_FLOW) - metric(&before, METRIC_SERVICE_NEW_FLOW),
        4,
        "opted-out pod translated per packet"
    );
}

/// The connected-UDP reset (stale-CoreDNS problem): a socket translated at
/// connect() is connected to the backend pod itself; when that backend
/// leaves the Service the agent destroys the socket (sock_diag
/// SOCK_DESTROY), the application sees ECONNABORTED and its reconnect picks
/// the remaining backend. Bound asserted: ≤ 2 s from the manifest write.
const DNS_ONLY: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: dns, namespace: default}\nspec:\n  clusterIP: 10.96.0.53\n  selector: {app: dns}\n  ports:\n  - {name: dns, port: 53, protocol: UDP, targetPort: 5353}\n";

type HeldProbe = tokio::task::JoinHandle<sluice_testbed::Result<Vec<ProbeOutcome>>>;

/// The stale-resolver setup: Service dns backed by web-1 (web-2 spare), and
/// the client pod's resolver holding one connected socket to it, a query
/// every 50 ms, `queries` in all. Returns the env, the pods manifest (edit
/// it to move the Service), web-1's and web-2's IPs, and the running probe.
async fn held_resolver(
    queries: usize,
) -> (
    Env,
    PathBuf,
    std::net::Ipv4Addr,
    std::net::Ipv4Addr,
    HeldProbe,
) {
    let env = setup(2, DNS_ONLY).await;
    let pods = env.sb.manifests_dir().join("pods.yaml");
    std::fs::write(
        &pods,
        pods_yaml(&[("client", "client"), ("web-1", "dns"), ("web-2", "spare")]),
    )
    .unwrap();
    let (ip1, ip2) = (env.web[0].ip, env.web[1].ip);
    wait_services(&env.api, "dns backed by web-1 only", |l| {
        l.iter()
            .any(|s| s.service == "default/dns" && s.backends.len() == 1 && s.backends[0].ip == ip1)
    })
    .await;
    let vip: SocketAddr = "10.96.0.53:53".parse().unwrap();
    let (bin, netns, cgroup) = (
        sluice_bin(),
        env.client.netns.clone(),
        env.sb.cgroup_path().to_path_buf(),
    );
    let held = tokio::task::spawn_blocking(move || {
        sluice_testbed::probe_in(
            &bin,
            &netns,
            Some(&cgroup),
            ProbeKind::UdpHeld,
            &[vip],
            queries,
            Duration::from_millis(200),
        )
    });
    (env, pods, ip1, ip2, held)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connected_udp_socket_is_reset_when_its_backend_leaves() {
    const BOUND: Duration = Duration::from_secs(2);
    let (env, pods, ip1, ip2, held) = held_resolver(110).await;
    let vip: SocketAddr = "10.96.0.53:53".parse().unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // web-1 leaves the Service (its label changes; the pod lives on and would
    // keep answering the stale socket), web-2 joins.
    let changed_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    std::fs::write(
        &pods,
        pods_yaml(&[("client", "client"), ("web-1", "spare"), ("web-2", "dns")]),
    )
    .unwrap();
    wait_services(&env.api, "dns backed by web-2 only", |l| {
        l.iter()
            .any(|s| s.service == "default/dns" && s.backends.len() == 1 && s.backends[0].ip == ip2)
    })
    .await;
    let out = held.await.unwrap().expect("probe");
    assert_eq!(out.len(), 110);

    let web1 = SocketAddr::from((ip1, UDP));
    let web2 = SocketAddr::from((ip2, UDP));
    let before: Vec<_> = out
        .iter()
        .filter(|o| o.at_ms.unwrap() < changed_ms)
        .collect();
    assert!(before.len() >= 10, "{out:#?}");
    assert!(before[0].fresh);
    for o in &before {
        assert_eq!(o.error, None, "{o:#?}");
        assert_eq!(
            o.peer,
            Some(vip),
            "the application sees the Service: {o:#?}"
        );
        assert_eq!(o.wire_peer, Some(web1), "connected to web-1: {o:#?}");
        assert!(
            std::ptr::eq(*o, before[0]) || !o.fresh,
            "one socket held: {o:#?}"
        );
    }
    let after: Vec<_> = out
        .iter()
        .filter(|o| o.at_ms.unwrap() >= changed_ms)
        .collect();
    let reset = after
        .iter()
        .position(|o| o.error.is_some())
        .unwrap_or_else(|| panic!("the stale socket was never reset: {after:#?}"));
    let err = after[reset];
    assert!(err.aborted, "ECONNABORTED expected: {err:#?}");
    let took = Duration::from_millis(err.at_ms.unwrap() - changed_ms);
    assert!(took <= BOUND, "reset after {took:?} (bound {BOUND:?})");
    eprintln!("connected UDP socket reset {took:?} after the manifest write");
    // Until the reset the socket may still reach web-1 (alive, just not a
    // backend any more); from the reconnect on it reaches web-2 only.
    let rest = &after[reset + 1..];
    assert!(rest.len() >= 10, "{out:#?}");
    assert!(rest[0].fresh, "{:#?}", rest[0]);
    for o in rest {
        assert_eq!(o.error, None, "{o:#?}");
        assert_eq!(o.peer, Some(vip), "{o:#?}");
        assert_eq!(o.wire_peer, Some(web2), "reconnected to web-2: {o:#?}");
    }
    assert_eq!(
        rest.iter().filter(|o| o.fresh).count(),
        1,
        "one reconnect, then the new socket is kept"
    );
}

/// A manifest that cannot be read when the agent starts must not take its
/// Services out of the pinned maps: they keep serving until it reads again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_manifest_at_start_keeps_its_services_programmed() {
    let mut env = setup(1, SERVICES).await;
    let api = env.api.clone();
    wait_services(&api, "web programmed", |l| {
        backends_of(l, "default/web", 80) == 1
    })
    .await;
    let vip = SocketAddr::from(([10, 96, 0, 10], 80));
    env.sb.kill_agent().unwrap();
    // Not UTF-8: the agent cannot read it (root ignores file permissions).
    std::fs::write(
        env.sb.manifests_dir().join("services.yaml"),
        [0xff, 0xfe, 0x00],
    )
    .unwrap();
    env.sb.restart_agent().await.unwrap();
    let status: Status = api.get("/v1/status").await.unwrap();
    assert!(
        status.rejected.iter().any(|r| r.file == "services.yaml"),
        "the unreadable file is reported: {:?}",
        status.rejected
    );
    let seen = http_spread(&env.client.netns, vip, 5);
    assert_eq!(
        seen.get("default/web-1"),
        Some(&5),
        "still served: {seen:?}"
    );
    // Readable again: the agent syncs and keeps serving.
    std::fs::write(env.sb.manifests_dir().join("services.yaml"), SERVICES).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s: Status = api.get("/v1/status").await.unwrap();
        if s.last_sync_unix.is_some() && s.rejected.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no sync after the file was fixed: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(http_spread(&env.client.netns, vip, 3).len(), 1);
    env.sb.teardown().unwrap();
}

/// One HTTP GET from `netns`: the body, or why it failed.
fn http_once(netns: &Path, target: SocketAddr, timeout: Duration) -> Result<String, String> {
    let netns = netns.to_path_buf();
    run_in_netns(&netns, move || {
        http_get(target, timeout)
            .map(|b| b.trim().to_string())
            .map_err(|e| e.to_string())
    })
    .expect("netns")
}

/// Polls until the agent's policy revision passes `after` and GETs give
/// `want_ok`; returns the last outcome.
async fn wait_reachability(env: &Env, after: u32, want_ok: bool, what: &str) -> u32 {
    let vip = SocketAddr::from(([10, 96, 0, 10], 80));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s: Status = env.api.get("/v1/status").await.unwrap();
        let got = http_once(&env.client.netns, vip, Duration::from_millis(500));
        if s.policy.revision > after && got.is_ok() == want_ok {
            return s.policy.revision;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: revision {} (was {after}), GET: {got:?}, rejected: {:?}",
            s.policy.revision,
            s.rejected
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const DENY_WEB_INGRESS: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-isolated, namespace: default}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress]
"#;

const ALLOW_CLIENT_HTTP: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-from-client, namespace: default}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from:
    - podSelector: {matchExpressions: [{key: app, operator: In, values: [client]}]}
    ports:
    - port: http
"#;

const CNP_DENY_CLIENT: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: no-client, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingressDeny:
  - fromEndpoints:
    - matchLabels: {app: client}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_policy_is_enforced_explained_and_observable() {
    let mut env = setup(1, SERVICES).await;
    let api = env.api.clone();
    wait_services(&api, "web programmed", |l| {
        backends_of(l, "default/web", 80) == 1
    })
    .await;
    let rev = wait_reachability(&env, 0, true, "open before any policy").await;
    let policies = env.sb.manifests_dir().join("netpol.yaml");

    // Selected by a policy with no ingress rule: default deny, observable.
    std::fs::write(&policies, DENY_WEB_INGRESS).unwrap();
    let rev = wait_reachability(&env, rev, false, "isolated by web-isolated").await;
    let f = wait_flow(
        &env.sb,
        &["--verdict", "DROPPED", "--drop-reason", "policy_denied"],
        "denied by default deny",
        |f| f["policy_rule"] == "default deny (ingress)",
    )
    .await;
    assert_eq!(f["source"]["pod"], "client", "{f}");
    assert_eq!(f["translated_destination"]["pod"], "web-1", "{f}");
    assert_eq!(f["translated_destination"]["port"], HTTP, "after DNAT: {f}");
    assert_eq!(f["service"]["name"], "default/web", "{f}");
    assert!(
        f["destination_identity"].as_u64().unwrap_or(0) >= 256,
        "{f}"
    );
    // The pod's own node still gets in (kubelet probes), isolated or not.
    let web1 = SocketAddr::from((env.web[0].ip, HTTP));
    let from_node = http_once(&env.sb.node_netns(), web1, Duration::from_secs(1));
    assert_eq!(
        from_node.as_deref(),
        Ok("default/web-1"),
        "node -> isolated pod"
    );

    // An allow for the client on the named port, stacked on the isolation.
    std::fs::write(
        &policies,
        format!("{DENY_WEB_INGRESS}---{ALLOW_CLIENT_HTTP}"),
    )
    .unwrap();
    let rev = wait_reachability(&env, rev, true, "allowed by web-from-client").await;
    let get = sluice_lines(&env.sb, &["policy", "get", "default/web-1"]).join("\n");
    assert!(get.contains("default/web-from-client ingress[0]"), "{get}");
    assert!(
        get.contains(&format!("{HTTP}")),
        "named port resolved: {get}"
    );
    let trace = sluice_lines(
        &env.sb,
        &[
            "policy",
            "trace",
            "--from",
            "default/client",
            "--to",
            "default/web-1",
            "--port",
            &format!("{HTTP}/TCP"),
        ],
    )
    .join("\n");
    assert!(
        trace.contains("ALLOWED") && trace.contains("web-from-client"),
        "{trace}"
    );
    let ids = sluice_lines(&env.sb, &["identity", "list"]).join("\n");
    assert!(
        ids.contains("default/web-1") && ids.contains("reserved"),
        "{ids}"
    );

    // A CiliumNetworkPolicy deny wins over the allow, and names its rule.
    std::fs::write(
        &policies,
        format!("{DENY_WEB_INGRESS}---{ALLOW_CLIENT_HTTP}---{CNP_DENY_CLIENT}"),
    )
    .unwrap();
    let rev = wait_reachability(&env, rev, false, "denied by no-client").await;
    wait_flow(
        &env.sb,
        &["--verdict", "DROPPED", "--from-pod", "default/client"],
        "denied by the CNP rule",
        |f| {
            f["policy_rule"]
                .as_str()
                .is_some_and(|r| r.contains("default/no-client ingressDeny[0]"))
        },
    )
    .await;

    // A broken edit is rejected by name and field; the last good version stays.
    let broken = CNP_DENY_CLIENT.replace("fromEndpoints", "fromEndpointz");
    std::fs::write(
        &policies,
        format!("{DENY_WEB_INGRESS}---{ALLOW_CLIENT_HTTP}---{broken}"),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s: Status = api.get("/v1/status").await.unwrap();
        if let Some(r) = s
            .rejected
            .iter()
            .find(|r| r.object == "CiliumNetworkPolicy default/no-client")
        {
            assert!(r.error.contains("fromEndpointz"), "{r:?}");
            assert!(
                r.error.contains("keeps enforcing the last good version"),
                "says what stays in force: {r:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "not rejected: {:?}", s.rejected);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let vip = SocketAddr::from(([10, 96, 0, 10], 80));
    assert!(
        http_once(&env.client.netns, vip, Duration::from_millis(500)).is_err(),
        "the last good deny stays in force"
    );

    // All policies gone: open again.
    std::fs::remove_file(&policies).unwrap();
    wait_reachability(&env, rev, true, "open after the policies are deleted").await;
    env.sb.teardown().unwrap();
}

/// Answers (pod names) of `count` HTTP requests through the socket path
/// (a process in the client pod's cgroup) and the tc path (threads in its
/// netns, outside the cgroup).
async fn answers_both_paths(
    env: &Env,
    vip: SocketAddr,
    count: usize,
) -> [BTreeMap<String, usize>; 2] {
    let mut socket = BTreeMap::new();
    for o in probe(env, ProbeKind::Http, vip, count).await {
        assert_eq!(o.error, None, "{o:#?}");
        *socket.entry(o.answer.unwrap_or_default()).or_insert(0) += 1;
    }
    [socket, http_spread(&env.client.netns, vip, count)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_affinity_holds_on_both_paths_and_switches_live() {
    let mut env = setup(3, SERVICES).await;
    wait_services(&env.api, "web with 3 backends", |l| {
        backends_of(l, "default/web", 80) == 3
    })
    .await;
    let vip: SocketAddr = "10.96.0.10:80".parse().unwrap();
    let services = env.sb.manifests_dir().join("services.yaml");
    let sticky = SERVICES.replacen(
        "  selector: {app: web}\n",
        "  selector: {app: web}\n  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 600}}\n",
        1,
    );
    assert_ne!(sticky, SERVICES);
    let affinity_in_maps = |on: bool| {
        let rows = sluice_lines(
            &env.sb,
            &["bpf", "lb", "list", "--node", env.sb.run_id(), "-o", "json"],
        )
        .join("\n");
        let list: Vec<serde_json::Value> = serde_json::from_str(&rows).unwrap();
        list.iter()
            .filter(|e| {
                e["frontend"]
                    .as_str()
                    .is_some_and(|f| f.starts_with("10.96.0.10:"))
            })
            .all(|e| e["affinity_seconds"].as_u64() == on.then_some(600))
    };

    for round in 0..2 {
        std::fs::write(&services, &sticky).unwrap();
        wait_until("affinity programmed", || affinity_in_maps(true)).await;
        for (path, seen) in ["socket", "tc"]
            .iter()
            .zip(answers_both_paths(&env, vip, 20).await)
        {
            assert_eq!(
                seen.len(),
                1,
                "round {round}, {path} path sticks to one pod: {seen:?}"
            );
        }
        // Switched off live: new connections spread again.
        std::fs::write(&services, SERVICES).unwrap();
        wait_until("affinity removed", || affinity_in_maps(false)).await;
        for (path, seen) in ["socket", "tc"]
            .iter()
            .zip(answers_both_paths(&env, vip, 30).await)
        {
            assert!(
                seen.len() > 1,
                "round {round}, {path} path spreads: {seen:?}"
            );
        }
    }
    env.sb.teardown().unwrap();
}

async fn wait_until(what: &str, pred: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pred() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_traffic_policy_local_on_both_paths() {
    let mut env = setup(2, SERVICES).await;
    let node = env.sb.run_id().to_string();
    let slice = |eps: &[(&Pod, &str)]| {
        let mut s = format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: itp, namespace: default}}\nspec:\n  clusterIP: 10.96.0.30\n  internalTrafficPolicy: Local\n  ports: [{{name: http, port: 80}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: itp-1, namespace: default, labels: {{kubernetes.io/service-name: itp}}}}\naddressType: IPv4\nports: [{{name: http, port: {HTTP}}}]\nendpoints:\n"
        );
        for (pod, on) in eps {
            s.push_str(&format!("- {{addresses: [{}], nodeName: {on}}}\n", pod.ip));
        }
        s
    };
    let vip: SocketAddr = "10.96.0.30:80".parse().unwrap();
    let file = env.sb.manifests_dir().join("itp.yaml");
    // web-1 is on this node, web-2 (as far as the slice says) elsewhere.
    std::fs::write(
        &file,
        slice(&[(&env.web[0], &node), (&env.web[1], "elsewhere")]),
    )
    .unwrap();
    wait_services(&env.api, "itp with its local endpoint", |l| {
        backends_of(l, "default/itp", 80) == 1
    })
    .await;
    for (path, seen) in ["socket", "tc"]
        .iter()
        .zip(answers_both_paths(&env, vip, 10).await)
    {
        assert_eq!(
            seen.keys().collect::<Vec<_>>(),
            vec!["default/web-1"],
            "{path} path: only the local endpoint"
        );
    }

    // No local endpoint: dropped on both paths (a timeout, not a refusal).
    std::fs::write(&file, slice(&[(&env.web[1], "elsewhere")])).unwrap();
    wait_services(&env.api, "itp without a local endpoint", |l| {
        backends_of(l, "default/itp", 80) == 0
    })
    .await;
    for o in probe(&env, ProbeKind::Http, vip, 2).await {
        assert!(
            !o.refused && o.error.is_some(),
            "socket path: dropped, not refused: {o:#?}"
        );
    }
    let netns = env.client.netns.clone();
    let tc =
        run_in_netns(&netns, move || http_get(vip, Duration::from_millis(300))).expect("netns");
    assert!(
        tc.as_ref().is_err_and(|e| e.is_timeout()),
        "tc path: dropped: {tc:?}"
    );
    wait_flow(
        &env.sb,
        &["--verdict", "DROPPED", "--drop-reason", "no_local_backend"],
        "the drop, with its reason",
        |f| f["service"]["name"] == "default/itp",
    )
    .await;
    env.sb.teardown().unwrap();
}

/// The same stale resolver, but the agent died between writing the maps
/// that removed its backend and resetting the socket (emulated: the maps
/// are rewritten here as that agent would have, while it is down). The
/// restarted agent finds nothing to write, and still resets the socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_connected_udp_socket_left_by_a_dead_agent_is_reset_at_start() {
    let (mut env, pods, ip1, ip2, held) = held_resolver(160).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    env.sb.kill_agent().unwrap();
    {
        use sluice_datapath::maps::{BackendEntry, FrontendKey, ServiceRow};
        let pin = PathBuf::from("/sys/fs/bpf/sluice").join(env.sb.run_id());
        let mut maps = sluice_datapath::LbMaps::open(&pin).unwrap();
        let fe = FrontendKey {
            ip: "10.96.0.53".parse().unwrap(),
            port: 53,
            proto: 17,
            scope: 0,
        };
        let rev_nat_id = maps
            .service_rows()
            .unwrap()
            .into_iter()
            .find_map(|r| match r {
                ServiceRow::Master {
                    frontend,
                    rev_nat_id,
                    ..
                } if frontend == fe => Some(rev_nat_id),
                _ => None,
            })
            .expect("dns master");
        let b = BackendEntry {
            ip: ip2,
            port: UDP,
            proto: 17,
        };
        maps.upsert_backend(999, b).unwrap();
        maps.upsert_slot(fe, 1, 999).unwrap();
        maps.upsert_master(fe, 1, rev_nat_id, 0, 0).unwrap();
    }
    std::fs::write(
        &pods,
        pods_yaml(&[("client", "client"), ("web-1", "spare"), ("web-2", "dns")]),
    )
    .unwrap();
    env.sb.restart_agent().await.unwrap();
    let api = Client::new(env.sb.agent_socket());
    wait_services(&api, "dns backed by web-2 only", |l| {
        l.iter()
            .any(|s| s.service == "default/dns" && s.backends.len() == 1 && s.backends[0].ip == ip2)
    })
    .await;
    let out = held.await.unwrap().expect("probe");
    let reset = out
        .iter()
        .position(|o| o.error.is_some())
        .unwrap_or_else(|| panic!("the stale socket was never reset: {out:#?}"));
    assert!(
        out[reset].aborted,
        "ECONNABORTED expected: {:#?}",
        out[reset]
    );
    assert!(
        out[..reset]
            .iter()
            .all(|o| o.wire_peer == Some(SocketAddr::from((ip1, UDP)))),
        "web-1 until the reset"
    );
    let rest = &out[reset + 1..];
    assert!(!rest.is_empty() && rest[0].fresh, "{out:#?}");
    assert!(
        rest.iter()
            .all(|o| o.error.is_none() && o.wire_peer == Some(SocketAddr::from((ip2, UDP)))),
        "reconnected to web-2: {rest:#?}"
    );
    env.sb.teardown().unwrap();
}

/// Entries of one pinned map, as `sluice map list -o json` reports them.
fn map_entries(sb: &Sandbox, map: &str) -> u64 {
    let out = sluice_lines(sb, &["map", "list", "--node", sb.run_id(), "-o", "json"]).join("\n");
    let maps: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    maps.iter()
        .find(|m| m["name"] == map)
        .and_then(|m| m["entries"].as_u64())
        .unwrap_or_else(|| panic!("no {map} in {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maglev_service_gets_tables_that_follow_its_backends() {
    let maglev = SERVICES.replacen(
        "metadata: {name: web, namespace: default}",
        "metadata: {name: web, namespace: default, annotations: {sluice.io/lb-algorithm: maglev}}",
        1,
    );
    assert_ne!(maglev, SERVICES);
    let mut env = setup(3, &maglev).await;
    wait_services(&env.api, "web with 3 backends", |l| {
        backends_of(l, "default/web", 80) == 3
    })
    .await;
    // web has 5 frontends (3 ClusterIP ports, 2 NodePorts): 8 chunks each
    // at M = 16381.
    wait_until("Maglev tables written", || {
        map_entries(&env.sb, "sl_maglev") == 40
    })
    .await;
    let vip: SocketAddr = "10.96.0.10:80".parse().unwrap();
    let seen = http_spread(&env.client.netns, vip, 40);
    assert!(seen.len() > 1, "flows spread over the table: {seen:?}");

    // A backend leaves: the tables are rewritten in place, traffic goes on.
    let pods = env.sb.manifests_dir().join("pods.yaml");
    std::fs::write(
        &pods,
        pods_yaml(&[
            ("client", "client"),
            ("web-1", "web"),
            ("web-2", "web"),
            ("web-3", "gone"),
        ]),
    )
    .unwrap();
    wait_services(&env.api, "web with 2 backends", |l| {
        backends_of(l, "default/web", 80) == 2
    })
    .await;
    assert_eq!(map_entries(&env.sb, "sl_maglev"), 40);
    let seen = http_spread(&env.client.netns, vip, 40);
    assert!(!seen.contains_key("default/web-3"), "{seen:?}");
    // Switched back to random: the tables go.
    std::fs::write(env.sb.manifests_dir().join("services.yaml"), SERVICES).unwrap();
    wait_until("Maglev tables removed", || {
        map_entries(&env.sb, "sl_maglev") == 0
    })
    .await;
    env.sb.teardown().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_ips_are_served_from_outside_and_from_pods() {
    let with_external = SERVICES.replacen(
        "  clusterIP: 10.96.0.10\n",
        "  clusterIP: 10.96.0.10\n  externalIPs: [203.0.113.10]\n",
        1,
    );
    assert_ne!(with_external, SERVICES);
    let mut env = setup(2, &with_external).await;
    wait_services(&env.api, "web's external IP", |l| {
        l.iter().any(|s| {
            s.kind == "ExternalIP" && s.ip.to_string() == "203.0.113.10" && s.backends.len() == 2
        })
    })
    .await;
    // The outside client routes the external IP to the node, as a router would.
    let node = env.sb.node_ip().to_string();
    ip_out(
        &env.sb.outside_netns(),
        &["route", "add", "203.0.113.10/32", "via", &node],
    );
    let ext: SocketAddr = "203.0.113.10:80".parse().unwrap();
    let seen = http_spread(&env.sb.outside_netns(), ext, 20);
    assert_eq!(seen.values().sum::<usize>(), 20, "{seen:?}");
    assert!(
        seen.keys().all(|k| k.starts_with("default/web-")),
        "{seen:?}"
    );
    // Pods reach it too, on both paths.
    for (path, seen) in ["socket", "tc"]
        .iter()
        .zip(answers_both_paths(&env, ext, 10).await)
    {
        assert_eq!(seen.values().sum::<usize>(), 10, "{path}: {seen:?}");
    }
    env.sb.teardown().unwrap();
}

/// GET `path` from `netns` (the workload's `/clientip` names the peer it saw).
fn http_path_once(netns: &Path, target: SocketAddr, path: &'static str) -> String {
    let netns = netns.to_path_buf();
    run_in_netns(&netns, move || {
        http_get_path(target, path, T).unwrap_or_else(|e| panic!("GET {target}{path}: {e}"))
    })
    .expect("netns")
}

/// svc-011/016: an external client reaches a NodePort (eTP Cluster); the
/// backend answers and sees the node's address as its peer (masqueraded),
/// on the node IP only (--nodeport-addresses defaults to it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodeport_from_outside_is_masqueraded_under_etp_cluster() {
    let mut env = setup(2, SERVICES).await;
    wait_services(&env.api, "web's NodePort", |l| {
        backends_of(l, "default/web", 30080) == 2
    })
    .await;
    let node = env.sb.node_ip();
    let np = SocketAddr::from((node, 30080));
    let seen = http_spread(&env.sb.outside_netns(), np, 20);
    assert_eq!(seen.len(), 2, "both backends answer: {seen:?}");
    for _ in 0..5 {
        let peer = http_path_once(&env.sb.outside_netns(), np, "/clientip");
        assert!(
            peer.starts_with(&format!("{node}:")),
            "the backend sees the node address, not {}: {peer}",
            env.sb.outside_ip()
        );
    }
    // A pod reaching the NodePort is masqueraded too (kube-proxy: pod to
    // NodePort, masq true).
    let peer = http_path_once(&env.client.netns, np, "/clientip");
    assert!(peer.starts_with(&format!("{node}:")), "{peer}");
    env.sb.teardown().unwrap();
}

/// svc-013/014: externalTrafficPolicy Local. From outside only the
/// endpoint on this node answers and it sees the client's own address;
/// pods reach every endpoint, unmasqueraded; with no local endpoint left,
/// outside clients are dropped (a timeout), not refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etp_local_from_outside_reaches_only_the_local_endpoint_with_the_client_ip() {
    let mut env = setup(2, SERVICES).await;
    let node = env.sb.run_id().to_string();
    let manifest = |eps: &[(&Pod, &str)]| {
        let mut s = format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: etp, namespace: default}}\nspec:\n  type: NodePort\n  externalTrafficPolicy: Local\n  healthCheckNodePort: 30999\n  clusterIP: 10.96.0.31\n  ports: [{{name: http, port: 80, nodePort: 30081}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: etp-1, namespace: default, labels: {{kubernetes.io/service-name: etp}}}}\naddressType: IPv4\nports: [{{name: http, port: {HTTP}}}]\nendpoints:\n"
        );
        for (pod, on) in eps {
            s.push_str(&format!("- {{addresses: [{}], nodeName: {on}}}\n", pod.ip));
        }
        s
    };
    let file = env.sb.manifests_dir().join("etp.yaml");
    // web-1 is on this node, web-2 (as far as the slice says) elsewhere.
    std::fs::write(
        &file,
        manifest(&[(&env.web[0], &node), (&env.web[1], "elsewhere")]),
    )
    .unwrap();
    wait_services(&env.api, "etp with its local set", |l| {
        l.iter()
            .any(|s| s.kind == "NodePort/local" && s.port == 30081 && s.backends.len() == 1)
    })
    .await;
    let np = SocketAddr::from((env.sb.node_ip(), 30081));
    let seen = http_spread(&env.sb.outside_netns(), np, 10);
    assert_eq!(
        seen.keys().collect::<Vec<_>>(),
        vec!["default/web-1"],
        "outside: only the local endpoint"
    );
    let peer = http_path_once(&env.sb.outside_netns(), np, "/clientip");
    assert!(
        peer.starts_with(&format!("{}:", env.sb.outside_ip())),
        "the backend sees the client's address: {peer}"
    );
    // Pods: the cluster-wide set, their own address kept.
    let seen = http_spread(&env.client.netns, np, 20);
    assert_eq!(seen.len(), 2, "pods reach every endpoint: {seen:?}");
    let peer = http_path_once(&env.client.netns, np, "/clientip");
    assert!(
        peer.starts_with(&format!("{}:", env.client.ip)),
        "pods are not masqueraded under eTP Local: {peer}"
    );

    // No local endpoint: outside clients are dropped, pods still served.
    std::fs::write(&file, manifest(&[(&env.web[1], "elsewhere")])).unwrap();
    wait_services(&env.api, "etp without a local endpoint", |l| {
        l.iter()
            .any(|s| s.kind == "NodePort/local" && s.port == 30081 && s.backends.is_empty())
    })
    .await;
    let outside = env.sb.outside_netns();
    let r =
        run_in_netns(&outside, move || http_get(np, Duration::from_millis(300))).expect("netns");
    assert!(r.as_ref().is_err_and(|e| e.is_timeout()), "dropped: {r:?}");
    let seen = http_spread(&env.client.netns, np, 5);
    assert_eq!(seen.keys().collect::<Vec<_>>(), vec!["default/web-2"]);
    wait_flow(
        &env.sb,
        &["--verdict", "DROPPED", "--drop-reason", "no_local_backend"],
        "the drop, with its reason",
        |f| f["service"]["name"] == "default/etp",
    )
    .await;
    env.sb.teardown().unwrap();
}

/// svc-010/011 "node to NodePort": the node's own sockets (the agent's
/// netns) reach a NodePort on the node IP through the socket hooks (a host
/// packet to its own address never crosses tc), and see the NodePort as
/// their peer; NodePorts are not served on 127.0.0.1 (nftables mode).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_reaches_its_own_nodeport_through_the_socket_hooks() {
    let mut env = setup(2, SERVICES).await;
    wait_services(&env.api, "web's NodePort", |l| {
        backends_of(l, "default/web", 30080) == 2
    })
    .await;
    let np = SocketAddr::from((env.sb.node_ip(), 30080));
    let node_netns = env.sb.node_netns();
    let cgroup = env.sb.cgroup_path().to_path_buf();
    let node_probe = |target: SocketAddr, count: usize| {
        sluice_testbed::probe_in(
            &sluice_bin(),
            &node_netns,
            Some(&cgroup),
            ProbeKind::Http,
            &[target],
            count,
            T,
        )
        .expect("probe in the node netns")
    };
    let mut seen = BTreeMap::new();
    for o in node_probe(np, 20) {
        assert_eq!(o.error, None, "{o:#?}");
        assert_eq!(o.peer, Some(np), "getpeername shows the NodePort");
        *seen.entry(o.answer.unwrap_or_default()).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 2, "both backends: {seen:?}");
    let lo = SocketAddr::from(([127, 0, 0, 1], 30080));
    for o in node_probe(lo, 1) {
        assert!(o.refused, "not served on loopback: {o:#?}");
    }
    env.sb.teardown().unwrap();
}

/// svc-017: loadBalancerSourceRanges guard the LB IP only: a client
/// outside the ranges is dropped there (reason source_range) while the
/// NodePort still serves it; inside the ranges it is served (masqueraded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_ranges_drop_other_clients_of_the_lb_ip_only() {
    let mut env = setup(2, SERVICES).await;
    let lb_ip = "198.51.100.9";
    let manifest = |range: &str| {
        format!("apiVersion: v1\nkind: Service\nmetadata: {{name: lb, namespace: default}}\nspec:\n  type: LoadBalancer\n  clusterIP: 10.96.0.32\n  selector: {{app: web}}\n  loadBalancerSourceRanges: [' {range}']\n  ports: [{{name: http, port: 80, targetPort: http, nodePort: 30082}}]\nstatus: {{loadBalancer: {{ingress: [{{ip: {lb_ip}}}]}}}}\n")
    };
    let file = env.sb.manifests_dir().join("lb.yaml");
    // A range that does not hold the outside client.
    std::fs::write(&file, manifest("192.0.2.0/24")).unwrap();
    wait_services(&env.api, "lb's LB IP", |l| {
        l.iter()
            .any(|s| s.kind == "LoadBalancer" && s.ip.to_string() == lb_ip && s.backends.len() == 2)
    })
    .await;
    let node = env.sb.node_ip().to_string();
    ip_out(
        &env.sb.outside_netns(),
        &["route", "add", &format!("{lb_ip}/32"), "via", &node],
    );
    let lb: SocketAddr = format!("{lb_ip}:80").parse().unwrap();
    let outside = env.sb.outside_netns();
    let r =
        run_in_netns(&outside, move || http_get(lb, Duration::from_millis(300))).expect("netns");
    assert!(r.as_ref().is_err_and(|e| e.is_timeout()), "dropped: {r:?}");
    wait_flow(
        &env.sb,
        &["--verdict", "DROPPED", "--drop-reason", "source_range"],
        "the drop, with its reason",
        |f| f["service"]["name"] == "default/lb",
    )
    .await;
    // The NodePort of the same Service is not guarded.
    let np = SocketAddr::from((env.sb.node_ip(), 30082));
    assert_eq!(http_spread(&outside, np, 4).values().sum::<usize>(), 4);

    // A range holding the client: served, masqueraded (eTP Cluster).
    let client = format!("{}/32", env.sb.outside_ip());
    std::fs::write(&file, manifest(&client)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let peer = loop {
        let r = run_in_netns(&outside, move || {
            http_get_path(lb, "/clientip", Duration::from_millis(300))
        })
        .expect("netns");
        match r {
            Ok(peer) => break peer,
            Err(e) => assert!(Instant::now() < deadline, "never served: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(peer.starts_with(&format!("{node}:")), "{peer}");
    env.sb.teardown().unwrap();
}

/// svc-012: NodePorts are served only on node addresses inside
/// --nodeport-addresses (default: the node IP alone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodeports_are_served_only_on_the_nodeport_addresses() {
    let mut env = setup(1, SERVICES).await;
    // A secondary node address on the node device.
    let node = env.sb.node_ip().octets();
    let second = std::net::Ipv4Addr::new(node[0], node[1], node[2], 200);
    let node_ns = env.sb.node_netns();
    ip_out(
        &node_ns,
        &["addr", "add", &format!("{second}/24"), "dev", "ext0"],
    );
    env.sb.restart_agent().await.expect("agent restart");
    wait_services(&env.api, "web's NodePort", |l| {
        backends_of(l, "default/web", 30080) == 1
    })
    .await;
    let outside = env.sb.outside_netns();
    let on_second = SocketAddr::from((second, 30080));
    let primary = SocketAddr::from((env.sb.node_ip(), 30080));
    assert_eq!(http_spread(&outside, primary, 2).values().sum::<usize>(), 2);
    let r = run_in_netns(&outside, move || http_get(on_second, T)).expect("netns");
    assert!(
        r.as_ref().is_err_and(|e| e.is_refused()),
        "not a NodePort address: nothing listens there: {r:?}"
    );
    let cidr = format!("{}.{}.0.0/16", node[0], node[1]);
    env.sb
        .start_agent(&sluice_bin(), &["--nodeport-addresses", &cidr])
        .await
        .expect("agent with --nodeport-addresses");
    wait_services(&env.api, "web's NodePort", |l| {
        backends_of(l, "default/web", 30080) == 1
    })
    .await;
    assert_eq!(
        http_spread(&outside, on_second, 2).values().sum::<usize>(),
        2
    );
    env.sb.teardown().unwrap();
}

/// svc-042 on the tc path: a UDP datagram larger than the MTU leaves a pod
/// that opted out of socket LB in IP fragments addressed to the ClusterIP.
/// Every fragment must reach the backend (the later ones find the first
/// one's ports in `sl_frag`), and the echo, fragmented as well, must come
/// back whole from the Service address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fragmented_udp_datagram_crosses_a_cluster_ip_on_the_tc_path() {
    use sluice_datapath::bindings::sluice_metric::*;
    let mut env = setup(1, SERVICES).await;
    wait_services(&env.api, "web has its backend", |l| {
        backends_of(l, "default/web", 53) == 1
    })
    .await;
    let pod = env.sb.add_pod("default", "frag").await.expect("pod");
    std::fs::write(
        env.sb.manifests_dir().join("frag.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: frag\n  namespace: default\n  annotations:\n    sluice.io/socket-lb: \"false\"\nspec:\n  containers:\n  - name: c\n",
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s: Status = env.api.get("/v1/status").await.unwrap();
        if s.socket_lb.opted_out_pods == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "opt-out not applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let vip_udp = SocketAddr::from(([10, 96, 0, 10], 53));
    let before = kernel_metrics(&env.sb);
    run_in_netns(&pod.netns, move || {
        for size in [3000usize, 9000] {
            let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            let a = udp_request(vip_udp, &payload, T)
                .unwrap_or_else(|e| panic!("{size}-byte datagram to {vip_udp}: {e}"));
            assert_eq!(a.len(), size, "echo length");
            assert!(a == payload, "{size}-byte echo differs");
        }
    })
    .unwrap();
    let after = kernel_metrics(&env.sb);
    assert_eq!(
        metric(&after, METRIC_SOCK_XLATE),
        metric(&before, METRIC_SOCK_XLATE),
        "opted out: the tc path translated it"
    );
    assert!(
        metric(&after, METRIC_SERVICE_NEW_FLOW) >= metric(&before, METRIC_SERVICE_NEW_FLOW) + 2,
        "tc created the flows"
    );
    // Fragments hit conntrack and the replies' fragments were rev-NATed.
    assert!(
        metric(&after, METRIC_SERVICE_CT_HIT) >= metric(&before, METRIC_SERVICE_CT_HIT) + 8,
        "later fragments followed conntrack"
    );
}
