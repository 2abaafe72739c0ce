//! The benchmark client: compiled Rust, blocking sockets, on threads that
//! entered the client pod's network namespace, so the client is not what
//! is being measured.

use anyhow::Context;
use sluice_testbed::run_in_netns;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n";

/// One new connection: connect, request, read the whole answer, close with
/// a RST (SO_LINGER 0) so thousands of samples do not exhaust ports in
/// TIME_WAIT. Returns the elapsed time and the answer's body.
pub fn one_request(target: SocketAddr, timeout: Duration) -> std::io::Result<(Duration, String)> {
    request_with(target, timeout, timeout)
}

fn request_with(
    target: SocketAddr,
    connect: Duration,
    read: Duration,
) -> std::io::Result<(Duration, String)> {
    let t0 = Instant::now();
    let mut s = TcpStream::connect_timeout(&target, connect)?;
    s.set_read_timeout(Some(read))?;
    s.set_nodelay(true)?;
    s.write_all(REQUEST)?;
    let mut buf = Vec::with_capacity(256);
    s.read_to_end(&mut buf)?;
    let elapsed = t0.elapsed();
    set_linger_zero(&s);
    let text = String::from_utf8_lossy(&buf);
    let body = text
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or("")
        .trim()
        .to_string();
    Ok((elapsed, body))
}

fn set_linger_zero(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket we own with a correctly sized value.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// `n` new-connection latencies to each of `targets`, from inside `netns`,
/// taken round-robin so that every target sees the same machine noise
/// (this machine is shared: only ratios from one run mean much).
pub fn latencies(
    netns: &Path,
    targets: &[SocketAddr],
    n: usize,
) -> anyhow::Result<Vec<Vec<Duration>>> {
    latencies_warm(netns, targets, n, WARMUP)
}

/// Warm-up connections per target before [`latencies`] measures.
pub const WARMUP: usize = 20;

/// [`latencies`] with `warmup` unmeasured connections per target first
/// (fewer suit short blocks that follow a measured one).
pub fn latencies_warm(
    netns: &Path,
    targets: &[SocketAddr],
    n: usize,
    warmup: usize,
) -> anyhow::Result<Vec<Vec<Duration>>> {
    let targets = targets.to_vec();
    let r = run_in_netns(netns, move || sample_here(&targets, n, warmup))?
        .context("new connections")?;
    Ok(r)
}

/// [`latencies`] from wherever this thread is (the pod-process client of
/// `sluice-socket` mode is already inside the pod).
pub fn latencies_here(targets: &[SocketAddr], n: usize) -> std::io::Result<Vec<Vec<Duration>>> {
    sample_here(targets, n, WARMUP)
}

fn sample_here(
    targets: &[SocketAddr],
    n: usize,
    warmup: usize,
) -> std::io::Result<Vec<Vec<Duration>>> {
    // Warm caches (ARP, conntrack, code paths) before measuring.
    for t in targets {
        for _ in 0..warmup.min(n) {
            one_request(*t, Duration::from_secs(2))?;
        }
    }
    let mut v = vec![Vec::with_capacity(n); targets.len()];
    for _ in 0..n {
        for (i, t) in targets.iter().enumerate() {
            v[i].push(one_request(*t, Duration::from_secs(2))?.0);
        }
    }
    Ok(v)
}

/// Connections per second to `target` with `clients` concurrent clients.
pub fn connections_per_second(
    netns: &Path,
    target: SocketAddr,
    clients: usize,
    run: Duration,
) -> anyhow::Result<f64> {
    let ns = netns.to_path_buf();
    run_in_netns(&ns, move || cps_here(target, clients, run))?
}

/// [`connections_per_second`] from this thread's namespace (new threads
/// inherit it).
pub fn cps_here(target: SocketAddr, clients: usize, run: Duration) -> anyhow::Result<f64> {
    let mut handles = Vec::new();
    for _ in 0..clients {
        handles.push(std::thread::spawn(move || {
            let t0 = Instant::now();
            let mut ok = 0u64;
            while t0.elapsed() < run {
                if one_request(target, Duration::from_secs(2)).is_ok() {
                    ok += 1;
                }
            }
            (ok, t0.elapsed())
        }));
    }
    let mut total = 0.0;
    for h in handles {
        let (ok, took) = h
            .join()
            .map_err(|_| anyhow::anyhow!("a benchmark client thread panicked"))?;
        total += ok as f64 / took.as_secs_f64();
    }
    Ok(total)
}

/// Sends UDP datagrams to `target` at `rate` per second in total, from
/// `threads` threads in `netns` (one connected socket each, so one flow
/// each), for `run`. Returns how many were sent. Paced rather than flat
/// out: the event benchmark steps the rate up and needs each step's rate
/// to hold for the whole step.
pub fn udp_paced(
    netns: &Path,
    target: SocketAddr,
    threads: usize,
    rate: f64,
    run: Duration,
) -> anyhow::Result<u64> {
    let ns = netns.to_path_buf();
    run_in_netns(&ns, move || udp_paced_here(target, threads, rate, run))?
}

fn udp_paced_here(
    target: SocketAddr,
    threads: usize,
    rate: f64,
    run: Duration,
) -> anyhow::Result<u64> {
    let per_thread = rate / threads.max(1) as f64;
    let mut handles = Vec::new();
    for _ in 0..threads.max(1) {
        handles.push(std::thread::spawn(move || -> std::io::Result<u64> {
            let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
            s.connect(target)?;
            let payload = [0u8; 64];
            let t0 = Instant::now();
            let mut sent = 0u64;
            loop {
                let elapsed = t0.elapsed();
                if elapsed >= run {
                    return Ok(sent);
                }
                let due = (elapsed.as_secs_f64() * per_thread) as u64;
                if sent >= due {
                    std::thread::sleep(Duration::from_micros(100));
                    continue;
                }
                // Catch up in bounded bursts, so the clock is read often
                // enough to stop on time.
                for _ in 0..(due - sent).min(256) {
                    match s.send(&payload) {
                        Ok(_) => sent += 1,
                        // A full device queue, or an ICMP error from an
                        // earlier datagram: this one is not sent, go on.
                        Err(e)
                            if matches!(
                                e.raw_os_error(),
                                Some(libc::ENOBUFS | libc::ECONNREFUSED)
                            ) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }));
    }
    let mut total = 0;
    for h in handles {
        total += h
            .join()
            .map_err(|_| anyhow::anyhow!("a UDP sender thread panicked"))?
            .context("UDP sender")?;
    }
    Ok(total)
}

/// What the pod-process client prints (one JSON line).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct PodClientReport {
    /// Per target, new-connection latencies in nanoseconds.
    pub latencies_ns: Vec<Vec<u64>>,
    pub cps: f64,
}

/// `sluice workload bench-client`: latencies to `targets`, then
/// connections/s to the last one, measured from this process.
pub fn pod_client(
    targets: &[SocketAddr],
    samples: usize,
    cps_run: Duration,
) -> anyhow::Result<PodClientReport> {
    let lat = latencies_here(targets, samples).context("new connections")?;
    let cps = match targets.last() {
        Some(t) if !cps_run.is_zero() => cps_here(*t, 2, cps_run)?,
        _ => 0.0,
    };
    Ok(PodClientReport {
        latencies_ns: lat
            .into_iter()
            .map(|v| v.into_iter().map(|d| d.as_nanos() as u64).collect())
            .collect(),
        cps,
    })
}

/// Connect timeout of a probe. A SYN to a VIP nothing translates yet gets
/// "unreachable" back, but while connect() runs the kernel takes that as a
/// soft error and waits for the SYN retransmit (1 s): short probes are what
/// give change latency a resolution of a few milliseconds. A working
/// connect takes ~0.1 ms here, far below it.
const PROBE_CONNECT: Duration = Duration::from_millis(3);

/// The answer of one probe: latency and body, or why it failed.
pub type Probe = std::io::Result<(Duration, String)>;

/// A condition on a probe's answer that ends the polling.
pub type Until = Box<dyn Fn(&Probe) -> bool + Send>;

/// Polls from inside `netns` until `done(result)` holds; returns how long
/// that took, or `None` after `limit`.
pub fn time_until(
    netns: &Path,
    target: SocketAddr,
    limit: Duration,
    done: impl Fn(&Probe) -> bool + Send + 'static,
    start: Instant,
) -> anyhow::Result<Option<Duration>> {
    Ok(run_in_netns(netns, move || {
        while start.elapsed() < limit {
            let r = request_with(target, PROBE_CONNECT, Duration::from_secs(1));
            if done(&r) {
                return Some(start.elapsed());
            }
        }
        None
    })?)
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}
