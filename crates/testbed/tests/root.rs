//! Root tests: real namespaces, veths and cgroups. They fail loudly when not
//! root unless SLUICE_SKIP_ROOT_TESTS=1 is set (then they say they skip).

mod common;
use common::{example_workload, need_root};
use sluice_testbed::{
    http_get, run_in_netns, tcp_request, udp_request, Sandbox, SandboxOptions, WorkloadPorts,
};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn leftovers(sb_run: &str, cgroup: &Path, state_dir: &Path) -> Vec<String> {
    let mut left = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/run/netns") {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with(sb_run) {
                left.push(format!("netns {n}"));
            }
        }
    }
    for p in [
        cgroup.to_path_buf(),
        PathBuf::from(format!("{}-agent", cgroup.display())),
        state_dir.to_path_buf(),
    ] {
        if p.exists() {
            left.push(p.display().to_string());
        }
    }
    left
}

#[test]
fn sandbox_without_agent_is_removed_completely() {
    if !need_root() {
        return;
    }
    let mut sb = Sandbox::create(SandboxOptions::default()).expect("create sandbox");
    let (run, cg, dir) = (
        sb.run_id().to_string(),
        sb.cgroup_path().to_path_buf(),
        sb.state_dir().to_path_buf(),
    );
    assert!(sb.node_netns().exists() && sb.outside_netns().exists());
    assert!(cg.exists() && dir.join("state.json").exists());
    // Outside reaches the node over the uplink: a closed port answers
    // with a reset, which proves the round trip.
    let node = SocketAddr::from((sb.node_ip(), 9));
    let err = run_in_netns(&sb.outside_netns(), move || {
        tcp_request(node, b"x", Duration::from_secs(2))
    })
    .expect("netns")
    .expect_err("nothing listens on port 9");
    assert!(err.is_refused(), "outside cannot reach the node: {err}");
    sb.teardown().expect("teardown");
    sb.teardown().expect("second teardown is a no-op");
    assert_eq!(leftovers(&run, &cg, &dir), Vec::<String>::new());
}

#[test]
fn sandbox_is_removed_when_the_test_panics() {
    if !need_root() {
        return;
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let res = std::panic::catch_unwind(move || {
        let sb = Sandbox::create(SandboxOptions::default()).expect("create sandbox");
        let _ = tx.send((
            sb.run_id().to_string(),
            sb.cgroup_path().to_path_buf(),
            sb.state_dir().to_path_buf(),
        ));
        panic!("deliberate");
    });
    assert!(res.is_err());
    let (run, cg, dir) = rx.recv().expect("sandbox info");
    assert_eq!(leftovers(&run, &cg, &dir), Vec::<String>::new());
}

#[test]
fn leftovers_of_a_dead_run_are_removed() {
    if !need_root() {
        return;
    }
    let root = std::env::temp_dir().join(format!("slc-test-root-{}", std::process::id()));
    let opts = SandboxOptions {
        state_root: root.clone(),
        ..Default::default()
    };
    let sb = Sandbox::create(opts).expect("create");
    let (run, cg, dir) = (
        sb.run_id().to_string(),
        sb.cgroup_path().to_path_buf(),
        sb.state_dir().to_path_buf(),
    );
    // Pretend the creator died: point the record at a pid that is gone.
    let mut state = sluice_testbed::state::State::load(&dir).expect("state");
    state.pid = u32::MAX - 7;
    state.save(&dir).expect("save");
    std::mem::forget(sb);
    let removed = Sandbox::down_leftovers_in(&root).expect("down");
    assert_eq!(removed, vec![run.clone()]);
    assert_eq!(leftovers(&run, &cg, &dir), Vec::<String>::new());
    let _ = std::fs::remove_dir_all(&root);
}

// ---- full path with a fake agent (real sluice-cni, real kernel routing) ----

mod fake_agent {
    use std::sync::atomic::{AtomicU8, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::UnixListener;

    /// Just enough of the agent API for CNI ADD/DEL: IPAM from .10 up,
    /// endpoint registration echoed back.
    pub fn start(sock: &std::path::Path, octet: u8) -> tokio::task::JoinHandle<()> {
        let l = UnixListener::bind(sock).expect("bind fake agent");
        let next = Arc::new(AtomicU8::new(10));
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                let next = next.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut tmp = [0u8; 4096];
                    let (head_end, len) = loop {
                        let Ok(n) = s.read(&mut tmp).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&tmp[..n]);
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..i]).to_lowercase();
                            let len = head
                                .lines()
                                .find_map(|l| {
                                    l.strip_prefix("content-length:")
                                        .and_then(|v| v.trim().parse::<usize>().ok())
                                })
                                .unwrap_or(0);
                            break (i + 4, len);
                        }
                    };
                    while buf.len() < head_end + len {
                        let Ok(n) = s.read(&mut tmp).await else {
                            return;
                        };
                        if n == 0 {
                            break;
                        }
                        buf.extend_from_slice(&tmp[..n]);
                    }
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                    let body: serde_json::Value =
                        serde_json::from_slice(&buf[head_end..]).unwrap_or_default();
                    let line = head.lines().next().unwrap_or_default().to_string();
                    let resp = if line.starts_with("POST /v1/ipam/allocate") {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        serde_json::json!({"ip": format!("10.244.{octet}.{n}"), "prefix_len": 32, "gateway": "169.254.1.1"})
                    } else if line.starts_with("PUT /v1/endpoints/") {
                        let mut b = body.clone();
                        b["container_id"] = "x".into();
                        b["state"] = "ready".into();
                        b
                    } else {
                        serde_json::json!({})
                    };
                    let text = resp.to_string();
                    let out = format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}", text.len());
                    let _ = s.write_all(out.as_bytes()).await;
                });
            }
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_talk_through_the_node_with_a_fake_agent() {
    if !need_root() {
        return;
    }
    let opts = SandboxOptions {
        cni_bin: Some(sluice_testbed::find_binary("sluice-cni").expect("build sluice-cni first")),
        sluice_bin: Some(example_workload()),
        ..Default::default()
    };
    let mut sb = Sandbox::create(opts).expect("create");
    let octet = sb.node_ip().octets()[2];
    let _agent = fake_agent::start(&sb.agent_socket(), octet);
    let a = sb.add_pod("default", "a").await.expect("add pod a");
    let b = sb.add_pod("shop", "b").await.expect("add pod b");
    assert_ne!(a.ip, b.ip);
    let ports = WorkloadPorts {
        tcp: Some(7000),
        udp: Some(7001),
        http: Some(8080),
    };
    sb.spawn_workload(&b, ports).await.expect("workload b");

    let t = Duration::from_secs(3);
    let http = SocketAddr::from((b.ip, 8080));
    let body = run_in_netns(&a.netns, move || http_get(http, t))
        .expect("netns")
        .expect("pod a → pod b http");
    assert_eq!(body, "shop/b");
    let echo = run_in_netns(&a.netns, move || {
        tcp_request(SocketAddr::from((b.ip, 7000)), b"hi", t)
    })
    .expect("netns")
    .expect("tcp");
    assert_eq!(echo, b"hi");
    let echo = run_in_netns(&a.netns, move || {
        udp_request(SocketAddr::from((b.ip, 7001)), b"yo", t)
    })
    .expect("netns")
    .expect("udp");
    assert_eq!(echo, b"yo");
    // From outside, via the node's route to the pod CIDR.
    let body = run_in_netns(&sb.outside_netns(), move || http_get(http, t))
        .expect("netns")
        .expect("outside → pod b");
    assert_eq!(body, "shop/b");
    // A closed port is refused fast, not a timeout.
    let started = Instant::now();
    let err = run_in_netns(&a.netns, move || {
        tcp_request(SocketAddr::from((b.ip, 9)), b"x", t)
    })
    .expect("netns")
    .expect_err("closed port");
    assert!(err.is_refused(), "{err}");
    assert!(started.elapsed() < Duration::from_secs(1));
    let err = run_in_netns(&a.netns, move || {
        udp_request(SocketAddr::from((b.ip, 9)), b"x", t)
    })
    .expect("netns")
    .expect_err("closed udp port");
    assert!(err.is_refused(), "{err}");

    sb.remove_pod(&a).await.expect("remove a");
    sb.teardown().expect("teardown");
}
