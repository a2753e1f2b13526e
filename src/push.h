/*
 * push.h: the decision core of the push queue (push_decide.c), shared by
 * wallet.enqueue_push (push_enqueue.c) and whatever else decides a message.
 *
 * API (every function that reads runs under the caller's SPI_connect):
 *   push_config_topic(merchant, topic, &topic)      the topic's kind and cap
 *       group (cached per backend; wallet.push_topics, or the defaults)
 *   push_config_settings(merchant, &settings)        the merchant's default
 *       quiet hours and time zone (cached; wallet.push_settings or defaults)
 *   push_config_caps(merchant, channel, group, caps, max)   the merchant's
 *       caps of a channel and cap group (cached; wallet.push_caps)
 *   push_member_read(merchant, member, channel, topic, &settings, &member)
 *       the member's state for a decision: erased, consent to the channel
 *       and topic, chosen topics, own quiet hours and caps, effective time
 *       zone and quiet hours (read, never cached: call under the member lock)
 *   push_member_read_claiming(..., dedup_key, push_id, &duplicate, &member)
 *       the same, claiming the dedup key for push_id in the same statement
 *       (INSERT ... ON CONFLICT DO NOTHING on wallet.push_dedup)
 *   push_refusal(&topic, &member)                    NULL when the member may
 *       get the topic, else the reason (member_forgotten, muted, no_consent,
 *       consent_withdrawn, topic_not_chosen), as wallet_internal.push_refusal
 *   push_quiet_until(t, tz, qs, qe, &until)          whether t lies in the
 *       quiet hours qs..qe (local time in tz, over midnight when qe < qs)
 *       and when they end, as wallet_internal.push_quiet_until
 *   push_cap_reached(merchant, member, channel, &topic, &member, priority, t)
 *       whether any cap of the channel and group (the merchant's and the
 *       member's day and week caps) is reached at t, counting as enqueue
 *       plans (sending and sent at their claim time, queued at their planned
 *       slot with a priority at least priority)
 *   push_decide(...)                                 the whole enqueue decision
 *       for a message that is not a duplicate: status (queued, deferred,
 *       suppressed), reason and eligible time; the rare moved slot (quiet
 *       hours now, a cap reached) is computed by wallet_internal.push_slot
 *   push_claim_check(merchant, member, push, channel, topic, group, service,
 *       has_expiry, expires_at, &refusal, &slow, &member_ref)   the check
 *       claim_pushes makes of a message under its member's lock, by direct
 *       reads: the refusal (or NULL), else whether quiet hours or a cap may
 *       move it; false when the statement must decide
 *   push_member_lock_direct(merchant, ref, &member, &push_id, &found)
 *       (push_write.c) the member looked up and locked as enqueue_push's
 *       statement does, a message id drawn for it; false when the statement
 *       must run (REPEATABLE READ, tables not as made)
 *   push_member_read_direct(merchant, member, channel, topic, key, push_id,
 *       v, n, &member_ref)   (push_write.c) the columns of member_read's
 *       statement by index probes, the dedup key claimed first when given;
 *       latest (the claim's check, no key): read with the newest snapshot
 *       under REPEATABLE READ too
 *   push_insert_direct(args, nulls)                  (push_write.c) the message
 *       enqueue_push decided, written into its partition without an executor
 *       from the arguments of its INSERT; false when the statement must
 *
 * The caches are dropped by the statement triggers on wallet.push_settings,
 * push_topics and push_caps (wallet_internal.push_config_changed), as
 * tiers.c does for the tier programs.
 */
#ifndef WALLET_PUSH_H
#define WALLET_PUSH_H

#include "datatype/timestamp.h"
#include "fmgr.h"
#include "utils/date.h"

#define PUSH_NAME_MAX	40		/* channel, topic and cap group names */
#define PUSH_TZ_MAX		64
#define PUSH_CAPS_MAX	8		/* caps of one channel and group, the member's two included */

typedef struct PushTopic
{
	bool		service;		/* a service topic: no opt-in, no quiet hours */
	bool		capped;			/* counts against cap_group */
	char		cap_group[PUSH_NAME_MAX + 1];
} PushTopic;

typedef struct PushSettings
{
	bool		found;			/* the merchant has a wallet.push_settings row */
	bool		quiet;			/* default quiet hours (found or not) */
	TimeADT		quiet_start;
	TimeADT		quiet_end;
	char		time_zone[PUSH_TZ_MAX + 1];
} PushSettings;

typedef struct PushCap
{
	char		period;			/* 'r' rolling, 'd' day, 'w' week */
	bool		drop;			/* policy drop (else defer) */
	int32		max_count;
	Interval	window_size;	/* rolling only */
} PushCap;

typedef struct PushMember
{
	bool		forgotten;
	int			consent;		/* -1 none recorded, 0 withdrawn, 1 granted */
	bool		topic_not_chosen;
	bool		quiet;			/* effective quiet hours */
	TimeADT		quiet_start;
	TimeADT		quiet_end;
	int32		max_per_day;	/* -1: none */
	int32		max_per_week;	/* -1: none */
	char		time_zone[PUSH_TZ_MAX + 1];	/* effective */
} PushMember;

typedef struct PushDecision
{
	const char *status;			/* queued, deferred, suppressed */
	const char *reason;			/* NULL for queued */
	bool		has_eligible;
	TimestampTz eligible_at;
} PushDecision;

/* SPI_prepare + SPI_keepplan, or an error */
extern struct _SPI_plan *push_keep_plan(const char *sql, int nargs, Oid *argtypes);
extern void push_config_topic(int64 merchant_id, const char *topic, PushTopic *out);
extern void push_config_settings(int64 merchant_id, PushSettings *out);
extern int	push_config_caps(int64 merchant_id, const char *channel, const char *cap_group,
							 PushCap *out, int max);
extern void push_member_read(int64 merchant_id, int64 member_id, const char *channel,
							 const char *topic, const PushSettings *settings, PushMember *out);
extern void push_member_read_claiming(int64 merchant_id, int64 member_id, const char *channel,
									  const char *topic, const PushSettings *settings,
									  text *dedup_key, int64 push_id, bool *duplicate,
									  PushMember *out);
extern const char *push_refusal(const PushTopic *topic, const PushMember *member);
extern bool push_quiet_until(TimestampTz t, const char *tz, TimeADT qs, TimeADT qe,
							 TimestampTz *until);
extern bool push_cap_reached(int64 merchant_id, int64 member_id, const char *channel,
							 const PushTopic *topic, const PushMember *member,
							 int32 priority, TimestampTz t);
extern void push_decide(int64 merchant_id, int64 member_id, const char *channel,
						const char *topic_name, const PushTopic *topic, const PushMember *member,
						int32 priority, TimestampTz t, bool has_expiry, TimestampTz expires_at,
						PushDecision *out);

extern bool push_insert_direct(Datum *args, const char *argnulls);

extern bool push_member_read_direct(int64 merchant_id, int64 member_id, const char *channel, const char *topic,
									 text *dedup_key, int64 push_id, Datum *v, bool *n, Datum *member_ref,
									 bool latest);
extern bool push_claim_check(int64 merchant_id, int64 member_id, int64 push_id, const char *channel,
							 const char *topic, const char *cap_group, bool service, bool has_expiry,
							 TimestampTz expires_at, const char **refusal, bool *slow, Datum *member_ref);

extern bool push_member_lock_direct(int64 merchant_id, text *member_ref, int64 *member_id, int64 *push_id,
									bool *found);

#endif							/* WALLET_PUSH_H */
