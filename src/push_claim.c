/*
 * push_claim.c: the delivery side of the push queue (issue 12) in C:
 * wallet.claim_pushes, wallet.ack_push and wallet.ack_pushes.
 *
 * Why C: in PL/pgSQL a claim of one message and its acknowledgement ran
 * some twenty statements, each a nested SECURITY DEFINER helper or a plan
 * on the partitioned wallet.push_messages re-planned per call (custom plans
 * of a partitioned table cost more than the query).  Here the common case
 * is a few plans kept per session, generic (planned once): a claim is one
 * query choosing and locking the due messages, the members' locks taken
 * here, the re-check of each (consent, expiry, quiet hours, caps) by
 * direct reads in C (push_claim_check, src/push_decide.c) and one UPDATE
 * leasing the passing ones; under REPEATABLE READ, or with a table not as
 * 0.2.0 made it, one statement re-checks them all set-based and leases the
 * passing ones (the statement started a plan of some forty nodes for
 * every claim, a third of a claim of one message); an acknowledgement is
 * one statement moving the messages into the finished partition and
 * writing their delivery records.  A statement names the one queue slot
 * its messages are in when it knows it (a plan over one partition starts
 * far quicker than one over all four).  Everything else (refused messages,
 * a member's further messages in a batch, a message that quiet hours or a
 * reached cap may move, a repeated or refused acknowledgement, every
 * error) goes to PL/pgSQL functions holding the logic the PL/pgSQL
 * versions had (wallet_internal.push_claim_each, push_ack_one,
 * push_ack_many).  The SQL functions run with enable_seqscan off: a plan
 * made once for the session while a slot is nearly empty must still probe
 * its keys when the slot has filled up.
 */
#include "wallet.h"

#include "push.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

enum
{
	P_CANDIDATES,				/* the due messages, locked */
	P_EACH,						/* wallet_internal.push_claim_each */
	P_SUPPRESS,					/* push_suppress_sql */
	P_ACK_ONE_FULL,				/* wallet_internal.push_ack_one */
	P_ACK_MANY_FULL,			/* wallet_internal.push_ack_many */
	P_CHECK_NAME,				/* wallet_internal.push_check_name (raises) */
	P_CHECK_LEASE,				/* wallet_internal.push_check_lease (raises) */
	P_LOCK_MEMBERS,				/* the members' rows, those free locked */
	P_CHECK_ATTEMPT,			/* wallet_internal.push_check_attempt (raises) */
	P_LOCK_ACKS,				/* messages to acknowledge, locked in id order */
	P_CLAIM,					/* push_claim_sql on slot 0, 1, 2, or every slot */
	P_ACK_ONE = P_CLAIM + 4,	/* push_ack_one_sql, the same four */
	P_ACK_MANY = P_ACK_ONE + 4,	/* push_ack_many_sql, the same four */
	P_ACK_TOKEN = P_ACK_MANY + 4,	/* push_ack_token_sql, the same four */
	P_LEASE = P_ACK_TOKEN + 4,	/* push_lease_sql, the same four */
	P_COUNT = P_LEASE + 4
};

/* the relations of the four variants of a statement on the queue */
#define SLOT_ANY 3
static const char *const push_slot_rel[4] = {
	"wallet.push_messages_q0", "wallet.push_messages_q1", "wallet.push_messages_q2", "wallet.push_messages"
};

/* Columns of a finished message written from d (a DELETE ... RETURNING x.*). */
#define PUSH_DONE_COLUMNS(status, reason, sent_at, provider) \
	"d.push_id, d.merchant_id, d.member_id, d.channel, d.topic, d.cap_group, d.service, d.payload, d.campaign_id," \
	" d.dedup_key, d.priority, d.not_before, d.expires_at, d.created_at, d.outcome, d.outcome_reason, " status ", " \
	reason ", NULL, d.slot_at, d.attempts, d.claimed_at, " sent_at ", " provider ", d.last_error, pg_catalog.now(), 3, d.requeued_attempts"

/*
 * The claim statement: $1 the members' first messages (bigint[]), $2 the
 * lease; %1$s the relation they are in (a queue slot, wallet.push_messages_qN,
 * when they all are in one, as they nearly always are: a plan naming one
 * slot starts far quicker than one over every partition; else the parent).
 * Fine (consent, no erasure, topic chosen, not expired, no quiet hours now,
 * no cap reached, counted as push_slot counts at claim): leased and
 * returned.  Refused: returned with the reason (column 9) for P_SUPPRESS.
 * The rest (quiet hours or a reached cap may move it): returned with NULLs
 * for push_claim_each.  The lookups are LATERAL ... LIMIT 1 so that each is
 * one probe of a primary key whatever the planner thinks of the tables'
 * sizes (the plan is made once per session).
 */
static const char *const push_claim_sql =
	"WITH d AS ("
	"  SELECT x.push_id, x.merchant_id, x.member_id, x.channel, x.cap_group, x.service, p.max_per_day, p.max_per_week,"
	"         w.member_ref,"
	"         COALESCE(CASE WHEN w.status OPERATOR(pg_catalog.=) 'forgotten' THEN 'member_forgotten'"
	"                       WHEN x.service THEN CASE WHEN c.granted IS FALSE THEN 'muted' END"
	"                       WHEN c.granted IS NULL THEN 'no_consent'"
	"                       WHEN NOT c.granted THEN 'consent_withdrawn'"
	"                       WHEN p.topics IS NOT NULL AND NOT x.topic OPERATOR(pg_catalog.=) ANY (p.topics) THEN 'topic_not_chosen' END,"
	"                  CASE WHEN x.expires_at OPERATOR(pg_catalog.<=) pg_catalog.now() THEN 'expired' END) AS refusal,"
	"         COALESCE(w.time_zone, s.time_zone, 'UTC') AS tz,"
	"         pg_catalog.timezone(COALESCE(w.time_zone, s.time_zone, 'UTC'), pg_catalog.now())::pg_catalog.\"time\" AS lo,"
	"         CASE WHEN p.quiet_start IS NOT NULL THEN p.quiet_start WHEN s.merchant_id IS NULL THEN '22:00'::pg_catalog.\"time\" ELSE s.quiet_start END AS qs,"
	"         CASE WHEN p.quiet_start IS NOT NULL THEN p.quiet_end WHEN s.merchant_id IS NULL THEN '08:00'::pg_catalog.\"time\" ELSE s.quiet_end END AS qe"
	"    FROM %1$s x"
	"    CROSS JOIN LATERAL (SELECT w.member_ref, w.status, w.time_zone FROM wallet.members w"
	"                         WHERE w.member_id OPERATOR(pg_catalog.=) x.member_id LIMIT 1) w"
	"    LEFT JOIN LATERAL (SELECT c.granted FROM wallet.push_consents c"
	"                        WHERE c.merchant_id OPERATOR(pg_catalog.=) x.merchant_id AND c.member_id OPERATOR(pg_catalog.=) x.member_id"
	"                          AND c.channel OPERATOR(pg_catalog.=) x.channel AND c.topic OPERATOR(pg_catalog.=) x.topic LIMIT 1) c ON true"
	"    LEFT JOIN LATERAL (SELECT p.topics, p.quiet_start, p.quiet_end, p.max_per_day, p.max_per_week FROM wallet.push_preferences p"
	"                        WHERE p.member_id OPERATOR(pg_catalog.=) x.member_id LIMIT 1) p ON true"
	"    LEFT JOIN LATERAL (SELECT s.merchant_id, s.time_zone, s.quiet_start, s.quiet_end FROM wallet.push_settings s"
	"                        WHERE s.merchant_id OPERATOR(pg_catalog.=) x.merchant_id LIMIT 1) s ON true"
	"   WHERE x.push_id OPERATOR(pg_catalog.=) ANY ($1) AND x.part OPERATOR(pg_catalog.<) 3),"
	" v AS ("
	"  SELECT d.push_id, d.member_ref, d.refusal,"
	"         d.refusal IS NULL AND ("
	"           (NOT d.service AND d.qs IS NOT NULL"
	"            AND CASE WHEN d.qs OPERATOR(pg_catalog.<) d.qe THEN d.lo OPERATOR(pg_catalog.>=) d.qs AND d.lo OPERATOR(pg_catalog.<) d.qe"
	"                     ELSE d.lo OPERATOR(pg_catalog.>=) d.qs OR d.lo OPERATOR(pg_catalog.<) d.qe END)"
	"           OR (d.cap_group IS NOT NULL AND EXISTS ("
	"             SELECT FROM (SELECT k.period, k.max_count, k.window_size FROM wallet.push_caps k"
	"                           WHERE k.merchant_id OPERATOR(pg_catalog.=) d.merchant_id AND k.channel OPERATOR(pg_catalog.=) d.channel"
	"                             AND k.cap_group OPERATOR(pg_catalog.=) d.cap_group"
	"                          UNION ALL"
	"                          SELECT 'day', d.max_per_day, NULL::pg_catalog.\"interval\" WHERE d.max_per_day IS NOT NULL"
	"                          UNION ALL"
	"                          SELECT 'week', d.max_per_week, NULL::pg_catalog.\"interval\" WHERE d.max_per_week IS NOT NULL) k"
	"             CROSS JOIN LATERAL ("
	"                 SELECT CASE WHEN k.period OPERATOR(pg_catalog.=) 'rolling' THEN pg_catalog.now() OPERATOR(pg_catalog.-) k.window_size"
	"                             ELSE pg_catalog.timezone(d.tz, pg_catalog.date_trunc(k.period, pg_catalog.timezone(d.tz, pg_catalog.now()))) END AS ws,"
	"                        CASE WHEN k.period OPERATOR(pg_catalog.=) 'rolling' THEN 'infinity'::pg_catalog.timestamptz"
	"                             ELSE pg_catalog.timezone(d.tz, pg_catalog.date_trunc(k.period, pg_catalog.timezone(d.tz, pg_catalog.now()))"
	"                                  OPERATOR(pg_catalog.+) CASE k.period WHEN 'day' THEN '1 day'::pg_catalog.\"interval\" ELSE '7 days'::pg_catalog.\"interval\" END) END AS we) b"
	"             WHERE (SELECT pg_catalog.count(*) FROM wallet.push_messages y"
	"                     WHERE y.member_id OPERATOR(pg_catalog.=) d.member_id"
	"                       AND y.status OPERATOR(pg_catalog.=) ANY ('{sending,sent}'::pg_catalog.text[])"
	"                       AND y.channel OPERATOR(pg_catalog.=) d.channel AND y.cap_group OPERATOR(pg_catalog.=) d.cap_group"
	"                       AND y.push_id OPERATOR(pg_catalog.<>) d.push_id"
	"                       AND y.slot_at OPERATOR(pg_catalog.>=) b.ws AND y.slot_at OPERATOR(pg_catalog.<) b.we"
	"                       AND (y.slot_at OPERATOR(pg_catalog.>) b.ws OR k.period OPERATOR(pg_catalog.<>) 'rolling'))"
	"                   OPERATOR(pg_catalog.>=) k.max_count))) AS slow"
	"    FROM d),"
	" u AS ("
	"  UPDATE %1$s x"
	"     SET status = 'sending', due_at = pg_catalog.now() OPERATOR(pg_catalog.+) $2, slot_at = pg_catalog.now(),"
	"         claimed_at = pg_catalog.now(), attempts = x.attempts OPERATOR(pg_catalog.+) 1"
	"   WHERE x.push_id OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT v.push_id FROM v WHERE v.refusal IS NULL AND v.slow IS FALSE))"
	"     AND x.part OPERATOR(pg_catalog.<) 3"
	"  RETURNING x.push_id, x.merchant_id, x.topic, x.payload, x.campaign_id, x.attempts, x.due_at)"
	" SELECT u.push_id, u.merchant_id, v.member_ref, u.topic, u.payload, u.campaign_id, u.attempts, u.due_at, NULL::pg_catalog.text"
	"   FROM u JOIN v ON v.push_id OPERATOR(pg_catalog.=) u.push_id"
	" UNION ALL"
	" SELECT v.push_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, v.refusal FROM v WHERE v.refusal IS NOT NULL OR v.slow IS NOT FALSE";

/* The refused messages of a claim ($1 ids, $2 reasons): suppressed, out of the queue. */
static const char *const push_suppress_sql =
	"WITH g AS (SELECT g.id, g.why FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.int8[]), pg_catalog.unnest($2::pg_catalog.text[])) AS g(id, why)),"
	" d AS ("
	"  DELETE FROM wallet.push_messages x USING g"
	"   WHERE x.push_id OPERATOR(pg_catalog.=) g.id AND x.part OPERATOR(pg_catalog.<) 3"
	"  RETURNING x.*, g.why)"
	" INSERT INTO wallet.push_messages_done OVERRIDING SYSTEM VALUE"
	" SELECT " PUSH_DONE_COLUMNS("'suppressed'", "d.why", "d.sent_at", "d.provider_message_id") " FROM d";

/*
 * The lease of messages checked in C (push_claim_check): $1 their ids, $2
 * the lease, as the claim statement's u; %1$s as there.
 */
static const char *const push_lease_sql =
	"UPDATE %1$s x"
	"   SET status = 'sending', due_at = pg_catalog.now() OPERATOR(pg_catalog.+) $2, slot_at = pg_catalog.now(),"
	"       claimed_at = pg_catalog.now(), attempts = x.attempts OPERATOR(pg_catalog.+) 1"
	" WHERE x.push_id OPERATOR(pg_catalog.=) ANY ($1) AND x.part OPERATOR(pg_catalog.<) 3"
	" RETURNING x.push_id, x.merchant_id, x.topic, x.payload, x.campaign_id, x.attempts, x.due_at";

/*
 * An acknowledgement: the messages named (match: one id, or an array),
 * if being sent, moved from %1$s into the finished partition as sent with
 * their provider ids (pids: a CTE d of the deleted rows gives each its pid),
 * with their delivery records.  The status test is a CASE so that no
 * partial index on status qualifies: the statistics seldom see a message
 * being sent, and a plan scanning every message being sent
 * (push_messages_member_sent_idx) would look as cheap as the primary key
 * when planned once for the session.
 */
#define PUSH_ACK_SQL(match, pids) \
	"WITH d AS (" \
	"  DELETE FROM %1$s x" \
	"   WHERE x.push_id OPERATOR(pg_catalog.=) " match " AND x.part OPERATOR(pg_catalog.<) 3" \
	"     AND CASE WHEN x.status OPERATOR(pg_catalog.=) 'sending' THEN true END" \
	"     AND wallet.acts_for(x.merchant_id)" \
	"  RETURNING x.*)," \
	" a AS (SELECT d.*, " pids ")," \
	" r AS (" \
	"  INSERT INTO wallet.push_attempts (merchant_id, member_id, push_id, claimed_at, outcome, provider_message_id)" \
	"  SELECT d.merchant_id, d.member_id, d.push_id, d.claimed_at, 'sent', d.pid FROM a d)" \
	" INSERT INTO wallet.push_messages_done OVERRIDING SYSTEM VALUE" \
	" SELECT " PUSH_DONE_COLUMNS("'sent'", "NULL", "pg_catalog.now()", "d.pid") " FROM a d"

/* ack_push: $1 push_id, $2 provider_message_id */
static const char *const push_ack_one_sql =
	PUSH_ACK_SQL("$1", "$2::pg_catalog.text AS pid FROM d");

/* ack_push with the claim token: $1 push_id, $2 provider_message_id, $3 the attempt claimed */
static const char *const push_ack_token_sql =
	PUSH_ACK_SQL("$1 AND x.attempts OPERATOR(pg_catalog.=) $3", "$2::pg_catalog.text AS pid FROM d");

/* ack_pushes: $1 distinct ids in ascending order (the lock order), $2 their provider ids or NULL */
static const char *const push_ack_many_sql =
	PUSH_ACK_SQL("ANY ($1)",
				 "u.pid FROM d JOIN ROWS FROM (pg_catalog.unnest($1::pg_catalog.int8[]), pg_catalog.unnest($2::pg_catalog.text[])) AS u(id, pid)"
				 " ON u.id OPERATOR(pg_catalog.=) d.push_id");

static const char *const push_sql[P_CLAIM] = {
	/* P_CANDIDATES: $1 channel, $2 n */
	"SELECT x.push_id, x.member_id, x.part, x.merchant_id, x.topic, x.cap_group, x.service, x.expires_at"
	"  FROM wallet.push_messages x"
	" WHERE x.part OPERATOR(pg_catalog.<) 3 AND x.channel OPERATOR(pg_catalog.=) $1"
	"   AND x.status OPERATOR(pg_catalog.=) ANY ('{queued,sending}'::pg_catalog.text[])"
	"   AND x.due_at OPERATOR(pg_catalog.<=) pg_catalog.now() AND wallet.acts_for(x.merchant_id)"
	" ORDER BY x.priority DESC, x.due_at LIMIT $2 FOR UPDATE OF x SKIP LOCKED",

	/* P_EACH: $1 ids, $2 lease */
	"SELECT c.push_id, c.merchant_id, c.member_ref, c.topic, c.payload, c.campaign_id, c.attempts, c.lease_until"
	"  FROM wallet_internal.push_claim_each($1, $2) c",

	/* P_SUPPRESS */
	NULL,

	/* P_ACK_ONE_FULL */
	"SELECT wallet_internal.push_ack_one($1, $2)",

	/* P_ACK_MANY_FULL */
	"SELECT wallet_internal.push_ack_many($1, $2)",

	/* P_CHECK_NAME */
	"SELECT wallet_internal.push_check_name('channel', $1)",

	/* P_CHECK_LEASE */
	"SELECT wallet_internal.push_check_lease($1)",

	/* P_LOCK_MEMBERS: $1 member ids (push_lock_member without waiting) */
	"SELECT m.member_id FROM wallet.members m WHERE m.member_id OPERATOR(pg_catalog.=) ANY ($1)"
	" FOR NO KEY UPDATE OF m SKIP LOCKED",

	/* P_CHECK_ATTEMPT: $1 push_id, $2 attempt */
	"SELECT wallet_internal.push_check_attempt($1, $2)",

	/*
	 * P_LOCK_ACKS: $1 ids; in ascending id order (LockRows above the Sort),
	 * the order forget_member and the claim-token acknowledgement lock in
	 */
	"SELECT FROM wallet.push_messages x WHERE x.push_id OPERATOR(pg_catalog.=) ANY ($1)"
	" AND x.part OPERATOR(pg_catalog.<) 3 AND wallet.acts_for(x.merchant_id) ORDER BY x.push_id FOR UPDATE OF x",
};

static SPIPlanPtr push_plans[P_COUNT];

/*
 * A kept plan, generic: planned once per session (a custom plan of the
 * partitioned table costs more than running it); the plan cache re-plans
 * it when a table changes.
 */
static SPIPlanPtr
push_plan(int which)
{
	if (push_plans[which] == NULL)
	{
		const char *sql;
		Oid			types[3];
		int			nargs = 2;
		SPIPlanPtr	p;

		if (which >= P_LEASE)
		{
			sql = psprintf(push_lease_sql, push_slot_rel[which - P_LEASE]);
			types[0] = INT8ARRAYOID;
			types[1] = INTERVALOID;
		}
		else if (which >= P_ACK_TOKEN)
		{
			sql = psprintf(push_ack_token_sql, push_slot_rel[which - P_ACK_TOKEN]);
			types[0] = INT8OID;
			types[1] = TEXTOID;
			types[2] = INT4OID;
			nargs = 3;
		}
		else if (which >= P_ACK_MANY)
		{
			sql = psprintf(push_ack_many_sql, push_slot_rel[which - P_ACK_MANY]);
			types[0] = INT8ARRAYOID;
			types[1] = TEXTARRAYOID;
		}
		else if (which >= P_ACK_ONE)
		{
			sql = psprintf(push_ack_one_sql, push_slot_rel[which - P_ACK_ONE]);
			types[0] = INT8OID;
			types[1] = TEXTOID;
		}
		else if (which >= P_CLAIM)
		{
			sql = psprintf(push_claim_sql, push_slot_rel[which - P_CLAIM]);
			types[0] = INT8ARRAYOID;
			types[1] = INTERVALOID;
		}
		else
		{
			static const Oid argtypes[P_CLAIM][2] = {
				[P_CANDIDATES] = {TEXTOID, INT4OID},
				[P_EACH] = {INT8ARRAYOID, INTERVALOID},
				[P_SUPPRESS] = {INT8ARRAYOID, TEXTARRAYOID},
				[P_ACK_ONE_FULL] = {INT8OID, TEXTOID},
				[P_ACK_MANY_FULL] = {INT8ARRAYOID, TEXTARRAYOID},
				[P_CHECK_NAME] = {TEXTOID},
				[P_CHECK_LEASE] = {INTERVALOID},
				[P_LOCK_MEMBERS] = {INT8ARRAYOID},
				[P_CHECK_ATTEMPT] = {INT8OID, INT4OID},
				[P_LOCK_ACKS] = {INT8ARRAYOID},
			};

			sql = which == P_SUPPRESS ? push_suppress_sql : push_sql[which];
			types[0] = argtypes[which][0];
			types[1] = argtypes[which][1];
			if (which == P_CHECK_NAME || which == P_CHECK_LEASE || which == P_LOCK_MEMBERS || which == P_LOCK_ACKS)
				nargs = 1;
		}
		p = SPI_prepare_cursor(sql, nargs, types, CURSOR_OPT_GENERIC_PLAN);
		if (p == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		SPI_keepplan(p);
		push_plans[which] = p;
	}
	return push_plans[which];
}

/* Run a kept plan; returns the number of rows. */
static uint64
push_run(int which, Datum *values, const char *nulls, bool read_only)
{
	int			rc = SPI_execute_plan(push_plan(which), values, nulls, read_only, 0);

	if (rc < 0)
		elog(ERROR, "SPI_execute_plan failed: %s", SPI_result_code_string(rc));
	return SPI_processed;
}

/* Whether a channel name passes push_check_name: ^[a-z][a-z0-9_]{0,39}$ */
static bool
push_name_ok(text *t)
{
	const char *s = VARDATA_ANY(t);
	int			len = VARSIZE_ANY_EXHDR(t);

	if (len < 1 || len > 40 || s[0] < 'a' || s[0] > 'z')
		return false;
	for (int i = 1; i < len; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
			return false;
	return true;
}

/* Whether a lease passes push_check_lease: positive and at most a day. */
static bool
push_lease_ok(Interval *lease)
{
	Interval	zero = {0, 0, 0};
	Interval	day = {0, 1, 0};

	return DatumGetInt32(DirectFunctionCall2(interval_cmp, IntervalPGetDatum(lease), IntervalPGetDatum(&zero))) > 0
		&& DatumGetInt32(DirectFunctionCall2(interval_cmp, IntervalPGetDatum(lease), IntervalPGetDatum(&day))) <= 0;
}

/* Appends row r of the last SPI query (the claim_pushes columns) to the result. */
static void
push_put_row(ReturnSetInfo *rsinfo, uint64 r)
{
	Datum		values[8];
	bool		nulls[8];

	for (int c = 0; c < 8; c++)
		values[c] = SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, c + 1, &nulls[c]);
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
}

typedef struct PushCand
{
	int64		push_id;
	int64		member_id;
	int			part;			/* its partition (queue slot) */
	int			order;			/* position among the candidates */
	bool		first;			/* its member's first (and locked) */
	bool		further;		/* a further message of a locked member */
	/* what push_claim_check needs (never read from the slot cache) */
	int64		merchant_id;
	char	   *topic;
	char	   *cap_group;		/* NULL: exempt */
	bool		service;
	bool		has_expiry;
	TimestampTz expires_at;
} PushCand;

/*
 * Under REPEATABLE READ or SERIALIZABLE, the n messages push_claim_each
 * just leased (SPI_tuptable) checked again on the newest state: its
 * statements read the transaction's snapshot, which may predate another
 * session's claim of the member or a withdrawal of consent committed since
 * (the member's lock does not tell).  A lease the newest state refuses
 * (over a cap, in quiet hours, no consent) is a serialization failure: the
 * claim is retried on a new snapshot and never sends what it must not.
 */
static void
push_each_recheck(const PushCand *cand, uint64 ncand, const char *channel, uint64 n)
{
	int64	   *ids = palloc(sizeof(int64) * n);

	/* the ids first: the checks may run statements of their own */
	for (uint64 r = 0; r < n; r++)
	{
		bool		isnull;

		ids[r] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1, &isnull));
	}
	for (uint64 r = 0; r < n; r++)
		for (uint64 i = 0; i < ncand; i++)
			if (cand[i].push_id == ids[r])
			{
				const char *refusal = NULL;
				bool		slow = false;
				Datum		ref;

				if (push_claim_check(cand[i].merchant_id, cand[i].member_id, cand[i].push_id, channel,
									 cand[i].topic, cand[i].cap_group, cand[i].service, cand[i].has_expiry,
									 cand[i].expires_at, &refusal, &slow, &ref) &&
					(refusal != NULL || slow))
					ereport(ERROR,
							(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
							 errmsg("could not serialize access due to concurrent update"),
							 errdetail("Push %lld was claimed on this transaction's snapshot, but its member's consent, "
									   "preferences or sends changed since.", (long long) ids[r]),
							 errhint("Retry the claim in a new transaction.")));
				break;
			}
}

static int
push_int64_cmp(const void *a, const void *b)
{
	int64		x = *(const int64 *) a;
	int64		y = *(const int64 *) b;

	return x < y ? -1 : x > y ? 1 : 0;
}

static int
push_cand_by_member(const void *a, const void *b)
{
	const PushCand *x = a;
	const PushCand *y = b;

	if (x->member_id != y->member_id)
		return x->member_id < y->member_id ? -1 : 1;
	return x->order - y->order;
}

static int
push_cand_by_order(const void *a, const void *b)
{
	return ((const PushCand *) a)->order - ((const PushCand *) b)->order;
}

static int
push_cand_by_id(const void *a, const void *b)
{
	const PushCand *x = a;
	const PushCand *y = b;

	return x->push_id < y->push_id ? -1 : x->push_id > y->push_id ? 1 : 0;
}

typedef struct PushRowOrder
{
	int			order;
	uint64		row;
} PushRowOrder;

static int
push_row_by_order(const void *a, const void *b)
{
	return ((const PushRowOrder *) a)->order - ((const PushRowOrder *) b)->order;
}

static ArrayType *
push_id_array(const int64 *ids, int n)
{
	Datum	   *d = palloc(sizeof(Datum) * Max(n, 1));

	for (int i = 0; i < n; i++)
		d[i] = Int64GetDatum(ids[i]);
	return construct_array(d, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE);
}

/*
 * The queue slot of each message of this session's last claim, sorted by
 * id: an acknowledgement in the same session (the worker that claimed)
 * then names that slot alone.  A message moved since (by the rotation) is
 * not found there, and the acknowledgement looks in every slot.
 */
#define PUSH_SLOT_CACHE 10000
static PushCand *slot_cache = NULL;
static int	slot_cache_used = 0;

static void
push_slots_remember(const PushCand *cand, uint64 n)
{
	if (slot_cache == NULL)
		slot_cache = MemoryContextAlloc(TopMemoryContext, sizeof(PushCand) * PUSH_SLOT_CACHE);
	slot_cache_used = (int) Min(n, PUSH_SLOT_CACHE);
	memcpy(slot_cache, cand, sizeof(PushCand) * slot_cache_used);
	qsort(slot_cache, slot_cache_used, sizeof(PushCand), push_cand_by_id);
}

/* The slot of a message as last claimed in this session, or SLOT_ANY. */
static int
push_slot_of(int64 push_id)
{
	PushCand	key;
	PushCand   *c;

	if (slot_cache_used == 0)
		return SLOT_ANY;
	key.push_id = push_id;
	c = bsearch(&key, slot_cache, slot_cache_used, sizeof(PushCand), push_cand_by_id);
	return c == NULL ? SLOT_ANY : c->part;
}

PG_FUNCTION_INFO_V1(claim_pushes);

/*
 * wallet.claim_pushes(channel, n, lease): up to n due messages of the
 * channel, each checked again under its member's lock, leased for lease.
 * The same as the PL/pgSQL it replaces: the candidates in priority and due
 * order, locked (SKIP LOCKED); per member the first one whose member lock
 * is free (a busy member's messages wait for the next claim); those checked
 * set-based; the members' further messages and those that quiet hours or a
 * cap may move decided one by one by push_claim_each.
 */
Datum
claim_pushes(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Datum		args[2];
	uint64		ncand;
	uint64		nlocked;
	int64	   *locked_ids;
	PushCand   *cand;
	int64	   *ids;
	int			nfirst = 0;
	int			neach = 0;
	int			slot = SLOT_ANY;

	InitMaterializedSRF(fcinfo, 0);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (PG_ARGISNULL(0) || !push_name_ok(PG_GETARG_TEXT_PP(0)))
	{
		args[0] = PG_ARGISNULL(0) ? (Datum) 0 : PG_GETARG_DATUM(0);
		push_run(P_CHECK_NAME, args, PG_ARGISNULL(0) ? "n" : " ", true);	/* raises */
	}
	if (PG_ARGISNULL(2) || !push_lease_ok(PG_GETARG_INTERVAL_P(2)))
	{
		args[0] = PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2);
		push_run(P_CHECK_LEASE, args, PG_ARGISNULL(2) ? "n" : " ", true);	/* raises */
	}
	if (PG_ARGISNULL(1) || PG_GETARG_INT32(1) < 1 || PG_GETARG_INT32(1) > 10000)
		ereport(ERROR,
				(errcode(PG_ARGISNULL(1) ? ERRCODE_NULL_VALUE_NOT_ALLOWED : ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("n must %s", PG_ARGISNULL(1) ? "not be null" : "be between 1 and 10000"),
				 errdetail("A worker claims up to n messages at a time, 1 to 10000.")));

	/* 1. the due messages, locked (those locked by other claims are skipped) */
	args[0] = PG_GETARG_DATUM(0);
	args[1] = PG_GETARG_DATUM(1);
	ncand = push_run(P_CANDIDATES, args, NULL, false);
	if (ncand == 0)
	{
		SPI_finish();
		return (Datum) 0;
	}
	cand = palloc(sizeof(PushCand) * ncand);
	for (uint64 i = 0; i < ncand; i++)
	{
		bool		isnull;

		cand[i].push_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
		cand[i].member_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull));
		cand[i].part = DatumGetInt16(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 3, &isnull));
		cand[i].order = (int) i;
		cand[i].first = cand[i].further = false;
		cand[i].merchant_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 4, &isnull));
		cand[i].topic = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 5);
		cand[i].cap_group = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 6);
		cand[i].service = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 7, &isnull));
		cand[i].expires_at = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 8,
																&isnull));
		cand[i].has_expiry = !isnull;
	}
	push_slots_remember(cand, ncand);

	/*
	 * 2. the members, each under its lock (push_lock_member: a row lock, all
	 * in one statement, none waited for): a member busy in another session
	 * (enqueue, consent, claim) has its messages wait for the next claim
	 */
	qsort(cand, ncand, sizeof(PushCand), push_cand_by_member);
	{
		int64	   *members = palloc(sizeof(int64) * ncand);
		int			nmembers = 0;
		Datum		args1[1];

		for (uint64 i = 0; i < ncand; i++)
			if (i == 0 || cand[i].member_id != cand[i - 1].member_id)
				members[nmembers++] = cand[i].member_id;
		args1[0] = PointerGetDatum(push_id_array(members, nmembers));
		nlocked = push_run(P_LOCK_MEMBERS, args1, NULL, false);
		locked_ids = palloc(sizeof(int64) * (nlocked + 1));
		for (uint64 i = 0; i < nlocked; i++)
		{
			bool		isnull;

			locked_ids[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
		}
		qsort(locked_ids, nlocked, sizeof(int64), push_int64_cmp);
	}
	for (uint64 i = 0; i < ncand;)
	{
		uint64		j = i;
		bool		locked;

		locked = bsearch(&cand[i].member_id, locked_ids, nlocked, sizeof(int64), push_int64_cmp) != NULL;
		for (; j < ncand && cand[j].member_id == cand[i].member_id; j++)
		{
			cand[j].first = locked && j == i;
			cand[j].further = locked && j > i;
		}
		if (locked)
			nfirst++;
		i = j;
	}
	if (nfirst == 0)
	{
		SPI_finish();
		return (Datum) 0;
	}

	/* 3. the first messages checked and claimed, set-based */
	qsort(cand, ncand, sizeof(PushCand), push_cand_by_order);
	ids = palloc(sizeof(int64) * ncand);
	nfirst = 0;
	for (uint64 i = 0; i < ncand; i++)
		if (cand[i].first)
		{
			/* one queue slot holds them all (the plan of that slot), or not */
			if (nfirst == 0)
				slot = cand[i].part;
			else if (slot != cand[i].part)
				slot = SLOT_ANY;
			ids[nfirst++] = cand[i].push_id;
		}
	if (slot < 0 || slot > SLOT_ANY)
		slot = SLOT_ANY;
	{
		PushCand   *byid = palloc(sizeof(PushCand) * ncand);
		PushRowOrder *claimed = palloc(sizeof(PushRowOrder) * ncand);
		int			nclaimed = 0;
		bool	   *slow = palloc0(sizeof(bool) * ncand);
		int64	   *refused = palloc(sizeof(int64) * ncand);
		Datum	   *why = palloc(sizeof(Datum) * ncand);
		int			nrefused = 0;
		const char **refusal = palloc0(sizeof(char *) * ncand);
		Datum	   *refs = palloc0(sizeof(Datum) * ncand);
		bool		direct = true;
		uint64		nrows;
		char	   *channel = text_to_cstring(PG_GETARG_TEXT_PP(0));

		memcpy(byid, cand, sizeof(PushCand) * ncand);
		qsort(byid, ncand, sizeof(PushCand), push_cand_by_id);

		/* checked in C under the members' locks (push_claim_check), else by the statement */
		for (uint64 i = 0; i < ncand && direct; i++)
			if (cand[i].first)
				direct = push_claim_check(cand[i].merchant_id, cand[i].member_id, cand[i].push_id,
										  channel, cand[i].topic, cand[i].cap_group,
										  cand[i].service, cand[i].has_expiry, cand[i].expires_at,
										  &refusal[i], &slow[i], &refs[i]);
		if (direct)
		{
			int			npass = 0;

			for (uint64 i = 0; i < ncand; i++)
				if (cand[i].first && refusal[i] != NULL)
				{
					slow[i] = false;
					refused[nrefused] = cand[i].push_id;
					why[nrefused++] = CStringGetTextDatum(refusal[i]);
				}
				else if (cand[i].first && !slow[i])
					ids[npass++] = cand[i].push_id;
			nrows = 0;
			if (npass > 0)
			{
				args[0] = PointerGetDatum(push_id_array(ids, npass));
				args[1] = PG_GETARG_DATUM(2);
				nrows = push_run(P_LEASE + slot, args, NULL, false);
			}
			for (uint64 r = 0; r < nrows; r++)
			{
				bool		isnull;
				PushCand	key;
				PushCand   *c;

				key.push_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1, &isnull));
				c = bsearch(&key, byid, ncand, sizeof(PushCand), push_cand_by_id);
				if (c == NULL)
					elog(ERROR, "claim_pushes: message %lld was not a candidate", (long long) key.push_id);
				claimed[nclaimed].order = c->order;
				claimed[nclaimed].row = r;
				nclaimed++;
			}
			qsort(claimed, nclaimed, sizeof(PushRowOrder), push_row_by_order);
			for (int k = 0; k < nclaimed; k++)
			{
				Datum		values[8];
				bool		nulls[8];
				HeapTuple	row = SPI_tuptable->vals[claimed[k].row];

				/* the lease's columns, with the member's reference read by the check */
				for (int c = 0, col = 1; c < 8; c++)
				{
					if (c == 2)
					{
						values[c] = refs[claimed[k].order];
						nulls[c] = false;
						continue;
					}
					values[c] = SPI_getbinval(row, SPI_tuptable->tupdesc, col++, &nulls[c]);
				}
				tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
			}
		}
		else
		{
			memset(slow, 0, sizeof(bool) * ncand);
			args[0] = PointerGetDatum(push_id_array(ids, nfirst));
			args[1] = PG_GETARG_DATUM(2);
			nrows = push_run(P_CLAIM + slot, args, NULL, false);
			for (uint64 r = 0; r < nrows; r++)
			{
				HeapTuple	row = SPI_tuptable->vals[r];
				TupleDesc	td = SPI_tuptable->tupdesc;
				bool		isnull;
				PushCand	key;
				PushCand   *c;
				Datum		reason;

				key.push_id = DatumGetInt64(SPI_getbinval(row, td, 1, &isnull));
				c = bsearch(&key, byid, ncand, sizeof(PushCand), push_cand_by_id);
				if (c == NULL)
					elog(ERROR, "claim_pushes: message %lld was not a candidate", (long long) key.push_id);
				reason = SPI_getbinval(row, td, 9, &isnull);
				if (!isnull)		/* refused: suppressed below */
				{
					refused[nrefused] = key.push_id;
					why[nrefused++] = PointerGetDatum(DatumGetTextPCopy(reason));
					continue;
				}
				(void) SPI_getbinval(row, td, 2, &isnull);
				if (isnull)			/* quiet hours or a cap may move it */
					slow[c->order] = true;
				else
				{
					claimed[nclaimed].order = c->order;
					claimed[nclaimed].row = r;
					nclaimed++;
				}
			}
			/* the claimed ones in the candidates' order */
			qsort(claimed, nclaimed, sizeof(PushRowOrder), push_row_by_order);
			for (int k = 0; k < nclaimed; k++)
				push_put_row(rsinfo, claimed[k].row);
		}

		/* 4. refused: suppressed with the reason, out of the queue */
		if (nrefused > 0)
		{
			args[0] = PointerGetDatum(push_id_array(refused, nrefused));
			args[1] = PointerGetDatum(construct_array(why, nrefused, TEXTOID, -1, false, TYPALIGN_INT));
			push_run(P_SUPPRESS, args, NULL, false);
		}

		/* 5. one by one: those quiet hours or a cap may move, and the members' further messages */
		for (uint64 i = 0; i < ncand; i++)
			if (slow[i] || cand[i].further)
				ids[neach++] = cand[i].push_id;
	}
	if (neach > 0)
	{
		uint64		n;

		args[0] = PointerGetDatum(push_id_array(ids, neach));
		args[1] = PG_GETARG_DATUM(2);
		n = push_run(P_EACH, args, NULL, false);
		for (uint64 r = 0; r < n; r++)
			push_put_row(rsinfo, r);
		if (IsolationUsesXactSnapshot() && n > 0)
			push_each_recheck(cand, ncand, text_to_cstring(PG_GETARG_TEXT_PP(0)), n);
	}
	SPI_finish();
	return (Datum) 0;
}

/* Whether provider_message_id passes ack_push's check (non-blank, at most 200 characters). */
static bool
push_provider_ok(text *t)
{
	const char *s = VARDATA_ANY(t);
	int			len = VARSIZE_ANY_EXHDR(t);
	bool		blank = true;

	for (int i = 0; i < len && blank; i++)
		blank = s[i] == ' ';
	if (blank)
		return false;
	return len <= 200 || pg_mbstrlen_with_len(s, len) <= 200;
}

/*
 * The acknowledgement of one message (args: push_id, provider_message_id):
 * a message being sent moved into the finished partition as sent, with its
 * delivery record, in one statement (on its slot when this session claimed
 * it, else on every slot); every other case (a repeated acknowledgement, a
 * message not being sent or not found, a bad argument) by
 * wallet_internal.push_ack_one.  Under SPI.
 */
/* The move by statement base (P_ACK_ONE or P_ACK_TOKEN): on the message's slot, else on every slot. */
static bool
push_ack_move(int base, Datum *args, const char *nulls)
{
	int			slot = push_slot_of(DatumGetInt64(args[0]));

	if (push_run(base + slot, args, nulls, false) == 1)
		return true;
	return slot != SLOT_ANY && push_run(base + SLOT_ANY, args, nulls, false) == 1;
}

static bool
push_ack_one(Datum *args, const char *nulls)
{
	bool		isnull;
	bool		result;

	if (nulls[0] != 'n' && (nulls[1] == 'n' || push_provider_ok(DatumGetTextPP(args[1]))) &&
		push_ack_move(P_ACK_ONE, args, nulls))
		return true;
	push_run(P_ACK_ONE_FULL, args, nulls, false);
	result = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	if (isnull)
		elog(ERROR, "push_ack_one returned NULL");
	return result;
}

PG_FUNCTION_INFO_V1(ack_push);

/* wallet.ack_push(push_id, provider_message_id) */
Datum
ack_push(PG_FUNCTION_ARGS)
{
	Datum		args[2];
	char		nulls[2];
	bool		result;

	args[0] = PG_ARGISNULL(0) ? (Datum) 0 : PG_GETARG_DATUM(0);
	args[1] = PG_ARGISNULL(1) ? (Datum) 0 : PG_GETARG_DATUM(1);
	nulls[0] = PG_ARGISNULL(0) ? 'n' : ' ';
	nulls[1] = PG_ARGISNULL(1) ? 'n' : ' ';
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	result = push_ack_one(args, nulls);
	SPI_finish();
	PG_RETURN_BOOL(result);
}

PG_FUNCTION_INFO_V1(ack_push_token);

/*
 * wallet.ack_push(push_id, provider_message_id, attempt): the claim token
 * checked by the statement that moves the message (attempts = attempt: a
 * message claimed again since is not moved, also when the new claim
 * commits while we wait for its lock); every other case as the checks
 * before would decide it, by wallet_internal.push_check_attempt (which
 * locks the message and raises 22004, 22023, WL701 or WL702) and then
 * ack_push's own path.
 */
Datum
ack_push_token(PG_FUNCTION_ARGS)
{
	Datum		args[3];
	char		nulls[3];
	bool		result;

	for (int i = 0; i < 3; i++)
	{
		args[i] = PG_ARGISNULL(i) ? (Datum) 0 : PG_GETARG_DATUM(i);
		nulls[i] = PG_ARGISNULL(i) ? 'n' : ' ';
	}
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (!PG_ARGISNULL(0) && !PG_ARGISNULL(2) && PG_GETARG_INT32(2) >= 1 &&
		(PG_ARGISNULL(1) || push_provider_ok(PG_GETARG_TEXT_PP(1))) &&
		push_ack_move(P_ACK_TOKEN, args, nulls))
	{
		SPI_finish();
		PG_RETURN_BOOL(true);
	}
	{
		Datum		a[2] = {args[0], args[2]};
		char		n[2] = {nulls[0], nulls[2]};

		push_run(P_CHECK_ATTEMPT, a, n, false);		/* raises unless the claim is current */
	}
	result = push_ack_one(args, nulls);
	SPI_finish();
	PG_RETURN_BOOL(result);
}

typedef struct PushAck
{
	int64		push_id;
	Datum		provider;
	bool		provider_null;
} PushAck;

static int
push_ack_by_id(const void *a, const void *b)
{
	const PushAck *x = a;
	const PushAck *y = b;

	return x->push_id < y->push_id ? -1 : x->push_id > y->push_id ? 1 : 0;
}

PG_FUNCTION_INFO_V1(ack_pushes);

/*
 * wallet.ack_pushes(push_ids, provider_message_ids): the messages moved as
 * ack_push moves one, in one statement, locked in ascending id order.  When
 * the arguments are unusual (NULLs, repeated ids, bad provider ids, too
 * many) or not every message was being sent, wallet_internal.push_ack_many
 * decides (after the move: those moved count as acknowledged, the same
 * acknowledgement again; an error undoes the move with the statement).
 */
Datum
ack_pushes(PG_FUNCTION_ARGS)
{
	Datum		args[2];
	char		nulls[2];
	int64		n = 0;
	bool		fast = !PG_ARGISNULL(0);
	int			nids = 0;
	PushAck    *acks = NULL;

	/* a 2-D array would be read flat: push_ack_many refuses it (22023) */
	if (fast && (ARR_NDIM(PG_GETARG_ARRAYTYPE_P(0)) > 1 || (!PG_ARGISNULL(1) && ARR_NDIM(PG_GETARG_ARRAYTYPE_P(1)) > 1)))
		fast = false;
	if (fast)
	{
		Datum	   *ids;
		bool	   *idnulls;
		Datum	   *pids = NULL;
		bool	   *pidnulls = NULL;
		int			npids = 0;

		deconstruct_array(PG_GETARG_ARRAYTYPE_P(0), INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE, &ids, &idnulls, &nids);
		if (!PG_ARGISNULL(1))
			deconstruct_array(PG_GETARG_ARRAYTYPE_P(1), TEXTOID, -1, false, TYPALIGN_INT, &pids, &pidnulls, &npids);
		fast = nids <= 10000 && (PG_ARGISNULL(1) || npids == nids);
		if (fast)
		{
			acks = palloc(sizeof(PushAck) * Max(nids, 1));
			for (int i = 0; i < nids && fast; i++)
			{
				fast = !idnulls[i];
				acks[i].push_id = fast ? DatumGetInt64(ids[i]) : 0;
				acks[i].provider_null = pids == NULL || pidnulls[i];
				acks[i].provider = acks[i].provider_null ? (Datum) 0 : pids[i];
				if (fast && !acks[i].provider_null)
					fast = push_provider_ok(DatumGetTextPP(pids[i]));
			}
		}
		if (fast)
		{
			qsort(acks, nids, sizeof(PushAck), push_ack_by_id);
			for (int i = 1; i < nids && fast; i++)
				fast = acks[i].push_id != acks[i - 1].push_id;
		}
	}
	if (fast && nids == 0)
		PG_RETURN_INT64(0);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (fast)
	{
		int64	   *sorted = palloc(sizeof(int64) * nids);
		Datum	   *pd = palloc(sizeof(Datum) * nids);
		bool	   *pn = palloc(sizeof(bool) * nids);
		int			dims[1] = {nids};
		int			lbs[1] = {1};
		int			slot = push_slot_of(acks[0].push_id);

		for (int i = 0; i < nids; i++)
		{
			sorted[i] = acks[i].push_id;
			pd[i] = acks[i].provider;
			pn[i] = acks[i].provider_null;
			if (slot != SLOT_ANY && push_slot_of(acks[i].push_id) != slot)
				slot = SLOT_ANY;
		}
		args[0] = PointerGetDatum(push_id_array(sorted, nids));
		nulls[0] = ' ';
		nulls[1] = PG_ARGISNULL(1) ? 'n' : ' ';
		args[1] = PG_ARGISNULL(1) ? (Datum) 0
			: PointerGetDatum(construct_md_array(pd, pn, 1, dims, lbs, TEXTOID, -1, false, TYPALIGN_INT));
		/*
		 * over every slot, the move would lock them slot by slot; an erasure
		 * locks them in id order: locked in that order first
		 */
		if (slot == SLOT_ANY)
			push_run(P_LOCK_ACKS, args, nulls, false);
		n = (int64) push_run(P_ACK_MANY + slot, args, nulls, false);
		/* some moved meanwhile (to another slot): looked for in every slot */
		if (n < nids && slot != SLOT_ANY)
			n += (int64) push_run(P_ACK_MANY + SLOT_ANY, args, nulls, false);
		fast = n == nids;
	}
	if (!fast)
	{
		bool		isnull;

		args[0] = PG_ARGISNULL(0) ? (Datum) 0 : PG_GETARG_DATUM(0);
		args[1] = PG_ARGISNULL(1) ? (Datum) 0 : PG_GETARG_DATUM(1);
		nulls[0] = PG_ARGISNULL(0) ? 'n' : ' ';
		nulls[1] = PG_ARGISNULL(1) ? 'n' : ' ';
		push_run(P_ACK_MANY_FULL, args, nulls, false);
		n += DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		if (isnull)
			elog(ERROR, "push_ack_many returned NULL");
	}
	SPI_finish();
	PG_RETURN_INT64(n);
}
