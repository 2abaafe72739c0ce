//! "Who answered, and whom did it see": TCP and UDP servers whose answer
//! is `<backend ip:port> <peer ip:port>` (the address the connection
//! reached and the client address the backend saw), for the Services
//! conformance runner's backend and masquerade checks. Kept apart from
//! the echo workload so the two evolve separately.

use std::net::{Ipv4Addr, SocketAddr};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, UdpSocket};

/// Parses an answer back into (backend, peer).
pub fn parse_answer(s: &str) -> Option<(SocketAddr, SocketAddr)> {
    let mut it = s.split_whitespace();
    let backend = it.next()?.parse().ok()?;
    let peer = it.next()?.parse().ok()?;
    Some((backend, peer))
}

/// TCP: on accept, writes the answer and closes.
pub async fn tcp_whoami(l: TcpListener) {
    loop {
        let Ok((mut s, peer)) = l.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let Ok(local) = s.local_addr() else { return };
            let _ = s.write_all(format!("{local} {peer}\n").as_bytes()).await;
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
        if let Ok((_, peer)) = s.recv_from(&mut buf).await {
            let _ = s
                .send_to(format!("{ip}:{port} {peer}").as_bytes(), peer)
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
    }
}
