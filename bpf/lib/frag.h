/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * IPv4 fragments through Service translation and policy (as Cilium's IPv4
 * fragment map). Only the first fragment of a datagram carries the L4
 * header; it is parsed as usual and its ports are recorded in sl_frag under
 * (saddr, daddr, IP id, protocol). A later fragment of the same datagram
 * gets those ports from there, so it finds the same conntrack entry, the
 * same frontend and the same policy verdict as the first one, and is
 * translated by address only (nat.h leaves its bytes past the IP header
 * alone: they are payload). One lookup or update per fragment: O(1).
 *
 * The key uses the addresses as the fragment arrives at this program,
 * before any translation by it, which all fragments of a datagram share.
 */
#ifndef SLUICE_LIB_FRAG_H
#define SLUICE_LIB_FRAG_H

#include "maps.h"
#include "metrics.h"

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct sluice_frag_key);
	__type(value, struct sluice_frag_ports);
	__uint(max_entries, SLUICE_FRAG_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_frag SEC(".maps");

static __always_inline void frag_key_from(struct sluice_frag_key *k, const struct packet *pkt)
{
	k->saddr = pkt->saddr;
	k->daddr = pkt->daddr;
	k->id = pkt->ip_id;
	k->proto = pkt->proto;
	k->pad0 = 0;
}

/**
 * frag_parse() - parse_packet(), plus the ports of later fragments.
 *
 * Records the ports of a first fragment; gives a later fragment the ports
 * of its first one and returns PARSE_OK for it (pkt->frag says it is one).
 * A later fragment whose first fragment was not seen (reordered before
 * it, or its entry evicted) is returned as PARSE_NO_PORTS, passed
 * untouched and counted (METRIC_FRAG_NO_FIRST). That is the least bad
 * choice: without its ports no Service or policy decision can be made,
 * and alone it is harmless: the receiver cannot reassemble the datagram
 * without the first fragment, which carries the headers and is judged
 * and translated on its own. Dropping it instead would break datagrams
 * whose fragments arrive out of order even when no Service is involved.
 */
static __always_inline int frag_parse(struct __sk_buff *skb, struct packet *pkt)
{
	struct sluice_frag_key key;
	struct sluice_frag_ports ports, *p;
	int ret = parse_packet(skb, pkt);

	if (ret == PARSE_OK && (pkt->frag & PKT_FRAG_FIRST)) {
		frag_key_from(&key, pkt);
		ports.sport = pkt->sport;
		ports.dport = pkt->dport;
		/* A failed update only costs the later fragments their
		 * translation, as an eviction would. */
		bpf_map_update_elem(&sl_frag, &key, &ports, BPF_ANY);
		return PARSE_OK;
	}
	/*
	 * A first fragment that does not hold the whole L4 header (RFC 1858's
	 * tiny fragment): passing it would let the reassembled datagram, whose
	 * later fragments would find no ports either, escape Service
	 * translation and NetworkPolicy. No stack sends one: dropped.
	 */
	if (ret == PARSE_INVALID && (pkt->frag & PKT_FRAG_FIRST))
		return PARSE_TINY_FRAG;
	if (ret != PARSE_LATER_FRAG)
		return ret;
	frag_key_from(&key, pkt);
	p = bpf_map_lookup_elem(&sl_frag, &key);
	if (!p) {
		metric_inc(METRIC_FRAG_NO_FIRST);
		return PARSE_NO_PORTS;
	}
	pkt->sport = p->sport;
	pkt->dport = p->dport;
	return PARSE_OK;
}

/**
 * frag_parse_verdict() - what a program does with a packet frag_parse()
 * did not return PARSE_OK for: tiny first fragments are dropped (counted
 * as invalid), everything else passes untouched (counted as forwarded).
 */
static __always_inline int frag_parse_verdict(struct __sk_buff *skb, int parsed, __u8 point)
{
	if (parsed == PARSE_TINY_FRAG) {
		traffic_count(SLUICE_REASON_INVALID_PACKET, point, skb->len);
		return TC_ACT_SHOT;
	}
	traffic_count(SLUICE_REASON_NONE, point, skb->len);
	return TC_ACT_OK;
}

#endif /* SLUICE_LIB_FRAG_H */
