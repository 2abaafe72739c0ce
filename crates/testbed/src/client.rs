//! Blocking client helpers for tests and the demo. Blocking on purpose:
//! wrap them in `run_in_netns` to send from inside a pod or the outside
//! namespace (a socket belongs to the namespace it was created in).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

/// Refused and timed out are kept apart: a Service without endpoints must
/// be refused fast, and a test must be able to tell that from a drop.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("connection to {0} refused")]
    Refused(SocketAddr),
    #[error("no answer from {addr} within {timeout:?}")]
    Timeout { addr: SocketAddr, timeout: Duration },
    #[error("connection to {0} reset")]
    Reset(SocketAddr),
    #[error("HTTP {status} from {addr}")]
    HttpStatus { addr: SocketAddr, status: u16 },
    #[error("malformed answer from {addr}: {reason}")]
    Malformed { addr: SocketAddr, reason: String },
    #[error("I/O error talking to {addr}: {source}")]
    Io {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

impl RequestError {
    pub fn is_refused(&self) -> bool {
        matches!(self, RequestError::Refused(_))
    }
    pub fn is_timeout(&self) -> bool {
        matches!(self, RequestError::Timeout { .. })
    }
}

fn classify(addr: SocketAddr, timeout: Duration, e: std::io::Error) -> RequestError {
    match e.kind() {
        ErrorKind::ConnectionRefused => RequestError::Refused(addr),
        ErrorKind::TimedOut | ErrorKind::WouldBlock => RequestError::Timeout { addr, timeout },
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
            RequestError::Reset(addr)
        }
        _ => RequestError::Io { addr, source: e },
    }
}

/// Time left before `deadline`, at least 1 ms (a zero timeout is an error
/// for std sockets).
fn left(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1))
}

fn exchange_tcp(
    addr: SocketAddr,
    payload: &[u8],
    timeout: Duration,
    until_eof: bool,
) -> Result<Vec<u8>, RequestError> {
    let deadline = Instant::now() + timeout;
    let err = |e| classify(addr, timeout, e);
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(err)?;
    s.set_write_timeout(Some(left(deadline))).map_err(err)?;
    s.write_all(payload).map_err(err)?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    // An echo answers with as many bytes as sent; HTTP closes when done.
    while until_eof || got.len() < payload.len() {
        if Instant::now() >= deadline {
            return Err(RequestError::Timeout { addr, timeout });
        }
        s.set_read_timeout(Some(left(deadline))).map_err(err)?;
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(err(e)),
        }
    }
    Ok(got)
}

/// Sends `payload` to a TCP echo server and returns what came back.
pub fn tcp_request(
    addr: SocketAddr,
    payload: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, RequestError> {
    exchange_tcp(addr, payload, timeout, false)
}

/// One datagram out, one back. A closed port shows up as `Refused` (ICMP
/// port unreachable on a connected socket).
pub fn udp_request(
    addr: SocketAddr,
    payload: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, RequestError> {
    let err = |e| classify(addr, timeout, e);
    let s = UdpSocket::bind(("0.0.0.0", 0)).map_err(err)?;
    s.connect(addr).map_err(err)?;
    s.set_read_timeout(Some(timeout)).map_err(err)?;
    s.send(payload).map_err(err)?;
    let mut buf = vec![0u8; 65536];
    let n = s.recv(&mut buf).map_err(err)?;
    buf.truncate(n);
    Ok(buf)
}

/// `GET /` over HTTP/1.1; returns the body of a 200.
pub fn http_get(addr: SocketAddr, timeout: Duration) -> Result<String, RequestError> {
    http_get_path(addr, "/", timeout)
}

/// `GET path` (the workload answers `/clientip` with the peer it sees).
pub fn http_get_path(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<String, RequestError> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let raw = exchange_tcp(addr, req.as_bytes(), timeout, true)?;
    parse_http_response(addr, &raw)
}

fn parse_http_response(addr: SocketAddr, raw: &[u8]) -> Result<String, RequestError> {
    let malformed = |reason: &str| RequestError::Malformed {
        addr,
        reason: reason.to_string(),
    };
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| malformed("no end of headers"))?;
    let status: u16 = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| malformed("no status line"))?;
    if status != 200 {
        return Err(RequestError::HttpStatus { addr, status });
    }
    Ok(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 1))
    }

    #[test]
    fn parses_http() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nns/p1";
        assert_eq!(
            parse_http_response(addr(), ok).ok().as_deref(),
            Some("ns/p1")
        );
        let nf = b"HTTP/1.1 404 Not Found\r\n\r\n";
        assert!(matches!(
            parse_http_response(addr(), nf),
            Err(RequestError::HttpStatus { status: 404, .. })
        ));
        assert!(parse_http_response(addr(), b"garbage").is_err());
    }

    #[test]
    fn classifies_errors() {
        let t = Duration::from_secs(1);
        assert!(classify(addr(), t, ErrorKind::ConnectionRefused.into()).is_refused());
        assert!(classify(addr(), t, ErrorKind::WouldBlock.into()).is_timeout());
        assert!(classify(addr(), t, ErrorKind::TimedOut.into()).is_timeout());
    }
}
