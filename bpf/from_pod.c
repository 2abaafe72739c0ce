/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * tc ingress on the host side of a pod's veth: everything the pod sends.
 *  - replies from a backend pod get their Service address back (rev-NAT);
 *  - connections to a Service get a backend (DNAT), or a refusal when the
 *    Service has no endpoint.
 */
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/lb.h"
#include "lib/reject.h"

SEC("classifier")
int sluice_from_pod(struct __sk_buff *skb)
{
	struct packet pkt;
	__u32 ifindex = 0;
	int verdict;

	if (parse_packet(skb, &pkt) != PARSE_OK)
		return TC_ACT_OK;
	metric_inc(METRIC_PACKETS_SEEN);

	verdict = lb_reverse(skb, &pkt, &ifindex);
	if (verdict == LB_TRANSLATED)
		return TC_ACT_OK;
	/* A NodePort reply: out of the device the request came in on, with
	 * L2 addresses from the neighbour table. */
	if (verdict == LB_REDIRECT)
		return bpf_redirect_neigh(ifindex, NULL, 0, 0);
	if (verdict == LB_DROP)
		return TC_ACT_SHOT;

	verdict = lb_forward(skb, &pkt, 0);
	if (verdict == LB_NO_BACKEND)
		return reject(skb, &pkt);
	if (verdict == LB_DROP)
		return TC_ACT_SHOT;
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
