/*
 * redeem.c: wallet.redeem_code in C (its common case: by direct access
 * under READ COMMITTED, see redeem_direct.c, else one pass of kept plans)
 * and wallet_internal.code_caps_unchanged.
 *
 * Why C: the PL/pgSQL redeem_code ran a dozen nested SECURITY DEFINER
 * helpers per call, each with its own GUC save/restore, executor start-up
 * and plan revalidation; that, not contention, made it 5x slower than a
 * plain insert.
 */
#include "wallet.h"
#include "miscadmin.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "code_cache.h"
#include "guard.h"
#include "keys.h"
#include "marketing_code.h"
#include "privileges.h"
#include "redeem.h"

/*
 * Raises a serialization failure (40001) unless the campaign's latest
 * committed caps are the given ones (read by the caller under its
 * transaction snapshot).  The caller is connected to SPI.
 *
 * Under REPEATABLE READ a transaction's snapshot may predate a change of the
 * caps; SELECT ... FOR SHARE would detect it but needs UPDATE on
 * wallet.campaigns, the right to mint codes, which a redeeming role must not
 * need.  Reading the row again under the latest snapshot (as foreign key
 * checks do) needs only SELECT and catches every change committed before
 * the call; one committed later is ordered after this redemption, as under
 * READ COMMITTED.
 */
static void
caps_unchanged(int64 campaign_id, const bool *capnull, const int64 *caps)
{
	static SPIPlanPtr plan = NULL;
	Datum		id = Int64GetDatum(campaign_id);
	bool		same;

	if (plan == NULL)
	{
		Oid			argtypes[1] = {INT8OID};
		SPIPlanPtr	p = SPI_prepare("SELECT c.max_redemptions_per_code::pg_catalog.int8, c.max_redemptions_per_member::pg_catalog.int8,"
									" c.max_redemptions_total FROM wallet.campaigns c"
									" WHERE c.campaign_id OPERATOR(pg_catalog.=) $1",
									1, argtypes);

		if (p == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		SPI_keepplan(p);
		plan = p;
	}
	if (SPI_execute_snapshot(plan, &id, NULL, GetLatestSnapshot(), InvalidSnapshot,
							 true, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "SPI_execute_snapshot failed");
	same = SPI_processed == 1;
	for (int i = 0; same && i < 3; i++)
	{
		bool		isnull;
		Datum		v = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, i + 1, &isnull);

		if (isnull != capnull[i])
			same = false;
		else if (!isnull)
			same = DatumGetInt64(v) == caps[i];
	}
	if (!same)
		ereport(ERROR,
				(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
				 errmsg("could not serialize access due to a concurrent change of campaign %lld",
						(long long) campaign_id),
				 errdetail("The campaign's redemption caps changed, or it was deleted, after this transaction's snapshot was taken."),
				 errhint("Retry the transaction.")));
}

PG_FUNCTION_INFO_V1(code_caps_unchanged);

/*
 * wallet_internal.code_caps_unchanged(campaign_id, max_per_code, max_per_member,
 * max_total): caps_unchanged for the PL/pgSQL paths.
 */
Datum
code_caps_unchanged(PG_FUNCTION_ARGS)
{
	bool		capnull[3];
	int64		caps[3];

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("campaign_id must not be null"),
				 errdetail("The caps of a campaign are checked, named by its id.")));
	for (int i = 0; i < 3; i++)
	{
		capnull[i] = PG_ARGISNULL(i + 1);
		caps[i] = capnull[i] ? 0 : (i < 2 ? (int64) PG_GETARG_INT32(i + 1) : PG_GETARG_INT64(i + 1));
	}
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	caps_unchanged(PG_GETARG_INT64(0), capnull, caps);
	SPI_finish();
	PG_RETURN_VOID();
}

/*
 * The plans of wallet.redeem_code's fast path, prepared once per backend and
 * kept (SPI_keepplan): the plan cache re-plans them when a table changes.
 */
enum
{
	P_READ,						/* campaign window, binding, guard settings, key */
	P_CAPS,						/* the caps, read under the table locks */
	P_CODE_NEW, P_CODE_LOCK, P_CODE_RES, P_CODE_BUMP,
	P_MEMBER_NEW, P_MEMBER_LOCK, P_MEMBER_RES, P_MEMBER_BUMP,
	P_TOTAL_NEW, P_TOTAL_LOCK, P_TOTAL_RES, P_TOTAL_BUMP,
	P_INSERT,
	P_FULL,
	P_COUNT
};

static SPIPlanPtr plans[P_COUNT];
static Oid	plans_codeoid = InvalidOid;	/* wallet.marketing_code when prepared */

/*
 * The plans name wallet.marketing_code by OID (a parameter's type), which a
 * re-created extension changes: then prepare them afresh.
 */
static void
redeem_plans_check(void)
{
	Oid			codeoid = GetSysCacheOid2(TYPENAMENSP, Anum_pg_type_oid, CStringGetDatum("marketing_code"),
										  ObjectIdGetDatum(get_namespace_oid("wallet", false)));

	if (codeoid == plans_codeoid)
		return;
	for (int i = 0; i < P_COUNT; i++)
		if (plans[i] != NULL)
		{
			SPI_freeplan(plans[i]);
			plans[i] = NULL;
		}
	plans_codeoid = codeoid;
}

static SPIPlanPtr
redeem_plan(int which)
{
	static const char *const sql[P_COUNT] = {
		/* P_READ: $1 campaign, $2 serial, $3 key, $4 merchant, $5 context */
		"SELECT c.starts_at, c.ends_at,"
		" (SELECT b.member_ref FROM wallet.code_bindings b WHERE b.campaign_id = $1 AND b.serial = $2),"
		" g.max_failures_per_member, g.max_failures_per_source, g.failure_window, g.found,"
		" EXISTS (SELECT 1 FROM wallet.code_redemptions d WHERE d.idempotency_key = $3 AND d.merchant_id = $4)"
		"  OR EXISTS (SELECT 1 FROM wallet.code_reservations v WHERE v.idempotency_key = $3 AND v.merchant_id = $4),"
		" pg_catalog.\"left\"($5 ->> 'source', 256)"
		" FROM wallet.campaigns c LEFT JOIN LATERAL"
		" (SELECT s.max_failures_per_member, s.max_failures_per_source, s.failure_window, true AS found"
		"    FROM wallet.code_guard_settings s WHERE s.merchant_id = $4 OR s.merchant_id IS NULL"
		"   ORDER BY s.merchant_id NULLS LAST LIMIT 1) g ON true"
		" WHERE c.campaign_id = $1",
		/* P_CAPS: $1 campaign */
		"SELECT c.max_redemptions_per_code::pg_catalog.int8, c.max_redemptions_per_member::pg_catalog.int8,"
		" c.max_redemptions_total FROM wallet.campaigns c WHERE c.campaign_id = $1",
		/* per code: $1 campaign, $2 serial, $3 merchant / $3 clock time / $3 delta */
		"INSERT INTO wallet.code_use_counts AS u (campaign_id, serial, merchant_id, redeemed) VALUES ($1, $2, $3, 1)"
		" ON CONFLICT DO NOTHING RETURNING 0::pg_catalog.int8",
		"SELECT u.redeemed::pg_catalog.int8 FROM wallet.code_use_counts u WHERE u.campaign_id = $1 AND u.serial = $2 FOR UPDATE",
		"SELECT pg_catalog.count(*) FROM wallet.code_reservations v"
		" WHERE v.state = 'active' AND v.campaign_id = $1 AND v.serial = $2 AND v.expires_at > $3",
		"UPDATE wallet.code_use_counts u SET redeemed = u.redeemed + $3 WHERE u.campaign_id = $1 AND u.serial = $2",
		/* per member: $2 member_ref */
		"INSERT INTO wallet.member_use_counts AS u (campaign_id, member_ref, merchant_id, redeemed) VALUES ($1, $2, $3, 1)"
		" ON CONFLICT DO NOTHING RETURNING 0::pg_catalog.int8",
		"SELECT u.redeemed::pg_catalog.int8 FROM wallet.member_use_counts u WHERE u.campaign_id = $1 AND u.member_ref = $2 FOR UPDATE",
		"SELECT pg_catalog.count(*) FROM wallet.code_reservations v"
		" WHERE v.state = 'active' AND v.campaign_id = $1 AND v.member_ref = $2 AND v.expires_at > $3",
		"UPDATE wallet.member_use_counts u SET redeemed = u.redeemed + $3 WHERE u.campaign_id = $1 AND u.member_ref = $2",
		/* per campaign: $2 merchant / $2 clock time / $2 delta */
		"INSERT INTO wallet.campaign_use_counts AS u (campaign_id, merchant_id, redeemed) VALUES ($1, $2, 1)"
		" ON CONFLICT DO NOTHING RETURNING 0::pg_catalog.int8",
		"SELECT u.redeemed FROM wallet.campaign_use_counts u WHERE u.campaign_id = $1 FOR UPDATE",
		"SELECT pg_catalog.count(*) FROM wallet.code_reservations v"
		" WHERE v.state = 'active' AND v.campaign_id = $1 AND v.expires_at > $2",
		"UPDATE wallet.campaign_use_counts u SET redeemed = u.redeemed + $2 WHERE u.campaign_id = $1",
		/* P_INSERT */
		"INSERT INTO wallet.code_redemptions (campaign_id, serial, code, member_ref, idempotency_key, context,"
		" reservation_id, redeemed_at, merchant_id)"
		" VALUES ($1, $2, $3, $4, $5, $6, NULL, pg_catalog.clock_timestamp(), $7)"
		" ON CONFLICT (idempotency_key, merchant_id) DO NOTHING"
		" RETURNING redemption_id, redeemed_at",
		/* P_FULL */
		"SELECT wallet_internal.redeem_code_full($1, $2, $3, $4)",
	};
	Oid			codeoid = plans_codeoid;

	if (plans[which] != NULL)
		return plans[which];
	{
		Oid			t_read[5] = {INT8OID, INT8OID, TEXTOID, INT8OID, JSONBOID};
		Oid			t_code[3] = {INT8OID, INT8OID, INT8OID};
		Oid			t_code_res[3] = {INT8OID, INT8OID, TIMESTAMPTZOID};
		Oid			t_code_bump[3] = {INT8OID, INT8OID, INT4OID};
		Oid			t_member[3] = {INT8OID, TEXTOID, INT8OID};
		Oid			t_member_res[3] = {INT8OID, TEXTOID, TIMESTAMPTZOID};
		Oid			t_member_bump[3] = {INT8OID, TEXTOID, INT4OID};
		Oid			t_total[2] = {INT8OID, INT8OID};
		Oid			t_total_res[2] = {INT8OID, TIMESTAMPTZOID};
		Oid			t_total_bump[2] = {INT8OID, INT4OID};
		Oid			t_insert[7] = {INT8OID, INT8OID, codeoid, TEXTOID, TEXTOID, JSONBOID, INT8OID};
		Oid			t_full[4] = {TEXTOID, TEXTOID, TEXTOID, JSONBOID};
		static const int nargs[P_COUNT] = {5, 1, 3, 2, 3, 3, 3, 2, 3, 3, 2, 1, 2, 2, 7, 4};
		Oid		   *types[P_COUNT] = {t_read, t_code, t_code, t_code, t_code_res, t_code_bump,
			t_member, t_member, t_member_res, t_member_bump,
			t_total, t_total, t_total_res, t_total_bump, t_insert, t_full};
		SPIPlanPtr	p = SPI_prepare(sql[which], nargs[which], types[which]);

		if (p == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		SPI_keepplan(p);
		plans[which] = p;
	}
	return plans[which];
}

/* Run a kept plan of the fast path; returns the number of rows. */
static uint64
redeem_run(int which, Datum *values, const char *nulls)
{
	int			rc = SPI_execute_plan(redeem_plan(which), values, nulls, false, 0);

	if (rc < 0)
		elog(ERROR, "SPI_execute_plan failed: %s", SPI_result_code_string(rc));
	return SPI_processed;
}

/* Column col of the first row of the last result, as int8; 0 when NULL or no row. */
static int64
redeem_int8(int col)
{
	bool		isnull;
	Datum		d;

	if (SPI_processed == 0)
		return 0;
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, col, &isnull);
	return isnull ? 0 : DatumGetInt64(d);
}

/*
 * Lock (creating on first use) one counter row and read its count of other
 * redemptions.  A fresh row is inserted already counting this redemption
 * (*fresh set; taken back if the call is refused), and the INSERT holds it
 * until commit: a new code or member costs one statement.  An existing row
 * is locked FOR UPDATE.
 */
static int64
redeem_lock_counter(int p_new, int p_lock, Datum *args, Datum merchant, bool *fresh)
{
	Datum		a[3] = {args[0], args[1], merchant};

	if (p_new == P_TOTAL_NEW)
		a[1] = merchant;
	for (;;)
	{
		*fresh = redeem_run(p_new, a, NULL) == 1;
		if (*fresh)
			return 0;
		if (redeem_run(p_lock, args, NULL) == 1)
			return redeem_int8(1);
		/*
		 * The row went while we waited for it: forget_member re-keyed a
		 * member's counter to the pseudonym.  The member_ref now names a
		 * new member: create its counter (or lock the one a concurrent
		 * call created meanwhile), never go on without one.
		 */
		CHECK_FOR_INTERRUPTS();
	}
}

/* Text of at most 256 characters and not blank (wallet_internal.code_check_args). */
static bool
redeem_arg_ok(text *t)
{
	const char *s = VARDATA_ANY(t);
	int			len = VARSIZE_ANY_EXHDR(t);
	bool		blank = true;

	for (int i = 0; i < len && blank; i++)
		blank = s[i] == ' ';
	return !blank && pg_mbstrlen_with_len(s, len) <= 256;
}

/* Add delta to the counters flagged in which (code, member, campaign). */
static void
redeem_bump(Datum campaign, int64 serial, text *member, const bool *which, int32 delta)
{
	if (which[0])
	{
		Datum		a[3] = {campaign, Int64GetDatum(serial), Int32GetDatum(delta)};

		redeem_run(P_CODE_BUMP, a, NULL);
	}
	if (which[1])
	{
		Datum		a[3] = {campaign, PointerGetDatum(member), Int32GetDatum(delta)};

		redeem_run(P_MEMBER_BUMP, a, NULL);
	}
	if (which[2])
	{
		Datum		a[2] = {campaign, Int32GetDatum(delta)};

		redeem_run(P_TOTAL_BUMP, a, NULL);
	}
}

/*
 * Whether the call is the common case's: well-formed, an authentic code of
 * a campaign the caller acts for.  Fills q; false for anything else (misuse,
 * a bad code), which the full PL/pgSQL path answers.
 */
static bool
redeem_request(FunctionCallInfo fcinfo, RedeemRequest *q)
{
	char	   *detail = NULL;
	const CampaignInfo *info;

	if (PG_ARGISNULL(1) || PG_ARGISNULL(2))
		return false;
	q->member = PG_GETARG_TEXT_PP(1);
	q->key = PG_GETARG_TEXT_PP(2);
	if (!redeem_arg_ok(q->member) || !redeem_arg_ok(q->key))
		return false;
	if (PG_ARGISNULL(3))
		q->ctx = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum("{}")));
	else
	{
		q->ctx = PG_GETARG_JSONB_P(3);
		if (!JB_ROOT_IS_OBJECT(q->ctx) || JB_ROOT_IS_SCALAR(q->ctx))
			return false;
	}
	wallet_require_root_key();
	if (wallet_code_from_text(text_to_cstring(PG_GETARG_TEXT_PP(0)), &q->f, &detail) != CODE_TEXT_OK ||
		wallet_code_verify(&q->f) != CODE_AUTH_OK)
		return false;
	info = wallet_campaign_info(q->f.campaign);
	if (info == NULL || !info->exists || !wallet_acts_for_merchant(info->merchant_id))
		return false;
	q->merchant_id = info->merchant_id;
	q->campaign_id = q->f.campaign;
	q->serial = (int64) q->f.serial;
	return true;
}

/* The idempotency key's lock: same key, one session at a time (as the full path, which retakes it). */
static void
redeem_key_lock(text *key)
{
	DirectFunctionCall2(pg_advisory_xact_lock_int4, Int32GetDatum(1464598529),
						DirectFunctionCall1Coll(hashtext, DEFAULT_COLLATION_OID, PointerGetDatum(key)));
}

/*
 * The common case of wallet.redeem_code, in one pass of kept plans: a
 * well-formed call, an authentic code of a campaign the caller acts for, a
 * key never used.  Returns false, having changed nothing but locks, whenever
 * the call is anything else (misuse, a bad code, a replay, a reservation's
 * key, throttled, out of the window, bound to another member): the full
 * PL/pgSQL path then answers exactly as before.  The steps and their lock
 * order are those of that path (see sql/ext/redeem.sql).
 */
static bool
redeem_fast(const RedeemRequest *q, RedeemResult *r)
{
	text	   *member = q->member;
	text	   *key = q->key;
	Jsonb	   *ctx = q->ctx;
	Datum		merchant = Int64GetDatum(q->merchant_id);
	Datum		args[7];
	char		nulls[7];
	bool		isnull;
	Datum		d;
	TimestampTz now;
	int64		caps[3];
	bool		capnull[3];
	int64		used[3] = {0, 0, 0};
	bool		fresh[3] = {false, false, false};
	bool		bump[3];
	MarketingCode *code;

	r->campaign_id = q->campaign_id;
	r->serial = q->serial;
	redeem_key_lock(key);

	args[0] = Int64GetDatum(r->campaign_id);
	args[1] = Int64GetDatum(r->serial);
	args[2] = PointerGetDatum(key);
	args[3] = merchant;
	args[4] = JsonbPGetDatum(ctx);
	if (redeem_run(P_READ, args, NULL) != 1)
		return false;
	{
		HeapTuple	row = SPI_tuptable->vals[0];
		TupleDesc	td = SPI_tuptable->tupdesc;
		Datum		starts = SPI_getbinval(row, td, 1, &isnull);
		Datum		ends;
		bool		ends_null;
		Datum		bound;
		bool		found;
		Interval	quarter = {.time = 15 * 60 * USECS_PER_SEC};
		LOCAL_FCINFO(guard, 7);

		if (DatumGetBool(SPI_getbinval(row, td, 8, &isnull)))
			return false;		/* a replay or a reservation's key */
		/* the guard: a genuine code counts nothing, so asking twice is harmless */
		InitFunctionCallInfoData(*guard, NULL, 7, InvalidOid, NULL, NULL);
		(void) SPI_getbinval(row, td, 7, &isnull);
		found = !isnull;
		guard->args[0].value = merchant;
		guard->args[0].isnull = false;
		guard->args[1].value = PointerGetDatum(member);
		guard->args[1].isnull = false;
		guard->args[2].value = SPI_getbinval(row, td, 9, &guard->args[2].isnull);
		guard->args[3].value = BoolGetDatum(false);
		guard->args[3].isnull = false;
		if (found)
		{
			guard->args[4].value = SPI_getbinval(row, td, 4, &guard->args[4].isnull);
			guard->args[5].value = SPI_getbinval(row, td, 5, &guard->args[5].isnull);
			guard->args[6].value = SPI_getbinval(row, td, 6, &guard->args[6].isnull);
		}
		else
		{
			guard->args[4].value = Int32GetDatum(10);
			guard->args[5].value = Int32GetDatum(30);
			guard->args[6].value = IntervalPGetDatum(&quarter);
			guard->args[4].isnull = guard->args[5].isnull = guard->args[6].isnull = false;
		}
		if (DatumGetBool(code_guard_attempt(guard)))
			return false;
		now = GetCurrentTimestamp();
		ends = SPI_getbinval(row, td, 2, &ends_null);
		if (now < DatumGetTimestampTz(starts) || (!ends_null && now >= DatumGetTimestampTz(ends)))
			return false;
		bound = SPI_getbinval(row, td, 3, &isnull);
		if (!isnull && !DatumGetBool(DirectFunctionCall2Coll(texteq, DEFAULT_COLLATION_OID, bound, PointerGetDatum(member))))
			return false;
	}

	/*
	 * wallet_internal.code_lock_counters: ROW EXCLUSIVE first (a cap being
	 * set waits for us, or we for it), then the caps, then the counters.
	 */
	{
		Oid			nsp = get_namespace_oid("wallet", false);

		LockRelationOid(get_relname_relid("code_redemptions", nsp), RowExclusiveLock);
		LockRelationOid(get_relname_relid("code_reservations", nsp), RowExclusiveLock);
	}
	redeem_run(P_CAPS, args, NULL);
	for (int i = 0; i < 3; i++)
	{
		capnull[i] = true;
		caps[i] = 0;
		if (SPI_processed == 1)
		{
			d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, i + 1, &capnull[i]);
			if (!capnull[i])
				caps[i] = DatumGetInt64(d);
		}
	}
	if (IsolationUsesXactSnapshot())
		caps_unchanged(r->campaign_id, capnull, caps);
	if (!capnull[0])
		used[0] = redeem_lock_counter(P_CODE_NEW, P_CODE_LOCK, args, merchant, &fresh[0]);
	args[1] = PointerGetDatum(member);
	if (!capnull[1])
		used[1] = redeem_lock_counter(P_MEMBER_NEW, P_MEMBER_LOCK, args, merchant, &fresh[1]);
	if (!capnull[2])
		used[2] = redeem_lock_counter(P_TOTAL_NEW, P_TOTAL_LOCK, args, merchant, &fresh[2]);

	/* wallet_internal.code_caps_status: active reservations count too */
	now = GetCurrentTimestamp();
	r->status = "ok";
	if (!capnull[0])
	{
		Datum		a[3] = {args[0], Int64GetDatum(r->serial), TimestampTzGetDatum(now)};

		redeem_run(P_CODE_RES, a, NULL);
		if (used[0] + redeem_int8(1) >= caps[0])
			r->status = "exhausted";
	}
	if (r->status[0] == 'o' && !capnull[1])
	{
		Datum		a[3] = {args[0], PointerGetDatum(member), TimestampTzGetDatum(now)};

		redeem_run(P_MEMBER_RES, a, NULL);
		if (used[1] + redeem_int8(1) >= caps[1])
			r->status = "member_limit_reached";
	}
	if (r->status[0] == 'o' && !capnull[2])
	{
		Datum		a[2] = {args[0], TimestampTzGetDatum(now)};

		redeem_run(P_TOTAL_RES, a, NULL);
		if (used[2] + redeem_int8(1) >= caps[2])
			r->status = "campaign_limit_reached";
	}
	if (r->status[0] != 'o')
	{
		/* refused: a fresh counter row goes back to counting nothing */
		redeem_bump(args[0], r->serial, member, fresh, -1);
		return true;
	}

	code = palloc(sizeof(MarketingCode));
	wallet_code_pack(&q->f, code);
	{
		Datum		a[7] = {args[0], Int64GetDatum(r->serial), MarketingCodePGetDatum(code),
		PointerGetDatum(member), PointerGetDatum(key), JsonbPGetDatum(ctx), merchant};

		memset(nulls, ' ', sizeof(nulls));
		/*
		 * ON CONFLICT: under REPEATABLE READ a call with the same key that
		 * committed after the snapshot is a serialization failure (raised by
		 * the insert), not a unique violation; as redeem_code_full
		 */
		if (redeem_run(P_INSERT, a, nulls) != 1)
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("could not serialize access due to a concurrent call with idempotency key \"%s\"",
							text_to_cstring(key)),
					 errdetail("A call with the same key committed after this transaction's snapshot was taken."),
					 errhint("Retry the transaction: the retry returns the first call's result.")));
		r->redemption_id = redeem_int8(1);
		r->redeemed_at = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	}
	/* wallet_internal.code_bump_counters, for the rows not fresh */
	for (int i = 0; i < 3; i++)
		bump[i] = !capnull[i] && !fresh[i];
	redeem_bump(args[0], r->serial, member, bump, 1);
	return true;
}

PG_FUNCTION_INFO_V1(redeem_code);

/*
 * wallet.redeem_code(code, member_ref, idempotency_key, context): the direct
 * path (redeem_direct.c), else the fast path above, else
 * wallet_internal.redeem_code_full (the whole API in PL/pgSQL: errors,
 * refusals, replays, conversions of reservations).
 */
Datum
redeem_code(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	RedeemResult r = {0};
	RedeemRequest q;
	RedeemDirect direct = REDEEM_DIRECT_NO;
	Datum		result = (Datum) 0;
	bool		fast;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("code must not be null"),
				 errdetail("A code is judged from the text a person typed: an empty text is malformed, a NULL is no text at all.")));
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	/* the checkout redeems an offer's code under offer:<order_ref>:<offer_id> (by the full path) */
	if (!PG_ARGISNULL(2) && VARSIZE_ANY_EXHDR(PG_GETARG_TEXT_PP(2)) >= 6 &&
		memcmp(VARDATA_ANY(PG_GETARG_TEXT_PP(2)), "offer:", 6) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("idempotency key must not start with \"offer:\""),
				 errdetail("Keys starting with offer: name the redemptions of offers' codes at checkout (offer:<order_ref>:<offer_id>).")));
	fast = redeem_request(fcinfo, &q);
	if (fast && XactIsoLevel == XACT_READ_COMMITTED && !XactReadOnly && !IsInParallelMode())
	{
		/*
		 * READ COMMITTED: by direct access (redeem_direct.c) when it can.  Not
		 * in a read-only transaction, which an INSERT refuses and a direct
		 * heap insert would not.
		 */
		redeem_key_lock(q.key);
		direct = wallet_redeem_direct(&q, &r);
	}
	if (direct != REDEEM_DIRECT_DONE)
	{
		/* statements: the SPI path, the full path, or taking back a counter */
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		redeem_plans_check();
		if (direct == REDEEM_DIRECT_REFUSED_CODE || direct == REDEEM_DIRECT_REFUSED_MEMBER)
		{
			/* refused: the fresh counter row goes back to counting nothing */
			bool		which[3] = {direct == REDEEM_DIRECT_REFUSED_CODE, direct == REDEEM_DIRECT_REFUSED_MEMBER, false};

			redeem_bump(Int64GetDatum(q.campaign_id), q.serial, q.member, which, -1);
		}
		else if (direct == REDEEM_DIRECT_NO)
			fast = fast && redeem_fast(&q, &r);
		if (!fast)
		{
			Datum		a[4];
			char		n[4];
			bool		isnull;

			for (int i = 0; i < 4; i++)
			{
				a[i] = PG_ARGISNULL(i) ? (Datum) 0 : PG_GETARG_DATUM(i);
				n[i] = PG_ARGISNULL(i) ? 'n' : ' ';
			}
			if (redeem_run(P_FULL, a, n) != 1)
				elog(ERROR, "wallet_internal.redeem_code_full returned no row");
			result = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
			if (isnull)
				elog(ERROR, "wallet_internal.redeem_code_full returned NULL");
			result = SPI_datumTransfer(result, false, -1);
		}
		SPI_finish();
	}
	if (fast)
	{
		/*
		 * By attribute name: wallet.redemption_result may have gained
		 * attributes since (ALTER TYPE ... ADD ATTRIBUTE), which stay NULL;
		 * arrays sized for the eight known ones would be read past.
		 */
		static const char *const names[] = {"status", "redemption_id", "campaign_id", "serial", "member_ref",
		"redeemed_at", "reservation_id", "replayed"};
		Datum		known[lengthof(names)];
		bool		known_null[lengthof(names)] = {false, r.redemption_id == 0, false, false, false,
		r.redemption_id == 0, true, false};
		Datum	   *values = palloc0(tupdesc->natts * sizeof(Datum));
		bool	   *nulls = palloc(tupdesc->natts * sizeof(bool));

		known[0] = CStringGetTextDatum(r.status);
		known[1] = Int64GetDatum(r.redemption_id);
		known[2] = Int64GetDatum(r.campaign_id);
		known[3] = Int64GetDatum(r.serial);
		known[4] = PointerGetDatum(PG_GETARG_TEXT_PP(1));
		known[5] = TimestampTzGetDatum(r.redeemed_at);
		known[6] = (Datum) 0;
		known[7] = BoolGetDatum(false);
		for (int i = 0; i < tupdesc->natts; i++)
		{
			Form_pg_attribute att = TupleDescAttr(tupdesc, i);

			nulls[i] = true;
			for (int k = 0; k < lengthof(names) && !att->attisdropped; k++)
				if (strcmp(NameStr(att->attname), names[k]) == 0)
				{
					values[i] = known[k];
					nulls[i] = known_null[k];
				}
		}
		result = HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls));
	}
	PG_RETURN_DATUM(result);
}
