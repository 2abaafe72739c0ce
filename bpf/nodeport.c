/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * tc ingress on the node's external device(s): NodePort (and ClusterIP
 * addressed from outside the node). Replies leave through the backend pod's
 * veth, where from_pod restores the node address and NodePort.
 */
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/lb.h"
#include "lib/reject.h"

SEC("classifier")
int sluice_nodeport(struct __sk_buff *skb)
{
	struct packet pkt;
	int verdict;

	if (parse_packet(skb, &pkt) != PARSE_OK)
		return TC_ACT_OK;
	metric_inc(METRIC_PACKETS_SEEN);

	verdict = lb_forward(skb, &pkt, 1);
	if (verdict == LB_NO_BACKEND)
		return reject(skb, &pkt);
	if (verdict == LB_DROP)
		return TC_ACT_SHOT;
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
