/*
 * tiers.c: the tier qualification window read from a ledger's monthly earned
 * buckets (README "Tiers").  Every function is O(24): the ledger keeps 24
 * UTC months, so wallet.evaluate_tiers never reads the journal.
 *
 * A window is a run of whole UTC months ending with the month of as_of:
 * rolling = the last tier_window_months months, calendar_year = January to
 * the month of as_of.  Spend thresholds use the same window (from its first
 * instant to as_of), computed in SQL from wallet.purchases.
 */
#include "wallet.h"

#include "points_ledger.h"

#include "access/genam.h"
#include "access/relscan.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "common/int.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/fmgroids.h"
#include "utils/rel.h"
#include "utils/rls.h"
#include "utils/snapmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

/* Any NULL argument: NULL (internal helpers, called with checked values). */
#define RETURN_NULL_ON_NULL_ARGS() \
	do { \
		int		_i; \
		for (_i = 0; _i < PG_NARGS(); _i++) \
			if (PG_ARGISNULL(_i)) \
				PG_RETURN_NULL(); \
	} while (0)

static bool
window_is_calendar(text *w)
{
	/* called once per account of a sweep: compared in place, no copy */
	const char *p = VARDATA_ANY(w);
	size_t		len = VARSIZE_ANY_EXHDR(w);

	if (len == strlen("calendar_year") && memcmp(p, "calendar_year", len) == 0)
		return true;
	if (len == strlen("rolling") && memcmp(p, "rolling", len) == 0)
		return false;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unknown tier window \"%s\"", text_to_cstring(w)),
			 errdetail("The tier window is 'rolling' or 'calendar_year'.")));
	return false;				/* not reached */
}

static void
check_months(int n)
{
	if (n < 1 || n > LEDGER_MONTHS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("tier window of %d months out of range", n),
				 errdetail("A rolling window lasts 1 to %d months: the ledger keeps %d monthly buckets.",
						   LEDGER_MONTHS, LEDGER_MONTHS)));
}

/* The window arguments (tier_window text, window_months int) at argument i. */
static void
window_args(FunctionCallInfo fcinfo, int i, bool *calendar, int *n)
{
	*calendar = window_is_calendar(PG_GETARG_TEXT_PP(i));
	*n = PG_GETARG_INT32(i + 1);
	check_months(*n);
}

/*
 * The ledger argument i, its monthly buckets only: read in place (a packed
 * value is not copied) and the lots and holds are not decoded.
 */
static void
months_arg(FunctionCallInfo fcinfo, int i, Ledger *l)
{
	wallet_ledger_decode_months((struct varlena *) PG_DETOAST_DATUM_PACKED(PG_GETARG_DATUM(i)), l);
}

/* floor(m / 12) * 12: the January of month m (months since 2000-01 may be negative) */
static int
january_of(int m)
{
	int			y = m >= 0 ? m / 12 : -((-m + 11) / 12);

	return y * 12;
}

/* First month of the window ending with month mo. */
static int
window_first(bool calendar, int n, int mo)
{
	return calendar ? january_of(mo) : mo - n + 1;
}

/* Points earned in the months [lo, hi] that the ledger keeps. */
static int64
earned_between(const Ledger *l, int lo, int hi)
{
	int64		sum = 0;
	int			i;

	if (l->last_month == LEDGER_NO_MONTH)
		return 0;
	for (i = 0; i < LEDGER_MONTHS; i++)
	{
		int			m = l->last_month - i;

		if (m >= lo && m <= hi && pg_add_s64_overflow(sum, l->months[i], &sum))
			sum = PG_INT64_MAX;	/* a threshold is a bigint: saturating is exact enough */
	}
	return sum;
}

static int64
window_earned(const Ledger *l, bool calendar, int n, TimestampTz as_of)
{
	int			mo = wallet_ledger_month_of(as_of);

	return earned_between(l, window_first(calendar, n, mo), mo);
}

/* tier_earned(l, tier_window, window_months, as_of) -> bigint */
PG_FUNCTION_INFO_V1(tier_earned);
Datum
tier_earned(PG_FUNCTION_ARGS)
{
	Ledger		l;
	bool		calendar;
	int			n;

	RETURN_NULL_ON_NULL_ARGS();
	window_args(fcinfo, 1, &calendar, &n);
	months_arg(fcinfo, 0, &l);
	PG_RETURN_INT64(window_earned(&l, calendar, n, PG_GETARG_TIMESTAMPTZ(3)));
}

/*
 * tier_points_rank(l, tier_window, window_months, as_of, min_points bigint[])
 * -> int: how many of the thresholds (ascending, as the tiers' ranks order
 * them) the points earned in the window meet.  An upper bound of the tier
 * the account qualifies for: a spend threshold can only lower it.
 */
PG_FUNCTION_INFO_V1(tier_points_rank);
Datum
tier_points_rank(PG_FUNCTION_ARGS)
{
	Ledger		l;
	ArrayType  *a;
	int			nvals,
				k = 0,
				i;
	bool		calendar;
	int			n;
	int64		earned;

	RETURN_NULL_ON_NULL_ARGS();
	window_args(fcinfo, 1, &calendar, &n);
	months_arg(fcinfo, 0, &l);
	earned = window_earned(&l, calendar, n, PG_GETARG_TIMESTAMPTZ(3));
	a = PG_GETARG_ARRAYTYPE_P(4);
	if (ARR_ELEMTYPE(a) != INT8OID || ARR_NDIM(a) > 1)
		elog(ERROR, "tier thresholds must be a one-dimensional bigint array");
	nvals = ArrayGetNItems(ARR_NDIM(a), ARR_DIMS(a));
	if (!ARR_HASNULL(a))
	{
		/* the usual case, once per account of a sweep: read in place */
		const int64 *v = (const int64 *) ARR_DATA_PTR(a);

		for (i = 0; i < nvals; i++)
			if (earned >= v[i])
				k = i + 1;
	}
	else
	{
		Datum	   *vals;
		bool	   *nulls;

		deconstruct_array(a, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE, &vals, &nulls, &nvals);
		for (i = 0; i < nvals; i++)
			if (!nulls[i] && earned >= DatumGetInt64(vals[i]))
				k = i + 1;
	}
	PG_RETURN_INT32(k);
}

/* tier_window_start(tier_window, window_months, as_of) -> the window's first instant */
PG_FUNCTION_INFO_V1(tier_window_start);
Datum
tier_window_start(PG_FUNCTION_ARGS)
{
	bool		calendar;
	int			n;

	RETURN_NULL_ON_NULL_ARGS();
	window_args(fcinfo, 0, &calendar, &n);
	PG_RETURN_TIMESTAMPTZ(wallet_ledger_month_start(window_first(calendar, n,
																 wallet_ledger_month_of(PG_GETARG_TIMESTAMPTZ(2)))));
}

/*
 * tier_falls_below(l, tier_window, window_months, as_of, threshold) -> the
 * first instant from as_of on at which, if nothing more were earned, the
 * points earned in the window are below threshold: as_of itself when they
 * already are, else the start of the month in which the months that carry
 * them have left the window (calendar_year: the next 1 January).  NULL when
 * that never happens (threshold 0).
 */
PG_FUNCTION_INFO_V1(tier_falls_below);
Datum
tier_falls_below(PG_FUNCTION_ARGS)
{
	Ledger		l;
	bool		calendar;
	int			n,
				mo,
				k;
	int64		threshold;
	TimestampTz as_of;

	RETURN_NULL_ON_NULL_ARGS();
	window_args(fcinfo, 1, &calendar, &n);
	as_of = PG_GETARG_TIMESTAMPTZ(3);
	threshold = PG_GETARG_INT64(4);
	if (threshold <= 0)
		PG_RETURN_NULL();
	months_arg(fcinfo, 0, &l);
	mo = wallet_ledger_month_of(as_of);
	if (earned_between(&l, window_first(calendar, n, mo), mo) < threshold)
		PG_RETURN_TIMESTAMPTZ(as_of);
	if (calendar)
		PG_RETURN_TIMESTAMPTZ(wallet_ledger_month_start(january_of(mo) + 12));
	/* months after as_of's earn nothing: only the window's start moves */
	for (k = 1; k <= n; k++)
		if (earned_between(&l, mo + k - n + 1, mo) < threshold)
			PG_RETURN_TIMESTAMPTZ(wallet_ledger_month_start(mo + k));
	PG_RETURN_TIMESTAMPTZ(wallet_ledger_month_start(mo + n));	/* not reached: the window is empty by then */
}

/*
 * tier_period_end(tier_window, window_months, since, as_of) -> the end of the
 * qualification period that as_of lies in, for the period_end downgrade:
 * calendar_year: the next 1 January; rolling: periods of window_months
 * months from the start of the month the account reached its tier (since),
 * so the first end after as_of of month(since) + k * window_months.
 */
PG_FUNCTION_INFO_V1(tier_period_end);
Datum
tier_period_end(PG_FUNCTION_ARGS)
{
	bool		calendar;
	int			n,
				ms,
				mo,
				k;

	RETURN_NULL_ON_NULL_ARGS();
	window_args(fcinfo, 0, &calendar, &n);
	ms = wallet_ledger_month_of(PG_GETARG_TIMESTAMPTZ(2));
	mo = wallet_ledger_month_of(PG_GETARG_TIMESTAMPTZ(3));
	if (calendar)
		PG_RETURN_TIMESTAMPTZ(wallet_ledger_month_start(january_of(mo) + 12));
	/* the period holding month mo ends at the first multiple past it */
	k = mo < ms ? 1 : (mo - ms) / n + 1;
	PG_RETURN_TIMESTAMPTZ(wallet_ledger_month_start(ms + k * n));
}

/*
 * The review after a posting (post_entry, on every accrual and reversal):
 * most postings change no tier, and that must cost next to nothing.  Per
 * backend, each program's tier policy and point thresholds are cached;
 * statement triggers on wallet.tiers and on the policy columns of
 * wallet.programs (tiers_changed) queue a relcache invalidation of their
 * table: this backend drops the cache at its next command, every other one
 * when the change commits, and an abort replays its own invalidations here
 * too.  A posting racing the commit of a new tier can miss it; every change
 * of tiers or policy asks for a sweep, which catches it.
 */
#define TIER_CACHE_MAX	32		/* more tiers than this: always the full review */

typedef struct TierProgram
{
	int64		program_id;
	int			ntiers;			/* 0: the program has no tier */
	bool		by_spend;		/* a tier has a spend threshold: always the full review */
	bool		calendar;
	int			months;
	int64		min_points[TIER_CACHE_MAX];	/* by rank, ascending */
	int32		ranks[TIER_CACHE_MAX];
} TierProgram;

static HTAB *tier_cache = NULL;
static bool tier_cache_valid = false;
static bool tier_callback = false;
static Oid	tiers_relid = InvalidOid;
static Oid	programs_relid = InvalidOid;
static SPIPlanPtr account_tier_plan = NULL;

static void
tier_cache_invalidate(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == tiers_relid || relid == programs_relid)
		tier_cache_valid = false;
}

static void
tier_cache_reset(void)
{
	HASHCTL		ctl;
	Oid			nsp;

	if (!tier_callback)
	{
		wallet_register_relcache_callback(tier_cache_invalidate);
		tier_callback = true;
	}
	if (tier_cache != NULL)
		hash_destroy(tier_cache);
	if (account_tier_plan != NULL)
		SPI_freeplan(account_tier_plan);
	account_tier_plan = NULL;
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(TierProgram);
	ctl.hcxt = TopMemoryContext;
	tier_cache = hash_create("wallet tier programs", 64, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	nsp = get_namespace_oid("wallet", true);
	tiers_relid = OidIsValid(nsp) ? get_relname_relid("tiers", nsp) : InvalidOid;
	programs_relid = OidIsValid(nsp) ? get_relname_relid("programs", nsp) : InvalidOid;
	tier_cache_valid = true;
}

/* Under SPI_connect: the program's policy and tiers. */
static void
tier_program_load(TierProgram *tp)
{
	Oid			argtypes[1] = {INT8OID};
	Datum		args[1];
	uint64		i;
	bool		isnull;

	args[0] = Int64GetDatum(tp->program_id);
	if (SPI_execute_with_args("SELECT p.tier_window OPERATOR(pg_catalog.=) 'calendar_year', p.tier_window_months, "
							  "t.rank, t.min_points, t.min_spend IS NOT NULL "
							  "FROM wallet.programs p LEFT JOIN wallet.tiers t ON t.program_id OPERATOR(pg_catalog.=) p.program_id "
							  "WHERE p.program_id OPERATOR(pg_catalog.=) $1 ORDER BY t.rank",
							  1, argtypes, args, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "reading wallet.tiers failed");
	tp->ntiers = 0;
	tp->by_spend = false;
	tp->calendar = false;
	tp->months = 12;
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	td = SPI_tuptable->tupdesc;
		Datum		rank;

		tp->calendar = DatumGetBool(SPI_getbinval(tup, td, 1, &isnull));
		tp->months = DatumGetInt32(SPI_getbinval(tup, td, 2, &isnull));
		rank = SPI_getbinval(tup, td, 3, &isnull);
		if (isnull)
			continue;			/* the program has no tier */
		if (tp->ntiers == TIER_CACHE_MAX)
		{
			tp->by_spend = true;	/* too many to cache: always the full review */
			continue;
		}
		tp->ranks[tp->ntiers] = DatumGetInt32(rank);
		tp->min_points[tp->ntiers] = DatumGetInt64(SPI_getbinval(tup, td, 4, &isnull));
		if (DatumGetBool(SPI_getbinval(tup, td, 5, &isnull)))
			tp->by_spend = true;
		tp->ntiers++;
	}
}

/*
 * Whether the posting that left the account's ledger at v (at `at`) may
 * change its tier: the program has tiers, and the account is below its
 * tier, or qualifies (by points) for another one, or a spend threshold is
 * involved.  False: nothing to do.  The account's tier (rank held, below
 * since) is read here unless known (the caller read it under the account's
 * lock).
 */
static bool
tier_posting_decide(int64 program_id, int64 account_id, bool known, int32 held, bool below,
					struct varlena *v, TimestampTz at)
{
	TierProgram tp;
	TierProgram *e;
	Ledger	   *l;
	int64		earned;
	int32		qualified = 0;
	bool		isnull;
	int			i;

	if (!tier_cache_valid)
		tier_cache_reset();
	e = hash_search(tier_cache, &program_id, HASH_FIND, NULL);
	if (e != NULL && e->ntiers == 0)
		return false;			/* the common case of a program without tiers */
	if (e == NULL)
	{
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		memset(&tp, 0, sizeof(tp));
		tp.program_id = program_id;
		tier_program_load(&tp);
		SPI_finish();
		/* the query may have processed an invalidation that reset the cache */
		if (!tier_cache_valid)
			tier_cache_reset();
		e = hash_search(tier_cache, &program_id, HASH_ENTER, NULL);
		*e = tp;
		if (e->ntiers == 0)
			return false;
	}
	if (e->by_spend)
		return true;
	tp = *e;					/* the SPI call below may reset the cache */
	if (!known)
	{
		Datum		args[1] = {Int64GetDatum(account_id)};

		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		if (account_tier_plan == NULL)
		{
			Oid			argtypes[1] = {INT8OID};
			SPIPlanPtr	plan = SPI_prepare("SELECT t.rank, t.below_since IS NOT NULL FROM wallet.account_tiers t "
										   "WHERE t.account_id OPERATOR(pg_catalog.=) $1", 1, argtypes);

			if (plan == NULL || SPI_keepplan(plan) != 0)
				elog(ERROR, "preparing the read of wallet.account_tiers failed");
			account_tier_plan = plan;
		}
		if (SPI_execute_plan(account_tier_plan, args, NULL, true, 1) != SPI_OK_SELECT)
			elog(ERROR, "reading wallet.account_tiers failed");
		held = 0;
		below = false;
		if (SPI_processed == 1)
		{
			held = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
			below = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
		}
		SPI_finish();
	}
	if (below)
		return true;
	l = wallet_ledger_decode(v);
	earned = window_earned(l, tp.calendar, tp.months, at);
	for (i = 0; i < tp.ntiers; i++)
		if (earned >= tp.min_points[i])
			qualified = tp.ranks[i];
	return qualified != held;
}

/* For post_entry (tier_posting_review below). */
bool
wallet_tier_posting_review(int64 program_id, int64 account_id, struct varlena *v, TimestampTz at)
{
	return tier_posting_decide(program_id, account_id, false, 0, false, v, at);
}

/*
 * For record_purchase's fast path (src/purchase.c), which read the
 * account's wallet.account_tiers row under its lock: held is its rank (0:
 * none), below whether below_since is set.
 */
bool
wallet_tier_posting_review_held(int64 program_id, int32 held, bool below, struct varlena *v, TimestampTz at)
{
	return tier_posting_decide(program_id, 0, true, held, below, v, at);
}

/* tier_posting_review(program_id, account_id, l, at) -> wallet_tier_posting_review */
PG_FUNCTION_INFO_V1(tier_posting_review);
Datum
tier_posting_review(PG_FUNCTION_ARGS)
{
	RETURN_NULL_ON_NULL_ARGS();
	PG_RETURN_BOOL(wallet_tier_posting_review(PG_GETARG_INT64(0), PG_GETARG_INT64(1),
											  PG_GETARG_POINTS_LEDGER_P(2), PG_GETARG_TIMESTAMPTZ(3)));
}

/* Statement trigger on wallet.tiers and wallet.programs: every backend drops its cache of tier programs. */
PG_FUNCTION_INFO_V1(tiers_changed);
Datum
tiers_changed(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("wallet_internal.tiers_changed() must be called as a trigger")));
	CacheInvalidateRelcache(trigdata->tg_relation);
	return PointerGetDatum(NULL);
}

/*
 * tier_sweep_scan(program_id, after_account, max_accounts, tier_window,
 * window_months, as_of, min_points bigint[]) -> (looked_at, last_account,
 * qualified bigint[]): one batch of a tier sweep (wallet.evaluate_tiers).
 * The next max_accounts accounts of the program after after_account, in
 * account order (accounts_program_account_idx), are read straight from the
 * index and the heap rather than through a query: a sweep looks at every
 * account of a program and, per account, only needs the monthly buckets of
 * its ledger.  Returns how many were looked at, the last one, and those whose
 * points in the window meet a threshold (ascending, as tier_points_rank).
 * Internal (no EXECUTE for any role); the caller must still be allowed to
 * read wallet.accounts, as a query would require.
 */
PG_FUNCTION_INFO_V1(tier_sweep_scan);
Datum
tier_sweep_scan(PG_FUNCTION_ARGS)
{
	int64		program_id,
				after,
				last = 0;
	int32		max_accounts,
				looked_at = 0;
	bool		calendar;
	int			n,
				nthresholds,
				i;
	TimestampTz as_of;
	ArrayType  *a;
	int64		lowest = PG_INT64_MAX;
	int			hi,
				lo;
	Oid			nsp,
				accounts,
				index;
	AttrNumber	att_id,
				att_ledger;
	Relation	heap,
				irel;
	IndexScanDesc scan;
	TupleTableSlot *slot;
	ScanKeyData keys[2];
	ArrayBuildState *ids;
	TupleDesc	rdesc;
	Datum		values[3];
	bool		nulls[3] = {false, false, false};

	RETURN_NULL_ON_NULL_ARGS();
	program_id = PG_GETARG_INT64(0);
	after = PG_GETARG_INT64(1);
	max_accounts = PG_GETARG_INT32(2);
	window_args(fcinfo, 3, &calendar, &n);
	as_of = PG_GETARG_TIMESTAMPTZ(5);
	a = PG_GETARG_ARRAYTYPE_P(6);
	if (ARR_ELEMTYPE(a) != INT8OID || ARR_NDIM(a) > 1 || ARR_HASNULL(a))
		elog(ERROR, "tier thresholds must be a one-dimensional bigint array without nulls");
	nthresholds = ArrayGetNItems(ARR_NDIM(a), ARR_DIMS(a));
	/* meeting a threshold = meeting the lowest one */
	for (i = 0; i < nthresholds; i++)
		lowest = Min(lowest, ((const int64 *) ARR_DATA_PTR(a))[i]);
	/* the window's months, once for the batch (window_earned per account) */
	hi = wallet_ledger_month_of(as_of);
	lo = window_first(calendar, n, hi);
	if (get_call_result_type(fcinfo, NULL, &rdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "tier_sweep_scan must return a record");
	rdesc = BlessTupleDesc(rdesc);

	nsp = get_namespace_oid("wallet", false);
	accounts = get_relname_relid("accounts", nsp);
	index = get_relname_relid("accounts_program_account_idx", nsp);
	if (!OidIsValid(accounts) || !OidIsValid(index))
		elog(ERROR, "wallet.accounts or wallet.accounts_program_account_idx is missing");
	if (pg_class_aclcheck(accounts, GetUserId(), ACL_SELECT) != ACLCHECK_OK)
		aclcheck_error(ACLCHECK_NO_PRIV, OBJECT_TABLE, "accounts");
	/* the scan below applies no row-level security: only for who needs none */
	if (check_enable_rls(accounts, InvalidOid, false) == RLS_ENABLED)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("tier sweeps read every account of a program"),
				 errdetail("The function wallet_internal.tier_sweep_scan runs as the owner of wallet.accounts, inside wallet.evaluate_tiers.")));
	att_id = get_attnum(accounts, "account_id");
	att_ledger = get_attnum(accounts, "ledger");

	heap = table_open(accounts, AccessShareLock);
	irel = index_open(index, AccessShareLock);
	ScanKeyInit(&keys[0], 1, BTEqualStrategyNumber, F_INT8EQ, Int64GetDatum(program_id));
	ScanKeyInit(&keys[1], 2, BTGreaterStrategyNumber, F_INT8GT, Int64GetDatum(after));
	slot = table_slot_create(heap, NULL);
	scan = index_beginscan(heap, irel, GetActiveSnapshot(), 2, 0);
	index_rescan(scan, keys, 2, NULL, 0);
	ids = initArrayResult(INT8OID, CurrentMemoryContext, false);
	while (looked_at < max_accounts && index_getnext_slot(scan, ForwardScanDirection, slot))
	{
		bool		isnull;
		Datum		d;
		Ledger		l;

		CHECK_FOR_INTERRUPTS();
		last = DatumGetInt64(slot_getattr(slot, att_id, &isnull));
		d = slot_getattr(slot, att_ledger, &isnull);
		looked_at++;
		if (isnull || nthresholds == 0)
			continue;
		{
			struct varlena *v = (struct varlena *) PG_DETOAST_DATUM_PACKED(d);

			wallet_ledger_decode_months(v, &l);
			if (earned_between(&l, lo, hi) >= lowest)
				accumArrayResult(ids, Int64GetDatum(last), false, INT8OID, CurrentMemoryContext);
			if ((Pointer) v != DatumGetPointer(d))
				pfree(v);
		}
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	index_close(irel, AccessShareLock);
	table_close(heap, AccessShareLock);

	values[0] = Int32GetDatum(looked_at);
	values[1] = Int64GetDatum(last);
	nulls[1] = looked_at == 0;
	if (ids->nelems > 0)
		values[2] = makeArrayResult(ids, CurrentMemoryContext);
	else
		nulls[2] = true;
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(rdesc, values, nulls)));
}
