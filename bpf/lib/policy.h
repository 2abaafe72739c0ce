/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * NetworkPolicy enforcement at the pod veths.
 *
 * The agent compiles policies into three tables (see sluice_maps.h):
 * sl_ipcache (prefix → identity), sl_endpoints (local pod → identity and
 * which directions are enforced) and sl_policy (per endpoint: peer identity,
 * direction, protocol, port block → allow/deny with the rule's id). A verdict
 * is given once per flow, on the tuple between the two pods after Service
 * translation, for both sides at once: the source's egress and, when the
 * destination is a local pod, its ingress. Allowed flows are remembered in
 * sl_pol_ct so their later packets and their replies pass on one lookup.
 * Cost per new flow: two endpoint lookups, up to two ipcache lookups and two
 * policy lookups per enforced side, whatever the number of pods or rules.
 */
#ifndef SLUICE_LIB_POLICY_H
#define SLUICE_LIB_POLICY_H

#include "maps.h"
#include "events.h"
#include "conntrack.h"

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct ipcache_key);
	__type(value, struct ipcache_entry);
	__uint(max_entries, SLUICE_IPCACHE_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC); /* required for LPM tries */
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_ipcache SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __be32);
	__type(value, struct endpoint_info);
	__uint(max_entries, SLUICE_ENDPOINTS_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_endpoints SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct policy_key);
	__type(value, struct policy_entry);
	__uint(max_entries, SLUICE_POLICY_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_policy SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct pol_ct_key);
	__type(value, struct pol_ct_entry);
	__uint(max_entries, SLUICE_POLICY_CT_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_pol_ct SEC(".maps");

enum policy_verdict {
	POLICY_ALLOW = 0,
	POLICY_DENY,
};

/* ipcache_identity() - the identity of @addr; no prefix holds it: world. */
static __always_inline __u32 ipcache_identity(__be32 addr)
{
	struct ipcache_key k = { .prefixlen = 32, .addr = addr };
	struct ipcache_entry *e = bpf_map_lookup_elem(&sl_ipcache, &k);

	return e ? e->identity : SLUICE_ID_WORLD;
}

/**
 * policy_decide() - the verdict of endpoint @ep's policy for a peer.
 * @rule_id: set to the deciding rule (0 for default deny).
 *
 * Two longest-prefix lookups, one for the peer's identity and one for "any
 * peer"; a deny from either wins (the compiler already turned allows that a
 * deny of the same peer covers into denies, since LPM returns only the most
 * specific entry).
 */
static __always_inline int policy_decide(__be32 ep, __u32 peer, __u8 dir, __u8 proto, __be16 dport,
					 __u32 *rule_id)
{
	struct policy_key k = {
		.prefixlen = POLICY_PREFIX_FULL,
		.m = { .endpoint = ep, .identity = peer, .direction = dir, .proto = proto,
		       .dport = dport },
	};
	struct policy_entry *exact, *any;

	exact = bpf_map_lookup_elem(&sl_policy, &k);
	k.m.identity = SLUICE_ID_ANY;
	any = bpf_map_lookup_elem(&sl_policy, &k);
	if (exact && exact->deny) {
		*rule_id = exact->rule_id;
		return POLICY_DENY;
	}
	if (any && any->deny) {
		*rule_id = any->rule_id;
		return POLICY_DENY;
	}
	if (exact) {
		*rule_id = exact->rule_id;
		return POLICY_ALLOW;
	}
	if (any) {
		*rule_id = any->rule_id;
		return POLICY_ALLOW;
	}
	*rule_id = 0;
	return POLICY_DENY;
}

static __always_inline void pol_ct_key_of(struct pol_ct_key *k, const struct packet *pkt,
					  int reversed)
{
	k->saddr = reversed ? pkt->daddr : pkt->saddr;
	k->daddr = reversed ? pkt->saddr : pkt->daddr;
	k->sport = reversed ? pkt->dport : pkt->sport;
	k->dport = reversed ? pkt->sport : pkt->dport;
	k->proto = pkt->proto;
	k->pad0[0] = 0;
	k->pad0[1] = 0;
	k->pad0[2] = 0;
}

static __always_inline int pol_ct_fresh(struct pol_ct_entry *e, __u8 proto, __u64 now)
{
	__u64 timeout = proto == IPPROTO_TCP ? ct_timeout_tcp_ns : ct_timeout_udp_ns;

	if (now - e->last_seen_ns > timeout)
		return 0;
	if (now - e->last_seen_ns > CT_REFRESH_NS)
		e->last_seen_ns = now;
	return 1;
}

/**
 * policy_known_flow() - whether @pkt belongs to a flow already allowed.
 *
 * The agent bumps the policy revision with every write to the policy maps,
 * so a flow judged under the current revision would get the same verdict
 * again: it passes. Under an older revision, an established TCP connection
 * keeps going (as with iptables-based plugins), while a TCP SYN (a new
 * connection, maybe on a reused tuple) and any packet of a connectionless
 * protocol are judged again. A packet matching a flow reversed is its
 * reply and passes: policies are stateful.
 */
static __always_inline int policy_known_flow(const struct packet *pkt, __u32 revision)
{
	struct pol_ct_key k;
	struct pol_ct_entry *e;
	__u64 now = bpf_ktime_get_ns();
	int syn = pkt->proto == IPPROTO_TCP && (pkt->tcp_flags & (TCPF_SYN | TCPF_ACK)) == TCPF_SYN;

	pol_ct_key_of(&k, pkt, 0);
	e = bpf_map_lookup_elem(&sl_pol_ct, &k);
	if (e && (e->revision == revision || (pkt->proto == IPPROTO_TCP && !syn)) &&
	    pol_ct_fresh(e, pkt->proto, now))
		return 1;
	pol_ct_key_of(&k, pkt, 1);
	e = bpf_map_lookup_elem(&sl_pol_ct, &k);
	return e && pol_ct_fresh(e, pkt->proto, now);
}

/**
 * policy_judge() - would a new flow from @saddr to @daddr:@dport be allowed?
 * Egress of the source and ingress of the destination, each only when that
 * side is a local pod selected for that direction.
 * @rule_id/@ingress: on a denial, the deciding rule and whether the
 *                    destination's ingress (else the source's egress) denied.
 */
static __always_inline int policy_judge(__be32 saddr, __be32 daddr, __be16 dport, __u8 proto,
					struct endpoint_info *src_ep, struct endpoint_info *dst_ep,
					__u32 src_id, __u32 dst_id, __u32 *rule_id, int *ingress)
{
	if (src_ep && (src_ep->flags & EP_F_EGRESS_ENFORCED) &&
	    policy_decide(saddr, dst_id, POLICY_EGRESS, proto, dport, rule_id) == POLICY_DENY) {
		*ingress = 0;
		return POLICY_DENY;
	}
	if (dst_ep && (dst_ep->flags & EP_F_INGRESS_ENFORCED) &&
	    policy_decide(daddr, src_id, POLICY_INGRESS, proto, dport, rule_id) == POLICY_DENY) {
		*ingress = 1;
		return POLICY_DENY;
	}
	return POLICY_ALLOW;
}

/**
 * policy_check() - judge @pkt (its tuple as on the wire between the pods).
 * @obs: gets the identities, and on a denial the reason, the rule and
 *       whether the destination's ingress (else the source's egress) denied.
 *
 * @reply: Service conntrack says @pkt is a reply (it was rev-NATed, or
 *         its flow's forward entry exists).
 *
 * A packet of no known flow is judged as a new flow. If that is denied it
 * may still be the reply of a flow its destination opened before it was
 * isolated, or whose record was evicted: it is judged the other way round
 * when it is a TCP segment that cannot open a connection (not a SYN: the
 * pod's own stack resets what belongs to no connection), or when Service
 * conntrack knows the flow. Never for a bare UDP datagram, which would
 * open an isolated pod to anything it may send to. When the other way is
 * allowed, the flow is remembered that way round.
 *
 * @cfg: the run-time switches (policy on, revision); @check_known: 0 when
 * the caller already found @pkt's tuple in no recorded flow.
 *
 * Return: POLICY_ALLOW or POLICY_DENY.
 */
static __always_inline int policy_check_cfg(const struct sluice_config *cfg,
					    const struct packet *pkt, int reply, int check_known,
					    struct obs_ctx *obs)
{
	__u32 rule_id = 0, reply_rule = 0, src_id, dst_id;
	struct endpoint_info *src_ep, *dst_ep;
	struct pol_ct_entry entry = {};
	struct pol_ct_key k;
	int ingress = 0, reply_ingress = 0, reversed = 0;
	int syn = pkt->proto == IPPROTO_TCP && (pkt->tcp_flags & (TCPF_SYN | TCPF_ACK)) == TCPF_SYN;

	src_ep = bpf_map_lookup_elem(&sl_endpoints, &pkt->saddr);
	dst_ep = bpf_map_lookup_elem(&sl_endpoints, &pkt->daddr);
	/*
	 * Neither side is selected by any policy: nothing to judge, nothing to
	 * remember. If either is selected in any direction the flow must be
	 * remembered even when nothing judges it now: its replies travel the
	 * other way, where that side's policy would take them for new flows
	 * (a pod with ingress isolation opening a connection gets its answer).
	 */
	if (!(src_ep && src_ep->flags) && !(dst_ep && dst_ep->flags))
		return POLICY_ALLOW;
	if (check_known && policy_known_flow(pkt, cfg->policy_revision))
		return POLICY_ALLOW;

	src_id = src_ep ? src_ep->identity : ipcache_identity(pkt->saddr);
	dst_id = dst_ep ? dst_ep->identity : ipcache_identity(pkt->daddr);
	obs->src_identity = src_id;
	obs->dst_identity = dst_id;
	if (policy_judge(pkt->saddr, pkt->daddr, pkt->dport, pkt->proto, src_ep, dst_ep, src_id,
			 dst_id, &rule_id, &ingress) == POLICY_DENY) {
		int may_be_reply = reply || (pkt->proto == IPPROTO_TCP && !syn);

		if (!may_be_reply ||
		    policy_judge(pkt->daddr, pkt->saddr, pkt->sport, pkt->proto, dst_ep, src_ep,
				 dst_id, src_id, &reply_rule, &reply_ingress) == POLICY_DENY)
			goto deny;
		reversed = 1;
	}

	pol_ct_key_of(&k, pkt, reversed);
	entry.last_seen_ns = bpf_ktime_get_ns();
	entry.revision = cfg->policy_revision;
	/* LRU: an insert evicts the oldest flow rather than fail. If it fails
	 * anyway the packet still passes: the next one is judged again. */
	bpf_map_update_elem(&sl_pol_ct, &k, &entry, BPF_ANY);
	metric_inc(METRIC_POLICY_ALLOWED);
	/* One flow event per connection: a pod's flow to a local pod is judged
	 * again on delivery, which is not a new flow; nor is a reply. */
	if (!reversed && (obs->point != SLUICE_OBS_TO_POD || !src_ep))
		obs->flags |= SLUICE_EVENT_F_NEW_FLOW;
	return POLICY_ALLOW;

deny:
	metric_inc(METRIC_DROP_POLICY);
	if (ingress)
		obs->flags |= SLUICE_EVENT_F_POLICY_INGRESS;
	obs->reason = SLUICE_REASON_POLICY_DENIED;
	obs->rule_id = rule_id;
	return POLICY_DENY;
}

/* policy_check() - policy_check_cfg() with the switches read here. */
static __always_inline int policy_check(const struct packet *pkt, int reply,
					struct obs_ctx *obs)
{
	__u32 zero = 0;
	struct sluice_config *cfg = bpf_map_lookup_elem(&sl_config, &zero);

	/* No endpoint on the node is selected by a policy: nothing to do. */
	if (!cfg || !(cfg->flags & SLUICE_CFG_POLICY))
		return POLICY_ALLOW;
	return policy_check_cfg(cfg, pkt, reply, 1, obs);
}

/**
 * policy_wire_of_delivery() - the tuple between the pods of a packet about
 * to be delivered to a pod (tc egress of its veth).
 *
 * A reply from a local backend pod was rev-NATed when it left that pod, so
 * it arrives with the Service as its source; the flow's conntrack entry
 * (the client's forward entry, found with the tuple reversed) names the
 * backend it really comes from. Any other packet is already as on the wire.
 *
 * Return: 1 when Service conntrack knows the flow (the packet is a reply).
 */
static __always_inline int policy_wire_of_delivery(const struct packet *pkt, struct packet *wire)
{
	struct ct_key k = {
		.saddr = pkt->daddr,
		.daddr = pkt->saddr,
		.sport = pkt->dport,
		.dport = pkt->sport,
		.proto = pkt->proto,
		.dir = CT_DIR_FORWARD,
	};
	struct ct_entry *e;

	*wire = *pkt;
	e = bpf_map_lookup_elem(&sl_ct, &k);
	if (!e)
		return 0;
	wire->saddr = e->nat_address;
	wire->sport = e->nat_port;
	return 1;
}

/**
 * policy_check_delivery() - the destination pod's ingress policy, for a
 * packet about to be delivered to it (tc egress of its veth).
 *
 * Only the destination's policy is judged here: a local source was judged
 * (both sides) and remembered as the packet left it. So a pod no policy
 * selects costs one lookup, and a known flow on its own tuple (pod to pod,
 * no rev-NAT) one more before the conntrack lookup that undoes rev-NAT.
 */
static __always_inline int policy_check_delivery(const struct packet *pkt, struct obs_ctx *obs)
{
	__u32 zero = 0;
	struct sluice_config *cfg = bpf_map_lookup_elem(&sl_config, &zero);
	struct endpoint_info *dst_ep;
	struct packet wire;
	int reply;

	if (!cfg || !(cfg->flags & SLUICE_CFG_POLICY))
		return POLICY_ALLOW;
	dst_ep = bpf_map_lookup_elem(&sl_endpoints, &pkt->daddr);
	if (!dst_ep || !dst_ep->flags)
		return POLICY_ALLOW;
	if (policy_known_flow(pkt, cfg->policy_revision))
		return POLICY_ALLOW;
	/* Not known on its own tuple: known on the wire tuple only if rev-NAT
	 * changed it (otherwise it is the same lookup again). */
	reply = policy_wire_of_delivery(pkt, &wire);
	return policy_check_cfg(cfg, &wire, reply, reply, obs);
}

#endif /* SLUICE_LIB_POLICY_H */
