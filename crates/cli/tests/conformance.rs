//! End-to-end: `sluice conformance netpol` run as a subprocess, as CI and
//! people run it: on small cases written here (one that must pass, one
//! that must fail, one malformed) and on the vendored upstream-derived
//! cases in tests/cases/netpol. Needs root (CI runs as root); the runner
//! removes its sandbox, which is checked.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn require_root() {
    assert!(
        sluice_testbed::is_root(),
        "end-to-end tests create namespaces and load BPF programs: run them as root"
    );
}

fn vendored_cases() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/cases/netpol")
}

struct Run {
    out: Output,
    /// One JSON object per case (`-o json`).
    cases: Vec<Value>,
    stderr: String,
}

impl Run {
    fn result(&self, file: &str) -> &Value {
        self.cases
            .iter()
            .find(|c| c["file"] == file)
            .unwrap_or_else(|| panic!("no result for {file}: {:#?}", self.cases))
    }
}

fn conformance(dir: &Path, extra: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["conformance", "netpol", "--cases"])
        .arg(dir)
        .args(extra)
        .output()
        .expect("run sluice conformance");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let cases = if extra.contains(&"json") {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}\n{stderr}"))
            })
            .collect()
    } else {
        Vec::new()
    };
    assert_no_leftovers(&stderr);
    Run { out, cases, stderr }
}

/// The runner names its sandbox on stderr; nothing of it may remain.
fn assert_no_leftovers(stderr: &str) {
    let Some(id) = stderr
        .lines()
        .find_map(|l| l.strip_prefix("sandbox "))
        .and_then(|l| l.split(':').next())
    else {
        return; // no sandbox was built
    };
    assert!(sluice_testbed::is_run_id(id), "{id:?} in {stderr}");
    let mut left = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/run/netns") {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with(id) {
                left.push(format!("netns {n}"));
            }
        }
    }
    let cgroup = sluice_testbed::cgroup::cgroup2_mount().expect("cgroup2");
    for p in [
        cgroup.join(id),
        cgroup.join(format!("{id}-agent")),
        PathBuf::from("/sys/fs/bpf/sluice").join(id),
        PathBuf::from("/run/sluice-sandbox").join(id),
    ] {
        if p.exists() {
            left.push(p.display().to_string());
        }
    }
    assert!(left.is_empty(), "sandbox {id} left behind: {left:?}");
}

const ROWS_ALL_ALLOWED: &str = r#"
  - {from: x/a, to: "........."}
  - {from: x/b, to: "........."}
  - {from: x/c, to: "........."}
  - {from: y/a, to: "........."}
  - {from: y/b, to: "........."}
  - {from: y/c, to: "........."}
  - {from: z/a, to: "........."}
  - {from: z/b, to: "........."}
  - {from: z/c, to: "........."}"#;

fn expect(probe: &str, rows: &str) -> String {
    format!(
        "  - probe: {probe}\n    matrix:{}\n",
        rows.replace("\n  ", "\n    ")
    )
}

/// No policies: every pod reaches every other pod's Service on TCP, UDP
/// and SCTP, through two steps that change labels (model rewrites).
fn passing_case() -> String {
    let probes = [
        "{port: 80, protocol: TCP}",
        "{port: 80, protocol: UDP}",
        "{port: 81, protocol: SCTP}",
    ];
    let expects: String = probes.iter().map(|p| expect(p, ROWS_ALL_ALLOWED)).collect();
    format!(
        "name: everything connects without policies\nmodel:\n  served: [{}]\nsteps:\n- action: nothing yet\n  policies: []\n  probes: [{}]\n  expect:\n{expects}- action: labels change, still no policy\n  label_changes:\n    namespaces: {{y: {{ns2: updated}}}}\n    pods: {{x/b: {{pod2: updated}}}}\n  policies: []\n  probes: [{}]\n  expect:\n{expects}",
        probes.join(", "),
        probes.join(", "),
        probes.join(", "),
    )
}

/// Expects x/a to be unreachable with no policy in force: a correct
/// dataplane connects, so the runner must report the difference.
fn failing_case() -> String {
    let rows = ROWS_ALL_ALLOWED.replace("to: \".........\"", "to: \"X........\"");
    format!(
        "name: a wrong expectation fails\nmodel:\n  served: [{{port: 80, protocol: TCP}}]\npolicies: []\nprobes: [{{port: 80, protocol: TCP}}]\nexpect:\n- probe: {{port: 80, protocol: TCP}}\n  matrix:{rows}\n"
    )
}

#[test]
fn runner_passes_fails_and_reports_malformed_cases() {
    require_root();
    let dir = std::env::temp_dir().join(format!("slc-conformance-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a-pass.yaml"), passing_case()).unwrap();
    std::fs::write(dir.join("b-wrong.yaml"), failing_case()).unwrap();
    std::fs::write(
        dir.join("c-bad.yaml"),
        "name: broken\nmodel: {served: []}\n",
    )
    .unwrap();
    std::fs::write(dir.join("README.md"), "not a case").unwrap();

    let run = conformance(&dir, &["-o", "json"]);
    assert!(
        !run.out.status.success(),
        "a failed case fails the run: {}",
        run.stderr
    );
    assert_eq!(run.cases.len(), 3, "README is not a case: {:#?}", run.cases);

    let pass = run.result("a-pass.yaml");
    assert_eq!(pass["result"], "pass", "{pass:#}\n{}", run.stderr);
    assert_eq!(pass["steps"].as_array().map(Vec::len), Some(2));

    let wrong = run.result("b-wrong.yaml");
    assert_eq!(wrong["result"], "fail", "{wrong:#}");
    let probe = &wrong["steps"][0]["probes"][0];
    assert_eq!(
        probe["mismatches"].as_array().map(Vec::len),
        Some(8),
        "{probe:#}"
    );
    assert_eq!(probe["mismatches"][0]["observed"], "allowed");
    // Retried like upstream (every second for ten) before giving up.
    assert!(probe["rounds"].as_u64() >= Some(5), "{probe:#}");
    assert!(probe["elapsed_ms"].as_u64() >= Some(9000), "{probe:#}");

    let bad = run.result("c-bad.yaml");
    assert_eq!(bad["result"], "fail");
    assert!(
        bad["reason"]
            .as_str()
            .is_some_and(|r| r.contains("malformed")),
        "{bad:#}"
    );
    assert!(
        run.stderr
            .contains("3 cases: 1 passed, 2 failed, 0 skipped"),
        "{}",
        run.stderr
    );

    // Text output, only the passing case: exit status 0.
    let run = conformance(&dir, &["--case", "a-pass"]);
    let stdout = String::from_utf8_lossy(&run.out.stdout);
    assert!(run.out.status.success(), "{stdout}\n{}", run.stderr);
    assert!(
        stdout.starts_with("PASS  a-pass.yaml everything connects without policies\n"),
        "{stdout}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Every vendored case passes, through both datapath paths: TCP/UDP probes
/// translated at connect() by the socket hooks, and (agent with socket LB
/// off) translated per packet on the veths. SCTP is probed with raw sockets
/// (this kernel has no SCTP sockets), so nothing is skipped.
#[test]
fn every_vendored_netpol_case_passes_on_both_paths() {
    require_root();
    for path in ["socket", "tc"] {
        let run = conformance(&vendored_cases(), &["--path", path, "-o", "json"]);
        assert_eq!(run.cases.len(), 24, "{}", run.stderr);
        let failed: Vec<String> = run
            .cases
            .iter()
            .filter(|c| c["result"] != "pass")
            .map(|c| format!("{} {}: {}", c["file"], c["result"], c["reason"]))
            .collect();
        assert!(
            failed.is_empty(),
            "path {path}:\n{}\n{}",
            failed.join("\n"),
            run.stderr
        );
        assert!(run.out.status.success(), "{}", run.stderr);
    }
}
