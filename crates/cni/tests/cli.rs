//! Runs the sluice-cni binary as a runtime would, without an agent.

use std::io::Write;
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_sluice-cni");
const CONF: &str = r#"{"cniVersion":"1.1.0","name":"sluice","type":"sluice-cni","agentSocket":"/run/slc-no-such-dir/agent.sock"}"#;

/// Runs the plugin (optionally inside a netns via nsenter); returns
/// (exit success, parsed stdout or Null).
fn cni(netns: Option<&str>, env: &[(&str, &str)], stdin: &str) -> (bool, serde_json::Value) {
    let mut c = match netns {
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/run/netns/{ns}")).arg(BIN);
            c
        }
        None => Command::new(BIN),
    };
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn sluice-cni");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    let v = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.success(), v)
}

fn add_env(netns: &str) -> Vec<(&str, &str)> {
    vec![
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "slctest-c1"),
        ("CNI_NETNS", netns),
        ("CNI_IFNAME", "eth0"),
        ("CNI_ARGS", "K8S_POD_NAMESPACE=default;K8S_POD_NAME=p"),
    ]
}

#[test]
fn version_lists_supported_versions() {
    let (ok, v) = cni(
        None,
        &[("CNI_COMMAND", "VERSION")],
        r#"{"cniVersion":"1.0.0"}"#,
    );
    assert!(ok);
    assert_eq!(v["cniVersion"], "1.0.0");
    assert_eq!(
        v["supportedVersions"],
        serde_json::json!(["0.4.0", "1.0.0", "1.1.0"])
    );
}

#[test]
fn bad_input_codes() {
    let (ok, v) = cni(None, &[], CONF);
    assert!(!ok);
    assert_eq!(v["code"], 4, "missing CNI_COMMAND: {v}");
    let (ok, v) = cni(None, &[("CNI_COMMAND", "ADD")], CONF);
    assert!(!ok);
    assert_eq!(v["code"], 4, "missing CNI_CONTAINERID etc: {v}");
    let (_, v) = cni(
        None,
        &add_env("/run/netns/x"),
        r#"{"cniVersion":"0.3.1","name":"n"}"#,
    );
    assert_eq!(v["code"], 1, "{v}");
    let (_, v) = cni(None, &add_env("/run/netns/x"), "garbage{");
    assert_eq!(v["code"], 6, "{v}");
    let (_, v) = cni(None, &add_env("/run/slc-no-such-netns"), CONF);
    assert_eq!(v["code"], 101, "{v}");
    assert!(v["msg"]
        .as_str()
        .unwrap_or_default()
        .contains("/run/slc-no-such-netns"));
}

fn need_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("SLUICE_SKIP_ROOT_TESTS").as_deref() == Ok("1") {
        eprintln!("!!! SKIPPING root test: not root and SLUICE_SKIP_ROOT_TESTS=1 !!!");
        return false;
    }
    panic!("these tests need root (set SLUICE_SKIP_ROOT_TESTS=1 to skip them explicitly)");
}

/// Namespaces removed on drop, also when an assertion fails.
struct Netns(Vec<String>);
impl Drop for Netns {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

fn netns_pair(tag: &str) -> Netns {
    // Tests run in parallel: the tag keeps their names apart.
    let base = format!("slc{:06x}", std::process::id() & 0xff_ffff);
    let ns = Netns(vec![format!("{base}-{tag}n"), format!("{base}-{tag}p")]);
    for n in &ns.0 {
        let ok = Command::new("ip")
            .args(["netns", "add", n])
            .status()
            .expect("ip");
        assert!(ok.success(), "ip netns add {n}");
    }
    ns
}

fn links(netns: &str) -> String {
    let out = Command::new("ip")
        .args(["-n", netns, "-o", "link"])
        .output()
        .expect("ip link");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn add_without_agent_is_try_again_and_leaves_nothing() {
    if !need_root() {
        return;
    }
    let ns = netns_pair("a");
    let pod_path = format!("/run/netns/{}", ns.0[1]);
    let (ok, v) = cni(Some(&ns.0[0]), &add_env(&pod_path), CONF);
    assert!(!ok);
    assert_eq!(v["code"], 11, "{v}");
    let msg = v["msg"].as_str().unwrap_or_default();
    assert!(
        msg.contains("/run/slc-no-such-dir/agent.sock") && msg.contains("sluice agent"),
        "{msg}"
    );
    assert!(!links(&ns.0[0]).contains("lxc"), "{}", links(&ns.0[0]));
    assert!(!links(&ns.0[1]).contains("eth0"), "{}", links(&ns.0[1]));
}

#[test]
fn del_is_idempotent_without_agent_or_netns() {
    if !need_root() {
        return;
    }
    let ns = netns_pair("d");
    let mut env = add_env("/run/slc-gone-netns");
    env[0] = ("CNI_COMMAND", "DEL");
    for _ in 0..2 {
        let (ok, v) = cni(Some(&ns.0[0]), &env, CONF);
        assert!(ok, "DEL failed: {v}");
    }
}

#[test]
fn status_without_agent_is_50() {
    let (ok, v) = cni(None, &[("CNI_COMMAND", "STATUS")], CONF);
    assert!(!ok);
    assert_eq!(v["code"], 50, "{v}");
}
