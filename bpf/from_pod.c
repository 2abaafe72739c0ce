/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * tc ingress on the host side of a pod's veth: everything the pod sends.
 *  - replies from a backend pod get their Service address back (rev-NAT);
 *  - connections to a Service get a backend (DNAT), or a refusal when the
 *    Service has no endpoint.
 *  - NetworkPolicy judges the flow on the tuple between the two pods: after
 *    DNAT for requests, before rev-NAT for replies (lib/policy.h).
 * Every exit goes through obs_pass/obs_drop/obs_reject (lib/events.h), which
 * count the packet and emit its event when one is due.
 */
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/metrics.h"
#include "lib/events.h"
#include "lib/frag.h"
#include "lib/lb.h"
#include "lib/reject.h"
#include "lib/policy.h"

SEC("classifier")
int sluice_from_pod(struct __sk_buff *skb)
{
	struct packet pkt, wire, judged;
	struct obs_ctx obs;
	int parsed;
	__u32 ifindex = 0;
	int verdict;

	/* Not ours to judge (ARP, ICMP, fragments whose first one was not
	 * seen, or headers the stack will check itself): passed untouched,
	 * counted as forwarded; a tiny first fragment is dropped. */
	parsed = frag_parse(skb, &pkt);
	if (parsed != PARSE_OK)
		return frag_parse_verdict(skb, parsed, SLUICE_OBS_FROM_POD);
	metric_inc(METRIC_PACKETS_SEEN);
	obs_init(&obs, skb, &pkt, SLUICE_OBS_FROM_POD);

	/* A reply is on the wire between the pods before its rev-NAT; a
	 * masqueraded flow is judged with its real client, as it was when it
	 * left that client (below). */
	wire = pkt;
	verdict = lb_reverse(skb, &pkt, &ifindex, &obs);
	if (verdict == LB_TRANSLATED || verdict == LB_REDIRECT) {
		wire.daddr = pkt.daddr;
		wire.dport = pkt.dport;
		if (policy_check(&wire, 1, &obs) == POLICY_DENY)
			return obs_drop(&obs, &pkt);
	}
	if (verdict == LB_TRANSLATED)
		return obs_pass(&obs, &pkt, TC_ACT_OK);
	/* A reply whose source is now a node address (NodePort): out of the
	 * device the request came in on, with L2 addresses from the
	 * neighbour table. */
	if (verdict == LB_REDIRECT)
		return obs_pass(&obs, &pkt, bpf_redirect_neigh(ifindex, NULL, 0, 0));
	if (verdict == LB_DROP)
		return obs_drop(&obs, &pkt);

	judged = pkt;
	ifindex = 0;
	verdict = lb_forward(skb, &pkt, 0, &ifindex, &obs);
	if (verdict == LB_NO_BACKEND)
		return obs_reject(&obs, &pkt, reject(skb, &pkt));
	if (verdict == LB_DROP)
		return obs_drop(&obs, &pkt);
	/* After DNAT: the peer policy sees is the backend pod, as upstream
	 * NetworkPolicy expects (ipBlock rules match pod IPs); the source is
	 * the pod itself, also when the flow is masqueraded. */
	judged.daddr = pkt.daddr;
	judged.dport = pkt.dport;
	if (policy_check(&judged, 0, &obs) == POLICY_DENY)
		return obs_drop(&obs, &pkt);
	/* Masqueraded: straight to the backend's device (its source is now
	 * the node address, which input routing would drop as martian). */
	if (verdict == LB_REDIRECT)
		return obs_pass(&obs, &pkt, bpf_redirect_neigh(ifindex, NULL, 0, 0));
	return obs_pass(&obs, &pkt, TC_ACT_OK);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
