//! The raw-socket SCTP probe and responder over a real veth, no agent:
//! the responder runs (as the workload example) in a sandbox's node
//! namespace, the probe in its outside namespace. Root only; see root.rs
//! for the SLUICE_SKIP_ROOT_TESTS convention.

mod common;
use common::{example_workload, need_root};
use sluice_testbed::{run_in_netns, sctp, Sandbox, SandboxOptions};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Killed on drop, so a failing assertion leaves no responder behind.
struct Responder(Child);

impl Drop for Responder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn sctp_init_gets_an_init_ack_only_from_a_served_port() {
    if !need_root() {
        return;
    }
    let mut sb = Sandbox::create(SandboxOptions::default()).expect("sandbox");
    let mut child = Command::new("nsenter")
        .arg(format!("--net={}", sb.node_netns().display()))
        .arg(example_workload())
        .args(["workload", "serve", "--name", "node", "--sctp", "81"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the responder");
    let ready = child.stdout.take().map(|out| {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line).map(|_| line)
    });
    let responder = Responder(child);
    assert_eq!(
        ready.and_then(Result::ok).as_deref().map(str::trim),
        Some(sluice_testbed::READY_LINE)
    );

    let served = SocketAddr::from((sb.node_ip(), 81));
    let closed = SocketAddr::from((sb.node_ip(), 82));
    let t = Duration::from_millis(500);
    let (ok, nothing, waited) = run_in_netns(&sb.outside_netns(), move || {
        let ok = sctp::probe(served, t);
        let started = Instant::now();
        let nothing = sctp::probe(closed, t);
        (ok, nothing, started.elapsed())
    })
    .expect("netns");
    let (peer, answer) = ok.expect("INIT-ACK from the served port");
    assert_eq!(peer, served);
    // The State Cookie names the address the INIT reached and its sender.
    let (backend, seen) = sluice_testbed::whoami::parse_answer(&answer)
        .unwrap_or_else(|| panic!("no whoami cookie in {answer:?}"));
    assert_eq!(backend, served, "{answer}");
    assert_eq!(
        seen.ip(),
        std::net::IpAddr::from(sb.outside_ip()),
        "{answer}"
    );
    let err = nothing.expect_err("no answer from a port nobody serves");
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
    assert!(waited >= t, "gave up after {waited:?}");
    drop(responder);
    sb.teardown().expect("teardown");
}
