/*
 * push_enqueue.c: wallet.enqueue_push in C (README "Push", issue 12).
 *
 * The same checks, decision and record as the PL/pgSQL chain it replaces
 * (member_check, push_check_message, member_ensure, push_enqueue), in one
 * function with saved plans: the argument checks here, the member found and
 * a message id drawn by one query that also locks the member's row, the dedup
 * key claimed by one INSERT ... ON CONFLICT, the decision by push_decide.c
 * and the outcome written by one INSERT.  The wake-up NOTIFY goes to the
 * merchant's secret channel name (wallet_internal.push_channel_name, from
 * the merchant's push_key, read once per backend) and is throttled exactly
 * as wallet_internal.push_notify throttles it (the same setting).
 */
#include "wallet.h"

#include "errcodes.h"
#include "privileges.h"
#include "push.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"
#include "catalog/namespace.h"

#include <sodium.h>


static SPIPlanPtr member_id_plan = NULL;
static SPIPlanPtr insert_plan = NULL;

/* number of characters of a text */
static int
text_chars(text *t)
{
	return pg_mbstrlen_with_len(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
}

/* btrim(t) = '': empty or only spaces */
static bool
text_blank(text *t)
{
	const char *p = VARDATA_ANY(t);
	int			i,
				len = VARSIZE_ANY_EXHDR(t);

	for (i = 0; i < len; i++)
		if (p[i] != ' ')
			return false;
	return true;
}

/* as wallet_internal.push_check_name: a lower-case identifier of at most 40 characters */
static char *
check_name(const char *what, FunctionCallInfo fcinfo, int arg)
{
	text	   *t;
	const char *p;
	int			len,
				i;
	bool		ok;

	if (PG_ARGISNULL(arg))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", what),
				 errdetail("Every message and consent names its channel and topic.")));
	t = PG_GETARG_TEXT_PP(arg);
	p = VARDATA_ANY(t);
	len = VARSIZE_ANY_EXHDR(t);
	ok = len >= 1 && len <= PUSH_NAME_MAX && p[0] >= 'a' && p[0] <= 'z';
	for (i = 1; ok && i < len; i++)
		ok = (p[i] >= 'a' && p[i] <= 'z') || (p[i] >= '0' && p[i] <= '9') || p[i] == '_';
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s \"%.*s\" is not a valid name", what, pg_mbcharcliplen(p, len, 64), p),
				 errdetail("Channels and topics are lower-case identifiers of at most 40 characters (letters, digits, underscore), such as push or marketing.")));
	return text_to_cstring(t);
}

static void
unknown_merchant(int64 merchant_id)
{
	ereport(ERROR,
			(errcode(ERRCODE_WL_UNKNOWN_MERCHANT),
			 errmsg("merchant " INT64_FORMAT " does not exist", merchant_id),
			 errdetail("Members belong to a merchant registered in wallet.merchants.")));
}

/*
 * Per backend, the push_key of the last merchants that notified (a key never
 * changes; the cache is dropped on any relcache invalidation of
 * wallet.merchants, e.g. the extension dropped and created again, whose
 * merchant ids start over).  A key longer than PUSH_KEY_MAX is read each time.
 */
#define PUSH_KEY_MAX		64
#define PUSH_KEY_SLOTS		16

typedef struct PushKeySlot
{
	int64		merchant_id;
	int			len;			/* 0: empty slot */
	unsigned char key[PUSH_KEY_MAX];
} PushKeySlot;

static PushKeySlot push_keys[PUSH_KEY_SLOTS];
static int	push_keys_next = 0;
static bool push_keys_valid = false;
static bool push_keys_callback = false;
static Oid	merchants_relid = InvalidOid;

static void
push_keys_invalidate(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == merchants_relid)
		push_keys_valid = false;
}

static void
push_keys_reset(void)
{
	Oid			nsp;

	if (!push_keys_callback)
	{
		wallet_register_relcache_callback(push_keys_invalidate);
		push_keys_callback = true;
	}
	sodium_memzero(push_keys, sizeof(push_keys));
	push_keys_next = 0;
	nsp = get_namespace_oid("wallet", true);
	merchants_relid = OidIsValid(nsp) ? get_relname_relid("merchants", nsp) : InvalidOid;
	push_keys_valid = true;
}

/*
 * Under SPI: name = wallet_internal.push_channel_name(merchant, channel),
 * 'wallet_push_' and the first 40 hex digits of sha256(push_key || channel).
 */
static void
push_channel_name(int64 merchant_id, const char *channel, char *name, size_t size)
{
	crypto_hash_sha256_state st;
	unsigned char digest[crypto_hash_sha256_BYTES];
	static const char hex[] = "0123456789abcdef";
	PushKeySlot *slot = NULL;
	int			i;
	size_t		n;

	if (!push_keys_valid)
		push_keys_reset();
	for (i = 0; i < PUSH_KEY_SLOTS; i++)
		if (push_keys[i].len > 0 && push_keys[i].merchant_id == merchant_id)
		{
			slot = &push_keys[i];
			break;
		}
	crypto_hash_sha256_init(&st);
	if (slot != NULL)
		crypto_hash_sha256_update(&st, slot->key, slot->len);
	else
	{
		Oid			argtypes[1] = {INT8OID};
		Datum		args[1] = {Int64GetDatum(merchant_id)};
		bool		isnull;
		bytea	   *key;
		int			len;

		if (SPI_execute_with_args("SELECT m.push_key FROM wallet.merchants m WHERE m.merchant_id OPERATOR(pg_catalog.=) $1",
								  1, argtypes, args, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "reading the push key of merchant " INT64_FORMAT " failed", merchant_id);
		key = DatumGetByteaPP(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		if (isnull)
			elog(ERROR, "merchant " INT64_FORMAT " has no push key", merchant_id);
		len = VARSIZE_ANY_EXHDR(key);
		crypto_hash_sha256_update(&st, (const unsigned char *) VARDATA_ANY(key), len);
		/* the query may have processed an invalidation that emptied the cache */
		if (!push_keys_valid)
			push_keys_reset();
		if (len > 0 && len <= PUSH_KEY_MAX)
		{
			slot = &push_keys[push_keys_next];
			push_keys_next = (push_keys_next + 1) % PUSH_KEY_SLOTS;
			slot->merchant_id = merchant_id;
			slot->len = len;
			memcpy(slot->key, VARDATA_ANY(key), len);
		}
	}
	/* channel names are checked ASCII identifiers: their UTF-8 is themselves */
	crypto_hash_sha256_update(&st, (const unsigned char *) channel, strlen(channel));
	crypto_hash_sha256_final(&st, digest);
	Assert(size > 12 + 40);
	n = strlcpy(name, "wallet_push_", size);
	for (i = 0; i < 20; i++)
	{
		name[n++] = hex[digest[i] >> 4];
		name[n++] = hex[digest[i] & 15];
	}
	name[n] = '\0';
}

/*
 * Under SPI: NOTIFY on the merchant's channel name, at most once per merchant
 * and channel every 100 ms in a session (push_notify, the same setting)
 */
static void
notify_channel(int64 merchant_id, const char *channel)
{
	char		key[128];
	char		value[32];
	char		name[64];
	const char *last;
	int64		now_ms;

	snprintf(key, sizeof(key), "wallet_push.notified_" INT64_FORMAT "_%s", merchant_id, channel);
	last = GetConfigOption(key, true, false);
	now_ms = GetCurrentTimestamp() / 1000 +
		(int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY * 1000;
	if (last != NULL && last[0] != '\0' && now_ms - strtoll(last, NULL, 10) < 100)
		return;
	push_channel_name(merchant_id, channel, name, sizeof(name));
	Async_Notify(name, "");
	snprintf(value, sizeof(value), INT64_FORMAT, now_ms);
	DirectFunctionCall3(set_config_by_name, CStringGetTextDatum(key), CStringGetTextDatum(value),
						BoolGetDatum(false));
}

PG_FUNCTION_INFO_V1(enqueue_push);
/*
 * wallet.enqueue_push(merchant_id, member_ref, channel, topic, payload,
 * campaign_id, dedup_key, not_before, expires_at, priority) -> (push_id,
 * status, reason, eligible_at)
 */
Datum
enqueue_push(PG_FUNCTION_ARGS)
{
	int64		merchant_id;
	text	   *member_ref;
	char	   *channel,
			   *topic_name;
	Jsonb	   *payload;
	bool		has_campaign = !PG_ARGISNULL(5);
	bool		has_dedup = !PG_ARGISNULL(6);
	bool		has_expiry = !PG_ARGISNULL(8);
	TimestampTz not_before,
				expires_at = 0,
				t;
	int32		priority;
	int64		member_id = 0,
				push_id = 0;
	bool		found = false;
	bool		isnull;
	PushTopic	topic;
	PushSettings settings;
	PushMember	member;
	PushDecision d;
	TupleDesc	tupdesc;
	Datum		values[4];
	bool		nulls[4] = {false, false, false, false};
	int			n;
	char		reason[64];

	/* member_check */
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", PG_ARGISNULL(0) ? "merchant_id" : "member reference"),
				 errdetail("A member is named by its merchant and the merchant app's own user id.")));
	merchant_id = PG_GETARG_INT64(0);
	member_ref = PG_GETARG_TEXT_PP(1);
	n = text_chars(member_ref);
	if (text_blank(member_ref) || n > 256)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("member reference must not be %s", text_blank(member_ref) ? "blank" : "longer than 256 characters"),
				 errdetail("A member reference is a non-blank text of at most 256 characters; this one has %d.", n)));
	if (VARSIZE_ANY_EXHDR(member_ref) >= 10 && memcmp(VARDATA_ANY(member_ref), "forgotten:", 10) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("member reference must not start with \"forgotten:\""),
				 errdetail("References starting with \"forgotten:\" are the pseudonyms of erased members.")));
	if (!wallet_acts_for_merchant(merchant_id))
		unknown_merchant(merchant_id);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	/*
	 * the member, locked (one member's pushes are decided one at a time: a
	 * row lock, as push_lock_member takes), and a message id in one query
	 * (the id is drawn only for a known member)
	 */
	if (member_id_plan == NULL)
	{
		Oid			argtypes[2] = {INT8OID, TEXTOID};

		member_id_plan = push_keep_plan("SELECT m.member_id, pg_catalog.nextval('wallet.push_messages_push_id_seq'::pg_catalog.regclass) "
									  "FROM wallet.members m WHERE m.merchant_id OPERATOR(pg_catalog.=) $1 "
									  "AND m.member_ref OPERATOR(pg_catalog.=) $2 FOR NO KEY UPDATE OF m", 2, argtypes);
	}
	if (!push_member_lock_direct(merchant_id, member_ref, &member_id, &push_id, &found))
	{
		Datum		args[2] = {Int64GetDatum(merchant_id), PointerGetDatum(member_ref)};

		if (SPI_execute_plan(member_id_plan, args, NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "looking up a member failed");
		if (SPI_processed == 1)
		{
			found = true;
			member_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
			push_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
		}
	}
	if (!found)
	{
		/* a member seen for the first time: its merchant must exist (a known member's does) */
		Oid			argtypes[1] = {INT8OID};
		Datum		args[1] = {Int64GetDatum(merchant_id)};

		if (SPI_execute_with_args("SELECT FROM wallet.merchants m WHERE m.merchant_id OPERATOR(pg_catalog.=) $1",
								  1, argtypes, args, NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "looking up a merchant failed");
		if (SPI_processed != 1)
			unknown_merchant(merchant_id);
	}

	/* push_check_message */
	channel = check_name("channel", fcinfo, 2);
	topic_name = check_name("topic", fcinfo, 3);
	if (PG_ARGISNULL(4) || PG_ARGISNULL(7) || PG_ARGISNULL(9))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", PG_ARGISNULL(4) ? "payload" : PG_ARGISNULL(7) ? "not_before" : "priority"),
				 errdetail("A message has a payload, an earliest send time and a priority (defaults: now(), 0).")));
	payload = PG_GETARG_JSONB_P(4);
	if (!JB_ROOT_IS_OBJECT(payload) || JB_ROOT_IS_SCALAR(payload))
		n = -1;
	else
	{
		char	   *s = JsonbToCString(NULL, &payload->root, VARSIZE(payload));

		n = pg_mbstrlen(s);
		pfree(s);
	}
	if (n < 0 || n > 65536)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("payload must be a json object of at most 64 kB"),
				 errdetail("The payload is what the worker sends, e.g. {\"title\": ..., \"body\": ...}.")));
	if (has_dedup)
	{
		text	   *k = PG_GETARG_TEXT_PP(6);

		if (text_blank(k) || text_chars(k) > 200)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("dedup_key must not be %s", text_blank(k) ? "blank" : "longer than 200 characters"),
					 errdetail("A deduplication key is a non-blank text of at most 200 characters (NULL: none).")));
	}
	if (has_campaign)
	{
		Oid			argtypes[2] = {INT8OID, INT8OID};
		Datum		args[2] = {PG_GETARG_DATUM(5), Int64GetDatum(merchant_id)};

		if (SPI_execute_with_args("SELECT FROM wallet.campaigns c WHERE c.campaign_id OPERATOR(pg_catalog.=) $1 "
								  "AND c.merchant_id OPERATOR(pg_catalog.=) $2 AND wallet.acts_for(c.merchant_id)",
								  2, argtypes, args, NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "looking up a campaign failed");
		if (SPI_processed != 1)
			ereport(ERROR,
					(errcode(ERRCODE_WL_UNKNOWN_CAMPAIGN),
					 errmsg("campaign " INT64_FORMAT " does not exist", PG_GETARG_INT64(5)),
					 errdetail("A message belongs to a campaign of its merchant, or to none.")));
	}
	not_before = PG_GETARG_TIMESTAMPTZ(7);
	if (TIMESTAMP_NOT_FINITE(not_before))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("not_before must be finite"),
				 errdetail("The earliest send time is a real instant (default: now()).")));
	{
		/* as push_check_message: within 100 years, so the local-time arithmetic stays in range */
		Interval	century = {0, 0, 1200};

		if (not_before > DatumGetTimestampTz(DirectFunctionCall2(timestamptz_pl_interval,
																 TimestampTzGetDatum(GetCurrentTransactionStartTimestamp()),
																 IntervalPGetDatum(&century))))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("not_before must be at most 100 years from now"),
					 errdetail("The earliest send time is a real instant (default: now()).")));
	}
	if (has_expiry)
	{
		expires_at = PG_GETARG_TIMESTAMPTZ(8);
		if (TIMESTAMP_NOT_FINITE(expires_at))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("expires_at must be finite"),
					 errdetail("A message expires at a real instant, or never (NULL).")));
	}
	priority = PG_GETARG_INT32(9);

	/* member_ensure, for a member seen for the first time */
	if (!found)
	{
		Oid			argtypes[2] = {INT8OID, TEXTOID};
		Datum		args[2] = {Int64GetDatum(merchant_id), PointerGetDatum(member_ref)};

		if (SPI_execute_with_args("SELECT wallet_internal.member_ensure($1, $2), "
								  "pg_catalog.nextval('wallet.push_messages_push_id_seq'::pg_catalog.regclass)",
								  2, argtypes, args, NULL, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "creating a member failed");
		member_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		push_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	}

	/* a member just ensured is locked now (a known one was by its look-up) */
	if (!found)
	{
		Oid			argtypes[1] = {INT8OID};
		Datum		args[1] = {Int64GetDatum(member_id)};

		if (SPI_execute_with_args("SELECT FROM wallet.members m WHERE m.member_id OPERATOR(pg_catalog.=) $1 FOR NO KEY UPDATE",
								  1, argtypes, args, NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "locking a member failed");
	}
	t = Max(not_before, GetCurrentTransactionStartTimestamp());

	memset(&d, 0, sizeof(d));
	push_config_topic(merchant_id, topic_name, &topic);
	push_config_settings(merchant_id, &settings);
	if (has_dedup)
	{
		bool		duplicate = false;

		push_member_read_claiming(merchant_id, member_id, channel, topic_name, &settings,
								  PG_GETARG_TEXT_PP(6), push_id, &duplicate, &member);
		if (duplicate)
		{
			d.status = "duplicate";
			d.reason = "dedup_key";
		}
	}
	else
		push_member_read(merchant_id, member_id, channel, topic_name, &settings, &member);
	/* a campaign's message goes to its target group only: the control group stays untouched for the lift */
	if (d.status == NULL && has_campaign)
	{
		Oid			argtypes[2] = {INT8OID, INT8OID};
		Datum		args[2] = {PG_GETARG_DATUM(5), Int64GetDatum(member_id)};
		char	   *grp;

		if (SPI_execute_with_args("SELECT wallet_internal.campaign_group($1, $2)",
								  2, argtypes, args, NULL, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "looking up a campaign group failed");
		grp = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
		if (grp != NULL && strcmp(grp, "control") == 0)
		{
			d.status = "suppressed";
			d.reason = "control_group";
		}
		else if (grp != NULL && strcmp(grp, "outside") == 0)
		{
			d.status = "suppressed";
			d.reason = "outside_audience";
		}
	}
	if (d.status == NULL)
		push_decide(merchant_id, member_id, channel, topic_name, &topic, &member, priority, t,
					has_expiry, expires_at, &d);

	/* the outcome, recorded as one row: queued and deferred ones in the current queue slot */
	{
		bool		waiting = strcmp(d.status, "queued") == 0 || strcmp(d.status, "deferred") == 0;
		Datum		args[18];
		char		argnulls[18];

		if (insert_plan == NULL)
		{
			Oid			argtypes[18] = {INT8OID, INT8OID, INT8OID, TEXTOID, TEXTOID, TEXTOID, BOOLOID, JSONBOID,
			INT8OID, TEXTOID, INT4OID, TIMESTAMPTZOID, TIMESTAMPTZOID, TEXTOID, TEXTOID, TEXTOID,
			TIMESTAMPTZOID, TIMESTAMPTZOID};

			insert_plan = push_keep_plan(
				"INSERT INTO wallet.push_messages (push_id, merchant_id, member_id, channel, topic, cap_group, service, "
				"    payload, campaign_id, dedup_key, priority, not_before, expires_at, outcome, outcome_reason, status, "
				"    reason, due_at, slot_at, finished_at, part) OVERRIDING SYSTEM VALUE "
				"VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $15, $17, $17, $18, "
				"        CASE WHEN $18 IS NULL THEN (SELECT (q.last_value OPERATOR(pg_catalog.%) 4)::pg_catalog.int2 "
				"                                      FROM wallet_internal.push_queue_slot q) ELSE 3::pg_catalog.int2 END)",
				18, argtypes);
		}
		memset(argnulls, ' ', sizeof(argnulls));
		args[0] = Int64GetDatum(push_id);
		args[1] = Int64GetDatum(merchant_id);
		args[2] = Int64GetDatum(member_id);
		args[3] = CStringGetTextDatum(channel);
		args[4] = CStringGetTextDatum(topic_name);
		if (topic.capped)
			args[5] = CStringGetTextDatum(topic.cap_group);
		else
		{
			args[5] = (Datum) 0;
			argnulls[5] = 'n';
		}
		args[6] = BoolGetDatum(topic.service);
		args[7] = JsonbPGetDatum(payload);
		args[8] = PG_GETARG_DATUM(5);
		argnulls[8] = has_campaign ? ' ' : 'n';
		args[9] = PG_GETARG_DATUM(6);
		argnulls[9] = has_dedup ? ' ' : 'n';
		args[10] = Int32GetDatum(priority);
		args[11] = TimestampTzGetDatum(not_before);
		args[12] = TimestampTzGetDatum(expires_at);
		argnulls[12] = has_expiry ? ' ' : 'n';
		args[13] = CStringGetTextDatum(d.status);
		if (d.reason != NULL)
			args[14] = CStringGetTextDatum(d.reason);
		else
		{
			args[14] = (Datum) 0;
			argnulls[14] = 'n';
		}
		args[15] = CStringGetTextDatum(waiting ? "queued" : d.status);
		args[16] = TimestampTzGetDatum(d.eligible_at);
		argnulls[16] = d.has_eligible ? ' ' : 'n';
		args[17] = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());
		argnulls[17] = waiting ? 'n' : ' ';
		if (!push_insert_direct(args, argnulls) &&
			SPI_execute_plan(insert_plan, args, argnulls, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "recording a push failed");
	}
	if (strcmp(d.status, "queued") == 0)
		notify_channel(merchant_id, channel);
	/* the reason may live in SPI memory: copied out before SPI_finish */
	if (d.reason != NULL)
	{
		strlcpy(reason, d.reason, sizeof(reason));
		d.reason = reason;
	}
	SPI_finish();

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "wallet.enqueue_push must return a record");
	tupdesc = BlessTupleDesc(tupdesc);
	values[0] = Int64GetDatum(push_id);
	values[1] = CStringGetTextDatum(d.status);
	if (d.reason != NULL)
		values[2] = CStringGetTextDatum(d.reason);
	else
		nulls[2] = true;
	if (d.has_eligible)
		values[3] = TimestampTzGetDatum(d.eligible_at);
	else
		nulls[3] = true;
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
