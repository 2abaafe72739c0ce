/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Address and port rewriting with incremental checksum updates.
 *
 * Checksums are updated with bpf_l3/l4_csum_replace, never recomputed: the
 * helpers know the skb's checksum state. For CHECKSUM_PARTIAL packets (a local
 * socket with tx offload) the L4 field holds only the pseudo-header sum, so
 * the helpers change it for addresses (BPF_F_PSEUDO_HDR) and leave it alone for
 * ports; for fully checksummed packets they update the full sum. That is what
 * makes translation correct with offload on and off.
 */
#ifndef SLUICE_NAT_H
#define SLUICE_NAT_H

#include "common.h"
#include "crc32c.h"

static __always_inline __u32 l4_csum_off(const struct packet *pkt)
{
	if (pkt->proto == IPPROTO_TCP)
		return pkt->l4_off + offsetof(struct tcphdr, check);
	return pkt->l4_off + offsetof(struct udphdr, check);
}

/* UDP checksum 0 means "none": BPF_F_MARK_MANGLED_0 keeps it that way. */
static __always_inline __u64 l4_csum_flags(const struct packet *pkt)
{
	return pkt->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
}

/**
 * nat_rewrite() - replace one endpoint (source or destination) of @pkt.
 * @is_dst: rewrite the destination (DNAT) when true, the source otherwise.
 *
 * SCTP's CRC32c covers no IP pseudo-header, so an address rewrite needs no
 * L4 checksum change; a port rewrite updates the CRC over the whole SCTP
 * packet (crc32c.h: O(length), up to SCTP_CRC_MAX_LEN bytes). It fails, and
 * the caller drops with NAT_FAILED, for longer SCTP packets and for the
 * first fragment of a fragmented one (the CRC covers bytes after it, whose
 * number it does not know). SCTP does its own path MTU discovery, so both
 * are rare.
 *
 * A later IP fragment (pkt_is_later_frag) has no L4 header: only its
 * addresses and the IP header checksum change. Its ports (from the first
 * fragment, lib/frag.h) only exist in the first fragment, where they are
 * rewritten, together with the L4 checksum of the whole datagram (which
 * also covers the later fragments' bytes, unchanged).
 *
 * Return: 0 on success, negative if a helper failed (the caller drops).
 */
static __always_inline int nat_rewrite(struct __sk_buff *skb, struct packet *pkt, int is_dst,
				       __be32 new_addr, __be16 new_port)
{
	__be32 old_addr = is_dst ? pkt->daddr : pkt->saddr;
	__be16 old_port = is_dst ? pkt->dport : pkt->sport;
	__u32 addr_off = is_dst ? IP_DADDR_OFF : IP_SADDR_OFF;
	/* source and dest ports sit at the same offsets in TCP and UDP */
	__u32 port_off = pkt->l4_off + (is_dst ? 2 : 0);
	__u32 csum_off = l4_csum_off(pkt);
	__u64 flags = l4_csum_flags(pkt);
	int l4 = !pkt_is_later_frag(pkt);
	int ret;

	if (l4 && pkt->proto == IPPROTO_SCTP && old_port != new_port &&
	    (pkt->frag & PKT_FRAG_FIRST))
		return -1;
	if (old_addr != new_addr) {
		if (l4 && pkt->proto != IPPROTO_SCTP) {
			ret = bpf_l4_csum_replace(skb, csum_off, old_addr, new_addr,
						  flags | BPF_F_PSEUDO_HDR | sizeof(new_addr));
			if (ret)
				return ret;
		}
		ret = bpf_l3_csum_replace(skb, IP_CSUM_OFF, old_addr, new_addr, sizeof(new_addr));
		if (ret)
			return ret;
		ret = bpf_skb_store_bytes(skb, addr_off, &new_addr, sizeof(new_addr), 0);
		if (ret)
			return ret;
	}
	if (l4 && old_port != new_port) {
		if (pkt->proto == IPPROTO_SCTP)
			ret = sctp_crc_port_update(skb, pkt->l4_off,
						   (__u32)pkt->ip_tot_len - pkt->ip_hlen,
						   is_dst ? 2 : 0, old_port, new_port);
		else
			ret = bpf_l4_csum_replace(skb, csum_off, old_port, new_port,
						  flags | sizeof(new_port));
		if (ret)
			return ret;
		ret = bpf_skb_store_bytes(skb, port_off, &new_port, sizeof(new_port), 0);
		if (ret)
			return ret;
	}
	if (is_dst) {
		pkt->daddr = new_addr;
		pkt->dport = new_port;
	} else {
		pkt->saddr = new_addr;
		pkt->sport = new_port;
	}
	return 0;
}

#endif /* SLUICE_NAT_H */
