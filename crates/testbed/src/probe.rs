//! A client that runs as its own process inside a pod (`sluice workload
//! probe`): the sandbox's pod cgroup only holds processes, so traffic that
//! must go through the cgroup socket hooks (socket-level LB) cannot come from
//! a test's threads. Each attempt prints one JSON line saying what the
//! application saw: its peer (getpeername / the source of a UDP reply), the
//! answer, or the error.

use crate::error::{io, Result, TestbedError};
use crate::spawn::spawn_in;
use serde::{Deserialize, Serialize};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProbeKind {
    /// TCP connect, getpeername, `GET /`: the answer is the backend's name.
    Http,
    /// UDP connect + send + recv: the peer is getpeername().
    UdpConnected,
    /// UDP sendto + recvfrom: the peer is the reply's source address.
    UdpUnconnected,
    /// TCP connect + close only, timed: the answer is the latency in ns.
    Connect,
}

impl ProbeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Http => "http",
            ProbeKind::UdpConnected => "udp-connected",
            ProbeKind::UdpUnconnected => "udp-unconnected",
            ProbeKind::Connect => "connect",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            ProbeKind::Http,
            ProbeKind::UdpConnected,
            ProbeKind::UdpUnconnected,
            ProbeKind::Connect,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// One attempt, as the application saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeOutcome {
    pub target: SocketAddr,
    #[serde(default)]
    pub peer: Option<SocketAddr>,
    #[serde(default)]
    pub answer: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
    /// The call failed with ECONNREFUSED.
    #[serde(default)]
    pub refused: bool,
}

fn outcome(target: SocketAddr, r: std::io::Result<(SocketAddr, String)>) -> ProbeOutcome {
    match r {
        Ok((peer, answer)) => ProbeOutcome {
            target,
            peer: Some(peer),
            answer: Some(answer),
            error: None,
            refused: false,
        },
        Err(e) => ProbeOutcome {
            target,
            peer: None,
            answer: None,
            refused: e.kind() == ErrorKind::ConnectionRefused,
            error: Some(e.to_string()),
        },
    }
}

fn http(target: SocketAddr, timeout: Duration) -> std::io::Result<(SocketAddr, String)> {
    let mut s = TcpStream::connect_timeout(&target, timeout)?;
    let peer = s.peer_addr()?;
    s.set_read_timeout(Some(timeout))?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok((peer, body.to_string()))
}

fn udp(
    target: SocketAddr,
    timeout: Duration,
    connected: bool,
) -> std::io::Result<(SocketAddr, String)> {
    let s = UdpSocket::bind(("0.0.0.0", 0))?;
    s.set_read_timeout(Some(timeout))?;
    let mut buf = vec![0u8; 2048];
    let (n, peer) = if connected {
        s.connect(target)?;
        s.send(b"probe")?;
        let n = s.recv(&mut buf)?;
        (n, s.peer_addr()?)
    } else {
        s.send_to(b"probe", target)?;
        s.recv_from(&mut buf)?
    };
    Ok((peer, String::from_utf8_lossy(&buf[..n]).into_owned()))
}

fn connect(target: SocketAddr, timeout: Duration) -> std::io::Result<(SocketAddr, String)> {
    let t0 = Instant::now();
    let s = TcpStream::connect_timeout(&target, timeout)?;
    let ns = t0.elapsed().as_nanos();
    let peer = s.peer_addr()?;
    Ok((peer, ns.to_string()))
}

/// Runs `count` attempts against each target in turn (round-robin),
/// returning one outcome per attempt.
pub fn run_probe(
    kind: ProbeKind,
    targets: &[SocketAddr],
    count: usize,
    timeout: Duration,
) -> Vec<ProbeOutcome> {
    let mut out = Vec::with_capacity(count * targets.len());
    for _ in 0..count {
        for &t in targets {
            let r = match kind {
                ProbeKind::Http => http(t, timeout),
                ProbeKind::UdpConnected => udp(t, timeout, true),
                ProbeKind::UdpUnconnected => udp(t, timeout, false),
                ProbeKind::Connect => connect(t, timeout),
            };
            out.push(outcome(t, r));
        }
    }
    out
}

/// Runs `<sluice> workload probe …` in `netns` and `cgroup`; returns its outcomes.
pub fn probe_in(
    sluice_bin: &Path,
    netns: &Path,
    cgroup: Option<&Path>,
    kind: ProbeKind,
    targets: &[SocketAddr],
    count: usize,
    timeout: Duration,
) -> Result<Vec<ProbeOutcome>> {
    let mut c = Command::new(sluice_bin);
    c.args(["workload", "probe", "--kind", kind.as_str()])
        .arg("--count")
        .arg(count.to_string())
        .arg("--timeout-ms")
        .arg(timeout.as_millis().to_string());
    for t in targets {
        c.arg(t.to_string());
    }
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = spawn_in(c, netns, cgroup)?;
    let out = child
        .wait_with_output()
        .map_err(io("cannot wait for the probe"))?;
    if !out.status.success() {
        return Err(TestbedError::InvalidOption(format!(
            "probe failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .map_err(|e| TestbedError::InvalidOption(format!("probe printed {l:?}: {e}")))
        })
        .collect()
}
