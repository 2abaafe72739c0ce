/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Refusing connections to a Service that has no usable endpoint, the way
 * kube-proxy's REJECT does: a TCP RST for TCP, ICMP port unreachable for UDP.
 * The packet is turned into the answer in place and sent back out of the
 * interface it came in on, so the client fails at once instead of timing out.
 */
#ifndef SLUICE_REJECT_H
#define SLUICE_REJECT_H

#include "maps.h"
#include "metrics.h"

#define REJECT_TTL 64
#define TCP_MAX_OPTLEN 40

static __always_inline __u16 csum_fold_neg(__s64 sum)
{
	__u32 c = (__u32)sum;

	c = (c & 0xffff) + (c >> 16);
	c = (c & 0xffff) + (c >> 16);
	return (__u16)~c;
}

/* Swap the MAC addresses and send the frame back where it came from. */
static __always_inline int reflect(struct __sk_buff *skb)
{
	__u8 macs[2 * ETH_ALEN];
	__u8 swapped[2 * ETH_ALEN];

	if (bpf_skb_load_bytes(skb, 0, macs, sizeof(macs)))
		return TC_ACT_SHOT;
	__builtin_memcpy(swapped, macs + ETH_ALEN, ETH_ALEN);
	__builtin_memcpy(swapped + ETH_ALEN, macs, ETH_ALEN);
	if (bpf_skb_store_bytes(skb, 0, swapped, sizeof(swapped), 0))
		return TC_ACT_SHOT;
	return bpf_redirect(skb->ifindex, 0);
}

/* Swap the IP addresses (the header checksum does not change) and reset the TTL. */
static __always_inline int ip_reverse(struct __sk_buff *skb, const struct packet *pkt,
				      __u16 new_tot_len)
{
	__be16 old_tot = bpf_htons(pkt->ip_tot_len);
	__be16 new_tot = bpf_htons(new_tot_len);
	__be16 old_ttl_proto, new_ttl_proto;
	__u8 ttl_proto[2];

	if (bpf_skb_load_bytes(skb, IP_OFF + offsetof(struct iphdr, ttl), ttl_proto, 2))
		return -1;
	__builtin_memcpy(&old_ttl_proto, ttl_proto, 2);
	ttl_proto[0] = REJECT_TTL;
	__builtin_memcpy(&new_ttl_proto, ttl_proto, 2);

	if (bpf_skb_store_bytes(skb, IP_SADDR_OFF, &pkt->daddr, 4, 0) ||
	    bpf_skb_store_bytes(skb, IP_DADDR_OFF, &pkt->saddr, 4, 0))
		return -1;
	if (bpf_l3_csum_replace(skb, IP_CSUM_OFF, old_tot, new_tot, 2) ||
	    bpf_skb_store_bytes(skb, IP_OFF + offsetof(struct iphdr, tot_len), &new_tot, 2, 0))
		return -1;
	if (bpf_l3_csum_replace(skb, IP_CSUM_OFF, old_ttl_proto, new_ttl_proto, 2) ||
	    bpf_skb_store_bytes(skb, IP_OFF + offsetof(struct iphdr, ttl), ttl_proto, 2, 0))
		return -1;
	return 0;
}

/**
 * reject_tcp() - answer a TCP segment with a RST (RFC 9293 §3.10.7.1).
 *
 * The checksum is updated incrementally (header diff, options removed, new
 * length in the pseudo-header), never recomputed, so it is right whether the
 * segment carried a full checksum or a CHECKSUM_PARTIAL one. Segments with a
 * payload or IP options are dropped instead: the client retransmits the SYN,
 * which is answered.
 */
static __always_inline int reject_tcp(struct __sk_buff *skb, struct packet *pkt)
{
	struct tcphdr old, rst;
	__u8 opts[TCP_MAX_OPTLEN] = {};
	__u32 csum_off = pkt->l4_off + offsetof(struct tcphdr, check);
	__u32 doff, optlen, payload, seg_len;
	__be16 old_len, new_len;
	__s64 diff;

	if (pkt->ip_hlen != sizeof(struct iphdr) || (pkt->tcp_flags & TCPF_RST))
		return TC_ACT_SHOT;
	if (bpf_skb_load_bytes(skb, ETH_HLEN + sizeof(struct iphdr), &old, sizeof(old)))
		return TC_ACT_SHOT;
	doff = old.doff * 4;
	if (doff < sizeof(struct tcphdr) || doff > sizeof(struct tcphdr) + TCP_MAX_OPTLEN)
		return TC_ACT_SHOT;
	optlen = doff - sizeof(struct tcphdr);
	if (pkt->ip_tot_len < sizeof(struct iphdr) + doff)
		return TC_ACT_SHOT;
	payload = pkt->ip_tot_len - sizeof(struct iphdr) - doff;
	if (payload)
		return TC_ACT_SHOT;

	__builtin_memset(&rst, 0, sizeof(rst));
	rst.source = old.dest;
	rst.dest = old.source;
	rst.doff = 5;
	rst.rst = 1;
	rst.check = old.check;
	if (old.ack) {
		rst.seq = old.ack_seq;
	} else {
		seg_len = payload + old.syn + old.fin;
		rst.ack_seq = bpf_htonl(bpf_ntohl(old.seq) + seg_len);
		rst.ack = 1;
	}

	diff = bpf_csum_diff((__be32 *)&old, sizeof(old), (__be32 *)&rst, sizeof(rst), 0);
	optlen &= 0x3c; /* a multiple of 4, for the verifier and for csum_diff */
	if (optlen > TCP_MAX_OPTLEN)
		return TC_ACT_SHOT;
	if (optlen) {
		if (bpf_skb_load_bytes(skb, ETH_HLEN + sizeof(struct iphdr) + sizeof(struct tcphdr),
				       opts, optlen))
			return TC_ACT_SHOT;
		diff = bpf_csum_diff((__be32 *)opts, optlen, NULL, 0, (__u32)diff);
	}
	old_len = bpf_htons(doff + payload);
	new_len = bpf_htons(sizeof(struct tcphdr));

	if (bpf_skb_store_bytes(skb, ETH_HLEN + sizeof(struct iphdr), &rst, sizeof(rst), 0))
		return TC_ACT_SHOT;
	if (bpf_skb_change_tail(skb, ETH_HLEN + sizeof(struct iphdr) + sizeof(struct tcphdr), 0))
		return TC_ACT_SHOT;
	if (bpf_l4_csum_replace(skb, csum_off, 0, (__u32)diff, 0))
		return TC_ACT_SHOT;
	if (old_len != new_len &&
	    bpf_l4_csum_replace(skb, csum_off, old_len, new_len, BPF_F_PSEUDO_HDR | 2))
		return TC_ACT_SHOT;
	if (ip_reverse(skb, pkt, sizeof(struct iphdr) + sizeof(struct tcphdr)))
		return TC_ACT_SHOT;
	metric_inc(METRIC_REJECT_TCP_RST);
	return reflect(skb);
}

/* What an ICMP error quotes: the offending IP header and 8 bytes of its payload. */
#define ICMP_QUOTE_LEN (sizeof(struct iphdr) + 8)
#define ICMP_ERR_HDRS (sizeof(struct iphdr) + sizeof(struct icmp_hdr))

/**
 * reject_icmp_port_unreach() - answer a UDP datagram with ICMP port unreachable.
 *
 * Room for a new IP and ICMP header is opened right after the Ethernet header,
 * so the original IP header and its first 8 payload bytes become the quoted
 * part without copying; the tail is cut after them. Both checksums cover only
 * bytes we wrote or quoted, so they are computed from scratch.
 */
static __always_inline int reject_icmp_port_unreach(struct __sk_buff *skb, struct packet *pkt)
{
	struct iphdr ip = {};
	struct icmp_hdr icmp = {};
	__u8 quote[ICMP_QUOTE_LEN];
	__s64 sum;

	if (pkt->ip_hlen != sizeof(struct iphdr))
		return TC_ACT_SHOT;
	if (bpf_skb_adjust_room(skb, ICMP_ERR_HDRS, BPF_ADJ_ROOM_MAC, 0))
		return TC_ACT_SHOT;
	if (bpf_skb_change_tail(skb, ETH_HLEN + ICMP_ERR_HDRS + ICMP_QUOTE_LEN, 0))
		return TC_ACT_SHOT;
	if (bpf_skb_load_bytes(skb, ETH_HLEN + ICMP_ERR_HDRS, quote, sizeof(quote)))
		return TC_ACT_SHOT;

	ip.version = 4;
	ip.ihl = 5;
	ip.tot_len = bpf_htons(ICMP_ERR_HDRS + ICMP_QUOTE_LEN);
	ip.ttl = REJECT_TTL;
	ip.protocol = IPPROTO_ICMP;
	ip.saddr = pkt->daddr;
	ip.daddr = pkt->saddr;
	ip.check = csum_fold_neg(bpf_csum_diff(NULL, 0, (__be32 *)&ip, sizeof(ip), 0));

	icmp.type = ICMP_DEST_UNREACH;
	icmp.code = ICMP_PORT_UNREACH;
	sum = bpf_csum_diff(NULL, 0, (__be32 *)&icmp, sizeof(icmp), 0);
	sum = bpf_csum_diff(NULL, 0, (__be32 *)quote, sizeof(quote), (__u32)sum);
	icmp.checksum = csum_fold_neg(sum);

	if (bpf_skb_store_bytes(skb, ETH_HLEN, &ip, sizeof(ip), 0) ||
	    bpf_skb_store_bytes(skb, ETH_HLEN + sizeof(ip), &icmp, sizeof(icmp), 0))
		return TC_ACT_SHOT;
	metric_inc(METRIC_REJECT_ICMP);
	return reflect(skb);
}

/* reject() - refuse the flow @pkt opened, per protocol. */
static __always_inline int reject(struct __sk_buff *skb, struct packet *pkt)
{
	int ret;

	/* No L4 header to answer from (lb_forward never refuses one). */
	if (pkt_is_later_frag(pkt))
		ret = TC_ACT_SHOT;
	else if (pkt->proto == IPPROTO_TCP)
		ret = reject_tcp(skb, pkt);
	else /* UDP, SCTP: what kube-proxy's REJECT sends for them */
		ret = reject_icmp_port_unreach(skb, pkt);
	if (ret == TC_ACT_SHOT)
		metric_inc(METRIC_DROP_REJECT_FAILED);
	return ret;
}

#endif /* SLUICE_REJECT_H */
