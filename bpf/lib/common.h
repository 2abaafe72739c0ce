/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Packet parsing shared by every program. */
#ifndef SLUICE_COMMON_H
#define SLUICE_COMMON_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <linux/pkt_cls.h>
#include <stddef.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "sluice_maps.h"

#define IP_OFF ETH_HLEN
#define IP_CSUM_OFF (IP_OFF + offsetof(struct iphdr, check))
#define IP_DADDR_OFF (IP_OFF + offsetof(struct iphdr, daddr))
#define IP_SADDR_OFF (IP_OFF + offsetof(struct iphdr, saddr))
/* Our own ICMP header: <linux/icmp.h> drags in libc's socket headers. */
struct icmp_hdr {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	__be32 unused;
};
#define ICMP_DEST_UNREACH 3
#define ICMP_PORT_UNREACH 3

#define IP_MF 0x2000
#define IP_OFFSET_MASK 0x1fff

/* TCP flag bits as they sit in byte 13 of the header. */
#define TCPF_FIN 0x01
#define TCPF_SYN 0x02
#define TCPF_RST 0x04
#define TCPF_PSH 0x08
#define TCPF_ACK 0x10

/*
 * struct packet - what the programs need to know about one IPv4 packet.
 * Ports are zero for protocols without them.
 */
struct packet {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 tcp_flags;
	__u16 ip_hlen;	/* IP header length in bytes */
	__u32 l4_off;	/* offset of the L4 header from the start of the frame */
	__u16 ip_tot_len;
	__u16 ip_id;	/* IP identification (network order): fragment tracking */
	__u8 frag;	/* PKT_FRAG_* */
};

/*
 * struct packet.frag. A first fragment (offset 0, MF set) carries the L4
 * header and is parsed like any packet; a later fragment carries none: its
 * ports come from the first fragment (lib/frag.h), and nothing may read or
 * write an L4 header in it (no port rewrite, no L4 checksum, no reject).
 */
#define PKT_FRAG_FIRST (1 << 0)
#define PKT_FRAG_LATER (1 << 1)

static __always_inline int pkt_is_later_frag(const struct packet *pkt)
{
	return pkt->frag & PKT_FRAG_LATER;
}

enum parse_result {
	PARSE_OK = 0,
	PARSE_NOT_IPV4,	 /* not ours: pass untouched */
	PARSE_NO_PORTS,	 /* IPv4 but no L4 ports we translate (ICMP, ...) */
	PARSE_INVALID,	 /* truncated or malformed */
	PARSE_LATER_FRAG, /* a non-first TCP/UDP/SCTP fragment: ports unknown yet */
	PARSE_TINY_FRAG, /* a first fragment too short for its L4 header: dropped */
};

/**
 * parse_packet() - read the IPv4/TCP/UDP/SCTP headers of @skb into @pkt.
 *
 * Non-first fragments carry no ports; they are reported as PARSE_LATER_FRAG
 * with the addresses, protocol and IP id filled in, and get their ports from
 * the first fragment (frag_parse() in lib/frag.h, which programs call).
 */
static __always_inline int parse_packet(struct __sk_buff *skb, struct packet *pkt)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip;

	if ((void *)(eth + 1) > data_end)
		return PARSE_NOT_IPV4;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return PARSE_NOT_IPV4;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return PARSE_INVALID;
	if (ip->version != 4 || ip->ihl < 5)
		return PARSE_INVALID;

	pkt->saddr = ip->saddr;
	pkt->daddr = ip->daddr;
	pkt->proto = ip->protocol;
	pkt->ip_hlen = ip->ihl * 4;
	pkt->ip_tot_len = bpf_ntohs(ip->tot_len);
	pkt->l4_off = ETH_HLEN + pkt->ip_hlen;
	pkt->sport = 0;
	pkt->dport = 0;
	pkt->tcp_flags = 0;
	pkt->ip_id = ip->id;
	pkt->frag = 0;

	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP &&
	    ip->protocol != IPPROTO_SCTP)
		return PARSE_NO_PORTS;

	if (ip->frag_off & bpf_htons(IP_OFFSET_MASK)) {
		pkt->frag = PKT_FRAG_LATER;
		return PARSE_LATER_FRAG;
	}
	if (ip->frag_off & bpf_htons(IP_MF))
		pkt->frag = PKT_FRAG_FIRST;

	/*
	 * One pointer and one bounds check for all three protocols (ports sit
	 * at the same offsets, and the 8 bytes checked are within every one of
	 * their headers): checks on separate copies per branch get merged by
	 * the compiler in ways the verifier cannot follow.
	 */
	{
		__u8 *l4 = data + pkt->l4_off;

		if ((void *)(l4 + sizeof(struct udphdr)) > data_end)
			return PARSE_INVALID;
		pkt->sport = *(__be16 *)l4;
		pkt->dport = *(__be16 *)(l4 + 2);
		if (pkt->proto == IPPROTO_TCP) {
			if ((void *)(l4 + sizeof(struct tcphdr)) > data_end)
				return PARSE_INVALID;
			pkt->tcp_flags = l4[13];
		}
	}
	return PARSE_OK;
}

#endif /* SLUICE_COMMON_H */
