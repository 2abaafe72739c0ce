//! Destroying pods' connected UDP sockets whose backend left its Service.
//!
//! Socket-level LB translates a connected UDP socket once, at connect(): the
//! socket is then connected to the backend pod itself. When that backend
//! leaves the Service, nothing on the packet path can move the socket (its
//! datagrams carry the pod address, tc sees no frontend), so a resolver that
//! connected to the DNS ClusterIP would keep talking to a gone CoreDNS pod.
//! The agent closes that door with the kernel's `sock_diag` `SOCK_DESTROY`
//! (CONFIG_INET_DIAG_DESTROY): for UDP the kernel's `udp_abort()` sets the
//! socket error to ECONNABORTED, wakes any waiting reader and disconnects the
//! socket, so the application sees the error and connects again, which picks
//! a live backend.
//!
//! sock_diag answers for the network namespace its netlink socket was created
//! in, so the work runs on one short-lived thread that enters each pod's
//! namespace in turn (setns(2) changes only the calling thread). Dump and
//! destroy requests are built and parsed with `netlink-packet-sock-diag`;
//! its `SockDiagDestroy` sends the dumped socket id back (cookie included, so
//! the kernel destroys exactly the socket it reported) with message type
//! `SOCK_DESTROY`.

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_sock_diag::{
    constants::{AF_INET, IPPROTO_UDP},
    inet::{ExtensionFlags, InetRequest, SocketId, StateFlags},
    SockDiagDestroy, SockDiagMessage,
};
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket, SocketAddr};
use std::collections::BTreeSet;
use std::fs::File;
use std::net::{IpAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::path::PathBuf;

/// One connected UDP socket, as sock_diag reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpSock {
    /// The socket cookie (what `bpf_get_socket_cookie()` returns).
    pub cookie: u64,
    /// The address the socket is connected to (a backend, after socket LB).
    pub peer: SocketAddrV4,
    id: SocketId,
}

/// What one pass over the pod namespaces did.
#[derive(Debug, Default)]
pub struct Outcome {
    pub destroyed: usize,
    /// Namespaces that could not be entered or asked (pod gone meanwhile, …).
    pub errors: Vec<String>,
}

/// The kernel reports the cookie as `__u32 idiag_cookie[2]`, low word first,
/// each in host order.
fn cookie_of(raw: &[u8; 8]) -> u64 {
    let lo = u32::from_ne_bytes([raw[0], raw[1], raw[2], raw[3]]);
    let hi = u32::from_ne_bytes([raw[4], raw[5], raw[6], raw[7]]);
    u64::from(lo) | (u64::from(hi) << 32)
}

fn socket() -> std::io::Result<Socket> {
    let mut s = Socket::new(NETLINK_SOCK_DIAG)?;
    s.bind_auto()?;
    s.connect(&SocketAddr::new(0, 0))?;
    Ok(s)
}

/// Reads replies to request `seq` until its end (dump: `NLMSG_DONE`;
/// single request: the ACK or error), handing each inner message to `each`.
fn read_replies(
    s: &Socket,
    seq: u32,
    mut each: impl FnMut(SockDiagMessage),
) -> std::io::Result<()> {
    loop {
        let (buf, _) = s.recv_from_full()?;
        let mut off = 0;
        while off < buf.len() {
            let msg = NetlinkMessage::<SockDiagMessage>::deserialize(&buf[off..])
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            let len = msg.header.length as usize;
            if len == 0 {
                return Err(std::io::Error::other("netlink message of length 0"));
            }
            off += (len + 3) & !3;
            if msg.header.sequence_number != seq {
                continue;
            }
            match msg.payload {
                NetlinkPayload::Done(_) => return Ok(()),
                NetlinkPayload::Error(e) => {
                    return match e.code {
                        None => Ok(()), // the ACK
                        Some(_) => Err(e.to_io()),
                    };
                }
                NetlinkPayload::InnerMessage(m) => each(m),
                _ => {}
            }
        }
    }
}

fn send<T>(s: &Socket, mut msg: NetlinkMessage<T>) -> std::io::Result<()>
where
    T: netlink_packet_core::NetlinkSerializable,
{
    msg.finalize();
    let mut buf = vec![0u8; msg.buffer_len()];
    msg.serialize(&mut buf);
    s.send(&buf, 0)?;
    Ok(())
}

/// Connected (ESTABLISHED) IPv4 UDP sockets of the calling thread's network
/// namespace whose peer port is `port` (the kernel filters UDP dumps
/// by port only; addresses are filtered by the caller).
fn dump_connected_udp(s: &Socket, port: u16, seq: u32) -> std::io::Result<Vec<UdpSock>> {
    let mut id = SocketId::new_v4();
    id.destination_port = port;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    header.sequence_number = seq;
    let req = SockDiagMessage::InetRequest(InetRequest {
        family: AF_INET,
        protocol: IPPROTO_UDP,
        extensions: ExtensionFlags::empty(),
        states: StateFlags::ESTABLISHED,
        socket_id: id,
    });
    send(s, NetlinkMessage::new(header, req.into()))?;
    let mut out = Vec::new();
    read_replies(s, seq, |m| {
        if let SockDiagMessage::InetResponse(r) = m {
            let id = r.header.socket_id;
            if let IpAddr::V4(ip) = id.destination_address {
                out.push(UdpSock {
                    cookie: cookie_of(&id.cookie),
                    peer: SocketAddrV4::new(ip, id.destination_port),
                    id,
                });
            }
        }
    })?;
    Ok(out)
}

/// `SOCK_DESTROY` for one dumped socket; the kernel matches the full id
/// (addresses, ports, interface, cookie), so a socket that was closed and
/// its port reused meanwhile is not hit (ENOENT).
fn destroy(s: &Socket, sock: &UdpSock, seq: u32) -> std::io::Result<()> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_ACK;
    header.sequence_number = seq;
    let req = SockDiagDestroy::new(SockDiagMessage::InetRequest(InetRequest {
        family: AF_INET,
        protocol: IPPROTO_UDP,
        extensions: ExtensionFlags::empty(),
        states: StateFlags::all(),
        socket_id: sock.id.clone(),
    }));
    send(
        s,
        NetlinkMessage::new(header, NetlinkPayload::InnerMessage(req)),
    )?;
    read_replies(s, seq, |_| {})
}

/// In each network namespace of `netns_paths`, destroys the connected UDP
/// sockets whose peer is one of `backends` and for which `doomed(cookie,
/// peer)` holds. Runs on one (scoped) thread of its own (which enters the namespaces
/// in turn) and returns when it is done: a handful of syscalls per namespace.
pub fn destroy_connected_udp(
    netns_paths: Vec<PathBuf>,
    backends: BTreeSet<SocketAddrV4>,
    doomed: impl Fn(u64, SocketAddrV4) -> bool + Sync,
) -> Outcome {
    let doomed = &doomed;
    std::thread::scope(|scope| {
        let worker = std::thread::Builder::new()
            .name("sluice-sockdiag".into())
            .spawn_scoped(scope, move || {
                let mut outcome = Outcome::default();
                let ports: BTreeSet<u16> = backends.iter().map(|b| b.port()).collect();
                let mut seq = 0u32;
                for path in netns_paths {
                    let r = (|| -> std::io::Result<usize> {
                        let ns = File::open(&path)?;
                        // SAFETY: setns on an fd we own; it affects only this
                        // thread, which ends when the pass is over.
                        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        let s = socket()?;
                        let mut n = 0;
                        for &port in &ports {
                            seq = seq.wrapping_add(1);
                            for sock in dump_connected_udp(&s, port, seq)? {
                                if !backends.contains(&sock.peer) || !doomed(sock.cookie, sock.peer)
                                {
                                    continue;
                                }
                                seq = seq.wrapping_add(1);
                                match destroy(&s, &sock, seq) {
                                    Ok(()) => n += 1,
                                    // Closed between the dump and now.
                                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                                    Err(e) => return Err(e),
                                }
                            }
                        }
                        Ok(n)
                    })();
                    match r {
                        Ok(n) => outcome.destroyed += n,
                        Err(e) => outcome.errors.push(format!("{}: {e}", path.display())),
                    }
                }
                outcome
            });
        match worker {
            Ok(w) => w.join().unwrap_or_else(|_| Outcome {
                destroyed: 0,
                errors: vec!["sock_diag thread panicked".into()],
            }),
            Err(e) => Outcome {
                destroyed: 0,
                errors: vec![format!("cannot start the sock_diag thread: {e}")],
            },
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, UdpSocket};

    #[test]
    fn cookie_words_low_first() {
        let mut raw = [0u8; 8];
        raw[..4].copy_from_slice(&0x1122_3344u32.to_ne_bytes());
        raw[4..].copy_from_slice(&0x5566_7788u32.to_ne_bytes());
        assert_eq!(cookie_of(&raw), 0x5566_7788_1122_3344);
    }

    /// Root only (CAP_NET_ADMIN for SOCK_DESTROY; setns): destroys exactly the
    /// socket connected to the doomed address, and the application sees
    /// ECONNABORTED.
    #[test]
    fn destroys_only_the_socket_connected_to_a_doomed_peer() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let server_a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let server_b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let a = server_a.local_addr().unwrap();
        let b = server_b.local_addr().unwrap();
        let to_a = UdpSocket::bind("127.0.0.1:0").unwrap();
        to_a.connect(a).unwrap();
        let to_b = UdpSocket::bind("127.0.0.1:0").unwrap();
        to_b.connect(b).unwrap();
        let std::net::SocketAddr::V4(a4) = a else {
            panic!("v4")
        };
        let out = destroy_connected_udp(
            vec![PathBuf::from("/proc/self/ns/net")],
            BTreeSet::from([a4, SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 9)]),
            |_, _| true,
        );
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        assert_eq!(out.destroyed, 1);
        let err = to_a.take_error().unwrap().expect("an error on the socket");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionAborted);
        assert!(to_b.take_error().unwrap().is_none());
        to_b.send(b"x").unwrap();
    }
}
