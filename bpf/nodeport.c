/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * tc ingress on the node's external device(s):
 *  - replies from backends on other nodes (addressed to the masquerade
 *    address, or to a local client pod) get their frontend back first;
 *  - then Service flows from outside: NodePorts on the NodePort addresses,
 *    ClusterIPs, LB IPs and externalIPs. Replies of local backends leave
 *    through their veth, where from_pod translates them back.
 */
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/metrics.h"
#include "lib/events.h"
#include "lib/frag.h"
#include "lib/lb.h"
#include "lib/reject.h"

SEC("classifier")
int sluice_nodeport(struct __sk_buff *skb)
{
	struct packet pkt;
	struct obs_ctx obs;
	int parsed;
	__u32 ifindex = 0;
	int verdict;

	parsed = frag_parse(skb, &pkt);
	if (parsed != PARSE_OK)
		return frag_parse_verdict(skb, parsed, SLUICE_OBS_NODE_DEVICE);
	metric_inc(METRIC_PACKETS_SEEN);
	obs_init(&obs, skb, &pkt, SLUICE_OBS_NODE_DEVICE);

	verdict = lb_reverse(skb, &pkt, &ifindex, &obs);
	if (verdict == LB_TRANSLATED)
		return obs_pass(&obs, &pkt, TC_ACT_OK);
	if (verdict == LB_REDIRECT)
		return obs_pass(&obs, &pkt, bpf_redirect_neigh(ifindex, NULL, 0, 0));
	if (verdict == LB_DROP)
		return obs_drop(&obs, &pkt);

	verdict = lb_forward(skb, &pkt, 1, &ifindex, &obs);
	/* Masqueraded: straight to the backend's device (its source is now
	 * the node address, which input routing would drop as martian). */
	if (verdict == LB_REDIRECT)
		return obs_pass(&obs, &pkt, bpf_redirect_neigh(ifindex, NULL, 0, 0));
	if (verdict == LB_NO_BACKEND)
		return obs_reject(&obs, &pkt, reject(skb, &pkt));
	if (verdict == LB_DROP)
		return obs_drop(&obs, &pkt);
	return obs_pass(&obs, &pkt, TC_ACT_OK);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
