/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Connection tracking for translated flows.
 *
 * A translated flow owns two entries in one LRU map: the forward entry, keyed
 * by the tuple the client sent (client → frontend) and naming the backend, and
 * the reply entry, keyed by the tuple the backend sends (backend → client) and
 * naming the frontend to restore. An entry older than its protocol's timeout
 * counts as absent. Timeouts are load-time constants the agent sets.
 */
#ifndef SLUICE_CONNTRACK_H
#define SLUICE_CONNTRACK_H

#include "maps.h"

/* Defaults follow kube-proxy's / the kernel's: set by the agent at load time. */
volatile const __u64 ct_timeout_tcp_ns = 21600ULL * 1000000000ULL;
volatile const __u64 ct_timeout_tcp_close_ns = 10ULL * 1000000000ULL;
volatile const __u64 ct_timeout_udp_ns = 60ULL * 1000000000ULL;

/* Refresh last_seen at most this often: a write per packet would bounce cache lines. */
#define CT_REFRESH_NS 1000000000ULL

static __always_inline void ct_key_from(struct ct_key *key, const struct packet *pkt, __u8 dir)
{
	key->saddr = pkt->saddr;
	key->daddr = pkt->daddr;
	key->sport = pkt->sport;
	key->dport = pkt->dport;
	key->proto = pkt->proto;
	key->dir = dir;
	key->pad0 = 0;
}

/*
 * Closed: reset, or a FIN in both directions. One FIN is only a half-close:
 * the other side may keep sending for hours (a client that shut down its
 * write side and waits for a streamed answer), so it keeps the long timeout.
 */
static __always_inline int ct_closed(const struct ct_entry *e)
{
	return (e->flags & CT_FLAG_SEEN_RST) ||
	       (e->flags & (CT_FLAG_SEEN_FIN | CT_FLAG_SEEN_FIN_PEER)) ==
		       (CT_FLAG_SEEN_FIN | CT_FLAG_SEEN_FIN_PEER);
}

static __always_inline __u64 ct_timeout(const struct ct_entry *e, __u8 proto)
{
	if (proto != IPPROTO_TCP)
		return ct_timeout_udp_ns;
	if (ct_closed(e))
		return ct_timeout_tcp_close_ns;
	return ct_timeout_tcp_ns;
}

/**
 * ct_peer_key() - the key of the other entry of the flow @e belongs to.
 * @e: an entry of direction @dir, for protocol @proto.
 *
 * A forward entry names the backend and the source the backend sees (peer),
 * a reply entry the frontend and the client (peer): enough to build the
 * other entry's key.
 */
static __always_inline void ct_peer_key(struct ct_key *peer, const struct ct_entry *e, __u8 proto,
					__u8 dir)
{
	peer->proto = proto;
	peer->dir = dir == CT_DIR_FORWARD ? CT_DIR_REPLY : CT_DIR_FORWARD;
	peer->pad0 = 0;
	if (dir == CT_DIR_FORWARD) {
		peer->saddr = e->nat_address;
		peer->sport = e->nat_port;
		peer->daddr = e->peer_address;
		peer->dport = e->peer_port;
	} else {
		peer->saddr = e->peer_address;
		peer->sport = e->peer_port;
		peer->daddr = e->nat_address;
		peer->dport = e->nat_port;
	}
}

/**
 * ct_mark_peer_closing() - tell the other entry of a flow what this side sent
 * (@seen: CT_FLAG_SEEN_RST and/or CT_FLAG_SEEN_FIN_PEER).
 * @e: the entry @pkt hit, in direction @dir.
 */
static __always_inline void ct_mark_peer_closing(const struct packet *pkt,
						 const struct ct_entry *e, __u8 dir, __u8 seen)
{
	struct ct_key peer;
	struct ct_entry *p;

	ct_peer_key(&peer, e, pkt->proto, dir);
	p = bpf_map_lookup_elem(&sl_ct, &peer);
	if (p)
		p->flags |= seen;
}

/**
 * ct_lookup() - find the live entry for @pkt in direction @dir and refresh it.
 *
 * Updates the close flags from the packet's TCP flags (on both entries when
 * the client closes). A SYN, or a SYN-ACK in the reply direction, that hits a
 * closed flow's entry belongs to a new connection reusing the tuple: it is
 * reported as a miss, so the flow gets a fresh backend or passes untouched.
 */
static __always_inline struct ct_entry *ct_lookup(const struct packet *pkt, __u8 dir)
{
	struct ct_key key;
	struct ct_entry *e;
	__u64 now;

	ct_key_from(&key, pkt, dir);
	e = bpf_map_lookup_elem(&sl_ct, &key);
	if (!e)
		return NULL;
	now = bpf_ktime_get_ns();
	if (now - e->last_seen_ns > ct_timeout(e, pkt->proto))
		return NULL;
	if (pkt->proto == IPPROTO_TCP) {
		__u8 f = pkt->tcp_flags;
		int closing = ct_closed(e);

		/*
		 * A closed flow's tuple being reused: a new SYN from the client,
		 * or the SYN-ACK of a new connection the client opened straight
		 * to the backend from the same port. Neither belongs to the old
		 * flow; translating the SYN-ACK would break the new connection.
		 */
		if (closing && ((dir == CT_DIR_FORWARD && (f & (TCPF_SYN | TCPF_ACK)) == TCPF_SYN) ||
				(dir == CT_DIR_REPLY &&
				 (f & (TCPF_SYN | TCPF_ACK)) == (TCPF_SYN | TCPF_ACK)))) {
			/* Gone for good: the new connection's later packets must
			 * not find it either, and its other entry (under SNAT
			 * the claim on a masquerade port) goes with it. */
			struct ct_key peer;

			ct_peer_key(&peer, e, pkt->proto, dir);
			bpf_map_delete_elem(&sl_ct, &peer);
			bpf_map_delete_elem(&sl_ct, &key);
			return NULL;
		}
		if (f & (TCPF_FIN | TCPF_RST)) {
			__u8 rst = f & TCPF_RST ? CT_FLAG_SEEN_RST : 0;

			e->flags |= rst | (f & TCPF_FIN ? CT_FLAG_SEEN_FIN : 0);
			/* The other entry learns it too, so both agree when the
			 * flow is closed and a later SYN from the client finds it. */
			ct_mark_peer_closing(pkt, e, dir, rst | (f & TCPF_FIN ? CT_FLAG_SEEN_FIN_PEER : 0));
		}
	}
	if (now - e->last_seen_ns > CT_REFRESH_NS)
		e->last_seen_ns = now;
	return e;
}

/*
 * Masquerade source ports: 1024-32767, below the kernel's default
 * ephemeral range (32768-60999). The node's own connections to a backend
 * take their source port from that range, and this datapath does not see
 * them (no program on node devices' egress): a masquerade port there could
 * equal one of theirs, and the backend's replies to the node would be
 * taken for the masqueraded flow's. A node whose ip_local_port_range
 * reaches below 32768 loses that guarantee. CT_SNAT_TRIES hash-spread
 * ports are tried before the flow fails (ct_insert_failed).
 */
#define CT_SNAT_PORT_MIN 1024
#define CT_SNAT_PORT_SPAN (32767 - 1024 + 1)
#define CT_SNAT_TRIES 8

/**
 * ct_snat_claim() - claim the reply tuple @rev (its dport is the
 * masquerade port) for the new flow @e.
 *
 * A tuple held by a dead flow is taken over: its reply entry timed out,
 * and its forward entry (built from it) is gone or timed out too. A reply
 * entry alone may look idle while its flow is alive (a client sending
 * into a backend that never answers refreshes only the forward entry),
 * hence both. Expired entries otherwise stay until the LRU evicts them,
 * and would keep the port taken.
 *
 * Return: 1 when @rev is now @e's.
 */
static __always_inline int ct_snat_claim(struct ct_key *rev, const struct ct_entry *e, __u64 now)
{
	struct ct_entry *old, *fwd;
	struct ct_key fwd_key;

	if (!bpf_map_update_elem(&sl_ct, rev, e, BPF_NOEXIST))
		return 1;
	old = bpf_map_lookup_elem(&sl_ct, rev);
	if (!old || now - old->last_seen_ns <= ct_timeout(old, rev->proto))
		return 0;
	ct_peer_key(&fwd_key, old, rev->proto, CT_DIR_REPLY);
	fwd = bpf_map_lookup_elem(&sl_ct, &fwd_key);
	if (fwd && now - fwd->last_seen_ns <= ct_timeout(fwd, rev->proto))
		return 0;
	if (fwd)
		bpf_map_delete_elem(&sl_ct, &fwd_key);
	return !bpf_map_update_elem(&sl_ct, rev, e, BPF_ANY);
}

/**
 * ct_create() - record a new translated flow (both directions).
 * @pkt: the first packet, before translation.
 * @flags: CT_FLAG_*; with CT_FLAG_SNAT the flow is masqueraded to
 *         @snat_addr and a source port is claimed for it.
 * @ifindex: where replies are redirected to (CT_FLAG_REDIRECT), else 0.
 * @hash: the flow's hash, spreads the masquerade ports tried.
 * @snat_port: gets the masquerade source port (CT_FLAG_SNAT).
 *
 * The reply entry is written first: under SNAT, inserting it with
 * BPF_NOEXIST is what claims (node address, port) towards that backend, so
 * two clients using the same source port never share a reply tuple.
 *
 * Return: 0, or negative when the map refused the insert or no port was free.
 */
static __always_inline int ct_create(const struct packet *pkt, const struct lb_backend *backend,
				     __u32 backend_id, __u32 rev_nat_id, __u8 flags, __u32 ifindex,
				     __be32 snat_addr, __u32 hash, __be16 *snat_port)
{
	struct ct_key fwd, rev;
	struct ct_entry e = {};
	__u64 now = bpf_ktime_get_ns();
	__be16 port = 0;
	int i, claimed = 0;

	e.created_ns = now;
	e.last_seen_ns = now;
	e.rev_nat_id = rev_nat_id;
	e.backend_id = backend_id;
	e.flags = flags;
	e.ifindex = ifindex;

	rev.saddr = backend->address;
	rev.sport = backend->port;
	rev.proto = pkt->proto;
	rev.dir = CT_DIR_REPLY;
	rev.pad0 = 0;
	e.nat_address = pkt->daddr;
	e.nat_port = pkt->dport;
	e.peer_address = pkt->saddr;
	e.peer_port = pkt->sport;
	if (flags & CT_FLAG_SNAT) {
		rev.daddr = snat_addr;
#pragma unroll
		for (i = 0; i < CT_SNAT_TRIES; i++) {
			port = bpf_htons(CT_SNAT_PORT_MIN + (hash + i * 7919) % CT_SNAT_PORT_SPAN);
			rev.dport = port;
			if (ct_snat_claim(&rev, &e, now)) {
				claimed = 1;
				break;
			}
		}
		if (!claimed)
			return -1;
		*snat_port = port;
	} else {
		rev.daddr = pkt->saddr;
		rev.dport = pkt->sport;
		if (bpf_map_update_elem(&sl_ct, &rev, &e, BPF_ANY))
			return -1;
	}

	ct_key_from(&fwd, pkt, CT_DIR_FORWARD);
	e.nat_address = backend->address;
	e.nat_port = backend->port;
	e.peer_address = rev.daddr;
	e.peer_port = rev.dport;
	if (bpf_map_update_elem(&sl_ct, &fwd, &e, BPF_ANY)) {
		bpf_map_delete_elem(&sl_ct, &rev);
		return -1;
	}
	return 0;
}

#endif /* SLUICE_CONNTRACK_H */
