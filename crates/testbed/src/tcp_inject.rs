//! Forged TCP segments, for the conntrack-INVALID regression (svc-034,
//! kubernetes #74839): a backend that sends a segment far outside the
//! client's receive window. Conntrack-based proxies once let such a packet
//! through without its reverse NAT; the client, seeing a segment from an
//! address it never connected to, answered with a RST that killed the
//! real connection.

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::net::SocketAddrV4;

const IPPROTO_TCP: u8 = 6;
const TCP_ACK: u8 = 0x10;
const TCP_PSH: u8 = 0x08;

/// The internet checksum of the TCP pseudo-header and `segment`.
fn tcp_checksum(from: SocketAddrV4, to: SocketAddrV4, segment: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for pair in bytes.chunks(2) {
            let hi = u32::from(pair[0]) << 8;
            let lo = pair.get(1).map_or(0, |b| u32::from(*b));
            sum += hi | lo;
        }
    };
    add(&from.ip().octets());
    add(&to.ip().octets());
    add(&[0, IPPROTO_TCP]);
    add(&(segment.len() as u16).to_be_bytes());
    add(segment);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A TCP segment (ACK|PSH, `payload`) with sequence number `seq`.
pub fn build_segment(from: SocketAddrV4, to: SocketAddrV4, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut s = Vec::with_capacity(20 + payload.len());
    s.extend_from_slice(&from.port().to_be_bytes());
    s.extend_from_slice(&to.port().to_be_bytes());
    s.extend_from_slice(&seq.to_be_bytes());
    s.extend_from_slice(&0u32.to_be_bytes()); // ack
    s.push(5 << 4); // data offset: 5 words, no options
    s.push(TCP_ACK | TCP_PSH);
    s.extend_from_slice(&65535u16.to_be_bytes()); // window
    s.extend_from_slice(&[0, 0]); // checksum, below
    s.extend_from_slice(&[0, 0]); // urgent pointer
    s.extend_from_slice(payload);
    let sum = tcp_checksum(from, to, &s);
    s[16..18].copy_from_slice(&sum.to_be_bytes());
    s
}

/// Sends one forged segment from `from` (an address of the calling
/// thread's namespace) to `to`; the kernel adds the IP header.
pub fn send_segment(
    from: SocketAddrV4,
    to: SocketAddrV4,
    seq: u32,
    payload: &[u8],
) -> std::io::Result<()> {
    let sock = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::TCP))?;
    sock.bind(&SockAddr::from(SocketAddrV4::new(*from.ip(), 0)))?;
    let seg = build_segment(from, to, seq, payload);
    sock.send_to(&seg, &SockAddr::from(SocketAddrV4::new(*to.ip(), 0)))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checksum_verifies_to_zero() {
        let from: SocketAddrV4 = "10.0.1.1:9000"
            .parse()
            .unwrap_or(SocketAddrV4::new([0; 4].into(), 0));
        let to: SocketAddrV4 = "10.0.0.2:40000"
            .parse()
            .unwrap_or(SocketAddrV4::new([0; 4].into(), 0));
        let seg = build_segment(from, to, 0x8000_0000, b"boom!");
        // Summing a segment with its checksum in place gives 0 (all ones, complemented).
        assert_eq!(tcp_checksum(from, to, &seg), 0);
        assert_eq!(seg.len(), 25);
        assert_eq!(seg[13], TCP_ACK | TCP_PSH);
    }
}
