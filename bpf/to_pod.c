/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * tc egress on the host side of a pod's veth: everything delivered to the pod.
 * Replies to the pod's Service connections whose backend is not a local pod
 * (the node itself, later remote nodes) are translated back here; replies from
 * local backend pods were already translated when they left those pods.
 * The pod's ingress policy is checked here for flows that did not come from
 * a local pod (those were judged, both sides at once, as they left it), on
 * the tuple between the pods: a local backend's reply arrives rev-NATed.
 */
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/metrics.h"
#include "lib/events.h"
#include "lib/frag.h"
#include "lib/lb.h"
#include "lib/policy.h"

SEC("classifier")
int sluice_to_pod(struct __sk_buff *skb)
{
	struct packet pkt;
	struct obs_ctx obs;
	int parsed;
	__u32 ifindex = 0;

	parsed = frag_parse(skb, &pkt);
	if (parsed != PARSE_OK)
		return frag_parse_verdict(skb, parsed, SLUICE_OBS_TO_POD);
	obs_init(&obs, skb, &pkt, SLUICE_OBS_TO_POD);
	if (policy_check_delivery(&pkt, &obs) == POLICY_DENY)
		return obs_drop(&obs, &pkt);
	/* Replies delivered to a pod are never NodePort replies: no redirect. */
	if (lb_reverse(skb, &pkt, &ifindex, &obs) == LB_DROP)
		return obs_drop(&obs, &pkt);
	return obs_pass(&obs, &pkt, TC_ACT_OK);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
