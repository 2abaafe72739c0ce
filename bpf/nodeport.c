/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * tc ingress on the node's external device(s): NodePort (and ClusterIP
 * addressed from outside the node). Replies leave through the backend pod's
 * veth, where from_pod restores the node address and NodePort.
 */
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/metrics.h"
#include "lib/events.h"
#include "lib/lb.h"
#include "lib/reject.h"

SEC("classifier")
int sluice_nodeport(struct __sk_buff *skb)
{
	struct packet pkt;
	struct obs_ctx obs;
	int verdict;

	if (parse_packet(skb, &pkt) != PARSE_OK) {
		traffic_count(SLUICE_REASON_NONE, SLUICE_OBS_NODE_DEVICE, skb->len);
		return TC_ACT_OK;
	}
	metric_inc(METRIC_PACKETS_SEEN);
	obs_init(&obs, skb, &pkt, SLUICE_OBS_NODE_DEVICE);

	verdict = lb_forward(skb, &pkt, 1, &obs);
	if (verdict == LB_NO_BACKEND)
		return obs_reject(&obs, &pkt, reject(skb, &pkt));
	if (verdict == LB_DROP)
		return obs_drop(&obs, &pkt);
	return obs_pass(&obs, &pkt, TC_ACT_OK);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
