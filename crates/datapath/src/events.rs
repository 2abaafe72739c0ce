//! Flow events from the kernel programs (the `sl_events` ring buffer), the
//! per-(reason, point) traffic counters (`sl_traffic`) and the run-time
//! switches (`sl_config`).
//!
//! The codes (drop reasons, observation points, flags) are defined once in
//! `bpf/include/sluice_maps.h`; the names here are matched against the
//! generated constants, so a code without a name fails to compile only if it
//! is removed, and a new one shows up as `unknown(N)` until named (a unit test
//! checks every code below the maximum has a name).

use crate::bindings::{
    sluice_config, sluice_drop_reason as reason, sluice_event, sluice_obs_point as point,
    sluice_traffic, SLUICE_CFG_POLICY, SLUICE_CFG_TRACE_PACKETS, SLUICE_EVENT_DROP,
    SLUICE_EVENT_TRACE, SLUICE_MAP_CONFIG, SLUICE_MAP_EVENTS, SLUICE_MAP_TRAFFIC,
};
use crate::maps::MapsError;
use aya::maps::{Array, MapData, MapError, PerCpuArray, RingBuf};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::Path;

pub use crate::bindings::{
    SLUICE_EVENT_F_NEW_FLOW, SLUICE_EVENT_F_NODEPORT, SLUICE_EVENT_F_POLICY_INGRESS,
    SLUICE_EVENT_F_REPLIED, SLUICE_EVENT_F_REPLY,
};

/// Every drop reason code with its stable name (as in JSON and metrics labels).
pub const DROP_REASONS: &[(u32, &str)] = &[
    (reason::SLUICE_REASON_NONE, "none"),
    (
        reason::SLUICE_REASON_NO_SERVICE_BACKEND,
        "no_service_backend",
    ),
    (reason::SLUICE_REASON_CT_INSERT_FAILED, "ct_insert_failed"),
    (
        reason::SLUICE_REASON_INCONSISTENT_SLOT,
        "inconsistent_service_slot",
    ),
    (reason::SLUICE_REASON_INVALID_PACKET, "invalid_packet"),
    (reason::SLUICE_REASON_REJECT_FAILED, "reject_failed"),
    (reason::SLUICE_REASON_NAT_FAILED, "nat_failed"),
    (
        reason::SLUICE_REASON_UNSUPPORTED_PROTOCOL,
        "unsupported_protocol",
    ),
    (reason::SLUICE_REASON_POLICY_DENIED, "policy_denied"),
    (reason::SLUICE_REASON_NO_LOCAL_BACKEND, "no_local_backend"),
    (reason::SLUICE_REASON_SOURCE_RANGE, "source_range"),
];

/// Number of reason codes the counters have room for.
pub const REASON_SLOTS: u32 = reason::SLUICE_REASON_MAX;
/// Number of observation points the counters have room for.
pub const POINT_SLOTS: u32 = point::SLUICE_OBS_MAX;

/// Every observation point with its stable name.
pub const POINTS: &[(u32, &str)] = &[
    (point::SLUICE_OBS_FROM_POD, "from-pod"),
    (point::SLUICE_OBS_TO_POD, "to-pod"),
    (point::SLUICE_OBS_NODE_DEVICE, "node-device"),
];

/// The stable name of a drop reason code (`unknown` for codes newer than this build).
pub fn reason_name(code: u8) -> &'static str {
    DROP_REASONS
        .iter()
        .find(|(c, _)| *c == u32::from(code))
        .map(|(_, n)| *n)
        .unwrap_or("unknown")
}

/// The code of a drop reason name (case-insensitive; `-` and `_` alike).
pub fn reason_code(name: &str) -> Option<u8> {
    let want = name.to_ascii_lowercase().replace('-', "_");
    DROP_REASONS
        .iter()
        .find(|(_, n)| *n == want)
        .and_then(|(c, _)| u8::try_from(*c).ok())
}

/// The stable name of an observation point.
pub fn point_name(code: u8) -> &'static str {
    POINTS
        .iter()
        .find(|(c, _)| *c == u32::from(code))
        .map(|(_, n)| *n)
        .unwrap_or("unknown")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A forwarded packet: a new flow, or any packet with per-packet tracing.
    Trace,
    /// A dropped (or refused) packet; see the reason.
    Drop,
}

/// One event, decoded from the ring buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowEvent {
    /// CLOCK_MONOTONIC nanoseconds (the kernel's `bpf_ktime_get_ns`).
    pub timestamp_ns: u64,
    pub kind: EventKind,
    /// `sluice_drop_reason` code; see [`reason_name`].
    pub reason: u8,
    /// `sluice_obs_point` code; see [`point_name`].
    pub point: u8,
    pub proto: u8,
    pub tcp_flags: u8,
    /// `SLUICE_EVENT_F_*`.
    pub flags: u8,
    pub ifindex: u32,
    pub len: u32,
    /// Source and destination as the packet arrived.
    pub orig_src: SocketAddrV4,
    pub orig_dst: SocketAddrV4,
    /// Source and destination as the packet left (equal to orig when not rewritten).
    pub xlat_src: SocketAddrV4,
    pub xlat_dst: SocketAddrV4,
    pub rev_nat_id: u32,
    pub backend_id: u32,
    pub rule_id: u32,
    /// Identities policy judged the flow with (0 when it did not look).
    pub src_identity: u32,
    pub dst_identity: u32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("event record of {0} bytes, expected {exp}", exp = std::mem::size_of::<sluice_event>())]
    Size(usize),
    #[error("unknown event type {0}")]
    Type(u8),
}

fn sock(addr_be: u32, port_be: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(addr_be.to_ne_bytes()), u16::from_be(port_be))
}

impl FlowEvent {
    /// Decodes one ring buffer record.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() < std::mem::size_of::<sluice_event>() {
            return Err(DecodeError::Size(bytes.len()));
        }
        // SAFETY: the length was checked; sluice_event is plain integers
        // (aya::Pod), valid for any bit pattern; read_unaligned makes no
        // alignment assumption about the ring buffer's memory.
        let e: sluice_event = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        let kind = match u32::from(e.type_) {
            SLUICE_EVENT_TRACE => EventKind::Trace,
            SLUICE_EVENT_DROP => EventKind::Drop,
            _ => return Err(DecodeError::Type(e.type_)),
        };
        Ok(Self {
            timestamp_ns: e.timestamp_ns,
            kind,
            reason: e.reason,
            point: e.point,
            proto: e.proto,
            tcp_flags: e.tcp_flags,
            flags: e.flags,
            ifindex: e.ifindex,
            len: e.pkt_len,
            orig_src: sock(e.orig_saddr, e.orig_sport),
            orig_dst: sock(e.orig_daddr, e.orig_dport),
            xlat_src: sock(e.xlat_saddr, e.xlat_sport),
            xlat_dst: sock(e.xlat_daddr, e.xlat_dport),
            rev_nat_id: e.rev_nat_id,
            backend_id: e.backend_id,
            rule_id: e.rule_id,
            src_identity: e.src_identity,
            dst_identity: e.dst_identity,
        })
    }

    pub fn has_flag(&self, flag: u32) -> bool {
        u32::from(self.flags) & flag != 0
    }
}

fn open_err(pin_dir: &Path, name: &[u8]) -> impl FnOnce(MapError) -> MapsError {
    let path = pin_dir.join(String::from_utf8_lossy(name).trim_end_matches('\0'));
    move |source| MapsError::Open {
        path,
        source: Box::new(source),
    }
}

/// The consumer side of the event ring buffer. Non-blocking: [`EventReader::next`]
/// returns `None` when the buffer is empty. The programs make the fd
/// readable (epoll) only when the ring fills past an eighth; below that the
/// reader is expected to poll on a timer (the agent does, every 50 ms).
pub struct EventReader {
    ring: RingBuf<MapData>,
}

impl EventReader {
    pub fn open(pin_dir: &Path) -> Result<Self, MapsError> {
        let map = crate::maps::open_map(pin_dir, SLUICE_MAP_EVENTS)?;
        let ring = RingBuf::try_from(map).map_err(open_err(pin_dir, SLUICE_MAP_EVENTS))?;
        Ok(Self { ring })
    }

    /// The next event, if one is waiting.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Option<Result<FlowEvent, DecodeError>> {
        let item = self.ring.next()?;
        Some(FlowEvent::decode(&item))
    }
}

impl AsFd for EventReader {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.ring.as_fd()
    }
}

impl AsRawFd for EventReader {
    fn as_raw_fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }
}

/// Packets and bytes for one (reason, point), summed over CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrafficRow {
    pub reason: u8,
    pub point: u8,
    pub packets: u64,
    pub bytes: u64,
}

/// The observability maps the agent writes (config) and reads (counters).
pub struct ObsMaps {
    config: Array<MapData, sluice_config>,
    traffic: PerCpuArray<MapData, sluice_traffic>,
}

impl ObsMaps {
    pub fn open(pin_dir: &Path) -> Result<Self, MapsError> {
        let config = Array::try_from(crate::maps::open_map(pin_dir, SLUICE_MAP_CONFIG)?)
            .map_err(open_err(pin_dir, SLUICE_MAP_CONFIG))?;
        let traffic = PerCpuArray::try_from(crate::maps::open_map(pin_dir, SLUICE_MAP_TRAFFIC)?)
            .map_err(open_err(pin_dir, SLUICE_MAP_TRAFFIC))?;
        Ok(Self { config, traffic })
    }

    /// Whether the programs emit an event for every translated packet.
    pub fn trace_packets(&self) -> Result<bool, MapsError> {
        Ok(self.config()?.flags & SLUICE_CFG_TRACE_PACKETS != 0)
    }

    fn config(&self) -> Result<sluice_config, MapsError> {
        self.config.get(&0, 0).map_err(|source| MapsError::Read {
            map: "sl_config",
            source: Box::new(source),
        })
    }

    fn set_config(&mut self, v: sluice_config) -> Result<(), MapsError> {
        self.config.set(0, v, 0).map_err(|source| MapsError::Write {
            map: "sl_config",
            op: "set",
            source: Box::new(source),
        })
    }

    /// Switches per-packet tracing; takes effect on the next packet.
    /// The policy switches in the same entry are kept.
    pub fn set_trace_packets(&mut self, on: bool) -> Result<(), MapsError> {
        let mut v = self.config()?;
        v.flags = if on {
            v.flags | SLUICE_CFG_TRACE_PACKETS
        } else {
            v.flags & !SLUICE_CFG_TRACE_PACKETS
        };
        self.set_config(v)
    }

    /// Tells the programs whether any local endpoint is policy-enforced
    /// (when none is, they skip policy entirely) and the policy revision
    /// (flows judged under an older one are judged again).
    pub fn set_policy(&mut self, active: bool, revision: u32) -> Result<(), MapsError> {
        let mut v = self.config()?;
        v.flags = if active {
            v.flags | SLUICE_CFG_POLICY
        } else {
            v.flags & !SLUICE_CFG_POLICY
        };
        v.policy_revision = revision;
        self.set_config(v)
    }

    /// The policy revision the programs hold (0 on a fresh node).
    pub fn policy_revision(&self) -> Result<u32, MapsError> {
        Ok(self.config()?.policy_revision)
    }

    /// Non-zero traffic counters.
    pub fn traffic(&self) -> Result<Vec<TrafficRow>, MapsError> {
        let mut rows = Vec::new();
        for (idx, item) in self.traffic.iter().enumerate() {
            let per_cpu = item.map_err(|source| MapsError::Read {
                map: "sl_traffic",
                source: Box::new(source),
            })?;
            let (packets, bytes) = per_cpu
                .iter()
                .fold((0u64, 0u64), |(p, b), t| (p + t.packets, b + t.bytes));
            if packets == 0 {
                continue;
            }
            let idx = idx as u32;
            rows.push(TrafficRow {
                reason: (idx / POINT_SLOTS) as u8,
                point: (idx % POINT_SLOTS) as u8,
                packets,
                bytes,
            });
        }
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        for (code, name) in DROP_REASONS {
            let c = u8::try_from(*code).expect("codes fit a byte");
            assert_eq!(reason_name(c), *name);
            assert_eq!(reason_code(name), Some(c));
        }
        let mut names: Vec<_> = DROP_REASONS.iter().map(|(_, n)| n).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), DROP_REASONS.len());
        assert!(DROP_REASONS.iter().all(|(c, _)| *c < REASON_SLOTS));
        assert_eq!(reason_code("No-Service-Backend"), Some(1));
        assert_eq!(point_name(2), "node-device");
    }

    #[test]
    fn decodes_a_record() {
        let e = sluice_event {
            timestamp_ns: 7,
            type_: SLUICE_EVENT_DROP as u8,
            reason: 1,
            point: 0,
            proto: 6,
            tcp_flags: 2,
            flags: SLUICE_EVENT_F_REPLIED as u8,
            orig_saddr: u32::from_ne_bytes([10, 0, 0, 1]),
            orig_sport: 1234u16.to_be(),
            orig_daddr: u32::from_ne_bytes([10, 96, 0, 1]),
            orig_dport: 80u16.to_be(),
            ..Default::default()
        };
        // SAFETY: a plain-integer struct viewed as bytes for the test.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&e as *const sluice_event).cast::<u8>(),
                std::mem::size_of::<sluice_event>(),
            )
        };
        let d = FlowEvent::decode(bytes).expect("decodes");
        assert_eq!(d.kind, EventKind::Drop);
        assert_eq!(d.orig_src, "10.0.0.1:1234".parse().expect("addr"));
        assert_eq!(d.orig_dst, "10.96.0.1:80".parse().expect("addr"));
        assert!(d.has_flag(SLUICE_EVENT_F_REPLIED));
        assert_eq!(FlowEvent::decode(&bytes[..10]), Err(DecodeError::Size(10)));
    }
}
