//! End-to-end: `sluice conformance services` run as a subprocess, as CI
//! and people run it: on a small file written here whose expectation is
//! wrong (the runner must FAIL it and exit non-zero), and on the vendored
//! tests/cases/services.yaml, where no behaviour may FAIL (UNSUPPORTED is
//! reported with its reason and does not fail the test). Needs root: it
//! skips, saying so, when not root. Every sandbox the runner names on
//! stderr must be gone afterwards (netns, state, pins and cgroups, node2's
//! agent's included).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root_or_skip(test: &str) -> bool {
    if sluice_testbed::is_root() {
        return true;
    }
    eprintln!(
        "SKIPPED {test}: the services conformance run creates network namespaces and \
         loads BPF programs; run the tests as root"
    );
    false
}

fn vendored() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/cases/services.yaml")
}

struct Run {
    out: Output,
    behaviours: Vec<Value>,
    stderr: String,
}

fn run(file: &Path, extra: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["conformance", "services", "--cases"])
        .arg(file)
        .args(["-o", "json"])
        .args(extra)
        .output()
        .expect("run sluice conformance services");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let behaviours = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}\n{stderr}"))
        })
        .collect();
    assert_no_leftovers(&stderr);
    Run {
        out,
        behaviours,
        stderr,
    }
}

/// Every `sandbox <id>: …` line names a run that must be fully removed.
fn assert_no_leftovers(stderr: &str) {
    let ids: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("sandbox "))
        .filter_map(|l| l.split(':').next())
        .collect();
    let netns: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    for id in ids {
        assert!(sluice_testbed::is_run_id(id), "{id:?} in {stderr}");
        let left: Vec<&String> = netns.iter().filter(|n| n.starts_with(id)).collect();
        assert!(left.is_empty(), "run {id} left {left:?}");
        assert!(
            !Path::new("/run/sluice-sandbox").join(id).exists(),
            "run {id} left its state directory"
        );
        // Pins and cgroups of this node and of node2's agent (`<id>-n2`).
        let mount = sluice_testbed::cgroup::cgroup2_mount().expect("cgroup2 mount");
        for dir in [
            Path::new(sluice_testbed::state::BPFFS_PIN_ROOT),
            mount.as_path(),
        ] {
            let left: Vec<String> = std::fs::read_dir(dir)
                .map(|rd| {
                    rd.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .filter(|n| n.starts_with(id))
                        .collect()
                })
                .unwrap_or_default();
            assert!(
                left.is_empty(),
                "run {id} left {left:?} in {}",
                dir.display()
            );
        }
    }
}

/// The conventions of the vendored file plus one behaviour whose
/// expected backend is not the one the world has.
fn wrong_expectation() -> String {
    let text = std::fs::read_to_string(vendored()).expect("vendored services.yaml");
    let conventions = text
        .split("\nbehaviours:")
        .next()
        .expect("a conventions block");
    format!(
        r#"{conventions}
behaviours:
- id: svc-900-wrong-backend
  title: the expected backend is not the one that exists
  setup:
    services:
      - {{apiVersion: v1, kind: Service, metadata: {{name: svc1, namespace: ns1}}, spec: {{clusterIP: 172.30.0.41, ports: [{{name: http, port: 80, protocol: TCP}}]}}}}
    endpointSlices:
      - {{apiVersion: discovery.k8s.io/v1, kind: EndpointSlice, metadata: {{name: svc1-1, namespace: ns1, labels: {{kubernetes.io/service-name: svc1}}}}, addressType: IPv4, endpoints: [{{addresses: [10.180.0.1], nodeName: test-node}}], ports: [{{name: http, port: 80, protocol: TCP}}]}}
  action:
    flows: [{{name: simple clusterIP, from: "pod 10.180.0.2", to: "172.30.0.41:80"}}]
  expect:
    - {{flow: simple clusterIP, output: ["10.180.9.9:80"], masq: false}}
"#
    )
}

#[test]
fn a_wrong_expectation_fails_the_run() {
    if !root_or_skip("a_wrong_expectation_fails_the_run") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("services.yaml");
    std::fs::write(&file, wrong_expectation()).expect("write");
    let r = run(&file, &[]);
    assert!(!r.out.status.success(), "must exit non-zero\n{}", r.stderr);
    assert_eq!(r.behaviours.len(), 1, "{:#?}", r.behaviours);
    let b = &r.behaviours[0];
    assert_eq!(b["verdict"], "fail", "{b:#}");
    let flow = &b["flows"][0];
    assert_eq!(flow["verdict"], "fail", "{b:#}");
    assert!(
        flow["observed"][0]
            .as_str()
            .unwrap()
            .contains("10.180.0.1:80"),
        "the observation names the backend that answered: {b:#}"
    );
}

/// The behaviours README's "Services conformance" section lists as not
/// (fully) supported, with the reason. A behaviour that starts passing, or
/// one that stops running, must change the README with this list.
const UNSUPPORTED: [&str; 3] = [
    "svc-012-nodeport-addresses",
    "svc-017-loadbalancer-source-ranges",
    "svc-036-dual-stack",
];

#[test]
fn no_vendored_services_behaviour_fails() {
    if !root_or_skip("no_vendored_services_behaviour_fails") {
        return;
    }
    let r = run(&vendored(), &[]);
    let ids: Vec<&str> = r
        .behaviours
        .iter()
        .filter_map(|b| b["id"].as_str())
        .collect();
    assert_eq!(
        ids.len(),
        44,
        "every behaviour reported: {ids:?}\n{}",
        r.stderr
    );
    for b in &r.behaviours {
        if b["verdict"] == "unsupported" {
            assert!(
                b["reason"].as_str().is_some_and(|s| !s.is_empty()),
                "UNSUPPORTED without a reason: {b:#}"
            );
        }
    }
    let failed: Vec<String> = r
        .behaviours
        .iter()
        .filter(|b| b["verdict"] == "fail")
        .map(|b| format!("{}: {}", b["id"], b["reason"]))
        .collect();
    assert!(
        failed.is_empty(),
        "{} behaviours FAILED:\n{}\n(summary on stderr:)\n{}",
        failed.len(),
        failed.join("\n"),
        r.stderr
    );
    assert!(r.out.status.success(), "{}", r.stderr);
    let unsupported: Vec<&str> = r
        .behaviours
        .iter()
        .filter(|b| b["verdict"] == "unsupported")
        .filter_map(|b| b["id"].as_str())
        .collect();
    assert_eq!(
        unsupported, UNSUPPORTED,
        "the UNSUPPORTED behaviours changed: update README and this list"
    );
}
