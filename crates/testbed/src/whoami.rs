//! "Who answered, and whom did it see": TCP and UDP servers whose answer
//! is `<backend ip:port> <peer ip:port>` (the address the connection
//! reached and the client address the backend saw), for the Services
//! conformance runner's backend and masquerade checks. Kept apart from
//! the echo workload so the two evolve separately. After the answer, the
//! TCP server reads what the client sends until it closes its side and
//! reports `received <bytes>`; the UDP answer ends with the same, so a
//! client can tell a large request arrived whole.

use std::net::{Ipv4Addr, SocketAddr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

/// Parses an answer back into (backend, peer).
pub fn parse_answer(s: &str) -> Option<(SocketAddr, SocketAddr)> {
    let mut it = s.split_whitespace();
    let backend = it.next()?.parse().ok()?;
    let peer = it.next()?.parse().ok()?;
    Some((backend, peer))
}

/// The byte count a `received <n>` answer reports.
pub fn received(s: &str) -> Option<usize> {
    let (_, rest) = s.rsplit_once("received ")?;
    rest.split_whitespace().next()?.parse().ok()
}

/// TCP: on accept, writes the answer; then counts what the client sends
/// until it shuts its side, says `received <n>` and closes.
pub async fn tcp_whoami(l: TcpListener) {
    loop {
        let Ok((mut s, peer)) = l.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let Ok(local) = s.local_addr() else { return };
            if s.write_all(format!("{local} {peer}\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
            let mut n = 0usize;
            let mut buf = vec![0u8; 16384];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(k) => n += k,
                }
            }
            let _ = s.write_all(format!("received {n}\n").as_bytes()).await;
            let _ = s.shutdown().await;
        });
    }
}

/// UDP: answers every datagram; `ip` names the backend (a socket bound
/// to 0.0.0.0 does not learn the destination address of a datagram).
pub async fn udp_whoami(s: UdpSocket, ip: Ipv4Addr) {
    let port = s.local_addr().map(|a| a.port()).unwrap_or(0);
    let mut buf = vec![0u8; 65536];
    loop {
        if let Ok((n, peer)) = s.recv_from(&mut buf).await {
            let _ = s
                .send_to(format!("{ip}:{port} {peer} received {n}").as_bytes(), peer)
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_back() {
        assert_eq!(
            parse_answer("10.180.0.1:80 192.168.0.2:4242\n"),
            Some((
                "10.180.0.1:80".parse().unwrap_or_else(|_| unreachable!()),
                "192.168.0.2:4242"
                    .parse()
                    .unwrap_or_else(|_| unreachable!())
            ))
        );
        assert_eq!(parse_answer("INIT-ACK"), None);
        assert_eq!(
            received("10.0.0.1:80 10.0.0.2:9\nreceived 2000\n"),
            Some(2000)
        );
        assert_eq!(received("10.0.0.1:80 10.0.0.2:9"), None);
    }
}
