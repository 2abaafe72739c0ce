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

/**
 * lb_forward() - translate a client's packet addressed to a Service.
 * @nodeport: also match NodePort frontends (0.0.0.0:port): only on packets
 *            that arrived at a node device.
 * @obs: gets the frontend, backend, flags and (on LB_DROP / LB_NO_BACKEND)
 *       the drop reason, for the packet's event.
 *
 * Established flows follow their conntrack entry, so they stay on their
 * backend even after it left the Service; new flows get a fresh backend.
 */
static __always_inline int lb_forward(struct __sk_buff *skb, struct packet *pkt, int nodeport,
				      struct obs_ctx *obs)
{
	struct lb_service *svc;
	struct lb_backend *backend;
	struct ct_entry *ct;
	__be32 lookup_addr = pkt->daddr;
	__u32 backend_id = 0;
	__u8 ct_flags = 0;

	ct = ct_lookup(pkt, CT_DIR_FORWARD);
	if (ct) {
		obs->rev_nat_id = ct->rev_nat_id;
		obs->backend_id = ct->backend_id;
		if (ct->flags & CT_FLAG_NODEPORT)
			obs->flags |= SLUICE_EVENT_F_NODEPORT;
		if (nat_rewrite(skb, pkt, 1, ct->nat_address, ct->nat_port)) {
			obs->reason = SLUICE_REASON_NAT_FAILED;
			return LB_DROP;
		}
		metric_inc(METRIC_SERVICE_CT_HIT);
		obs->translated = 1;
		return LB_TRANSLATED;
	}

	svc = lb_lookup(lookup_addr, pkt->dport, pkt->proto);
	if (!svc && nodeport) {
		lookup_addr = 0;
		svc = lb_lookup(0, pkt->dport, pkt->proto);
		if (svc && !(svc->flags & LB_FLAG_NODEPORT))
			svc = NULL;
		ct_flags = CT_FLAG_NODEPORT;
	}
	if (!svc)
		return LB_PASS;
	obs->rev_nat_id = svc->rev_nat_id;
	if (ct_flags)
		obs->flags |= SLUICE_EVENT_F_NODEPORT;
	if (svc->count == 0) {
		metric_inc(METRIC_DROP_NO_BACKEND);
		if (svc->flags & LB_FLAG_DROP_NO_BACKEND) {
			obs->reason = SLUICE_REASON_NO_LOCAL_BACKEND;
			return LB_DROP;
		}
		obs->reason = SLUICE_REASON_NO_SERVICE_BACKEND;
		return LB_NO_BACKEND;
	}

	backend = lb_select(svc, lookup_addr, pkt->dport, pkt->proto, pkt->saddr,
			    lb_flow_hash(((__u64)pkt->saddr << 32) | pkt->daddr,
					 ((__u64)pkt->sport << 24) | ((__u64)pkt->dport << 8) | pkt->proto),
			    &backend_id);
	if (!backend) {
		metric_inc(METRIC_DROP_INCONSISTENT_SLOT);
		obs->reason = SLUICE_REASON_INCONSISTENT_SLOT;
		return LB_DROP;
	}
	obs->backend_id = backend_id;
	if (ct_create(pkt, pkt->daddr, pkt->dport, backend, backend_id, svc->rev_nat_id,
		      ct_flags, ct_flags ? skb->ifindex : 0)) {
		metric_inc(METRIC_DROP_CT_FULL);
		obs->reason = SLUICE_REASON_CT_INSERT_FAILED;
		return LB_DROP;
	}
	if (nat_rewrite(skb, pkt, 1, backend->address, backend->port)) {
		obs->reason = SLUICE_REASON_NAT_FAILED;
		return LB_DROP;
	}
	metric_inc(ct_flags ? METRIC_NODEPORT_NEW_FLOW : METRIC_SERVICE_NEW_FLOW);
	obs->flags |= SLUICE_EVENT_F_NEW_FLOW;
	obs->translated = 1;
	return LB_TRANSLATED;
}

/**
 * lb_reverse() - give a backend's reply the frontend's address as its source.
 * @ifindex: set for NodePort replies, which must leave through that device.
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
	*ifindex = (ct->flags & CT_FLAG_NODEPORT) ? ct->ifindex : 0;
	obs->rev_nat_id = ct->rev_nat_id;
	obs->backend_id = ct->backend_id;
	obs->flags |= SLUICE_EVENT_F_REPLY;
	if (*ifindex)
		obs->flags |= SLUICE_EVENT_F_NODEPORT;
	if (nat_rewrite(skb, pkt, 0, ct->nat_address, ct->nat_port)) {
		obs->reason = SLUICE_REASON_NAT_FAILED;
		return LB_DROP;
	}
	metric_inc(METRIC_REVNAT);
	obs->translated = 1;
	return *ifindex ? LB_REDIRECT : LB_TRANSLATED;
}

#endif /* SLUICE_LB_H */
