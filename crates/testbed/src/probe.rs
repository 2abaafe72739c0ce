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
    /// One connected UDP socket held across all attempts (a resolver's):
    /// send + recv every [`HELD_INTERVAL`]; a socket error (not a timeout)
    /// drops the socket and the next attempt connects a new one. Each
    /// outcome carries its time and the address the socket is really
    /// connected to, so a test can see the socket follow its backend.
    UdpHeld,
    /// SCTP INIT through a raw socket, INIT-ACK expected (see `sctp`):
    /// works without the kernel's SCTP stack.
    Sctp,
    /// TCP connect, then read what the server sends until it closes (the
    /// `whoami` servers answer on accept).
    TcpRead,
}

/// Pause between the attempts of [`ProbeKind::UdpHeld`].
pub const HELD_INTERVAL: Duration = Duration::from_millis(50);

impl ProbeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Http => "http",
            ProbeKind::UdpConnected => "udp-connected",
            ProbeKind::UdpUnconnected => "udp-unconnected",
            ProbeKind::Connect => "connect",
            ProbeKind::UdpHeld => "udp-held",
            ProbeKind::Sctp => "sctp",
            ProbeKind::TcpRead => "tcp-read",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            ProbeKind::Http,
            ProbeKind::UdpConnected,
            ProbeKind::UdpUnconnected,
            ProbeKind::Connect,
            ProbeKind::UdpHeld,
            ProbeKind::Sctp,
            ProbeKind::TcpRead,
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
    /// `udp-held`: the socket reported ECONNABORTED (destroyed by the agent).
    #[serde(default)]
    pub aborted: bool,
    /// `udp-held`: wall-clock time of the attempt, ms since the Unix epoch.
    #[serde(default)]
    pub at_ms: Option<u64>,
    /// `udp-held`: the attempt used a socket connected just before it.
    #[serde(default)]
    pub fresh: bool,
    /// `udp-held`: the address the kernel socket is connected to (from
    /// /proc/self/net/udp, which getpeername()'s socket hook does not
    /// rewrite): the backend, where `peer` shows the Service.
    #[serde(default)]
    pub wire_peer: Option<SocketAddr>,
}

fn outcome(target: SocketAddr, r: std::io::Result<(SocketAddr, String)>) -> ProbeOutcome {
    match r {
        Ok((peer, answer)) => ProbeOutcome {
            target,
            peer: Some(peer),
            answer: Some(answer),
            error: None,
            refused: false,
            aborted: false,
            at_ms: None,
            fresh: false,
            wire_peer: None,
        },
        Err(e) => ProbeOutcome {
            target,
            peer: None,
            answer: None,
            refused: e.kind() == ErrorKind::ConnectionRefused,
            aborted: e.kind() == ErrorKind::ConnectionAborted,
            error: Some(e.to_string()),
            at_ms: None,
            fresh: false,
            wire_peer: None,
        },
    }
}

/// A TCP connection from `bind` (address and port; port 0: any), or from
/// wherever the kernel picks.
fn tcp_connect(
    target: SocketAddr,
    bind: Option<SocketAddr>,
    timeout: Duration,
) -> std::io::Result<TcpStream> {
    let Some(bind) = bind else {
        return TcpStream::connect_timeout(&target, timeout);
    };
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    s.bind(&bind.into())?;
    s.connect_timeout(&target.into(), timeout)?;
    Ok(s.into())
}

fn tcp_read(
    target: SocketAddr,
    bind: Option<SocketAddr>,
    timeout: Duration,
    payload: usize,
) -> std::io::Result<(SocketAddr, String)> {
    let mut s = tcp_connect(target, bind, timeout)?;
    let peer = s.peer_addr()?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    if payload > 0 {
        s.write_all(&vec![b'x'; payload])?;
    }
    // The whoami server reads until the client's side is closed.
    s.shutdown(std::net::Shutdown::Write)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    Ok((peer, String::from_utf8_lossy(&raw).trim().to_string()))
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
    bind: Option<SocketAddr>,
    payload: usize,
) -> std::io::Result<(SocketAddr, String)> {
    let data = if payload > 0 {
        vec![b'x'; payload]
    } else {
        b"probe".to_vec()
    };
    let s = match bind {
        Some(b) => UdpSocket::bind(b)?,
        None => UdpSocket::bind(("0.0.0.0", 0))?,
    };
    s.set_read_timeout(Some(timeout))?;
    let mut buf = vec![0u8; 2048];
    let (n, peer) = if connected {
        s.connect(target)?;
        s.send(&data)?;
        let n = s.recv(&mut buf)?;
        (n, s.peer_addr()?)
    } else {
        s.send_to(&data, target)?;
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

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The remote address of this process's UDP socket bound to `local`, as
/// the kernel holds it (/proc/<self>/net/udp: hex, address in network
/// byte order read as a host-order u32, port in host order).
fn wire_peer(local: SocketAddr) -> Option<SocketAddr> {
    let table = std::fs::read_to_string("/proc/self/net/udp").ok()?;
    let hex_addr = |s: &str| -> Option<SocketAddr> {
        let (ip, port) = s.split_once(':')?;
        let ip = u32::from_str_radix(ip, 16).ok()?;
        let port = u16::from_str_radix(port, 16).ok()?;
        Some(SocketAddr::from((ip.to_ne_bytes(), port)))
    };
    table.lines().skip(1).find_map(|l| {
        let mut f = l.split_whitespace().skip(1);
        let (loc, rem) = (hex_addr(f.next()?)?, hex_addr(f.next()?)?);
        (loc.port() == local.port()).then_some(rem)
    })
}

/// `udp-held`: see [`ProbeKind::UdpHeld`].
fn udp_held(target: SocketAddr, count: usize, timeout: Duration) -> Vec<ProbeOutcome> {
    let connect = || -> std::io::Result<UdpSocket> {
        let s = UdpSocket::bind(("0.0.0.0", 0))?;
        s.set_read_timeout(Some(timeout))?;
        s.connect(target)?;
        Ok(s)
    };
    let mut sock: Option<UdpSocket> = None;
    let mut out = Vec::with_capacity(count);
    let mut buf = vec![0u8; 2048];
    for i in 0..count {
        if i > 0 {
            std::thread::sleep(HELD_INTERVAL);
        }
        let at = now_ms();
        let fresh = sock.is_none();
        let r = (|| -> std::io::Result<(SocketAddr, String, Option<SocketAddr>)> {
            if sock.is_none() {
                sock = Some(connect()?);
            }
            let Some(s) = sock.as_ref() else {
                return Err(std::io::Error::other("no socket"));
            };
            let wire = s.local_addr().ok().and_then(wire_peer);
            // What a resolver sees first: an error the socket holds.
            if let Some(e) = s.take_error()? {
                return Err(e);
            }
            s.send(b"probe")?;
            let n = s.recv(&mut buf)?;
            Ok((
                s.peer_addr()?,
                String::from_utf8_lossy(&buf[..n]).into_owned(),
                wire,
            ))
        })();
        let timed_out =
            matches!(&r, Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut));
        let wire = match &r {
            Ok((_, _, w)) => *w,
            Err(_) => None,
        };
        let mut o = outcome(target, r.map(|(p, a, _)| (p, a)));
        o.at_ms = Some(at);
        o.fresh = fresh;
        o.wire_peer = wire;
        if o.error.is_some() && !timed_out {
            // Anything but a timeout ends this socket: connect again.
            sock = None;
        }
        out.push(o);
    }
    out
}

/// Runs `count` attempts against each target in turn (round-robin),
/// returning one outcome per attempt.
pub fn run_probe(
    kind: ProbeKind,
    targets: &[SocketAddr],
    count: usize,
    timeout: Duration,
) -> Vec<ProbeOutcome> {
    run_probe_bound(kind, None, 0, targets, count, timeout)
}

/// Like [`run_probe`] with the client's source address (and port, when
/// not 0) fixed: an external client's address, or one UDP 5-tuple reused
/// by every attempt. `connect` and `http` and `udp-held` ignore it.
/// `payload` bytes (0: the usual small request) are what `tcp-read` and
/// the UDP kinds send.
pub fn run_probe_bound(
    kind: ProbeKind,
    bind: Option<SocketAddr>,
    payload: usize,
    targets: &[SocketAddr],
    count: usize,
    timeout: Duration,
) -> Vec<ProbeOutcome> {
    if kind == ProbeKind::UdpHeld {
        return targets
            .iter()
            .flat_map(|&t| udp_held(t, count, timeout))
            .collect();
    }
    let mut out = Vec::with_capacity(count * targets.len());
    for _ in 0..count {
        for &t in targets {
            let r = match kind {
                ProbeKind::Http => http(t, timeout),
                ProbeKind::UdpConnected => udp(t, timeout, true, bind, payload),
                ProbeKind::UdpUnconnected => udp(t, timeout, false, bind, payload),
                ProbeKind::Connect => connect(t, timeout),
                ProbeKind::UdpHeld => udp(t, timeout, true, bind, payload),
                ProbeKind::Sctp => crate::sctp::probe_from(t, bind, timeout),
                ProbeKind::TcpRead => tcp_read(t, bind, timeout, payload),
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
    probe_in_bound(
        sluice_bin, netns, cgroup, kind, None, 0, targets, count, timeout,
    )
}

/// [`probe_in`] with `--bind` (see [`run_probe_bound`]).
#[allow(clippy::too_many_arguments)]
pub fn probe_in_bound(
    sluice_bin: &Path,
    netns: &Path,
    cgroup: Option<&Path>,
    kind: ProbeKind,
    bind: Option<SocketAddr>,
    payload: usize,
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
    if let Some(b) = bind {
        c.arg("--bind").arg(b.to_string());
    }
    if payload > 0 {
        c.arg("--payload-bytes").arg(payload.to_string());
    }
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
