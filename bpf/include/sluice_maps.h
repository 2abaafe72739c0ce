/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Every key and value the kernel programs and the agent share, defined once.
 *
 * The Rust side is generated from this file by bindgen (crates/datapath/build.rs),
 * so the two cannot drift. Rules that keep it that way:
 *  - fixed-width types only, addresses and ports in network byte order;
 *  - explicit padding fields, so no struct has holes the compiler fills
 *    with garbage (hash-map keys are compared bytewise);
 *  - the size of every struct is asserted below.
 *
 * This header must stay includable from user space: no BPF helpers here.
 */
#ifndef SLUICE_MAPS_H
#define SLUICE_MAPS_H

#include <linux/types.h>

/* Pinned map names (the file names under the node's bpffs directory). */
#define SLUICE_MAP_SERVICES "sl_services"
#define SLUICE_MAP_BACKENDS "sl_backends"
#define SLUICE_MAP_REVNAT "sl_revnat"
#define SLUICE_MAP_CT "sl_ct"
#define SLUICE_MAP_METRICS "sl_metrics"
#define SLUICE_MAP_TRAFFIC "sl_traffic"
#define SLUICE_MAP_EVENTS "sl_events"
#define SLUICE_MAP_CONFIG "sl_config"
#define SLUICE_MAP_SOCK_REVNAT "sl_sock_revnat"
#define SLUICE_MAP_SOCK_OPTOUT "sl_sock_optout"
#define SLUICE_MAP_AFFINITY "sl_affinity"
#define SLUICE_MAP_MAGLEV "sl_maglev"
#define SLUICE_MAP_IPCACHE "sl_ipcache"
#define SLUICE_MAP_ENDPOINTS "sl_endpoints"
#define SLUICE_MAP_POLICY "sl_policy"
#define SLUICE_MAP_POLICY_CT "sl_pol_ct"
#define SLUICE_MAP_NODE_ADDRS "sl_node_addrs"
#define SLUICE_MAP_SRC_RANGES "sl_src_ranges"
#define SLUICE_MAP_FRAG "sl_frag"

/* Default capacities; the agent may override them at load time. */
#define SLUICE_SERVICES_MAX 524288
#define SLUICE_BACKENDS_MAX 262144
#define SLUICE_REVNAT_MAX 262144
#define SLUICE_CT_MAX 262144
/* One entry per socket-translated connection (LRU: the oldest go first). */
#define SLUICE_SOCK_REVNAT_MAX 262144
/* Network namespaces (pods) that opted out of socket-level LB. */
#define SLUICE_SOCK_OPTOUT_MAX 65536
/* Maglev table chunks: 8 per Service at the default table size (16381). */
#define SLUICE_MAGLEV_MAX 524288
/* Session affinity: (client, frontend) → backend (LRU). */
#define SLUICE_AFFINITY_MAX 262144
/* NetworkPolicy: prefixes (pods, nodes, policy CIDRs) → identity. */
#define SLUICE_IPCACHE_MAX 524288
/* Local pods (policy enforcement flags). */
#define SLUICE_ENDPOINTS_MAX 65536
/* Policy entries, all local endpoints together. */
#define SLUICE_POLICY_MAX 1048576
/* Flows a policy verdict was given for (LRU: the oldest go first). */
#define SLUICE_POLICY_CT_MAX 262144
/* The node's own IPv4 addresses. */
#define SLUICE_NODE_ADDRS_MAX 1024
/* loadBalancerSourceRanges: (frontend, prefix) pairs. */
#define SLUICE_SRC_RANGES_MAX 65536
/* IPv4 datagrams being fragmented through the node (LRU, as Cilium's). */
#define SLUICE_FRAG_MAX 8192
/*
 * Ring buffer size in bytes (a power of two, a multiple of the page size).
 * One event takes 72 bytes plus an 8-byte record header: room for ~13000
 * events between two reads of the agent.
 */
#define SLUICE_EVENTS_BYTES (1 << 20)

/*
 * Service map key. slot 0 is the "master" entry of a frontend (it carries the
 * backend count); slots 1..count each name one backend. Selecting a backend is
 * therefore: master lookup, pick a slot, slot lookup, backend lookup.
 */
struct lb_service_key {
	__be32 address; /* frontend IP; 0.0.0.0 = NodePort on the NodePort addresses */
	__be16 port;	/* frontend port */
	__u8 proto;	/* IPPROTO_TCP / IPPROTO_UDP */
	__u8 scope;	/* LB_SCOPE_* */
	__u16 slot;	/* 0 = master, 1..count = backend slots (host order) */
	__u16 pad1;
};

/*
 * lb_service_key.scope. externalTrafficPolicy Local gives an external
 * frontend (NodePort, LB IP, externalIP) a second entry: LB_SCOPE_EXTERNAL
 * lists only this node's endpoints and serves clients that are neither pods
 * (cluster CIDR) nor node addresses; everyone else uses LB_SCOPE_ALL.
 */
#define LB_SCOPE_ALL 0
#define LB_SCOPE_EXTERNAL 1

/* lb_service.flags */
#define LB_FLAG_NODEPORT (1 << 0)
#define LB_FLAG_AFFINITY (1 << 1) /* sessionAffinity ClientIP (master) */
/* No backend: drop instead of refusing (internalTrafficPolicy Local with no
 * local endpoint, as kube-proxy does). */
#define LB_FLAG_DROP_NO_BACKEND (1 << 2)
/* New flows take their backend from the frontend's Maglev table (sl_maglev). */
#define LB_FLAG_MAGLEV (1 << 3)
/* NodePort, LB IP or externalIP: externalTrafficPolicy applies (masquerade
 * always under eTP Cluster). */
#define LB_FLAG_EXTERNAL (1 << 4)
/* eTP Local: external clients use the LB_SCOPE_EXTERNAL entry, unmasqueraded. */
#define LB_FLAG_ETP_LOCAL (1 << 5)
/* loadBalancerSourceRanges: the source must match sl_src_ranges (else drop). */
#define LB_FLAG_SOURCE_RANGES (1 << 6)

struct lb_service {
	/* slot entries: the backend; master: the session affinity timeout in
	 * seconds when LB_FLAG_AFFINITY is set, else 0 */
	__u32 backend_id;
	__u16 count;	  /* master: number of backend slots; slot entries: 0 */
	__u16 pad0;
	__u32 rev_nat_id; /* master: id in the rev-NAT map */
	__u8 flags;	  /* LB_FLAG_* */
	__u8 pad1[3];
};

struct lb_backend {
	__be32 address;
	__be16 port;
	__u8 proto;
	__u8 flags;
};

/* rev-NAT id → frontend: gives every frontend a stable numeric id. */
struct lb_revnat {
	__be32 address;
	__be16 port;
	__u8 proto;
	__u8 scope; /* LB_SCOPE_* of the entry that owns the id */
};

/*
 * sl_node_addrs: the node's IPv4 addresses (key: __be32 address). A source
 * found here is the node itself (host); a destination flagged
 * NODE_ADDR_F_NODEPORT serves NodePorts (--nodeport-addresses).
 */
#define NODE_ADDR_F_NODEPORT (1 << 0)

struct node_addr_info {
	__u32 flags; /* NODE_ADDR_F_* */
};

/*
 * sl_src_ranges (LPM trie): loadBalancerSourceRanges of LB IP frontends.
 * prefixlen = 32 (the whole rev_nat_id) + the range's prefix length.
 */
struct src_range_key {
	__u32 prefixlen;
	__u32 rev_nat_id; /* of the LB_SCOPE_ALL entry */
	__be32 addr;
};

/*
 * sl_frag (LRU hash): the L4 ports of a fragmented IPv4 datagram, learnt
 * from its first fragment (the only one with the L4 header), keyed by what
 * identifies the datagram to the receiver's reassembly (RFC 791): both
 * addresses, the IP id and the protocol. Later fragments get the ports
 * from here, so conntrack, Service lookup and policy see the same tuple
 * for every fragment.
 */
struct sluice_frag_key {
	__be32 saddr;
	__be32 daddr;
	__be16 id;
	__u8 proto;
	__u8 pad0;
};

struct sluice_frag_ports {
	__be16 sport;
	__be16 dport;
};

/*
 * Load-time network facts (a read-only global the agent sets): masquerade
 * source, the local-traffic detector, and the agent's own netns.
 */
#define SLUICE_MAX_CLUSTER_CIDRS 8

struct sluice_netcfg {
	__u64 host_netns_cookie;  /* sockets in this netns are the node's own */
	__be32 node_ip;		  /* SNAT address; 0 = no masquerade */
	__u32 cluster_cidr_count; /* 0: no detector (no source is a pod) */
	__be32 cluster_cidr_addr[SLUICE_MAX_CLUSTER_CIDRS];
	__be32 cluster_cidr_mask[SLUICE_MAX_CLUSTER_CIDRS];
};

/*
 * sl_affinity: which backend a client last got from a frontend with
 * session affinity. The tc path names the client by its IPv4 address, the
 * socket hooks by the network namespace cookie with AFFINITY_CLIENT_NETNS
 * set (a pod is one namespace, and connect() may not know its source yet).
 */
#define AFFINITY_CLIENT_NETNS (1ULL << 63)

struct affinity_key {
	__u64 client;
	__u32 rev_nat_id;
	__u32 pad0;
};

struct affinity_entry {
	__u64 last_used_ns; /* the client's last new flow to the frontend */
	__u32 backend_id;
	__u16 slot; /* where the backend was; checked, then searched by address */
	__u16 pad0;
};

/*
 * sl_maglev: a frontend's Maglev table, M entries (M prime, the agent's
 * --maglev-table-size, the same on every node) in chunks of MAGLEV_CHUNK.
 * Entry i is the slot number (1..count) of the backend for flows hashing
 * to i. Two bytes per entry: 10,000 Services at M = 16381 hold 320 MiB.
 */
#define MAGLEV_CHUNK 2048

struct maglev_key {
	__u32 rev_nat_id;
	__u32 chunk; /* entry / MAGLEV_CHUNK */
};

struct maglev_chunk {
	__u16 slots[MAGLEV_CHUNK];
};

/* ct_key.dir */
#define CT_DIR_FORWARD 0 /* client → frontend, as the client sent it */
#define CT_DIR_REPLY 1	 /* backend → client (or its SNAT address), as the backend sends it */

struct ct_key {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 dir;
	__u16 pad0;
};

/* ct_entry.flags */
#define CT_FLAG_SEEN_FIN (1 << 0)	 /* FIN sent in this entry's direction */
#define CT_FLAG_SEEN_RST (1 << 1)	 /* RST from either side */
#define CT_FLAG_NODEPORT (1 << 2)
#define CT_FLAG_SEEN_FIN_PEER (1 << 3) /* FIN sent in the other direction */
#define CT_FLAG_SNAT (1 << 4)	       /* masqueraded: see peer_address */
#define CT_FLAG_REDIRECT (1 << 5)      /* replies leave through ifindex */

struct ct_entry {
	__u64 last_seen_ns; /* bpf_ktime_get_ns() (CLOCK_MONOTONIC) */
	__u64 created_ns;
	/*
	 * Forward entries: the backend to DNAT to.
	 * Reply entries: the frontend to put back as the source.
	 */
	__be32 nat_address;
	__be16 nat_port;
	__u8 flags; /* CT_FLAG_* */
	__u8 pad0;
	__u32 rev_nat_id;
	__u32 backend_id;
	/*
	 * CT_FLAG_REDIRECT: the device the request came in on (a node device,
	 * or the client pod's veth). Replies are redirected straight back out
	 * of it: after rev-NAT their source may be a node address (NodePort,
	 * an LB IP the node owns), which the stack would drop as martian if
	 * they went through routing.
	 */
	__u32 ifindex;
	/*
	 * Forward entries: the source the backend sees (the SNAT address and
	 * port when CT_FLAG_SNAT, else the client itself).
	 * Reply entries: the client, put back as the destination.
	 */
	__be32 peer_address;
	__be16 peer_port;
	__u16 pad1;
	__u32 pad2;
};

/* Index of the per-CPU counters in the metrics map. */
enum sluice_metric {
	METRIC_PACKETS_SEEN = 0,
	METRIC_SERVICE_NEW_FLOW = 1,	   /* backend selected, CT created */
	METRIC_SERVICE_CT_HIT = 2,	   /* forward packet translated from CT */
	METRIC_REVNAT = 3,		   /* reply translated back */
	METRIC_DROP_NO_BACKEND = 4,	   /* no usable endpoint: rejected */
	METRIC_REJECT_TCP_RST = 5,
	METRIC_REJECT_ICMP = 6,
	METRIC_DROP_INCONSISTENT_SLOT = 7, /* master said N, slot/backend missing */
	METRIC_DROP_CT_FULL = 8,	   /* CT insert failed */
	METRIC_DROP_REJECT_FAILED = 9,	   /* could not build the reject packet */
	METRIC_DROP_INVALID = 10,	   /* truncated / malformed headers */
	METRIC_NODEPORT_NEW_FLOW = 11,
	METRIC_EVENTS_LOST = 12,	   /* ring buffer full: an event was not emitted */
	METRIC_SOCK_XLATE = 13,		   /* socket LB: connect/sendmsg got a backend */
	METRIC_SOCK_NO_BACKEND = 14,	   /* socket LB: refused (ECONNREFUSED) */
	METRIC_SOCK_REVNAT = 15,	   /* socket LB: getpeername/recvmsg given the VIP back */
	METRIC_DROP_POLICY = 16,	   /* NetworkPolicy denied a new flow */
	METRIC_POLICY_ALLOWED = 17,	   /* NetworkPolicy allowed a new flow (enforced endpoint) */
	/* a non-first IPv4 fragment whose first fragment was not seen (out of
	 * order, or its entry evicted): passed untouched */
	METRIC_FRAG_NO_FIRST = 18,
	METRIC_MAX = 19,
};

/*
 * Why the datapath dropped a packet: the one list shared by the drop events,
 * the per-(reason, point) traffic counters, the agent's metrics and
 * `sluice observe --drop-reason`. Codes are stable (they are stored in events
 * and counters); new reasons take new numbers below SLUICE_REASON_MAX.
 *
 * A connection to a Service without endpoints is refused the way kube-proxy
 * does it (TCP RST / ICMP port unreachable). The client's packet never
 * reaches a backend, so it counts as dropped with NO_SERVICE_BACKEND; the
 * event's SLUICE_EVENT_F_REPLIED flag says the refusal was sent. When the
 * refusal cannot be built the reason is REJECT_FAILED (dropped silently).
 */
enum sluice_drop_reason {
	SLUICE_REASON_NONE = 0,		     /* not dropped: forwarded (translated or untouched) */
	SLUICE_REASON_NO_SERVICE_BACKEND = 1, /* Service has no usable endpoint: refused */
	SLUICE_REASON_CT_INSERT_FAILED = 2,   /* conntrack map refused the new flow */
	SLUICE_REASON_INCONSISTENT_SLOT = 3,  /* master counts a slot/backend that is missing */
	SLUICE_REASON_INVALID_PACKET = 4,     /* malformed headers */
	SLUICE_REASON_REJECT_FAILED = 5,      /* the refusal packet could not be built */
	SLUICE_REASON_NAT_FAILED = 6,	     /* a rewrite helper failed */
	SLUICE_REASON_UNSUPPORTED_PROTOCOL = 7, /* a Service frontend we cannot translate */
	SLUICE_REASON_POLICY_DENIED = 8,      /* NetworkPolicy: denied by rule_id (0: default deny) */
	SLUICE_REASON_NO_LOCAL_BACKEND = 9,   /* i/eTP Local: endpoints exist, none on this node */
	SLUICE_REASON_SOURCE_RANGE = 10,      /* LB IP: source outside loadBalancerSourceRanges */
	SLUICE_REASON_MAX = 16,
};

/* Where a packet was observed: which program, hence which device and direction. */
enum sluice_obs_point {
	SLUICE_OBS_FROM_POD = 0,    /* tc ingress of a pod veth: the pod sends */
	SLUICE_OBS_TO_POD = 1,	    /* tc egress of a pod veth: delivered to the pod */
	SLUICE_OBS_NODE_DEVICE = 2, /* tc ingress of a node device (NodePort) */
	SLUICE_OBS_MAX = 4,
};

/* Traffic counters: sl_traffic is indexed by reason * SLUICE_OBS_MAX + point. */
#define SLUICE_TRAFFIC_SLOTS (SLUICE_REASON_MAX * SLUICE_OBS_MAX)

struct sluice_traffic {
	__u64 packets;
	__u64 bytes; /* skb->len as the program saw it (L2 frame) */
};

/* sluice_event.type */
#define SLUICE_EVENT_TRACE 1 /* a forwarded packet: a new flow, or any (per-packet tracing) */
#define SLUICE_EVENT_DROP 2  /* a dropped (or refused) packet: see reason */

/* sluice_event.flags */
#define SLUICE_EVENT_F_NEW_FLOW (1 << 0) /* this packet created the conntrack entry */
#define SLUICE_EVENT_F_REPLY (1 << 1)	 /* a reply translated back (rev-NAT) */
#define SLUICE_EVENT_F_REPLIED (1 << 2)	 /* drop answered with TCP RST / ICMP unreachable */
#define SLUICE_EVENT_F_NODEPORT (1 << 3) /* matched a NodePort frontend */
/* Policy drops: the destination's ingress policy denied (else the source's egress). */
#define SLUICE_EVENT_F_POLICY_INGRESS (1 << 4)

/*
 * One ring buffer record. "orig" is the tuple as the packet arrived, "xlat"
 * as it left (equal to orig when nothing was rewritten, e.g. drops).
 */
struct sluice_event {
	__u64 timestamp_ns; /* bpf_ktime_get_ns() (CLOCK_MONOTONIC) */
	__u8 type;	    /* SLUICE_EVENT_* */
	__u8 reason;	    /* enum sluice_drop_reason; NONE for traces */
	__u8 point;	    /* enum sluice_obs_point */
	__u8 proto;
	__u8 tcp_flags; /* byte 13 of the TCP header; 0 for other protocols */
	__u8 flags;	/* SLUICE_EVENT_F_* */
	__u16 pad0;
	__u32 ifindex;
	__u32 pkt_len; /* skb->len on arrival */
	__be32 orig_saddr;
	__be32 orig_daddr;
	__be16 orig_sport;
	__be16 orig_dport;
	__be32 xlat_saddr;
	__be32 xlat_daddr;
	__be16 xlat_sport;
	__be16 xlat_dport;
	__u32 rev_nat_id; /* the Service frontend, 0 when none matched */
	__u32 backend_id; /* 0 when no backend was chosen */
	__u32 rule_id;	  /* policy drops: the deciding rule; 0 = default deny */
	/* Identities of source and destination as policy saw them (after
	 * Service translation); 0 when policy did not look at the packet. */
	__u32 src_identity;
	__u32 dst_identity;
	__u32 pad1;
};

/* sluice_config.flags */
#define SLUICE_CFG_TRACE_PACKETS (1 << 0) /* an event for every translated packet */
#define SLUICE_CFG_POLICY (1 << 1)	  /* some local endpoint is policy-enforced */

/* Run-time switches, written by the agent: entry 0 of the sl_config array. */
struct sluice_config {
	__u32 flags; /* SLUICE_CFG_* */
	/*
	 * Bumped by the agent after every policy change. A non-TCP flow whose
	 * verdict was given under an older revision is judged again, so a
	 * policy change reaches UDP "connections" at once.
	 */
	__u32 policy_revision;
};

/*
 * NetworkPolicy (bpf/lib/policy.h).
 *
 * Reserved identities (numbers as in Cilium). Pod identities are >= 256,
 * CIDR identities have bit 24 set. 0 in a policy key means "any peer".
 */
#define SLUICE_ID_ANY 0
#define SLUICE_ID_HOST 1
#define SLUICE_ID_WORLD 2
#define SLUICE_ID_HEALTH 4
#define SLUICE_ID_REMOTE_NODE 6

/* sl_ipcache (LPM trie): prefix → identity. A miss means ID_WORLD. */
struct ipcache_key {
	__u32 prefixlen; /* bits of addr that must match */
	__be32 addr;
};

struct ipcache_entry {
	__u32 identity;
	__u32 pad0;
};

/* endpoint_info.flags */
#define EP_F_INGRESS_ENFORCED (1 << 0) /* selected by an ingress policy */
#define EP_F_EGRESS_ENFORCED (1 << 1)  /* selected by an egress policy */

/* sl_endpoints: local pod IP → its identity and what is enforced. */
struct endpoint_info {
	__u32 identity;
	__u32 flags; /* EP_F_* */
};

/* policy_match.direction */
#define POLICY_INGRESS 0
#define POLICY_EGRESS 1

/*
 * sl_policy (LPM trie). The key bits, in order: endpoint, peer identity,
 * direction (72 bits always matched), then protocol (8) and destination port
 * (16) as far as the entry's prefix goes: 72 = any protocol, 80 = every port
 * of one protocol, 80 + n = a port block (endPort ranges become aligned
 * blocks). The datapath looks up the peer's identity and SLUICE_ID_ANY; a
 * deny from either wins, then an allow; nothing found = default deny.
 */
struct policy_match {
	__be32 endpoint; /* local pod IP */
	__u32 identity;	 /* peer identity (host order; always fully matched) */
	__u8 direction;	 /* POLICY_INGRESS / POLICY_EGRESS */
	__u8 proto;
	__be16 dport;
};

struct policy_key {
	__u32 prefixlen;
	struct policy_match m;
};

#define POLICY_PREFIX_FIXED 72
#define POLICY_PREFIX_FULL 96

struct policy_entry {
	__u32 rule_id; /* the agent's id of the rule that produced the entry */
	__u8 deny;     /* 1: a deny rule (CiliumNetworkPolicy ingressDeny/egressDeny) */
	__u8 pad0[3];
};

/*
 * sl_pol_ct: flows whose policy verdict was "allowed", keyed by the tuple on
 * the wire between the two endpoints (after Service translation), as the
 * initiator sent it. Replies match it with the tuple reversed.
 */
struct pol_ct_key {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad0[3];
};

struct pol_ct_entry {
	__u64 last_seen_ns;
	__u32 revision; /* sluice_config.policy_revision when judged */
	__u32 pad0;
};

/*
 * Socket-level LB (bpf/sock.c): which frontend a socket asked for, keyed by
 * the socket and the backend it was given, so getpeername() and the source
 * of UDP replies (recvmsg) can show the frontend again. Keyed by backend too
 * because one unconnected UDP socket may talk to several Services.
 */
struct sock_revnat_key {
	__u64 cookie;	/* bpf_get_socket_cookie() */
	__be32 address; /* backend */
	__be16 port;
	__u16 pad0;
};

struct sock_revnat_entry {
	__be32 address; /* frontend */
	__be16 port;
	__u16 pad0;
	__u32 rev_nat_id;
	__u32 backend_id;
};

#ifndef __cplusplus
_Static_assert(sizeof(struct sock_revnat_key) == 16, "sock_revnat_key layout");
_Static_assert(sizeof(struct sock_revnat_entry) == 16, "sock_revnat_entry layout");
_Static_assert(sizeof(struct lb_service_key) == 12, "lb_service_key layout");
_Static_assert(sizeof(struct lb_service) == 16, "lb_service layout");
_Static_assert(sizeof(struct lb_backend) == 8, "lb_backend layout");
_Static_assert(sizeof(struct lb_revnat) == 8, "lb_revnat layout");
_Static_assert(sizeof(struct ct_key) == 16, "ct_key layout");
_Static_assert(sizeof(struct ct_entry) == 48, "ct_entry layout");
_Static_assert(sizeof(struct node_addr_info) == 4, "node_addr_info layout");
_Static_assert(sizeof(struct src_range_key) == 12, "src_range_key layout");
_Static_assert(sizeof(struct sluice_frag_key) == 12, "sluice_frag_key layout");
_Static_assert(sizeof(struct sluice_frag_ports) == 4, "sluice_frag_ports layout");
_Static_assert(sizeof(struct sluice_netcfg) == 80, "sluice_netcfg layout");
_Static_assert(sizeof(struct sluice_traffic) == 16, "sluice_traffic layout");
_Static_assert(sizeof(struct sluice_event) == 72, "sluice_event layout");
_Static_assert(sizeof(struct sluice_config) == 8, "sluice_config layout");
_Static_assert(sizeof(struct maglev_key) == 8, "maglev_key layout");
_Static_assert(sizeof(struct maglev_chunk) == 2 * MAGLEV_CHUNK, "maglev_chunk layout");
_Static_assert(sizeof(struct affinity_key) == 16, "affinity_key layout");
_Static_assert(sizeof(struct affinity_entry) == 16, "affinity_entry layout");
_Static_assert(sizeof(struct ipcache_key) == 8, "ipcache_key layout");
_Static_assert(sizeof(struct ipcache_entry) == 8, "ipcache_entry layout");
_Static_assert(sizeof(struct endpoint_info) == 8, "endpoint_info layout");
_Static_assert(sizeof(struct policy_match) == 12, "policy_match layout");
_Static_assert(sizeof(struct policy_key) == 16, "policy_key layout");
_Static_assert(sizeof(struct policy_entry) == 8, "policy_entry layout");
_Static_assert(sizeof(struct pol_ct_key) == 16, "pol_ct_key layout");
_Static_assert(sizeof(struct pol_ct_entry) == 16, "pol_ct_entry layout");
#endif

#endif /* SLUICE_MAPS_H */
