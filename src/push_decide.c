/*
 * push_decide.c: the decision core of the push queue (push.h, README "Push").
 *
 * What enqueue_push decides per message, without a chain of PL/pgSQL
 * statements: the merchant's settings, topics and caps come from a
 * per-backend cache; the member's consent and preferences from one query;
 * quiet hours are computed here; a cap is checked by one bounded count per
 * cap.  Only a message that must move (quiet hours now, a cap reached) asks
 * wallet_internal.push_slot for its slot, so the planning rules live in one
 * place.  Every query here runs under the caller's SPI connection and under
 * the pinned search_path of the calling function.
 */
#include "wallet.h"

#include "push.h"

#include "access/genam.h"
#include "access/relscan.h"
#include "access/skey.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/partition.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/datetime.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "catalog/namespace.h"

/*
 * Per backend, each merchant's push settings, topics and caps.  The
 * statement triggers on the three tables (push_config_changed) queue a
 * relcache invalidation of their table: this backend drops the cache at its
 * next command, every other one when the change commits (each lookup
 * accepts pending invalidations first, so a transaction that starts after
 * the commit sees the change).
 */
typedef struct PushTopicRow
{
	char		topic[PUSH_NAME_MAX + 1];
	PushTopic	t;
} PushTopicRow;

typedef struct PushCapRow
{
	char		channel[PUSH_NAME_MAX + 1];
	char		cap_group[PUSH_NAME_MAX + 1];
	PushCap		cap;
} PushCapRow;

typedef struct PushMerchant
{
	int64		merchant_id;
	PushSettings settings;
	int			ntopics;
	PushTopicRow *topics;
	int			ncaps;
	PushCapRow *caps;
} PushMerchant;

static HTAB *config_cache = NULL;
static MemoryContext config_cxt = NULL;
static bool config_valid = false;
static bool config_callback = false;
static Oid	settings_relid = InvalidOid;
static Oid	topics_relid = InvalidOid;
static Oid	caps_relid = InvalidOid;

static SPIPlanPtr member_plan[2] = {NULL, NULL};	/* [1]: claiming a dedup key too */
static SPIPlanPtr count_plan[2] = {NULL, NULL};	/* [0] calendar [1] rolling */
static SPIPlanPtr slot_plan = NULL;

static void
config_invalidate(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == settings_relid || relid == topics_relid || relid == caps_relid)
		config_valid = false;
}

static void
config_reset(void)
{
	HASHCTL		ctl;
	Oid			nsp;

	if (!config_callback)
	{
		wallet_register_relcache_callback(config_invalidate);
		config_callback = true;
	}
	if (config_cxt == NULL)
		config_cxt = AllocSetContextCreate(TopMemoryContext, "wallet push config", ALLOCSET_SMALL_SIZES);
	else
		MemoryContextReset(config_cxt);
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(PushMerchant);
	ctl.hcxt = config_cxt;
	config_cache = hash_create("wallet push merchants", 16, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	nsp = get_namespace_oid("wallet", true);
	settings_relid = OidIsValid(nsp) ? get_relname_relid("push_settings", nsp) : InvalidOid;
	topics_relid = OidIsValid(nsp) ? get_relname_relid("push_topics", nsp) : InvalidOid;
	caps_relid = OidIsValid(nsp) ? get_relname_relid("push_caps", nsp) : InvalidOid;
	config_valid = true;
}

/* copies a text value into a fixed buffer; false when it does not fit */
static bool
copy_name(char *dst, int size, Datum d)
{
	text	   *t = DatumGetTextPP(d);
	int			len = VARSIZE_ANY_EXHDR(t);

	if (len >= size)
		return false;
	memcpy(dst, VARDATA_ANY(t), len);
	dst[len] = '\0';
	return true;
}

/* Under SPI: reads a merchant's settings, topics and caps into *m (in config_cxt). */
static void
config_load(PushMerchant *m)
{
	Oid			argtypes[1] = {INT8OID};
	Datum		args[1] = {Int64GetDatum(m->merchant_id)};
	bool		isnull;
	uint64		i;
	PushSettings *s = &m->settings;

	/* a merchant without a row has the defaults: 22:00-08:00 UTC */
	s->found = false;
	s->quiet = true;
	s->quiet_start = 22 * USECS_PER_HOUR;
	s->quiet_end = 8 * USECS_PER_HOUR;
	strcpy(s->time_zone, "UTC");
	if (SPI_execute_with_args("SELECT s.quiet_start, s.quiet_end, s.time_zone FROM wallet.push_settings s "
							  "WHERE s.merchant_id OPERATOR(pg_catalog.=) $1",
							  1, argtypes, args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "reading wallet.push_settings failed");
	if (SPI_processed == 1)
	{
		HeapTuple	tup = SPI_tuptable->vals[0];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		Datum		d;

		s->found = true;
		d = SPI_getbinval(tup, desc, 1, &isnull);
		s->quiet = !isnull;
		if (!isnull)
		{
			s->quiet_start = DatumGetTimeADT(d);
			s->quiet_end = DatumGetTimeADT(SPI_getbinval(tup, desc, 2, &isnull));
		}
		if (!copy_name(s->time_zone, sizeof(s->time_zone), SPI_getbinval(tup, desc, 3, &isnull)))
			elog(ERROR, "time zone of merchant " INT64_FORMAT " too long", m->merchant_id);
	}

	if (SPI_execute_with_args("SELECT t.topic, t.service, t.cap_group FROM wallet.push_topics t "
							  "WHERE t.merchant_id OPERATOR(pg_catalog.=) $1",
							  1, argtypes, args, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "reading wallet.push_topics failed");
	m->ntopics = 0;
	m->topics = MemoryContextAllocZero(config_cxt, sizeof(PushTopicRow) * (SPI_processed + 1));
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		PushTopicRow *r = &m->topics[m->ntopics];
		Datum		g;

		/* names are checked identifiers of at most 40 characters: a longer one names nothing enqueued */
		if (!copy_name(r->topic, sizeof(r->topic), SPI_getbinval(tup, desc, 1, &isnull)))
			continue;
		r->t.service = DatumGetBool(SPI_getbinval(tup, desc, 2, &isnull));
		g = SPI_getbinval(tup, desc, 3, &isnull);
		r->t.capped = !isnull && copy_name(r->t.cap_group, sizeof(r->t.cap_group), g);
		if (!isnull && !r->t.capped)
			continue;
		m->ntopics++;
	}

	if (SPI_execute_with_args("SELECT k.channel, k.cap_group, k.period, k.max_count, k.window_size, "
							  "k.policy OPERATOR(pg_catalog.=) 'drop' FROM wallet.push_caps k "
							  "WHERE k.merchant_id OPERATOR(pg_catalog.=) $1",
							  1, argtypes, args, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "reading wallet.push_caps failed");
	m->ncaps = 0;
	m->caps = MemoryContextAllocZero(config_cxt, sizeof(PushCapRow) * (SPI_processed + 1));
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		PushCapRow *r = &m->caps[m->ncaps];
		char		period[16];
		Datum		w;

		if (!copy_name(r->channel, sizeof(r->channel), SPI_getbinval(tup, desc, 1, &isnull)) ||
			!copy_name(r->cap_group, sizeof(r->cap_group), SPI_getbinval(tup, desc, 2, &isnull)) ||
			!copy_name(period, sizeof(period), SPI_getbinval(tup, desc, 3, &isnull)))
			continue;
		r->cap.period = period[0] == 'r' ? 'r' : period[0] == 'd' ? 'd' : 'w';
		r->cap.max_count = DatumGetInt32(SPI_getbinval(tup, desc, 4, &isnull));
		w = SPI_getbinval(tup, desc, 5, &isnull);
		if (!isnull)
			r->cap.window_size = *DatumGetIntervalP(w);
		r->cap.drop = DatumGetBool(SPI_getbinval(tup, desc, 6, &isnull));
		m->ncaps++;
	}
}

/* Under SPI: the merchant's cached configuration (loaded on first use). */
static PushMerchant *
config_lookup(int64 merchant_id)
{
	PushMerchant *e;
	PushMerchant m;

	AcceptInvalidationMessages();
	if (!config_valid)
		config_reset();
	e = hash_search(config_cache, &merchant_id, HASH_FIND, NULL);
	if (e != NULL)
		return e;
	memset(&m, 0, sizeof(m));
	m.merchant_id = merchant_id;
	config_load(&m);
	/* the queries may have processed an invalidation that reset the cache (and its context) */
	if (!config_valid)
	{
		config_reset();
		config_load(&m);
		if (!config_valid)
			config_reset();		/* used once below, loaded again next time */
	}
	e = hash_search(config_cache, &merchant_id, HASH_ENTER, NULL);
	*e = m;
	return e;
}

void
push_config_topic(int64 merchant_id, const char *topic, PushTopic *out)
{
	PushMerchant *m = config_lookup(merchant_id);
	int			i;

	for (i = 0; i < m->ntopics; i++)
		if (strcmp(m->topics[i].topic, topic) == 0)
		{
			*out = m->topics[i].t;
			return;
		}
	/* a topic without a row: marketing of cap group marketing, except topic service */
	memset(out, 0, sizeof(*out));
	out->service = strcmp(topic, "service") == 0;
	out->capped = !out->service;
	if (out->capped)
		strcpy(out->cap_group, "marketing");
}

void
push_config_settings(int64 merchant_id, PushSettings *out)
{
	*out = config_lookup(merchant_id)->settings;
}

int
push_config_caps(int64 merchant_id, const char *channel, const char *cap_group, PushCap *out, int max)
{
	PushMerchant *m = config_lookup(merchant_id);
	int			i,
				n = 0;

	for (i = 0; i < m->ncaps && n < max; i++)
		if (strcmp(m->caps[i].channel, channel) == 0 && strcmp(m->caps[i].cap_group, cap_group) == 0)
			out[n++] = m->caps[i].cap;
	return n;
}

SPIPlanPtr
push_keep_plan(const char *sql, int nargs, Oid *argtypes)
{
	SPIPlanPtr	plan = SPI_prepare(sql, nargs, argtypes);

	if (plan == NULL || SPI_keepplan(plan) != 0)
		elog(ERROR, "preparing a push query failed: %s", SPI_result_code_string(SPI_result));
	return plan;
}

/* The member's state from the columns of member_read's statement (v, n: 0 to 8). */
static void
member_fill(const Datum *v, const bool *n, const PushSettings *settings, int64 member_id, PushMember *out)
{
	memset(out, 0, sizeof(*out));
	out->forgotten = !n[0] && DatumGetBool(v[0]);
	if (n[1])
		strcpy(out->time_zone, settings->time_zone);
	else if (!copy_name(out->time_zone, sizeof(out->time_zone), v[1]))
		elog(ERROR, "time zone of member " INT64_FORMAT " too long", member_id);
	out->consent = n[2] ? -1 : DatumGetBool(v[2]) ? 1 : 0;
	if (!n[3] && DatumGetBool(v[3]))
	{
		/* the member's own quiet hours */
		out->quiet = true;
		out->quiet_start = DatumGetTimeADT(v[4]);
		out->quiet_end = DatumGetTimeADT(v[5]);
	}
	else
	{
		out->quiet = settings->quiet;
		out->quiet_start = settings->quiet_start;
		out->quiet_end = settings->quiet_end;
	}
	out->topic_not_chosen = !n[6] && DatumGetBool(v[6]);
	out->max_per_day = n[7] ? -1 : DatumGetInt32(v[7]);
	out->max_per_week = n[8] ? -1 : DatumGetInt32(v[8]);
}


/*
 * The member's state; with a dedup key (dedup_key not NULL), the key is
 * claimed for push_id in the same statement (a concurrent first use of the
 * key: waits for it, then finds it) and *duplicate tells whether it was taken.
 */
static void
member_read(int64 merchant_id, int64 member_id, const char *channel, const char *topic,
			const PushSettings *settings, text *dedup_key, int64 push_id, bool *duplicate,
			PushMember *out)
{
	Datum		v[10];
	bool		n[10];
	SPIPlanPtr *plan = &member_plan[dedup_key != NULL ? 1 : 0];

	if (*plan == NULL)
	{
		Oid			argtypes[6] = {INT8OID, INT8OID, TEXTOID, TEXTOID, TEXTOID, INT8OID};

		*plan = push_keep_plan(dedup_key == NULL ?
			"SELECT w.status OPERATOR(pg_catalog.=) 'forgotten', w.time_zone, c.granted, "
			"       p.member_id IS NOT NULL AND p.quiet_start IS NOT NULL, p.quiet_start, p.quiet_end, "
			"       coalesce(p.topics IS NOT NULL AND NOT ($4 OPERATOR(pg_catalog.=) ANY (p.topics)), false), "
			"       p.max_per_day, p.max_per_week "
			"  FROM wallet.members w "
			"  LEFT JOIN wallet.push_consents c ON c.merchant_id OPERATOR(pg_catalog.=) $1 "
			"   AND c.member_id OPERATOR(pg_catalog.=) w.member_id AND c.channel OPERATOR(pg_catalog.=) $3 "
			"   AND c.topic OPERATOR(pg_catalog.=) $4 "
			"  LEFT JOIN wallet.push_preferences p ON p.member_id OPERATOR(pg_catalog.=) w.member_id "
			" WHERE w.member_id OPERATOR(pg_catalog.=) $2" :
			"WITH d AS (INSERT INTO wallet.push_dedup (merchant_id, dedup_key, push_id) VALUES ($1, $5, $6) "
			"           ON CONFLICT DO NOTHING RETURNING 1) "
			"SELECT w.status OPERATOR(pg_catalog.=) 'forgotten', w.time_zone, c.granted, "
			"       p.member_id IS NOT NULL AND p.quiet_start IS NOT NULL, p.quiet_start, p.quiet_end, "
			"       coalesce(p.topics IS NOT NULL AND NOT ($4 OPERATOR(pg_catalog.=) ANY (p.topics)), false), "
			"       p.max_per_day, p.max_per_week, NOT EXISTS (SELECT FROM d) "
			"  FROM wallet.members w "
			"  LEFT JOIN wallet.push_consents c ON c.merchant_id OPERATOR(pg_catalog.=) $1 "
			"   AND c.member_id OPERATOR(pg_catalog.=) w.member_id AND c.channel OPERATOR(pg_catalog.=) $3 "
			"   AND c.topic OPERATOR(pg_catalog.=) $4 "
			"  LEFT JOIN wallet.push_preferences p ON p.member_id OPERATOR(pg_catalog.=) w.member_id "
			" WHERE w.member_id OPERATOR(pg_catalog.=) $2",
			dedup_key == NULL ? 4 : 6, argtypes);
	}
	if (!push_member_read_direct(merchant_id, member_id, channel, topic, dedup_key, push_id, v, n, NULL, false))
	{
		Datum		args[6];

		args[0] = Int64GetDatum(merchant_id);
		args[1] = Int64GetDatum(member_id);
		args[2] = CStringGetTextDatum(channel);
		args[3] = CStringGetTextDatum(topic);
		args[4] = PointerGetDatum(dedup_key);
		args[5] = Int64GetDatum(push_id);
		if (SPI_execute_plan(*plan, args, NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "reading the push state of member " INT64_FORMAT " failed", member_id);
		if (SPI_processed != 1)
			elog(ERROR, "member " INT64_FORMAT " not found", member_id);
		for (int i = 0; i < (dedup_key != NULL ? 10 : 9); i++)
			v[i] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, i + 1, &n[i]);
	}
	member_fill(v, n, settings, member_id, out);
	if (dedup_key != NULL)
		*duplicate = !n[9] && DatumGetBool(v[9]);
}

void
push_member_read(int64 merchant_id, int64 member_id, const char *channel, const char *topic,
				 const PushSettings *settings, PushMember *out)
{
	member_read(merchant_id, member_id, channel, topic, settings, NULL, 0, NULL, out);
}

void
push_member_read_claiming(int64 merchant_id, int64 member_id, const char *channel, const char *topic,
						  const PushSettings *settings, text *dedup_key, int64 push_id,
						  bool *duplicate, PushMember *out)
{
	member_read(merchant_id, member_id, channel, topic, settings, dedup_key, push_id, duplicate, out);
}

const char *
push_refusal(const PushTopic *topic, const PushMember *member)
{
	if (member->forgotten)
		return "member_forgotten";
	if (topic->service)
		return member->consent == 0 ? "muted" : NULL;
	if (member->consent < 0)
		return "no_consent";
	if (member->consent == 0)
		return "consent_withdrawn";
	if (member->topic_not_chosen)
		return "topic_not_chosen";
	return NULL;
}

/* t AT TIME ZONE tz (a local timestamp) and back */
static Timestamp
to_local(TimestampTz t, const char *tz)
{
	return DatumGetTimestamp(DirectFunctionCall2(timestamptz_zone, CStringGetTextDatum(tz),
												 TimestampTzGetDatum(t)));
}

static TimestampTz
from_local(Timestamp lt, const char *tz)
{
	return DatumGetTimestampTz(DirectFunctionCall2(timestamp_zone, CStringGetTextDatum(tz),
												   TimestampGetDatum(lt)));
}

/* midnight of a local timestamp's day (lt::date) */
static Timestamp
local_day(Timestamp lt)
{
	Timestamp	r = lt - lt % USECS_PER_DAY;

	if (lt % USECS_PER_DAY < 0)
		r -= USECS_PER_DAY;
	return r;
}

bool
push_quiet_until(TimestampTz t, const char *tz, TimeADT qs, TimeADT qe, TimestampTz *until)
{
	Timestamp	lt,
				day;
	TimeADT		lo;
	TimestampTz e;

	lt = to_local(t, tz);
	day = local_day(lt);
	lo = lt - day;
	if (!((qs < qe && lo >= qs && lo < qe) || (qs > qe && (lo >= qs || lo < qe))))
		return false;
	/* the next local quiet_end after t (an end in a DST gap moves on by the gap) */
	e = from_local(day + qe, tz);
	if (e <= t)
		e = from_local(day + USECS_PER_DAY + qe, tz);
	*until = e;
	return true;
}

/*
 * The count of cap_count by direct scans of the partitions' cap indexes:
 * the queued messages (push_messages_member_idx) in the queue slots q0-q2
 * (the finished partition holds none: its CHECK), the sending and sent ones
 * (push_messages_member_sent_idx) in all four.  A plan over the partitioned
 * table starts two Appends of four index scans per count, which cost more
 * than the probes; the answer is the query's, under a snapshot taken as SPI
 * takes it.  Returns -1 when a partition or index is not where 0.2.0 put
 * it (the caller counts by the query then).
 */
static const char *const count_parts[4] = {"push_messages_q0", "push_messages_q1", "push_messages_q2", "push_messages_done"};

static int64
cap_count_scan(Relation heap, Oid indexoid, int64 member_id, text *channel, text *cap_group,
			   AttrNumber priority_att, int32 priority, bool rolling, TimestampTz ws, TimestampTz we,
			   int64 limit, Snapshot snap, AttrNumber id_att, int64 exclude)
{
	Relation	index = index_open(indexoid, AccessShareLock);
	ScanKeyData keys[5];
	IndexScanDesc scan;
	TupleTableSlot *slot;
	int64		n = 0;

	ScanKeyEntryInitialize(&keys[0], 0, 1, BTEqualStrategyNumber, InvalidOid,
						   index->rd_indcollation[0], F_INT8EQ, Int64GetDatum(member_id));
	ScanKeyEntryInitialize(&keys[1], 0, 2, BTEqualStrategyNumber, InvalidOid,
						   index->rd_indcollation[1], F_TEXTEQ, PointerGetDatum(channel));
	ScanKeyEntryInitialize(&keys[2], 0, 3, BTEqualStrategyNumber, InvalidOid,
						   index->rd_indcollation[2], F_TEXTEQ, PointerGetDatum(cap_group));
	/* rolling: (ws, we]; calendar: [ws, we) */
	ScanKeyEntryInitialize(&keys[3], 0, 4, rolling ? BTGreaterStrategyNumber : BTGreaterEqualStrategyNumber,
						   InvalidOid, InvalidOid, rolling ? F_TIMESTAMPTZ_GT : F_TIMESTAMPTZ_GE,
						   TimestampTzGetDatum(ws));
	ScanKeyEntryInitialize(&keys[4], 0, 4, rolling ? BTLessEqualStrategyNumber : BTLessStrategyNumber,
						   InvalidOid, InvalidOid, rolling ? F_TIMESTAMPTZ_LE : F_TIMESTAMPTZ_LT,
						   TimestampTzGetDatum(we));
	slot = table_slot_create(heap, NULL);
	scan = index_beginscan(heap, index, snap, 5, 0);
	index_rescan(scan, keys, 5, NULL, 0);
	while (n < limit && index_getnext_slot(scan, ForwardScanDirection, slot))
	{
		bool		isnull;

		if (priority_att != InvalidAttrNumber &&
			DatumGetInt32(slot_getattr(slot, priority_att, &isnull)) < priority)
			continue;
		if (id_att != InvalidAttrNumber && DatumGetInt64(slot_getattr(slot, id_att, &isnull)) == exclude)
			continue;
		n++;
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	index_close(index, NoLock);
	return n;
}

/*
 * The partitions and their cap indexes, found once per backend (finding a
 * partition's index reads pg_inherits) and forgotten on an invalidation of
 * one of them (an index dropped, renamed or rebuilt, the extension updated).
 */
typedef struct CountRels
{
	bool		valid;
	bool		usable;			/* all found: else the query counts */
	Oid			part[4];
	Oid			queued_idx[4];
	Oid			sent_idx[4];
	AttrNumber	priority_att[4];
	AttrNumber	id_att[4];
} CountRels;

static CountRels count_rels;
static bool count_rels_callback = false;

/* Dropped by an invalidation of the slots or their indexes (DDL on an index sends one for its table too), or of all. */
static void
count_rels_invalidate(Datum arg, Oid relid)
{
	/* unusable, it may name none of them (an index missing): any DDL may mend it */
	if (!OidIsValid(relid) || !count_rels.usable)
		count_rels.valid = false;
	for (int p = 0; p < 4; p++)
		if (relid == count_rels.part[p] || relid == count_rels.queued_idx[p] || relid == count_rels.sent_idx[p])
			count_rels.valid = false;
}

static void count_rels_build(void);

/*
 * The slots and their indexes, looked at without keeping the locks: the
 * count checks count_rels.valid again once it holds them.  An invalidation
 * that comes while the check runs makes it check again.
 */
static const CountRels *
count_rels_get(void)
{
	AcceptInvalidationMessages();
	if (count_rels.valid)
		return &count_rels;
	if (!count_rels_callback)
	{
		wallet_register_relcache_callback(count_rels_invalidate);
		count_rels_callback = true;
	}
	do
		count_rels_build();
	while (!count_rels.valid);
	return &count_rels;
}

static void
count_rels_build(void)
{
	Oid			nsp;
	Oid			queued_idx,
				sent_idx;

	memset(&count_rels, 0, sizeof(count_rels));
	count_rels.valid = true;
	nsp = get_namespace_oid("wallet", false);
	queued_idx = get_relname_relid("push_messages_member_idx", nsp);
	sent_idx = get_relname_relid("push_messages_member_sent_idx", nsp);
	count_rels.usable = OidIsValid(queued_idx) && OidIsValid(sent_idx);
	for (int p = 0; p < 4 && count_rels.usable; p++)
	{
		Relation	heap;

		count_rels.part[p] = get_relname_relid(count_parts[p], nsp);
		if (!OidIsValid(count_rels.part[p]))
		{
			count_rels.usable = false;
			break;
		}
		heap = table_open(count_rels.part[p], AccessShareLock);
		count_rels.queued_idx[p] = index_get_partition(heap, queued_idx);
		count_rels.sent_idx[p] = index_get_partition(heap, sent_idx);
		count_rels.priority_att[p] = get_attnum(count_rels.part[p], "priority");
		count_rels.id_att[p] = get_attnum(count_rels.part[p], "push_id");
		table_close(heap, AccessShareLock);
		count_rels.usable = OidIsValid(count_rels.queued_idx[p]) && OidIsValid(count_rels.sent_idx[p]) &&
			count_rels.priority_att[p] != InvalidAttrNumber && count_rels.id_att[p] != InvalidAttrNumber;
	}
}

/*
 * The count by direct scans: with queued_too, as cap_count (queued ones
 * with a priority at least priority, and those sending or sent); without,
 * only those sending or sent but the message exclude, as claim_pushes'
 * statement counts at claim time.  -1 when the partitions are not as 0.2.0
 * made them.
 */
static int64
cap_count_direct(int64 member_id, const char *channel, const char *cap_group, int32 priority,
				 bool rolling, TimestampTz ws, TimestampTz we, int32 limit, bool queued_too, int64 exclude)
{
	const CountRels *rels = count_rels_get();
	text	   *ch;
	text	   *group;
	Snapshot	snap;
	Relation	heaps[4];
	int64		queued = 0,
				sent = 0;

	if (!rels->usable)
		return -1;
	/*
	 * the slots' locks first, then the snapshot: a count that waited for a
	 * rotation's TRUNCATE sees the rows it carried; DDL committed meanwhile
	 * (an index dropped) sends the count to the statement
	 */
	for (int p = 0; p < 4; p++)
		heaps[p] = table_open(rels->part[p], AccessShareLock);
	if (!count_rels.valid)
	{
		for (int p = 0; p < 4; p++)
			table_close(heaps[p], NoLock);
		return -1;
	}
	ch = cstring_to_text(channel);
	group = cstring_to_text(cap_group);
	/*
	 * as SPI before a statement that may write: the calls' own earlier rows
	 * seen; the claim's count (not queued_too) under REPEATABLE READ too with
	 * the newest snapshot, taken under the member's lock: a send committed
	 * after the transaction's snapshot counts (push_claim_check)
	 */
	CommandCounterIncrement();
	snap = RegisterSnapshot(!queued_too && IsolationUsesXactSnapshot() ? GetLatestSnapshot() : GetTransactionSnapshot());
	snap->curcid = GetCurrentCommandId(false);
	for (int p = 0; p < 4; p++)
	{
		Relation	heap = heaps[p];

		if (queued_too && p < 3 && queued < limit)
			queued += cap_count_scan(heap, rels->queued_idx[p], member_id, ch, group, rels->priority_att[p],
									 priority, rolling, ws, we, limit - queued, snap, InvalidAttrNumber, 0);
		if (sent < limit)
			sent += cap_count_scan(heap, rels->sent_idx[p], member_id, ch, group, InvalidAttrNumber, 0,
								   rolling, ws, we, limit - sent, snap,
								   queued_too ? InvalidAttrNumber : rels->id_att[p], exclude);
		table_close(heap, NoLock);
	}
	UnregisterSnapshot(snap);
	return queued + sent;
}

/* Under SPI: messages counted against a cap in the window, at most limit. */
static int64
cap_count(int64 member_id, const char *channel, const char *cap_group, int32 priority,
		  bool rolling, TimestampTz ws, TimestampTz we, int32 limit)
{
	Datum		args[7];
	bool		isnull;
	SPIPlanPtr *plan = &count_plan[rolling ? 1 : 0];
	int64		n = cap_count_direct(member_id, channel, cap_group, priority, rolling, ws, we, limit, true, 0);

	if (n >= 0)
		return n;

	if (*plan == NULL)
	{
		Oid			argtypes[7] = {INT8OID, TEXTOID, TEXTOID, INT4OID, TIMESTAMPTZOID, TIMESTAMPTZOID, INT4OID};
		/* rolling: (ws, we]; calendar: [ws, we); each half read from its covering index alone */
		const char *lo = rolling ? "OPERATOR(pg_catalog.>)" : "OPERATOR(pg_catalog.>=)";
		const char *hi = rolling ? "OPERATOR(pg_catalog.<=)" : "OPERATOR(pg_catalog.<)";
		char		sql[2048];

		snprintf(sql, sizeof(sql),
				 "SELECT (SELECT count(*) FROM (SELECT FROM wallet.push_messages y "
				 "         WHERE y.member_id OPERATOR(pg_catalog.=) $1 AND y.status OPERATOR(pg_catalog.=) 'queued' "
				 "           AND y.channel OPERATOR(pg_catalog.=) $2 AND y.cap_group OPERATOR(pg_catalog.=) $3 "
				 "           AND y.priority OPERATOR(pg_catalog.>=) $4 AND y.slot_at %s $5 AND y.slot_at %s $6 "
				 "         LIMIT $7) a) "
				 "     OPERATOR(pg_catalog.+) "
				 "       (SELECT count(*) FROM (SELECT FROM wallet.push_messages y "
				 "         WHERE y.member_id OPERATOR(pg_catalog.=) $1 AND y.status IN ('sending', 'sent') "
				 "           AND y.channel OPERATOR(pg_catalog.=) $2 AND y.cap_group OPERATOR(pg_catalog.=) $3 "
				 "           AND y.slot_at %s $5 AND y.slot_at %s $6 "
				 "         LIMIT $7) b)", lo, hi, lo, hi);
		*plan = push_keep_plan(sql, 7, argtypes);
	}
	args[0] = Int64GetDatum(member_id);
	args[1] = CStringGetTextDatum(channel);
	args[2] = CStringGetTextDatum(cap_group);
	args[3] = Int32GetDatum(priority);
	args[4] = TimestampTzGetDatum(ws);
	args[5] = TimestampTzGetDatum(we);
	args[6] = Int32GetDatum(limit);
	if (SPI_execute_plan(*plan, args, NULL, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "counting the messages of member " INT64_FORMAT " failed", member_id);
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * Whether a cap of the channel and group (the merchant's, then the member's
 * day and week caps) is reached at t: 1 yes, 0 no, -1 when it cannot be
 * counted directly (at claim only).  As enqueue plans (claim false): the
 * member's messages sending and sent at their claim time and queued at
 * their planned slot with a priority at least priority, a rolling window
 * (t - window, t].  As claim_pushes' statement checks (claim true): those
 * sending and sent but push_id, a rolling window (t - window, infinity), so
 * that a claim that started earlier but took the member's lock later
 * counts.  A calendar window is the member's local day or week.
 */
static int
caps_reached(int64 merchant_id, int64 member_id, const char *channel, const char *cap_group,
			 const PushMember *member, TimestampTz t, bool claim, int32 priority, int64 push_id)
{
	PushCap		caps[PUSH_CAPS_MAX];
	int			n;

	/* at most one cap per period (the key of wallet.push_caps), then the member's two */
	n = push_config_caps(merchant_id, channel, cap_group, caps, PUSH_CAPS_MAX - 2);
	if (member->max_per_day >= 0)
	{
		memset(&caps[n], 0, sizeof(PushCap));
		caps[n].period = 'd';
		caps[n++].max_count = member->max_per_day;
	}
	if (member->max_per_week >= 0)
	{
		memset(&caps[n], 0, sizeof(PushCap));
		caps[n].period = 'w';
		caps[n++].max_count = member->max_per_week;
	}
	for (int i = 0; i < n; i++)
	{
		TimestampTz ws,
					we;
		int64		count;

		if (caps[i].max_count <= 0)
			return 1;			/* a member's cap of 0: nothing fits */
		if (caps[i].period == 'r')
		{
			ws = DatumGetTimestampTz(DirectFunctionCall2(timestamptz_mi_interval, TimestampTzGetDatum(t),
														 IntervalPGetDatum(&caps[i].window_size)));
			if (claim)
				TIMESTAMP_NOEND(we);
			else
				we = t;
		}
		else
		{
			Timestamp	lt = DatumGetTimestamp(DirectFunctionCall2(timestamp_trunc,
																   CStringGetTextDatum(caps[i].period == 'd' ? "day" : "week"),
																   TimestampGetDatum(to_local(t, member->time_zone))));

			ws = from_local(lt, member->time_zone);
			we = from_local(lt + (caps[i].period == 'd' ? 1 : 7) * USECS_PER_DAY, member->time_zone);
		}
		if (claim)
			count = cap_count_direct(member_id, channel, cap_group, 0, caps[i].period == 'r', ws, we,
									 caps[i].max_count, false, push_id);
		else
			count = cap_count(member_id, channel, cap_group, priority, caps[i].period == 'r',
							  ws, we, caps[i].max_count);
		if (count < 0)
			return -1;
		if (count >= caps[i].max_count)
			return 1;
	}
	return 0;
}

bool
push_cap_reached(int64 merchant_id, int64 member_id, const char *channel, const PushTopic *topic,
				 const PushMember *member, int32 priority, TimestampTz t)
{
	return topic->capped && caps_reached(merchant_id, member_id, channel, topic->cap_group, member, t,
										 false, priority, 0) > 0;
}

bool
push_claim_check(int64 merchant_id, int64 member_id, int64 push_id, const char *channel, const char *topic,
				 const char *cap_group, bool service, bool has_expiry, TimestampTz expires_at,
				 const char **refusal, bool *slow, Datum *member_ref)
{
	PushSettings settings;
	PushMember	member;
	PushTopic	t;
	Datum		v[10];
	bool		n[10];
	TimestampTz now = GetCurrentTransactionStartTimestamp();
	TimestampTz until;
	int			reached;

	push_config_settings(merchant_id, &settings);
	if (!push_member_read_direct(merchant_id, member_id, channel, topic, NULL, 0, v, n, member_ref, true))
		return false;
	member_fill(v, n, &settings, member_id, &member);
	memset(&t, 0, sizeof(t));
	t.service = service;
	*slow = false;
	*refusal = push_refusal(&t, &member);
	if (*refusal == NULL && has_expiry && expires_at <= now)
		*refusal = "expired";
	if (*refusal != NULL)
		return true;
	if (!service && member.quiet &&
		push_quiet_until(now, member.time_zone, member.quiet_start, member.quiet_end, &until))
	{
		*slow = true;
		return true;
	}
	if (cap_group == NULL)
		return true;
	reached = caps_reached(merchant_id, member_id, channel, cap_group, &member, now, true, 0, push_id);
	if (reached < 0)
		return false;
	*slow = reached > 0;
	return true;
}

void
push_decide(int64 merchant_id, int64 member_id, const char *channel, const char *topic_name,
			const PushTopic *topic, const PushMember *member, int32 priority, TimestampTz t,
			bool has_expiry, TimestampTz expires_at, PushDecision *out)
{
	TimestampTz until;
	Datum		args[7];
	char		nulls[7] = "       ";
	bool		isnull;
	Datum		d;

	memset(out, 0, sizeof(*out));
	out->reason = push_refusal(topic, member);
	if (out->reason != NULL)
	{
		out->status = "suppressed";
		return;
	}
	if (has_expiry && expires_at <= t)
	{
		out->status = "suppressed";
		out->reason = "expired";
		return;
	}
	if ((topic->service || !member->quiet ||
		 !push_quiet_until(t, member->time_zone, member->quiet_start, member->quiet_end, &until)) &&
		!push_cap_reached(merchant_id, member_id, channel, topic, member, priority, t))
	{
		/* t itself is fine */
		out->status = "queued";
		out->has_eligible = true;
		out->eligible_at = t;
		return;
	}
	/* the slot moves: planned by push_slot, as at claim time */
	if (slot_plan == NULL)
	{
		Oid			argtypes[7] = {INT8OID, INT8OID, TEXTOID, TEXTOID, BOOLOID, INT4OID, TIMESTAMPTZOID};

		slot_plan = push_keep_plan("SELECT s.slot, s.reason FROM wallet_internal.push_slot($1, $2, $3, $4, $5, $6, $7, true, NULL) s",
							  7, argtypes);
	}
	args[0] = Int64GetDatum(merchant_id);
	args[1] = Int64GetDatum(member_id);
	args[2] = CStringGetTextDatum(channel);
	if (topic->capped)
		args[3] = CStringGetTextDatum(topic->cap_group);
	else
	{
		args[3] = (Datum) 0;
		nulls[3] = 'n';
	}
	args[4] = BoolGetDatum(topic->service);
	args[5] = Int32GetDatum(priority);
	args[6] = TimestampTzGetDatum(t);
	if (SPI_execute_plan(slot_plan, args, nulls, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "planning the slot of member " INT64_FORMAT " failed", member_id);
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	/* reasons are constants of push_slot: map them to ours, never keep SPI memory */
	if (isnull)
		out->reason = NULL;
	else
	{
		char	   *r = TextDatumGetCString(d);

		out->reason = strcmp(r, "quiet_hours") == 0 ? "quiet_hours" :
			strcmp(r, "frequency_cap") == 0 ? "frequency_cap" : pstrdup(r);
	}
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (isnull)
	{
		out->status = "suppressed";
		return;
	}
	if (has_expiry && DatumGetTimestampTz(d) >= expires_at)
	{
		out->status = "suppressed";
		out->reason = "expires_before_slot";
		return;
	}
	out->has_eligible = true;
	out->eligible_at = DatumGetTimestampTz(d);
	out->status = out->reason == NULL ? "queued" : "deferred";
}

/* Statement trigger on wallet.push_settings, push_topics and push_caps: every backend drops its cache. */
PG_FUNCTION_INFO_V1(push_config_changed);
Datum
push_config_changed(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("wallet_internal.push_config_changed() must be called as a trigger")));
	CacheInvalidateRelcache(trigdata->tg_relation);
	return PointerGetDatum(NULL);
}
