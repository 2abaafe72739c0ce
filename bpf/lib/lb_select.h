/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Frontend lookup and backend selection: the one place that decides which
 * backend a new connection gets, used per packet by the tc programs (lb.h)
 * and per connect()/sendmsg() by the socket hooks (sock.h), so both paths
 * balance identically.
 */
#ifndef SLUICE_LB_SELECT_H
#define SLUICE_LB_SELECT_H

#include "maps.h"

static __always_inline struct lb_service *lb_lookup_scope(__be32 addr, __be16 port, __u8 proto,
							  __u8 scope)
{
	struct lb_service_key key = {
		.address = addr,
		.port = port,
		.proto = proto,
		.scope = scope,
	};

	return bpf_map_lookup_elem(&sl_services, &key);
}

static __always_inline struct lb_service *lb_lookup(__be32 addr, __be16 port, __u8 proto)
{
	return lb_lookup_scope(addr, port, proto, LB_SCOPE_ALL);
}

/* Node address, SNAT address, cluster CIDRs: set by the agent at load time. */
volatile const struct sluice_netcfg netcfg = {};

/* The node's addresses (written by the agent): host sources, NodePort addresses. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __be32);
	__type(value, struct node_addr_info);
	__uint(max_entries, SLUICE_NODE_ADDRS_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_node_addrs SEC(".maps");

/* loadBalancerSourceRanges per LB IP frontend (written by the agent). */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct src_range_key);
	__type(value, __u8);
	__uint(max_entries, SLUICE_SRC_RANGES_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_src_ranges SEC(".maps");

/* Who a client is, as kube-proxy's local-traffic detector and eTP see it. */
enum lb_src_class {
	LB_SRC_EXTERNAL = 0, /* neither a pod nor the node */
	LB_SRC_POD,	     /* inside a cluster CIDR */
	LB_SRC_HOST,	     /* one of the node's addresses */
};

static __always_inline int lb_src_class(__be32 saddr)
{
	int i;

#pragma unroll
	for (i = 0; i < SLUICE_MAX_CLUSTER_CIDRS; i++) {
		if (i >= netcfg.cluster_cidr_count)
			break;
		if ((saddr & netcfg.cluster_cidr_mask[i]) == netcfg.cluster_cidr_addr[i])
			return LB_SRC_POD;
	}
	if (bpf_map_lookup_elem(&sl_node_addrs, &saddr))
		return LB_SRC_HOST;
	return LB_SRC_EXTERNAL;
}

/**
 * lb_lookup_frontend() - the frontend a packet or socket addresses: the exact
 * (address, port, protocol) first, else the NodePort on that port when the
 * address is one of the node's NodePort addresses (never 127.0.0.0/8, as
 * kube-proxy's nftables mode).
 * @frontend_addr: gets the address the entry is keyed by (0 for NodePort).
 */
static __always_inline struct lb_service *lb_lookup_frontend(__be32 daddr, __be16 dport,
							     __u8 proto, __be32 *frontend_addr)
{
	struct lb_service *svc = lb_lookup(daddr, dport, proto);
	struct node_addr_info *na;

	*frontend_addr = daddr;
	if (svc || daddr == 0)
		return svc;
	if ((bpf_ntohl(daddr) >> 24) == 127)
		return NULL;
	na = bpf_map_lookup_elem(&sl_node_addrs, &daddr);
	if (!na || !(na->flags & NODE_ADDR_F_NODEPORT))
		return NULL;
	svc = lb_lookup(0, dport, proto);
	if (!svc || !(svc->flags & LB_FLAG_NODEPORT))
		return NULL;
	*frontend_addr = 0;
	return svc;
}

/* loadBalancerSourceRanges: may @saddr use frontend @svc (scope All master)? */
static __always_inline int lb_source_allowed(const struct lb_service *svc, __be32 saddr)
{
	struct src_range_key k = {
		.prefixlen = 64,
		.rev_nat_id = svc->rev_nat_id,
		.addr = saddr,
	};

	if (!(svc->flags & LB_FLAG_SOURCE_RANGES))
		return 1;
	return bpf_map_lookup_elem(&sl_src_ranges, &k) != NULL;
}

/* Session affinity: the backend a client last got from a frontend. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct affinity_key);
	__type(value, struct affinity_entry);
	__uint(max_entries, SLUICE_AFFINITY_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_affinity SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct maglev_key);
	__type(value, struct maglev_chunk);
	__uint(max_entries, SLUICE_MAGLEV_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_maglev SEC(".maps");

/* Maglev table size (prime), set by the agent at load time. */
volatile const __u32 maglev_table_size = 16381;

/* lb_flow_hash() - mixes two words (murmur3's finalizer): spreads flows
 * over the Maglev table; the same flow hashes the same on every node. */
static __always_inline __u32 lb_flow_hash(__u64 a, __u64 b)
{
	__u64 h = a ^ (b * 0x9e3779b97f4a7c15ULL);

	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ULL;
	h ^= h >> 33;
	return (__u32)h;
}

/**
 * lb_maglev_slot() - the slot the frontend's Maglev table gives @hash, or 0
 * when the table is missing or names a slot the master no longer counts
 * (mid-update: the caller falls back to a random slot).
 */
static __always_inline __u16 lb_maglev_slot(__u32 rev_nat_id, __u16 count, __u32 hash)
{
	__u32 m = maglev_table_size ? maglev_table_size : 1;
	__u32 idx = hash % m;
	struct maglev_key k = { .rev_nat_id = rev_nat_id, .chunk = idx / MAGLEV_CHUNK };
	struct maglev_chunk *c = bpf_map_lookup_elem(&sl_maglev, &k);
	__u16 slot;

	if (!c)
		return 0;
	slot = c->slots[idx & (MAGLEV_CHUNK - 1)];
	return slot >= 1 && slot <= count ? slot : 0;
}

/* Slots are sorted by backend address (ip, port): at most this many steps
 * of a binary search find one among 65535. */
#define LB_SEARCH_STEPS 17

static __always_inline __u64 backend_order(const struct lb_backend *b)
{
	return ((__u64)bpf_ntohl(b->address) << 16) | bpf_ntohs(b->port);
}

/**
 * lb_find_slot() - the slot that now holds @want (a backend of this
 * frontend before a change moved it), or 0 when it left the frontend.
 */
static __always_inline __u16 lb_find_slot(struct lb_service_key *key, __u16 count,
					  const struct lb_backend *want)
{
	__u64 target = backend_order(want);
	__u32 lo = 1, hi = count;
	int i;

	for (i = 0; i < LB_SEARCH_STEPS; i++) {
		struct lb_service *slot;
		struct lb_backend *b;
		__u32 mid;
		__u64 at;

		if (lo > hi)
			return 0;
		mid = lo + (hi - lo) / 2;
		key->slot = mid;
		slot = bpf_map_lookup_elem(&sl_services, key);
		if (!slot)
			return 0;
		b = bpf_map_lookup_elem(&sl_backends, &slot->backend_id);
		if (!b)
			return 0;
		at = backend_order(b);
		if (at == target)
			return mid;
		if (at < target)
			lo = mid + 1;
		else
			hi = mid - 1;
	}
	return 0;
}

/**
 * lb_affinity_backend() - the backend @aff names, if it is still one of the
 * frontend's (at its slot, or moved by a change to another slot).
 */
static __always_inline struct lb_backend *lb_affinity_backend(struct lb_service_key *key,
							      __u16 count,
							      struct affinity_entry *aff)
{
	struct lb_service *slot;
	struct lb_backend *b;

	b = bpf_map_lookup_elem(&sl_backends, &aff->backend_id);
	if (!b)
		return NULL;
	if (aff->slot >= 1 && aff->slot <= count) {
		key->slot = aff->slot;
		slot = bpf_map_lookup_elem(&sl_services, key);
		if (slot && slot->backend_id == aff->backend_id)
			return b;
	}
	aff->slot = lb_find_slot(key, count, b);
	return aff->slot ? b : NULL;
}

/**
 * lb_select() - pick a backend of frontend @svc for a new flow of @client.
 * @scope: the key scope @svc was found under (LB_SCOPE_*).
 * @client: the client's IPv4 address (tc) or AFFINITY_CLIENT_NETNS | netns
 *          cookie (socket hooks): who session affinity sticks to.
 * @hash: the flow's hash (lb_flow_hash), for Maglev frontends.
 *
 * With session affinity (LB_FLAG_AFFINITY; the master's backend_id holds
 * the timeout in seconds), a client that got a backend less than the
 * timeout ago gets it again while it is still one of the frontend's; the
 * timeout restarts with every new flow, as kube-proxy's `recent` match
 * does. Otherwise a Maglev frontend (LB_FLAG_MAGLEV) takes the slot its
 * table gives @hash, and any other a random one.
 *
 * The reconciler writes slots before the master that counts them and shrinks
 * the master before deleting slots, so slot 1..count always exist; a miss here
 * means the maps are inconsistent and the packet is dropped, not misrouted.
 */
static __always_inline struct lb_backend *lb_select(const struct lb_service *svc, __be32 addr,
						    __be16 port, __u8 proto, __u8 scope,
						    __u64 client, __u32 hash, __u32 *backend_id)
{
	struct lb_service_key key = {
		.address = addr,
		.port = port,
		.proto = proto,
		.scope = scope,
	};
	struct affinity_key ak = { .client = client, .rev_nat_id = svc->rev_nat_id };
	struct affinity_entry fresh = {}, *aff = NULL;
	struct lb_service *slot;
	struct lb_backend *b;
	__u16 count = svc->count;
	__u64 now = 0;

	if (svc->flags & LB_FLAG_AFFINITY) {
		now = bpf_ktime_get_ns();
		aff = bpf_map_lookup_elem(&sl_affinity, &ak);
		if (aff && now - aff->last_used_ns <= (__u64)svc->backend_id * 1000000000ULL) {
			b = lb_affinity_backend(&key, count, aff);
			if (b) {
				aff->last_used_ns = now;
				*backend_id = aff->backend_id;
				return b;
			}
		}
	}
	key.slot = 0;
	if (svc->flags & LB_FLAG_MAGLEV)
		key.slot = lb_maglev_slot(svc->rev_nat_id, count, hash);
	if (!key.slot)
		key.slot = (bpf_get_prandom_u32() % count) + 1;
	slot = bpf_map_lookup_elem(&sl_services, &key);
	if (!slot)
		return NULL;
	*backend_id = slot->backend_id;
	b = bpf_map_lookup_elem(&sl_backends, backend_id);
	if (b && (svc->flags & LB_FLAG_AFFINITY)) {
		fresh.last_used_ns = now;
		fresh.backend_id = *backend_id;
		fresh.slot = key.slot;
		/* LRU: never fails for want of room; if it fails anyway the flow
		 * still gets its backend, only not remembered. */
		bpf_map_update_elem(&sl_affinity, &ak, &fresh, BPF_ANY);
	}
	return b;
}

#endif /* SLUICE_LB_SELECT_H */
