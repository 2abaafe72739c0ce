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

static __always_inline __u64 ct_timeout(const struct ct_entry *e, __u8 proto)
{
	if (proto != IPPROTO_TCP)
		return ct_timeout_udp_ns;
	if (e->flags & (CT_FLAG_SEEN_FIN | CT_FLAG_SEEN_RST))
		return ct_timeout_tcp_close_ns;
	return ct_timeout_tcp_ns;
}

/**
 * ct_lookup() - find the live entry for @pkt in direction @dir and refresh it.
 *
 * Updates the close flags from the packet's TCP flags. A TCP SYN (without ACK)
 * that hits a closed flow's entry is a new connection reusing the tuple: it is
 * reported as a miss so the flow gets a fresh backend.
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

		if ((f & (TCPF_SYN | TCPF_ACK)) == TCPF_SYN && dir == CT_DIR_FORWARD &&
		    (e->flags & (CT_FLAG_SEEN_FIN | CT_FLAG_SEEN_RST)))
			return NULL;
		if (f & TCPF_FIN)
			e->flags |= CT_FLAG_SEEN_FIN;
		if (f & TCPF_RST)
			e->flags |= CT_FLAG_SEEN_RST;
	}
	if (now - e->last_seen_ns > CT_REFRESH_NS)
		e->last_seen_ns = now;
	return e;
}

/**
 * ct_create() - record a new translated flow (both directions).
 * @pkt: the first packet, before translation.
 * @frontend_addr/@frontend_port: what the client addressed (restored on replies).
 * @ifindex: the device a NodePort request arrived on (0 for other flows).
 *
 * Return: 0, or negative when the map refused the insert.
 */
static __always_inline int ct_create(const struct packet *pkt, __be32 frontend_addr,
				     __be16 frontend_port, const struct lb_backend *backend,
				     __u32 backend_id, __u32 rev_nat_id, __u8 flags, __u32 ifindex)
{
	struct ct_key fwd, rev;
	struct ct_entry e = {};
	__u64 now = bpf_ktime_get_ns();

	e.created_ns = now;
	e.last_seen_ns = now;
	e.rev_nat_id = rev_nat_id;
	e.backend_id = backend_id;
	e.flags = flags;
	e.ifindex = ifindex;

	ct_key_from(&fwd, pkt, CT_DIR_FORWARD);
	e.nat_address = backend->address;
	e.nat_port = backend->port;
	if (bpf_map_update_elem(&sl_ct, &fwd, &e, BPF_ANY))
		return -1;

	rev.saddr = backend->address;
	rev.daddr = pkt->saddr;
	rev.sport = backend->port;
	rev.dport = pkt->sport;
	rev.proto = pkt->proto;
	rev.dir = CT_DIR_REPLY;
	rev.pad0 = 0;
	e.nat_address = frontend_addr;
	e.nat_port = frontend_port;
	if (bpf_map_update_elem(&sl_ct, &rev, &e, BPF_ANY)) {
		bpf_map_delete_elem(&sl_ct, &fwd);
		return -1;
	}
	return 0;
}

#endif /* SLUICE_CONNTRACK_H */
