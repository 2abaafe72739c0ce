/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Per-packet Service load balancing (tc): DNAT of the client's packets and
 * reverse translation of the backend's replies. Frontend lookup and backend
 * selection are in lb_select.h, shared with the socket hooks (sock.h).
 * Every step is a hash lookup; nothing here depends on how many Services exist.
 */
#ifndef SLUICE_LB_H
#define SLUICE_LB_H

#include "maps.h"
#include "lb_select.h"
#include "nat.h"
#include "conntrack.h"
#include "metrics.h"
#include "events.h"

enum lb_verdict {
	LB_PASS = 0,	   /* not a Service flow: leave the packet alone */
	LB_TRANSLATED,	   /* rewritten, continue */
	LB_NO_BACKEND,	   /* a Service with no usable endpoint: reject */
	LB_DROP,	   /* inconsistent state or helper failure */
	LB_REDIRECT,	   /* rewritten; send it out of the device in *ifindex */
};

#ifndef AF_INET
#define AF_INET 2
#endif

/**
 * lb_fib_ifindex() - the device a masqueraded packet leaves through.
 *
 * After SNAT the packet's source is a node address, which the stack's
 * input routing drops as martian: it must be sent straight out of the
 * device the route to its destination names (bpf_redirect_neigh, which
 * also fills in the L2 addresses). Return: the ifindex, 0 when no route.
 */
static __always_inline __u32 lb_fib_ifindex(struct __sk_buff *skb, const struct packet *pkt)
{
	struct bpf_fib_lookup fib = {};

	fib.family = AF_INET;
	fib.l4_protocol = pkt->proto;
	fib.sport = pkt->sport;
	fib.dport = pkt->dport;
	fib.ipv4_src = pkt->saddr;
	fib.ipv4_dst = pkt->daddr;
	/* An input lookup from the device the packet arrived on: an output
	 * lookup would be bound to that device as the way out. The route
	 * lookup does not validate the source, the stack would. */
	fib.ifindex = skb->ifindex;
	if (bpf_fib_lookup(skb, &fib, sizeof(fib), BPF_FIB_LOOKUP_SKIP_NEIGH) !=
	    BPF_FIB_LKUP_RET_SUCCESS)
		return 0;
	return fib.ifindex;
}

/**
 * lb_masquerade() - whether a new flow is SNATed to the node address, as
 * kube-proxy decides it (its masquerade rules per destination type).
 * @svc: the frontend's LB_SCOPE_ALL master.
 * @src: lb_src_class() of the client.
 *
 * ClusterIP: only clients outside the cluster CIDRs (the node, outside
 * hosts). NodePort / LB IP / externalIP: always under eTP Cluster; under
 * eTP Local only the node's own connections (pods short-circuit to the
 * cluster set unmasqueraded, external clients keep their address). The
 * caller adds hairpin (the backend is the client).
 */
static __always_inline int lb_masquerade(const struct lb_service *svc, int src)
{
	if (!(svc->flags & LB_FLAG_EXTERNAL))
		return src != LB_SRC_POD && netcfg.cluster_cidr_count;
	if (!(svc->flags & LB_FLAG_ETP_LOCAL))
		return 1;
	return src == LB_SRC_HOST;
}

/**
 * lb_forward() - translate a client's packet addressed to a Service.
 * @at_device: the packet arrived at a node device: replies are always
 *             redirected back out of it. From a pod, replies are redirected
 *             to its veth when the address it used is the node's own.
 * @redirect: set with LB_REDIRECT: a masqueraded packet must leave
 *            through that device (lb_fib_ifindex).
 * @obs: gets the frontend, backend, flags and (on LB_DROP / LB_NO_BACKEND)
 *       the drop reason, for the packet's event.
 *
 * Established flows follow their conntrack entry, so they stay on their
 * backend even after it left the Service; new flows get a fresh backend,
 * and a masquerade source when kube-proxy would masquerade them.
 */
static __always_inline int lb_forward(struct __sk_buff *skb, struct packet *pkt, int at_device,
				      __u32 *redirect, struct obs_ctx *obs)
{
	struct lb_service *svc;
	struct lb_backend *backend;
	struct ct_entry *ct;
	__be32 lookup_addr = 0;
	__u32 backend_id = 0, hash, ifindex = 0;
	__be16 snat_port = 0;
	__u8 ct_flags = 0, scope = LB_SCOPE_ALL;
	int src;

	ct = ct_lookup(pkt, CT_DIR_FORWARD);
	if (ct) {
		obs->rev_nat_id = ct->rev_nat_id;
		obs->backend_id = ct->backend_id;
		if (ct->flags & CT_FLAG_NODEPORT)
			obs->flags |= SLUICE_EVENT_F_NODEPORT;
		if (nat_rewrite(skb, pkt, 1, ct->nat_address, ct->nat_port) ||
		    ((ct->flags & CT_FLAG_SNAT) &&
		     nat_rewrite(skb, pkt, 0, ct->peer_address, ct->peer_port))) {
			obs->reason = SLUICE_REASON_NAT_FAILED;
			return LB_DROP;
		}
		metric_inc(METRIC_SERVICE_CT_HIT);
		obs->translated = 1;
		if (ct->flags & CT_FLAG_SNAT) {
			*redirect = lb_fib_ifindex(skb, pkt);
			if (*redirect)
				return LB_REDIRECT;
		}
		return LB_TRANSLATED;
	}

	/* A flow starts with the first fragment of its datagram: a later one
	 * without a conntrack entry (its first fragment was dropped, refused,
	 * or not for a Service) is left alone. */
	if (pkt_is_later_frag(pkt))
		return LB_PASS;
	svc = lb_lookup_frontend(pkt->daddr, pkt->dport, pkt->proto, &lookup_addr);
	if (!svc)
		return LB_PASS;
	if (lookup_addr == 0) {
		ct_flags = CT_FLAG_NODEPORT;
		obs->flags |= SLUICE_EVENT_F_NODEPORT;
	}
	obs->rev_nat_id = svc->rev_nat_id;
	if (!lb_source_allowed(svc, pkt->saddr)) {
		obs->reason = SLUICE_REASON_SOURCE_RANGE;
		return LB_DROP;
	}
	src = lb_src_class(pkt->saddr);
	if (lb_masquerade(svc, src) && netcfg.node_ip)
		ct_flags |= CT_FLAG_SNAT;
	if ((svc->flags & LB_FLAG_ETP_LOCAL) && src == LB_SRC_EXTERNAL) {
		/* External client of an eTP Local address: this node's
		 * endpoints only, from the frontend's second entry. */
		scope = LB_SCOPE_EXTERNAL;
		svc = lb_lookup_scope(lookup_addr, pkt->dport, pkt->proto, scope);
		if (!svc) {
			metric_inc(METRIC_DROP_INCONSISTENT_SLOT);
			obs->reason = SLUICE_REASON_INCONSISTENT_SLOT;
			return LB_DROP;
		}
		obs->rev_nat_id = svc->rev_nat_id;
	}
	if (svc->count == 0) {
		metric_inc(METRIC_DROP_NO_BACKEND);
		if (svc->flags & LB_FLAG_DROP_NO_BACKEND) {
			obs->reason = SLUICE_REASON_NO_LOCAL_BACKEND;
			return LB_DROP;
		}
		obs->reason = SLUICE_REASON_NO_SERVICE_BACKEND;
		return LB_NO_BACKEND;
	}

	hash = lb_flow_hash(((__u64)pkt->saddr << 32) | pkt->daddr,
			    ((__u64)pkt->sport << 24) | ((__u64)pkt->dport << 8) | pkt->proto);
	backend = lb_select(svc, lookup_addr, pkt->dport, pkt->proto, scope, pkt->saddr, hash,
			    &backend_id);
	if (!backend) {
		metric_inc(METRIC_DROP_INCONSISTENT_SLOT);
		obs->reason = SLUICE_REASON_INCONSISTENT_SLOT;
		return LB_DROP;
	}
	obs->backend_id = backend_id;
	/* Hairpin: a backend reaching itself must see the reply come back
	 * through the translation, not straight from its own address. */
	if (backend->address == pkt->saddr && netcfg.node_ip)
		ct_flags |= CT_FLAG_SNAT;
	/* A host-network backend (a node address) answers through the host
	 * stack: a request from the node's own address to itself would be a
	 * martian, and its reply is translated back on the client's veth. */
	if ((ct_flags & CT_FLAG_SNAT) && bpf_map_lookup_elem(&sl_node_addrs, &backend->address))
		ct_flags &= ~CT_FLAG_SNAT;
	if (at_device || bpf_map_lookup_elem(&sl_node_addrs, &pkt->daddr)) {
		ct_flags |= CT_FLAG_REDIRECT;
		ifindex = skb->ifindex;
	}
	if (ct_create(pkt, backend, backend_id, svc->rev_nat_id, ct_flags, ifindex, netcfg.node_ip,
		      hash, &snat_port)) {
		metric_inc(METRIC_DROP_CT_FULL);
		obs->reason = SLUICE_REASON_CT_INSERT_FAILED;
		return LB_DROP;
	}
	if (nat_rewrite(skb, pkt, 1, backend->address, backend->port) ||
	    ((ct_flags & CT_FLAG_SNAT) && nat_rewrite(skb, pkt, 0, netcfg.node_ip, snat_port))) {
		obs->reason = SLUICE_REASON_NAT_FAILED;
		return LB_DROP;
	}
	metric_inc((ct_flags & CT_FLAG_NODEPORT) ? METRIC_NODEPORT_NEW_FLOW :
						    METRIC_SERVICE_NEW_FLOW);
	obs->flags |= SLUICE_EVENT_F_NEW_FLOW;
	obs->translated = 1;
	if (ct_flags & CT_FLAG_SNAT) {
		*redirect = lb_fib_ifindex(skb, pkt);
		if (*redirect)
			return LB_REDIRECT;
	}
	return LB_TRANSLATED;
}

/**
 * lb_reverse() - give a backend's reply the frontend's address as its source
 * (and, for a masqueraded flow, the client's as its destination).
 * @ifindex: set when the reply must leave through that device
 *           (CT_FLAG_REDIRECT): LB_REDIRECT is returned then.
 * @obs: gets the flow's frontend and backend (and the reason on LB_DROP).
 *
 * When the reply closes the flow (FIN/RST) the forward entry learns it too
 * (ct_lookup), so a later SYN reusing the tuple selects a backend afresh.
 */
static __always_inline int lb_reverse(struct __sk_buff *skb, struct packet *pkt, __u32 *ifindex,
				      struct obs_ctx *obs)
{
	struct ct_entry *ct = ct_lookup(pkt, CT_DIR_REPLY);

	if (!ct)
		return LB_PASS;
	*ifindex = (ct->flags & CT_FLAG_REDIRECT) ? ct->ifindex : 0;
	obs->rev_nat_id = ct->rev_nat_id;
	obs->backend_id = ct->backend_id;
	obs->flags |= SLUICE_EVENT_F_REPLY;
	if (ct->flags & CT_FLAG_NODEPORT)
		obs->flags |= SLUICE_EVENT_F_NODEPORT;
	if (nat_rewrite(skb, pkt, 0, ct->nat_address, ct->nat_port) ||
	    ((ct->flags & CT_FLAG_SNAT) &&
	     nat_rewrite(skb, pkt, 1, ct->peer_address, ct->peer_port))) {
		obs->reason = SLUICE_REASON_NAT_FAILED;
		return LB_DROP;
	}
	metric_inc(METRIC_REVNAT);
	obs->translated = 1;
	return *ifindex ? LB_REDIRECT : LB_TRANSLATED;
}

#endif /* SLUICE_LB_H */
