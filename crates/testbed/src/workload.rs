//! The built-in pod workload: TCP echo, UDP echo, a tiny HTTP server
//! whose body names the pod, so tests can see which backend answered (and,
//! at `GET /clientip`, the peer address it sees, as agnhost's netexec
//! does, so tests can see whether a flow was masqueraded), and an SCTP
//! INIT responder (see `sctp`).

use crate::error::{io, Result, TestbedError};
use std::net::{Ipv4Addr, SocketAddr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

/// Printed on stdout once every listener is bound; `spawn_workload` waits
/// for it, so a test never races the server's startup.
pub const READY_LINE: &str = "sluice-workload ready";

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WorkloadOptions {
    /// Body of every HTTP answer, conventionally `namespace/pod`.
    pub name: String,
    /// TCP echo ports.
    pub tcp: Vec<u16>,
    /// UDP echo ports.
    pub udp: Vec<u16>,
    pub http: Option<u16>,
    /// Ports whose SCTP INITs get an INIT-ACK.
    pub sctp: Vec<u16>,
    /// TCP ports answering `<backend> <peer>` on accept (see `whoami`).
    pub whoami_tcp: Vec<u16>,
    /// UDP ports answering `<whoami_ip:port> <peer>` to every datagram.
    pub whoami_udp: Vec<u16>,
    /// The pod's address, naming it in UDP whoami answers.
    pub whoami_ip: Option<Ipv4Addr>,
}

/// Serves until the process is killed. Returns early only when a listener
/// cannot be bound (or no port was asked for).
pub async fn serve_workload(opts: WorkloadOptions) -> Result<()> {
    if opts.tcp.is_empty()
        && opts.udp.is_empty()
        && opts.http.is_none()
        && opts.sctp.is_empty()
        && opts.whoami_tcp.is_empty()
        && opts.whoami_udp.is_empty()
    {
        return Err(TestbedError::InvalidOption(
            "give at least one of --tcp, --udp, --http, --sctp".into(),
        ));
    }
    let any = |port| SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    let mut tasks = tokio::task::JoinSet::new();
    for &port in &opts.tcp {
        let l = TcpListener::bind(any(port))
            .await
            .map_err(io(format!("cannot listen on tcp/{port}")))?;
        tasks.spawn(tcp_echo(l));
    }
    for &port in &opts.udp {
        let s = UdpSocket::bind(any(port))
            .await
            .map_err(io(format!("cannot bind udp/{port}")))?;
        tasks.spawn(udp_echo(s));
    }
    for &port in &opts.whoami_tcp {
        let l = TcpListener::bind(any(port))
            .await
            .map_err(io(format!("cannot listen on whoami tcp/{port}")))?;
        tasks.spawn(crate::whoami::tcp_whoami(l));
    }
    for &port in &opts.whoami_udp {
        let s = UdpSocket::bind(any(port))
            .await
            .map_err(io(format!("cannot bind whoami udp/{port}")))?;
        let ip = opts.whoami_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
        tasks.spawn(crate::whoami::udp_whoami(s, ip));
    }
    if let Some(port) = opts.http {
        let l = TcpListener::bind(any(port))
            .await
            .map_err(io(format!("cannot listen on http tcp/{port}")))?;
        tasks.spawn(http_server(l, opts.name.clone()));
    }
    if !opts.sctp.is_empty() {
        let r = crate::sctp::Responder::bind(&opts.sctp)
            .map_err(io("cannot open a raw SCTP socket for the INIT responder"))?;
        // A blocking loop on its own thread: one raw socket sees every SCTP
        // packet of the namespace, which needs no async machinery.
        tasks.spawn_blocking(move || {
            let e = r.run();
            tracing::error!(error = %e, "SCTP responder stopped");
        });
    }
    println!("{READY_LINE}");
    tracing::info!(name = %opts.name, "workload serving");
    while tasks.join_next().await.is_some() {}
    Ok(())
}

async fn tcp_echo(l: TcpListener) {
    loop {
        let Ok((mut s, _)) = l.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let (mut r, mut w) = s.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
        });
    }
}

async fn udp_echo(s: UdpSocket) {
    let mut buf = vec![0u8; 65536];
    loop {
        if let Ok((n, peer)) = s.recv_from(&mut buf).await {
            let _ = s.send_to(&buf[..n], peer).await;
        }
    }
}

/// The request line prefix that asks for the peer address instead of the name.
const CLIENT_IP_REQUEST: &[u8] = b"GET /clientip ";

async fn http_server(l: TcpListener, name: String) {
    loop {
        let Ok((mut s, peer)) = l.accept().await else {
            continue;
        };
        let name = name.clone();
        tokio::spawn(async move {
            // Read the request head only; the workload ignores its content.
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16384 {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let body = if head.starts_with(CLIENT_IP_REQUEST) {
                peer.to_string()
            } else {
                name
            };
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(resp.as_bytes()).await;
            let _ = s.shutdown().await;
        });
    }
}
