//! SCTP reachability without the kernel's SCTP stack.
//!
//! Many kernels (this project's CI among them) are built without
//! CONFIG_IP_SCTP, so no SCTP socket can be opened. A dataplane still has
//! to translate and filter SCTP, and that only needs packets: a probe sends
//! a crafted INIT through a raw IPv4 socket (protocol 132) and waits for
//! the INIT-ACK; a responder in each pod answers INITs to its served ports
//! with a crafted INIT-ACK. No association is ever set up; the exchange is
//! exactly what a Service connection's first round trip looks like on the
//! wire (ports, verification tags, CRC32c), which is all that translation
//! and policy act on.

use std::collections::BTreeSet;
use std::io::{ErrorKind, Read};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// IANA protocol number of SCTP.
pub const IPPROTO_SCTP: i32 = 132;

const CHUNK_INIT: u8 = 1;
const CHUNK_INIT_ACK: u8 = 2;
const CHUNK_ABORT: u8 = 6;
/// Source port, destination port, verification tag, checksum.
const COMMON_HEADER: usize = 12;
/// Chunk header (4) + initiate tag, a_rwnd, streams, initial TSN (16).
const INIT_CHUNK: usize = 20;
/// State Cookie parameter of the INIT-ACK: type 7, our 8-byte cookie.
const COOKIE_PARAM: usize = 12;
const PARAM_STATE_COOKIE: u16 = 7;

/// CRC32c (Castagnoli), the checksum RFC 9260 §6.8 mandates; it is the
/// iSCSI polynomial, hence the catalog name.
static CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// Why a packet is not an SCTP packet we can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("too short for {what} ({len} bytes)")]
    Short { what: &'static str, len: usize },
    #[error("not IPv4 (version {0})")]
    NotIpv4(u8),
    #[error("IP protocol {0}, not SCTP")]
    NotSctp(u8),
    #[error("bad CRC32c: carries {carried:#010x}, computed {computed:#010x}")]
    Checksum { carried: u32, computed: u32 },
    #[error("chunk length {0} does not fit the packet")]
    ChunkLength(usize),
}

/// The parts of an SCTP packet the probe and the responder look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    pub src_port: u16,
    pub dst_port: u16,
    pub vtag: u32,
    /// Type of the first chunk (1 INIT, 2 INIT-ACK, 6 ABORT, …).
    pub chunk: u8,
    /// Flags of the first chunk (ABORT's T bit is bit 0).
    pub chunk_flags: u8,
    /// INIT and INIT-ACK: the sender's initiate tag.
    pub initiate_tag: Option<u32>,
}

/// CRC32c of an SCTP packet, its checksum field counted as zero.
pub fn checksum(sctp: &[u8]) -> u32 {
    let mut d = CRC32C.digest();
    if sctp.len() >= COMMON_HEADER {
        d.update(&sctp[..8]);
        d.update(&[0; 4]);
        d.update(&sctp[COMMON_HEADER..]);
    } else {
        d.update(sctp);
    }
    d.finalize()
}

/// Writes the checksum. The CRC goes on the wire least significant byte
/// first (RFC 9260 appendix A; Linux stores `cpu_to_le32(crc)`), unlike
/// every other field of the header.
fn seal(sctp: &mut [u8]) {
    let crc = checksum(sctp);
    sctp[8..12].copy_from_slice(&crc.to_le_bytes());
}

fn common_header(buf: &mut Vec<u8>, src_port: u16, dst_port: u16, vtag: u32) {
    buf.extend_from_slice(&src_port.to_be_bytes());
    buf.extend_from_slice(&dst_port.to_be_bytes());
    buf.extend_from_slice(&vtag.to_be_bytes());
    buf.extend_from_slice(&[0; 4]);
}

/// The fixed part shared by INIT and INIT-ACK: one stream each way, a
/// 64 KiB window.
fn init_fields(buf: &mut Vec<u8>, chunk: u8, len: usize, initiate_tag: u32, tsn: u32) {
    buf.push(chunk);
    buf.push(0);
    buf.extend_from_slice(&(len as u16).to_be_bytes());
    buf.extend_from_slice(&initiate_tag.to_be_bytes());
    buf.extend_from_slice(&65535u32.to_be_bytes());
    buf.extend_from_slice(&1u16.to_be_bytes());
    buf.extend_from_slice(&1u16.to_be_bytes());
    buf.extend_from_slice(&tsn.to_be_bytes());
}

/// An INIT from `src_port` to `dst_port` (verification tag 0, as RFC 9260
/// §8.5.1 requires of an INIT), no optional parameters.
pub fn build_init(src_port: u16, dst_port: u16, initiate_tag: u32, tsn: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(COMMON_HEADER + INIT_CHUNK);
    common_header(&mut b, src_port, dst_port, 0);
    init_fields(&mut b, CHUNK_INIT, INIT_CHUNK, initiate_tag, tsn);
    seal(&mut b);
    b
}

/// The INIT-ACK answering `init`: ports swapped, the INIT's initiate tag
/// as verification tag, and the mandatory State Cookie parameter.
pub fn build_init_ack(init: &Packet, own_tag: u32, tsn: u32) -> Vec<u8> {
    let peer_tag = init.initiate_tag.unwrap_or(0);
    let mut b = Vec::with_capacity(COMMON_HEADER + INIT_CHUNK + COOKIE_PARAM);
    common_header(&mut b, init.dst_port, init.src_port, peer_tag);
    init_fields(
        &mut b,
        CHUNK_INIT_ACK,
        INIT_CHUNK + COOKIE_PARAM,
        own_tag,
        tsn,
    );
    b.extend_from_slice(&PARAM_STATE_COOKIE.to_be_bytes());
    b.extend_from_slice(&(COOKIE_PARAM as u16).to_be_bytes());
    b.extend_from_slice(&peer_tag.to_be_bytes());
    b.extend_from_slice(&own_tag.to_be_bytes());
    seal(&mut b);
    b
}

/// Length of the whoami State Cookie parameter: header, the two tags,
/// then the backend's and the peer's address and port as the responder
/// saw them (IPv4, network order).
const WHOAMI_COOKIE_PARAM: usize = COOKIE_PARAM + 12;

/// Like [`build_init_ack`], with a State Cookie that also says which
/// address and port the INIT reached (`backend`) and where it came from
/// (`peer`): the SCTP form of the `whoami` answer. The cookie is opaque
/// to the peer (RFC 9260 §5.1.3), so any SCTP client accepts it.
pub fn build_init_ack_whoami(
    init: &Packet,
    own_tag: u32,
    tsn: u32,
    backend: SocketAddrV4,
    peer: SocketAddrV4,
) -> Vec<u8> {
    let peer_tag = init.initiate_tag.unwrap_or(0);
    let mut b = Vec::with_capacity(COMMON_HEADER + INIT_CHUNK + WHOAMI_COOKIE_PARAM);
    common_header(&mut b, init.dst_port, init.src_port, peer_tag);
    init_fields(
        &mut b,
        CHUNK_INIT_ACK,
        INIT_CHUNK + WHOAMI_COOKIE_PARAM,
        own_tag,
        tsn,
    );
    b.extend_from_slice(&PARAM_STATE_COOKIE.to_be_bytes());
    b.extend_from_slice(&(WHOAMI_COOKIE_PARAM as u16).to_be_bytes());
    b.extend_from_slice(&peer_tag.to_be_bytes());
    b.extend_from_slice(&own_tag.to_be_bytes());
    for a in [backend, peer] {
        b.extend_from_slice(&a.ip().octets());
        b.extend_from_slice(&a.port().to_be_bytes());
    }
    seal(&mut b);
    b
}

/// The (backend, peer) of a whoami INIT-ACK's State Cookie, if it has one.
pub fn whoami_cookie(sctp: &[u8]) -> Option<(SocketAddrV4, SocketAddrV4)> {
    let at = COMMON_HEADER + INIT_CHUNK;
    let param = sctp.get(at..at + WHOAMI_COOKIE_PARAM)?;
    let ty = u16::from_be_bytes([param[0], param[1]]);
    let len = u16::from_be_bytes([param[2], param[3]]) as usize;
    if ty != PARAM_STATE_COOKIE || len != WHOAMI_COOKIE_PARAM {
        return None;
    }
    let addr = |o: usize| {
        SocketAddrV4::new(
            Ipv4Addr::new(param[o], param[o + 1], param[o + 2], param[o + 3]),
            u16::from_be_bytes([param[o + 4], param[o + 5]]),
        )
    };
    Some((addr(12), addr(18)))
}

/// Parses an SCTP packet (no IP header) and checks its CRC32c, as a
/// receiving SCTP stack would: a dataplane that breaks the checksum must
/// see its packets lost.
pub fn parse(sctp: &[u8]) -> Result<Packet, ParseError> {
    if sctp.len() < COMMON_HEADER + 4 {
        return Err(ParseError::Short {
            what: "an SCTP header and chunk",
            len: sctp.len(),
        });
    }
    let be16 = |i: usize| u16::from_be_bytes([sctp[i], sctp[i + 1]]);
    let be32 = |i: usize| u32::from_be_bytes([sctp[i], sctp[i + 1], sctp[i + 2], sctp[i + 3]]);
    let carried = u32::from_le_bytes([sctp[8], sctp[9], sctp[10], sctp[11]]);
    let computed = checksum(sctp);
    if carried != computed {
        return Err(ParseError::Checksum { carried, computed });
    }
    let chunk = sctp[COMMON_HEADER];
    let chunk_len = usize::from(be16(COMMON_HEADER + 2));
    if chunk_len < 4 || COMMON_HEADER + chunk_len > sctp.len() {
        return Err(ParseError::ChunkLength(chunk_len));
    }
    let initiate_tag = match chunk {
        CHUNK_INIT | CHUNK_INIT_ACK if chunk_len >= INIT_CHUNK => Some(be32(COMMON_HEADER + 4)),
        CHUNK_INIT | CHUNK_INIT_ACK => return Err(ParseError::ChunkLength(chunk_len)),
        _ => None,
    };
    Ok(Packet {
        src_port: be16(0),
        dst_port: be16(2),
        vtag: be32(4),
        chunk,
        chunk_flags: sctp[COMMON_HEADER + 1],
        initiate_tag,
    })
}

/// Splits what an IPv4 raw socket hands over (IP header included) into
/// source, destination and the SCTP payload.
pub fn split_ipv4(datagram: &[u8]) -> Result<(Ipv4Addr, Ipv4Addr, &[u8]), ParseError> {
    let short = ParseError::Short {
        what: "an IPv4 header",
        len: datagram.len(),
    };
    let first = *datagram.first().ok_or(short.clone())?;
    if first >> 4 != 4 {
        return Err(ParseError::NotIpv4(first >> 4));
    }
    let ihl = usize::from(first & 0x0f) * 4;
    if ihl < 20 || datagram.len() < ihl {
        return Err(short);
    }
    if datagram[9] != IPPROTO_SCTP as u8 {
        return Err(ParseError::NotSctp(datagram[9]));
    }
    let total = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
    // Trust the header's length when it is sane (padding may follow).
    let end = if total >= ihl && total <= datagram.len() {
        total
    } else {
        datagram.len()
    };
    let addr = |i: usize| {
        Ipv4Addr::new(
            datagram[i],
            datagram[i + 1],
            datagram[i + 2],
            datagram[i + 3],
        )
    };
    Ok((addr(12), addr(16), &datagram[ihl..end]))
}

/// A random u32 from the kernel; never fails in practice, but a probe
/// must not panic over it, so it falls back to a clock-derived value.
fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    // SAFETY: getrandom writes at most `b.len()` bytes into `b`.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n == 4 {
        return u32::from_ne_bytes(b);
    }
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
        .unwrap_or(0);
    t ^ std::process::id().rotate_left(16)
}

/// Initiate tags must not be 0 (RFC 9260 §3.3.2).
fn random_tag() -> u32 {
    random_u32().max(1)
}

/// A raw IPv4 socket for protocol 132. The kernel writes the IP header on
/// send and hands every incoming SCTP packet of the namespace, IP header
/// included, to every such socket.
pub fn raw_socket() -> std::io::Result<Socket> {
    Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(IPPROTO_SCTP)))
}

/// Sends an INIT to `target` and waits up to `timeout` for the INIT-ACK
/// from `target` to our port with our initiate tag as verification tag.
/// Returns the peer and `"INIT-ACK"`; an ABORT for us is "refused"; no
/// answer is a timeout, as for a TCP connect.
pub fn probe(target: SocketAddr, timeout: Duration) -> std::io::Result<(SocketAddr, String)> {
    probe_from(target, None, timeout)
}

/// [`probe`] from the source address of `bind` (its port is ignored: the
/// INIT's source port is random).
pub fn probe_from(
    target: SocketAddr,
    bind: Option<SocketAddr>,
    timeout: Duration,
) -> std::io::Result<(SocketAddr, String)> {
    let SocketAddr::V4(target) = target else {
        return Err(std::io::Error::new(
            ErrorKind::Unsupported,
            "the SCTP probe speaks IPv4 only",
        ));
    };
    let sock = raw_socket()?;
    if let Some(SocketAddr::V4(b)) = bind {
        sock.bind(&SockAddr::from(SocketAddrV4::new(*b.ip(), 0)))?;
    }
    let tag = random_tag();
    // Ephemeral range, as a kernel would pick.
    let src_port = 32768 + (random_u32() % 28232) as u16;
    let init = build_init(src_port, target.port(), tag, random_u32());
    sock.send_to(&init, &SockAddr::from(SocketAddrV4::new(*target.ip(), 0)))?;
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 2048];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(
                ErrorKind::TimedOut,
                format!("no SCTP INIT-ACK from {target} within {timeout:?}"),
            ));
        }
        sock.set_read_timeout(Some(left))?;
        let n = match (&sock).read(&mut buf) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        // Everything SCTP that reaches the namespace shows up here (other
        // probes' answers, INITs for the local responder): keep only ours.
        let Ok((src, _, payload)) = split_ipv4(&buf[..n]) else {
            continue;
        };
        let Ok(p) = parse(payload) else {
            continue;
        };
        if src != *target.ip() || p.src_port != target.port() || p.dst_port != src_port {
            continue;
        }
        // An ABORT may carry our tag, or the peer's with the T bit set.
        if p.chunk == CHUNK_ABORT && (p.vtag == tag || p.chunk_flags & 1 == 1) {
            return Err(std::io::Error::new(
                ErrorKind::ConnectionRefused,
                format!("SCTP ABORT from {target}"),
            ));
        }
        if p.chunk == CHUNK_INIT_ACK && p.vtag == tag {
            let answer = match whoami_cookie(payload) {
                Some((backend, peer)) => format!("{backend} {peer}"),
                None => "INIT-ACK".to_string(),
            };
            return Ok((SocketAddr::V4(target), answer));
        }
    }
}

/// Answers INITs to `ports` with an INIT-ACK (see the module doc).
pub struct Responder {
    sock: Socket,
    ports: BTreeSet<u16>,
}

impl Responder {
    /// Opens the raw socket now, so a kernel or permission problem shows
    /// up before the workload reports ready.
    pub fn bind(ports: &[u16]) -> std::io::Result<Self> {
        Ok(Self {
            sock: raw_socket()?,
            ports: ports.iter().copied().collect(),
        })
    }

    /// Serves until the socket fails; returns that error.
    pub fn run(self) -> std::io::Error {
        let mut buf = [0u8; 65536];
        loop {
            let n = match (&self.sock).read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return e,
            };
            let Some((to, reply)) = answer(&self.ports, &buf[..n]) else {
                continue;
            };
            if let Err(e) = self
                .sock
                .send_to(&reply, &SockAddr::from(SocketAddrV4::new(to, 0)))
            {
                tracing::debug!(error = %e, %to, "cannot send SCTP INIT-ACK");
            }
        }
    }
}

/// The INIT-ACK for an INIT to one of `ports`, and where it goes.
fn answer(ports: &BTreeSet<u16>, datagram: &[u8]) -> Option<(Ipv4Addr, Vec<u8>)> {
    let (src, dst, payload) = split_ipv4(datagram).ok()?;
    let p = parse(payload).ok()?;
    let is_init = p.chunk == CHUNK_INIT && p.vtag == 0;
    if !is_init || !ports.contains(&p.dst_port) {
        return None;
    }
    let backend = SocketAddrV4::new(dst, p.dst_port);
    let peer = SocketAddrV4::new(src, p.src_port);
    Some((
        src,
        build_init_ack_whoami(&p, random_tag(), random_u32(), backend, peer),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_values() {
        assert_eq!(CRC32C.checksum(b"123456789"), 0xe306_9283);
        // RFC 3720 B.4: 32 bytes of zeros, 32 bytes of 0xff.
        assert_eq!(CRC32C.checksum(&[0u8; 32]), 0x8a91_36aa);
        assert_eq!(CRC32C.checksum(&[0xffu8; 32]), 0x62a8_ab43);
    }

    /// An all-zero INIT with one IPv4 address parameter (127.0.0.1), as
    /// other packet libraries build it: its checksum bytes on the wire are
    /// 40 2c 0b 5f (CRC 0x5f0b2c40, least significant byte first).
    #[test]
    fn checksum_goes_on_the_wire_little_endian() {
        let mut p = vec![0u8; 12];
        p.extend_from_slice(&[1, 0, 0, 0x1c]);
        p.extend_from_slice(&[0; 16]);
        p.extend_from_slice(&[0, 5, 0, 8, 127, 0, 0, 1]);
        seal(&mut p);
        assert_eq!(&p[8..12], &[0x40, 0x2c, 0x0b, 0x5f]);
        assert!(parse(&p).is_ok());
    }

    #[test]
    fn init_and_init_ack_round_trip() {
        let init = build_init(40000, 81, 0xdead_beef, 7);
        assert_eq!(init.len(), 32);
        let p = parse(&init).expect("valid INIT");
        assert_eq!(
            p,
            Packet {
                src_port: 40000,
                dst_port: 81,
                vtag: 0,
                chunk: CHUNK_INIT,
                chunk_flags: 0,
                initiate_tag: Some(0xdead_beef),
            }
        );
        let ack = build_init_ack(&p, 0x1234_5678, 9);
        assert_eq!(ack.len(), 44);
        let a = parse(&ack).expect("valid INIT-ACK");
        assert_eq!((a.src_port, a.dst_port), (81, 40000));
        assert_eq!(
            a.vtag, 0xdead_beef,
            "verification tag = the INIT's initiate tag"
        );
        assert_eq!(a.chunk, CHUNK_INIT_ACK);
        assert_eq!(a.initiate_tag, Some(0x1234_5678));
    }

    #[test]
    fn corrupted_packets_are_refused() {
        let mut init = build_init(40000, 81, 1, 1);
        init[1] ^= 1; // destination port changed without a new checksum
        assert!(matches!(parse(&init), Err(ParseError::Checksum { .. })));
        assert!(matches!(parse(&[0; 8]), Err(ParseError::Short { .. })));
        let mut long = build_init(1, 2, 3, 4);
        long[15] = 200; // chunk longer than the packet
        seal(&mut long);
        assert_eq!(parse(&long), Err(ParseError::ChunkLength(200)));
    }

    fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, payload: &[u8]) -> Vec<u8> {
        let mut d = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, proto, 0, 0];
        d[2..4].copy_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
        d.extend_from_slice(&src);
        d.extend_from_slice(&dst);
        d.extend_from_slice(payload);
        d
    }

    #[test]
    fn responder_answers_inits_to_served_ports_only() {
        let ports: BTreeSet<u16> = [81].into_iter().collect();
        let init = build_init(40000, 81, 42, 1);
        let d = ipv4([10, 244, 1, 2], [10, 244, 1, 3], 132, &init);
        let (to, ack) = answer(&ports, &d).expect("answered");
        assert_eq!(to, Ipv4Addr::new(10, 244, 1, 2));
        assert_eq!(parse(&ack).map(|p| p.vtag), Ok(42));
        // The cookie says which address the INIT reached and who sent it.
        assert_eq!(
            whoami_cookie(&ack),
            Some((
                SocketAddrV4::new(Ipv4Addr::new(10, 244, 1, 3), 81),
                SocketAddrV4::new(Ipv4Addr::new(10, 244, 1, 2), 40000)
            ))
        );
        assert_eq!(
            whoami_cookie(&build_init_ack(&parse(&init).expect("init"), 1, 1)),
            None
        );
        let other_port = ipv4(
            [10, 244, 1, 2],
            [10, 244, 1, 3],
            132,
            &build_init(4, 82, 42, 1),
        );
        assert!(answer(&ports, &other_port).is_none());
        assert!(answer(&ports, &ipv4([1, 1, 1, 1], [2, 2, 2, 2], 132, &ack)).is_none());
    }

    #[test]
    fn splits_ipv4_datagrams() {
        let d = ipv4([10, 0, 0, 1], [10, 0, 0, 2], 132, &[9; 16]);
        let (s, t, p) = split_ipv4(&d).expect("valid");
        assert_eq!(
            (s, t, p.len()),
            (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2), 16)
        );
        assert_eq!(
            split_ipv4(&ipv4([0; 4], [0; 4], 6, &[])),
            Err(ParseError::NotSctp(6))
        );
        assert!(split_ipv4(&[0x60]).is_err());
    }
}
