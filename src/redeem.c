/*
 * redeem.c: wallet.redeem_code in C (its common case: one read and one
 * insert, by kept plans), the locks that make the per-code and per-member
 * caps exact (wallet_internal.code_live_uses) and
 * wallet_internal.code_caps_unchanged.
 *
 * Why C: the PL/pgSQL redeem_code ran a dozen nested SECURITY DEFINER
 * helpers per call, each with its own GUC save/restore, executor start-up
 * and plan revalidation; that, not contention, made it 5x slower than a
 * plain insert.
 *
 * Why no counter per code or per member: a counter row written per
 * redemption doubled what a redemption writes.  Each of these caps is
 * instead decided under a transaction-level advisory lock on the code (or on
 * the member in the campaign), by counting the live redemptions and active
 * reservations, which the lock's previous holder has committed: the
 * redemption row is then the only write.
 */
#include "wallet.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "common/hashfn.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/fmgroids.h"
#include "utils/rel.h"
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
 * Advisory lock classes (first int4 of the two-int4 form, as in
 * sql/ext/redeem.sql): 0x574C0004 the uses of one code, 0x574C0005 the uses
 * of one member in one campaign.  The second int4 is a hash: a collision
 * only makes two unrelated codes (or members) wait for each other.
 */
#define CODE_USE_LOCK_CLASS		0x574C0004
#define MEMBER_USE_LOCK_CLASS	0x574C0005

/*
 * Takes, until the end of the transaction, the lock on a code's uses and/or
 * on a member's uses in the campaign (in that order, the order of every
 * caller): what pg_advisory_xact_lock(class, hash) takes.
 */
static void
code_use_locks(int64 campaign_id, int64 serial, text *member, bool per_code, bool per_member)
{
	LOCKTAG		tag;

	if (per_code)
	{
		int64		k[2] = {campaign_id, serial};

		SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, CODE_USE_LOCK_CLASS,
							 hash_bytes((const unsigned char *) k, sizeof(k)), 2);
		(void) LockAcquire(&tag, ExclusiveLock, false, false);
	}
	if (per_member)
	{
		int			len = VARSIZE_ANY_EXHDR(member);
		unsigned char *buf = palloc(sizeof(int64) + len);

		memcpy(buf, &campaign_id, sizeof(int64));
		memcpy(buf + sizeof(int64), VARDATA_ANY(member), len);
		SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, MEMBER_USE_LOCK_CLASS,
							 hash_bytes(buf, sizeof(int64) + len), 2);
		(void) LockAcquire(&tag, ExclusiveLock, false, false);
		pfree(buf);
	}
}

/*
 * Live (not undone) redemptions of a code (which = 0) or of a member in a
 * campaign (which = 1), under the given snapshot.  The caller is connected
 * to SPI.
 */
static int64
code_live_count(int which, Datum campaign, Datum key, Snapshot snap)
{
	static SPIPlanPtr plans_live[2] = {NULL, NULL};
	Datum		args[2] = {campaign, key};
	bool		isnull;
	int			rc;

	if (plans_live[which] == NULL)
	{
		Oid			types[2][2] = {{INT8OID, INT8OID}, {INT8OID, TEXTOID}};
		SPIPlanPtr	p = SPI_prepare(which == 0
									? "SELECT pg_catalog.count(*) FROM wallet.code_redemptions d"
									" WHERE d.campaign_id OPERATOR(pg_catalog.=) $1 AND d.serial OPERATOR(pg_catalog.=) $2"
									" AND d.undone_at IS NULL"
									: "SELECT pg_catalog.count(*) FROM wallet.code_redemptions d"
									" WHERE d.member_ref OPERATOR(pg_catalog.=) $2 AND d.campaign_id OPERATOR(pg_catalog.=) $1"
									" AND d.undone_at IS NULL",
									2, types[which]);

		if (p == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		SPI_keepplan(p);
		plans_live[which] = p;
	}
	rc = snap == InvalidSnapshot
		? SPI_execute_plan(plans_live[which], args, NULL, true, 1)
		: SPI_execute_snapshot(plans_live[which], args, NULL, snap, InvalidSnapshot, true, false, 1);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "counting live redemptions failed: %s", SPI_result_code_string(rc));
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

PG_FUNCTION_INFO_V1(code_live_uses);

/*
 * wallet_internal.code_live_uses(campaign_id, serial, member_ref, per_code,
 * per_member, OUT code_redeemed, OUT member_redeemed): takes the locks of
 * the caps named (code, then member) and counts their live redemptions as
 * committed now (the latest snapshot: the lock's previous holder has
 * committed).  Under REPEATABLE READ or SERIALIZABLE, a count that the
 * transaction's snapshot sees otherwise is a serialization failure (40001),
 * as the FOR UPDATE of a counter row was.  NULL for a cap not named.
 */
Datum
code_live_uses(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[2] = {0, 0};
	bool		nulls[2] = {true, true};
	bool		flags[2];
	int64		campaign_id;
	text	   *member;

	for (int i = 0; i < 3; i++)
		if (PG_ARGISNULL(i))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("%s must not be null", i == 0 ? "campaign_id" : i == 1 ? "serial" : "member_ref"),
					 errdetail("The uses of a code and of a member are counted for one code and one member.")));
	campaign_id = PG_GETARG_INT64(0);
	member = PG_GETARG_TEXT_PP(2);
	flags[0] = !PG_ARGISNULL(3) && PG_GETARG_BOOL(3);
	flags[1] = !PG_ARGISNULL(4) && PG_GETARG_BOOL(4);
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	code_use_locks(campaign_id, PG_GETARG_INT64(1), member, flags[0], flags[1]);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	for (int i = 0; i < 2; i++)
	{
		Datum		key = i == 0 ? PG_GETARG_DATUM(1) : PointerGetDatum(member);
		int64		n;

		if (!flags[i])
			continue;
		n = code_live_count(i, Int64GetDatum(campaign_id), key, GetLatestSnapshot());
		if (IsolationUsesXactSnapshot() && code_live_count(i, Int64GetDatum(campaign_id), key, InvalidSnapshot) != n)
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("could not serialize access due to a concurrent redemption in campaign %lld",
							(long long) campaign_id),
					 errdetail("A redemption of this %s was made or undone after this transaction's snapshot was taken.",
							   i == 0 ? "code" : "member"),
					 errhint("Retry the transaction.")));
		values[i] = Int32GetDatum((int32) n);
		nulls[i] = false;
	}
	SPI_finish();
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls)));
}

/*
 * The plans of wallet.redeem_code's fast path, prepared once per backend and
 * kept (SPI_keepplan): the plan cache re-plans them when a table changes.
 * Its reads are direct index probes (below): an executor start-up per read
 * cost more than the read.
 */
enum
{
	P_TOTAL_NEW, P_TOTAL_LOCK, P_TOTAL_BUMP,
	P_INSERT,
	P_FULL,
	P_COUNT
};

static SPIPlanPtr plans[P_COUNT];
static Oid	plans_codeoid = InvalidOid;	/* wallet.marketing_code when prepared */

/* The relations the fast path reads, by name; their OIDs are kept as the plans are. */
static const char *const rel_names[] = {
	"code_redemptions", "code_reservations", "code_bindings", "code_guard_settings", "campaigns",
	"code_redemptions_idempotency_key_idx", "code_reservations_idempotency_key_idx", "code_bindings_pkey",
	"code_guard_settings_merchant_id_key", "campaigns_pkey", "code_redemptions_code_idx",
	"code_reservations_active_code_idx", "code_redemptions_member_idx", "code_reservations_active_member_idx",
	"code_reservations_active_campaign_idx"
};
#define REL_COUNT lengthof(rel_names)
static Oid	rel_oids[REL_COUNT];

/* OID of a relation of schema wallet named in rel_names. */
static Oid
wallet_rel(const char *name)
{
	for (int i = 0; i < REL_COUNT; i++)
		if (rel_names[i] == name || strcmp(rel_names[i], name) == 0)
		{
			if (!OidIsValid(rel_oids[i]))
			{
				rel_oids[i] = get_relname_relid(name, get_namespace_oid("wallet", false));
				if (!OidIsValid(rel_oids[i]))
					elog(ERROR, "relation wallet.%s does not exist", name);
			}
			return rel_oids[i];
		}
	elog(ERROR, "relation wallet.%s is not read by the fast path", name);
	return InvalidOid;			/* keep compiler quiet */
}

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
	for (int i = 0; i < REL_COUNT; i++)
		rel_oids[i] = InvalidOid;
	plans_codeoid = codeoid;
}

static SPIPlanPtr
redeem_plan(int which)
{
	static const char *const sql[P_COUNT] = {
		/* the campaign's counter: $1 campaign, $2 merchant / $2 delta */
		"INSERT INTO wallet.campaign_use_counts AS u (campaign_id, merchant_id, redeemed) VALUES ($1, $2, 1)"
		" ON CONFLICT DO NOTHING RETURNING 0::pg_catalog.int8",
		"SELECT u.redeemed FROM wallet.campaign_use_counts u WHERE u.campaign_id = $1 FOR UPDATE",
		"UPDATE wallet.campaign_use_counts u SET redeemed = u.redeemed + $2 WHERE u.campaign_id = $1",
		/* P_INSERT */
		"INSERT INTO wallet.code_redemptions (campaign_id, serial, code, member_ref, idempotency_key, context,"
		" reservation_id, redeemed_at, merchant_id)"
		" VALUES ($1, $2, $3, $4, $5, $6, NULL, pg_catalog.clock_timestamp(), $7)"
		" RETURNING redemption_id, redeemed_at",
		/* P_FULL */
		"SELECT wallet_internal.redeem_code_full($1, $2, $3, $4)",
	};
	Oid			codeoid = plans_codeoid;

	if (plans[which] != NULL)
		return plans[which];
	{
		Oid			t_total[2] = {INT8OID, INT8OID};
		Oid			t_total_bump[2] = {INT8OID, INT4OID};
		Oid			t_insert[7] = {INT8OID, INT8OID, codeoid, TEXTOID, TEXTOID, JSONBOID, INT8OID};
		Oid			t_full[4] = {TEXTOID, TEXTOID, TEXTOID, JSONBOID};
		static const int nargs[P_COUNT] = {2, 1, 2, 7, 4};
		Oid		   *types[P_COUNT] = {t_total, t_total, t_total_bump, t_insert, t_full};
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

/*
 * Direct index probes of the fast path: what its SELECTs would read under a
 * new snapshot (READ COMMITTED), without an executor.  The keys are btree
 * equalities (or, for the last column, a comparison), the text ones in the
 * default collation of the columns.
 */
typedef struct Probe
{
	Relation	index;
	IndexScanDesc scan;
	TupleTableSlot *slot;
} Probe;

static void
probe_key(ScanKey k, AttrNumber att, StrategyNumber strategy, RegProcedure proc, Datum value, bool is_text)
{
	ScanKeyEntryInitialize(k, 0, att, strategy, InvalidOid, is_text ? DEFAULT_COLLATION_OID : InvalidOid,
						   proc, value);
}

static void
probe_begin(Probe *p, Relation heap, const char *index, Snapshot snap, ScanKey keys, int nkeys)
{
	Oid			indexid = wallet_rel(index);

	if (!OidIsValid(indexid))
		elog(ERROR, "index wallet.%s does not exist", index);
	p->index = index_open(indexid, AccessShareLock);
	p->slot = table_slot_create(heap, NULL);
	p->scan = index_beginscan(heap, p->index, snap, nkeys, 0);
	index_rescan(p->scan, keys, nkeys, NULL, 0);
}

static bool
probe_next(Probe *p)
{
	return index_getnext_slot(p->scan, ForwardScanDirection, p->slot);
}

static void
probe_end(Probe *p)
{
	index_endscan(p->scan);
	ExecDropSingleTupleTableSlot(p->slot);
	index_close(p->index, NoLock);
}

/* Attribute number of a column, by name. */
static AttrNumber
probe_att(Relation rel, const char *column)
{
	AttrNumber	att = get_attnum(RelationGetRelid(rel), column);

	if (att == InvalidAttrNumber)
		elog(ERROR, "column %s of %s does not exist", column, RelationGetRelationName(rel));
	return att;
}

/* Whether some row of the index matches the keys. */
static bool
probe_exists(Relation heap, const char *index, Snapshot snap, ScanKey keys, int nkeys)
{
	Probe		p;
	bool		found;

	probe_begin(&p, heap, index, snap, keys, nkeys);
	found = probe_next(&p);
	probe_end(&p);
	return found;
}

/*
 * Rows matching the keys whose column att is NULL (live redemptions:
 * undone_at), or, with att_state, whose state is 'active' and expires_at
 * later than now (active reservations; the partial indexes hold only rows
 * made active, so the row is checked again).
 */
static int64
probe_count(Relation heap, const char *index, Snapshot snap, ScanKey keys, int nkeys,
			AttrNumber att_null, AttrNumber att_state, AttrNumber att_expires, TimestampTz now)
{
	Probe		p;
	int64		n = 0;
	bool		isnull;

	probe_begin(&p, heap, index, snap, keys, nkeys);
	while (probe_next(&p))
	{
		if (att_null != InvalidAttrNumber)
		{
			(void) slot_getattr(p.slot, att_null, &isnull);
			n += isnull;
		}
		else
		{
			Datum		state = slot_getattr(p.slot, att_state, &isnull);
			Datum		expires = slot_getattr(p.slot, att_expires, &isnull);

			n += strcmp(TextDatumGetCString(state), "active") == 0 && DatumGetTimestampTz(expires) > now;
		}
	}
	probe_end(&p);
	return n;
}

/* A snapshot taken now, after this transaction's own changes so far. */
static Snapshot
probe_snapshot(void)
{
	CommandCounterIncrement();
	return RegisterSnapshot(GetLatestSnapshot());
}

typedef struct RedeemResult
{
	int64		redemption_id;
	int64		campaign_id;
	int64		serial;
	TimestampTz redeemed_at;
} RedeemResult;

/*
 * Before any lock but the key's: whether the key is new (no redemption, no
 * reservation), the code not bound to another member, and the guard lets
 * the member and source through; and which caps the campaign sets (capped:
 * per code, per member, total), to be checked again under the locks.
 */
static bool
redeem_fast_checks(const RedeemResult *r, Datum merchant, text *member, text *key, Jsonb *ctx,
				   bool *capped)
{
	Snapshot	snap = probe_snapshot();
	ScanKeyData keys[2];
	bool		ok = true;
	Relation	rel;
	Datum		guard_args[3] = {0, 0, 0};
	bool		guard_null[3] = {false, false, false};
	bool		guard_found = false;

	for (int t = 0; t < 2 && ok; t++)
	{
		rel = table_open(wallet_rel(t == 0 ? "code_redemptions" : "code_reservations"), AccessShareLock);
		probe_key(&keys[0], 1, BTEqualStrategyNumber, F_TEXTEQ, PointerGetDatum(key), true);
		probe_key(&keys[1], 2, BTEqualStrategyNumber, F_INT8EQ, merchant, false);
		ok = !probe_exists(rel, t == 0 ? "code_redemptions_idempotency_key_idx" : "code_reservations_idempotency_key_idx",
						   snap, keys, 2);
		table_close(rel, NoLock);
	}
	if (ok)
	{
		Probe		p;

		rel = table_open(wallet_rel("code_bindings"), AccessShareLock);
		probe_key(&keys[0], 1, BTEqualStrategyNumber, F_INT8EQ, Int64GetDatum(r->campaign_id), false);
		probe_key(&keys[1], 2, BTEqualStrategyNumber, F_INT8EQ, Int64GetDatum(r->serial), false);
		probe_begin(&p, rel, "code_bindings_pkey", snap, keys, 2);
		if (probe_next(&p))
		{
			bool		isnull;
			Datum		bound = slot_getattr(p.slot, probe_att(rel, "member_ref"), &isnull);

			ok = !isnull && DatumGetBool(DirectFunctionCall2Coll(texteq, DEFAULT_COLLATION_OID, bound,
																 PointerGetDatum(member)));
		}
		probe_end(&p);
		table_close(rel, NoLock);
	}
	if (ok)
	{
		Probe		p;

		rel = table_open(wallet_rel("campaigns"), AccessShareLock);
		probe_key(&keys[0], 1, BTEqualStrategyNumber, F_INT8EQ, Int64GetDatum(r->campaign_id), false);
		probe_begin(&p, rel, "campaigns_pkey", snap, keys, 1);
		ok = probe_next(&p);
		if (ok)
		{
			static const char *const cols[3] = {"max_redemptions_per_code", "max_redemptions_per_member",
			"max_redemptions_total"};

			for (int i = 0; i < 3; i++)
			{
				bool		isnull;

				(void) slot_getattr(p.slot, probe_att(rel, cols[i]), &isnull);
				capped[i] = !isnull;
			}
		}
		probe_end(&p);
		table_close(rel, NoLock);
	}
	if (ok)
	{
		/* the merchant's thresholds, else the global ones, else the defaults */
		rel = table_open(wallet_rel("code_guard_settings"), AccessShareLock);
		for (int pass = 0; pass < 2 && !guard_found; pass++)
		{
			Probe		p;

			if (pass == 0)
				probe_key(&keys[0], 1, BTEqualStrategyNumber, F_INT8EQ, merchant, false);
			else
				ScanKeyEntryInitialize(&keys[0], SK_ISNULL | SK_SEARCHNULL, 1, InvalidStrategy, InvalidOid,
									   InvalidOid, InvalidOid, (Datum) 0);
			probe_begin(&p, rel, "code_guard_settings_merchant_id_key", snap, keys, 1);
			if (probe_next(&p))
			{
				static const char *const cols[3] = {"max_failures_per_member", "max_failures_per_source", "failure_window"};

				for (int i = 0; i < 3; i++)
				{
					guard_args[i] = slot_getattr(p.slot, probe_att(rel, cols[i]), &guard_null[i]);
					if (i == 2 && !guard_null[i])
						guard_args[i] = PointerGetDatum(DatumGetIntervalP(datumCopy(guard_args[i], false, sizeof(Interval))));
				}
				guard_found = true;
			}
			probe_end(&p);
		}
		table_close(rel, NoLock);
	}
	UnregisterSnapshot(snap);
	if (ok)
	{
		/* a genuine code counts nothing, so asking twice is harmless */
		Interval   *quarter = palloc0(sizeof(Interval));
		LOCAL_FCINFO(guard, 7);

		quarter->time = 15 * 60 * USECS_PER_SEC;
		InitFunctionCallInfoData(*guard, NULL, 7, InvalidOid, NULL, NULL);
		guard->args[0].value = merchant;
		guard->args[0].isnull = false;
		guard->args[1].value = PointerGetDatum(member);
		guard->args[1].isnull = false;
		guard->args[2].isnull = true;
		guard->args[2].value = (Datum) 0;
		{
			JsonbValue *v = getKeyJsonValueFromContainer(&ctx->root, "source", 6, NULL);

			if (v != NULL && v->type == jbvString)
			{
				/* left(context->>'source', 256) */
				int			len = pg_mbcharcliplen(v->val.string.val, v->val.string.len, 256);

				guard->args[2].value = PointerGetDatum(cstring_to_text_with_len(v->val.string.val, len));
				guard->args[2].isnull = false;
			}
			else if (v != NULL && v->type != jbvNull)
				return false;	/* a non-string source: the full path renders it */
		}
		guard->args[3].value = BoolGetDatum(false);
		guard->args[3].isnull = false;
		for (int i = 0; i < 3; i++)
		{
			guard->args[4 + i].value = guard_found ? guard_args[i] : i == 0 ? Int32GetDatum(10) : i == 1 ? Int32GetDatum(30) : IntervalPGetDatum(quarter);
			guard->args[4 + i].isnull = guard_found && guard_null[i];
		}
		ok = !DatumGetBool(code_guard_attempt(guard));
	}
	return ok;
}

/*
 * Under the locks: whether the campaign is open now, its caps set as the
 * locks taken assume (capped), and leave room for one more use, counting
 * live redemptions and active reservations (total_used: the campaign's
 * counter).
 */
static bool
redeem_fast_caps(const RedeemResult *r, text *member, const bool *capped, int64 total_used)
{
	Snapshot	snap = probe_snapshot();
	ScanKeyData keys[3];
	Relation	rel;
	Probe		p;
	bool		ok = false;
	bool		isnull[5];
	Datum		v[5];
	TimestampTz now = GetCurrentTimestamp();

	rel = table_open(wallet_rel("campaigns"), AccessShareLock);
	probe_key(&keys[0], 1, BTEqualStrategyNumber, F_INT8EQ, Int64GetDatum(r->campaign_id), false);
	probe_begin(&p, rel, "campaigns_pkey", snap, keys, 1);
	if (probe_next(&p))
	{
		static const char *const cols[5] = {"starts_at", "ends_at", "max_redemptions_per_code",
		"max_redemptions_per_member", "max_redemptions_total"};

		for (int i = 0; i < 5; i++)
			v[i] = slot_getattr(p.slot, probe_att(rel, cols[i]), &isnull[i]);
		ok = !isnull[0] && now >= DatumGetTimestampTz(v[0]) && (isnull[1] || now < DatumGetTimestampTz(v[1]));
		for (int i = 0; i < 3; i++)
			ok = ok && isnull[2 + i] != capped[i];
	}
	probe_end(&p);
	table_close(rel, NoLock);

	if (ok && (capped[0] || capped[1] || capped[2]))
	{
		Relation	red = table_open(wallet_rel("code_redemptions"), AccessShareLock);
		Relation	res = table_open(wallet_rel("code_reservations"), AccessShareLock);
		AttrNumber	undone = probe_att(red, "undone_at");
		AttrNumber	state = probe_att(res, "state");
		AttrNumber	expires = probe_att(res, "expires_at");
		Datum		campaign = Int64GetDatum(r->campaign_id);
		Datum		serial = Int64GetDatum(r->serial);
		Datum		nowd = TimestampTzGetDatum(now);

		if (capped[0])
		{
			int64		n;

			probe_key(&keys[0], 1, BTEqualStrategyNumber, F_INT8EQ, campaign, false);
			probe_key(&keys[1], 2, BTEqualStrategyNumber, F_INT8EQ, serial, false);
			n = probe_count(red, "code_redemptions_code_idx", snap, keys, 2, undone, 0, 0, now);
			probe_key(&keys[2], 3, BTGreaterStrategyNumber, F_TIMESTAMPTZ_GT, nowd, false);
			n += probe_count(res, "code_reservations_active_code_idx", snap, keys, 3, InvalidAttrNumber, state, expires, now);
			ok = n < DatumGetInt32(v[2]);
		}
		if (ok && capped[1])
		{
			int64		n;

			probe_key(&keys[0], 1, BTEqualStrategyNumber, F_TEXTEQ, PointerGetDatum(member), true);
			probe_key(&keys[1], 2, BTEqualStrategyNumber, F_INT8EQ, campaign, false);
			n = probe_count(red, "code_redemptions_member_idx", snap, keys, 2, undone, 0, 0, now);
			probe_key(&keys[0], 1, BTEqualStrategyNumber, F_INT8EQ, campaign, false);
			probe_key(&keys[1], 2, BTEqualStrategyNumber, F_TEXTEQ, PointerGetDatum(member), true);
			probe_key(&keys[2], 3, BTGreaterStrategyNumber, F_TIMESTAMPTZ_GT, nowd, false);
			n += probe_count(res, "code_reservations_active_member_idx", snap, keys, 3, InvalidAttrNumber, state, expires, now);
			ok = n < DatumGetInt32(v[3]);
		}
		if (ok && capped[2])
		{
			probe_key(&keys[0], 1, BTEqualStrategyNumber, F_INT8EQ, campaign, false);
			probe_key(&keys[1], 2, BTGreaterStrategyNumber, F_TIMESTAMPTZ_GT, nowd, false);
			ok = total_used + probe_count(res, "code_reservations_active_campaign_idx", snap, keys, 2,
										  InvalidAttrNumber, state, expires, now) < DatumGetInt64(v[4]);
		}
		table_close(red, NoLock);
		table_close(res, NoLock);
	}
	UnregisterSnapshot(snap);
	return ok;
}

/*
 * The common case of wallet.redeem_code, under READ COMMITTED: a
 * well-formed call, an authentic code of a campaign the caller acts for, a
 * key never used, a use left under every cap.  Returns false, having changed
 * nothing but locks, whenever the call is anything else (misuse, a bad code,
 * a replay, a reservation's key, throttled, out of the window, bound to
 * another member, a cap reached, caps changed meanwhile): the full PL/pgSQL
 * path then answers exactly as before.  The steps and their lock order are
 * those of that path (see sql/ext/redeem.sql).
 */
static bool
redeem_fast(FunctionCallInfo fcinfo, RedeemResult *r)
{
	text	   *input = PG_GETARG_TEXT_PP(0);
	text	   *member;
	text	   *key;
	Jsonb	   *ctx;
	char	   *str;
	char	   *detail = NULL;
	CodeFields	f;
	const CampaignInfo *info;
	Datum		merchant;
	bool		isnull;
	bool		capped[3];
	int64		total_used = 0;
	bool		total_fresh = false;
	bool		done;
	MarketingCode *code;

	/* a transaction snapshot may predate the last use: the full path checks */
	if (IsolationUsesXactSnapshot())
		return false;
	if (PG_ARGISNULL(1) || PG_ARGISNULL(2))
		return false;
	member = PG_GETARG_TEXT_PP(1);
	key = PG_GETARG_TEXT_PP(2);
	if (!redeem_arg_ok(member) || !redeem_arg_ok(key))
		return false;
	if (PG_ARGISNULL(3))
		ctx = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum("{}")));
	else
	{
		ctx = PG_GETARG_JSONB_P(3);
		if (!JB_ROOT_IS_OBJECT(ctx) || JB_ROOT_IS_SCALAR(ctx))
			return false;
	}
	str = text_to_cstring(input);
	wallet_require_root_key();
	if (wallet_code_from_text(str, &f, &detail) != CODE_TEXT_OK || wallet_code_verify(&f) != CODE_AUTH_OK)
		return false;
	info = wallet_campaign_info(f.campaign);
	if (info == NULL || !info->exists || !wallet_acts_for_merchant(info->merchant_id))
		return false;
	merchant = Int64GetDatum(info->merchant_id);
	r->campaign_id = f.campaign;
	r->serial = (int64) f.serial;

	/* same key: one session at a time (as the full path, which retakes it) */
	DirectFunctionCall2(pg_advisory_xact_lock_int4, Int32GetDatum(1464598529),
						DirectFunctionCall1Coll(hashtext, DEFAULT_COLLATION_OID, PointerGetDatum(key)));
	if (!redeem_fast_checks(r, merchant, member, key, ctx, capped))
		return false;

	/*
	 * wallet_internal.code_lock_counters: ROW EXCLUSIVE first (a cap being
	 * set waits for us, or we for it), then the code's and the member's
	 * locks, then the campaign's counter; the caps and the uses are read
	 * after them.
	 */
	LockRelationOid(wallet_rel("code_redemptions"), RowExclusiveLock);
	LockRelationOid(wallet_rel("code_reservations"), RowExclusiveLock);
	code_use_locks(r->campaign_id, r->serial, member, capped[0], capped[1]);
	if (capped[2])
	{
		/*
		 * A fresh counter row is inserted already counting this redemption
		 * (and holds it until commit): taken back if the call is refused.
		 */
		Datum		a[2] = {Int64GetDatum(r->campaign_id), merchant};

		total_fresh = redeem_run(P_TOTAL_NEW, a, NULL) == 1;
		if (!total_fresh)
		{
			redeem_run(P_TOTAL_LOCK, a, NULL);
			total_used = redeem_int8(1);
		}
	}
	done = redeem_fast_caps(r, member, capped, total_used);
	if (done)
	{
		Datum		a[7];

		code = palloc(sizeof(MarketingCode));
		wallet_code_pack(&f, code);
		a[0] = Int64GetDatum(r->campaign_id);
		a[1] = Int64GetDatum(r->serial);
		a[2] = MarketingCodePGetDatum(code);
		a[3] = PointerGetDatum(member);
		a[4] = PointerGetDatum(key);
		a[5] = JsonbPGetDatum(ctx);
		a[6] = merchant;
		if (redeem_run(P_INSERT, a, NULL) != 1)
			elog(ERROR, "insert into wallet.code_redemptions returned no row");
		r->redemption_id = redeem_int8(1);
		r->redeemed_at = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	}
	if (capped[2] && done != total_fresh)
	{
		/* refused: a fresh counter goes back to nothing; done: count it */
		Datum		b[2] = {Int64GetDatum(r->campaign_id), Int32GetDatum(done ? 1 : -1)};

		redeem_run(P_TOTAL_BUMP, b, NULL);
	}
	return done;
}

PG_FUNCTION_INFO_V1(redeem_code);

/*
 * wallet.redeem_code(code, member_ref, idempotency_key, context): the fast
 * path above, else wallet_internal.redeem_code_full (the whole API in
 * PL/pgSQL: errors, refusals, replays, conversions of reservations).
 */
Datum
redeem_code(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	RedeemResult r = {0};
	Datum		result = (Datum) 0;
	bool		fast;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("code must not be null"),
				 errdetail("A code is judged from the text a person typed: an empty text is malformed, a NULL is no text at all.")));
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	redeem_plans_check();
	fast = redeem_fast(fcinfo, &r);
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
	if (fast)
	{
		/*
		 * By attribute name: wallet.redemption_result may have gained
		 * attributes since (ALTER TYPE ... ADD ATTRIBUTE), which stay NULL.
		 */
		static const char *const names[] = {"status", "redemption_id", "campaign_id", "serial", "member_ref",
		"redeemed_at", "reservation_id", "replayed"};
		Datum		known[lengthof(names)];
		Datum	   *values = palloc0(tupdesc->natts * sizeof(Datum));
		bool	   *nulls = palloc(tupdesc->natts * sizeof(bool));

		known[0] = CStringGetTextDatum("ok");
		known[1] = Int64GetDatum(r.redemption_id);
		known[2] = Int64GetDatum(r.campaign_id);
		known[3] = Int64GetDatum(r.serial);
		known[4] = PointerGetDatum(PG_GETARG_TEXT_PP(1));
		known[5] = TimestampTzGetDatum(r.redeemed_at);
		known[6] = (Datum) 0;	/* no reservation: stays NULL */
		known[7] = BoolGetDatum(false);
		for (int i = 0; i < tupdesc->natts; i++)
		{
			Form_pg_attribute att = TupleDescAttr(tupdesc, i);

			nulls[i] = true;
			for (int k = 0; k < lengthof(names) && !att->attisdropped; k++)
				if (k != 6 && strcmp(NameStr(att->attname), names[k]) == 0)
				{
					values[i] = known[k];
					nulls[i] = false;
				}
		}
		result = HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls));
	}
	PG_RETURN_DATUM(result);
}
