/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Flow events to user space through a ring buffer, and the accounting done
 * at every verdict.
 *
 * Each program fills a struct obs_ctx as the packet goes through the load
 * balancer and ends with exactly one of obs_pass(), obs_drop() or
 * obs_reject(): they count the packet in sl_traffic and decide whether an
 * event is due. By default only new translated flows (conntrack creation)
 * and drops produce events, so an established flow costs no ring buffer
 * traffic; the agent can switch on an event per translated packet in
 * sl_config for debugging. A full ring buffer never blocks or drops the
 * packet: the event is lost and METRIC_EVENTS_LOST counts it.
 */
#ifndef SLUICE_LIB_EVENTS_H
#define SLUICE_LIB_EVENTS_H

#include "maps.h"
#include "metrics.h"

/* Ring fill (bytes) at which the agent is woken: an eighth, ~1800 events. */
#define EVENTS_WAKEUP_BYTES (SLUICE_EVENTS_BYTES / 8)

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, SLUICE_EVENTS_BYTES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct sluice_config);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_config SEC(".maps");

/**
 * struct obs_ctx - what the events of one packet need, gathered on its way.
 * @orig_*: the tuple as the packet arrived (translation rewrites struct packet).
 * @len: skb->len on arrival (a refusal shrinks the skb in place).
 * @rev_nat_id/@backend_id: the Service frontend and backend, when known.
 * @flags: SLUICE_EVENT_F_* learnt on the way.
 * @reason: why the packet is dropped (enum sluice_drop_reason).
 * @translated: the packet was rewritten (a per-packet trace candidate).
 * @rule_id/@src_identity/@dst_identity: what policy decided with (lib/policy.h).
 */
struct obs_ctx {
	__be32 orig_saddr;
	__be32 orig_daddr;
	__be16 orig_sport;
	__be16 orig_dport;
	__u32 ifindex;
	__u32 len;
	__u32 rev_nat_id;
	__u32 backend_id;
	__u32 rule_id;
	__u32 src_identity;
	__u32 dst_identity;
	__u8 point;
	__u8 flags;
	__u8 reason;
	__u8 translated;
};

static __always_inline void obs_init(struct obs_ctx *obs, const struct __sk_buff *skb,
				     const struct packet *pkt, __u8 point)
{
	obs->orig_saddr = pkt->saddr;
	obs->orig_daddr = pkt->daddr;
	obs->orig_sport = pkt->sport;
	obs->orig_dport = pkt->dport;
	obs->ifindex = skb->ifindex;
	obs->len = skb->len;
	obs->rev_nat_id = 0;
	obs->backend_id = 0;
	obs->rule_id = 0;
	obs->src_identity = 0;
	obs->dst_identity = 0;
	obs->point = point;
	obs->flags = 0;
	obs->reason = SLUICE_REASON_NONE;
	obs->translated = 0;
}

/* trace_packets() - true when the agent asked for an event per translated packet. */
static __always_inline int trace_packets(void)
{
	__u32 zero = 0;
	struct sluice_config *c = bpf_map_lookup_elem(&sl_config, &zero);

	return c && (c->flags & SLUICE_CFG_TRACE_PACKETS);
}

/**
 * event_emit() - write one event describing @pkt (as it leaves) and @obs.
 *
 * Ring buffer memory is not zeroed: every field, padding included, is
 * written, so no stale kernel bytes reach user space.
 */
static __always_inline void event_emit(const struct obs_ctx *obs, const struct packet *pkt,
				       __u8 type)
{
	struct sluice_event *e = bpf_ringbuf_reserve(&sl_events, sizeof(*e), 0);

	if (!e) {
		metric_inc(METRIC_EVENTS_LOST);
		return;
	}
	e->timestamp_ns = bpf_ktime_get_ns();
	e->type = type;
	e->reason = obs->reason;
	e->point = obs->point;
	e->proto = pkt->proto;
	e->tcp_flags = pkt->tcp_flags;
	e->flags = obs->flags;
	e->pad0 = 0;
	e->ifindex = obs->ifindex;
	e->pkt_len = obs->len;
	e->orig_saddr = obs->orig_saddr;
	e->orig_daddr = obs->orig_daddr;
	e->orig_sport = obs->orig_sport;
	e->orig_dport = obs->orig_dport;
	e->xlat_saddr = pkt->saddr;
	e->xlat_daddr = pkt->daddr;
	e->xlat_sport = pkt->sport;
	e->xlat_dport = pkt->dport;
	e->rev_nat_id = obs->rev_nat_id;
	e->backend_id = obs->backend_id;
	e->rule_id = obs->rule_id;
	e->src_identity = obs->src_identity;
	e->dst_identity = obs->dst_identity;
	e->pad1 = 0;
	/*
	 * Waking the agent for every event costs a context switch per new
	 * connection on a busy node (measured: most of the policy and tracing
	 * overhead). It is woken only when the ring fills past
	 * EVENTS_WAKEUP_BYTES; otherwise it reads on its own clock
	 * (EVENTS_POLL in the agent, tens of milliseconds).
	 */
	bpf_ringbuf_submit(e, bpf_ringbuf_query(&sl_events, BPF_RB_AVAIL_DATA) >= EVENTS_WAKEUP_BYTES
				      ? BPF_RB_FORCE_WAKEUP
				      : BPF_RB_NO_WAKEUP);
}

/**
 * obs_pass() - account a packet that goes on; trace it if due.
 * @ret: the program's return value, passed through.
 */
static __always_inline int obs_pass(const struct obs_ctx *obs, const struct packet *pkt, int ret)
{
	traffic_count(SLUICE_REASON_NONE, obs->point, obs->len);
	if ((obs->flags & SLUICE_EVENT_F_NEW_FLOW) || (obs->translated && trace_packets()))
		event_emit(obs, pkt, SLUICE_EVENT_TRACE);
	return ret;
}

/* obs_drop() - account and report a packet dropped for obs->reason. */
static __always_inline int obs_drop(const struct obs_ctx *obs, const struct packet *pkt)
{
	traffic_count(obs->reason, obs->point, obs->len);
	event_emit(obs, pkt, SLUICE_EVENT_DROP);
	return TC_ACT_SHOT;
}

/**
 * obs_reject() - account and report a refused connection (no backend).
 * @ret: what reject() returned: a redirect of the refusal, or TC_ACT_SHOT
 *       when the refusal could not be built.
 */
static __always_inline int obs_reject(struct obs_ctx *obs, const struct packet *pkt, int ret)
{
	if (ret == TC_ACT_SHOT) {
		obs->reason = SLUICE_REASON_REJECT_FAILED;
	} else {
		obs->reason = SLUICE_REASON_NO_SERVICE_BACKEND;
		obs->flags |= SLUICE_EVENT_F_REPLIED;
	}
	traffic_count(obs->reason, obs->point, obs->len);
	event_emit(obs, pkt, SLUICE_EVENT_DROP);
	return ret;
}

#endif /* SLUICE_LIB_EVENTS_H */
