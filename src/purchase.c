/*
 * purchase.c: the earning-rule evaluator (wallet_internal.purchase_points,
 * shared by wallet.preview_purchase and wallet.record_purchase) and the
 * fast path of wallet.record_purchase (README "Loyalty").
 *
 * record_purchase runs at every checkout.  In PL/pgSQL most of its time was
 * the executor's cost per statement and per function call, not the work, so
 * the common case runs here: the member, its program and its account read
 * straight from their unique indexes and the account locked, the member's
 * state read the same way (tier, first purchase, cap counters), the purchase
 * inserted directly (its unique key is the idempotency check: a retry
 * conflicts and is left to a statement), then the counters bumped and the
 * accrual applied by the ledger's own C code (wallet_ledger_accrue) and
 * journalled in one statement with a saved plan.  Everything else
 * (offers and codes, a new member or account, no program in the currency,
 * any invalid argument) goes to wallet_internal.record_purchase_full, the
 * PL/pgSQL version, which gives the same results and errors.
 *
 * The rules of a program are compiled once per backend and kept until a
 * statement trigger on wallet.earning_rules (purchase_rules_changed) queues
 * a relcache invalidation: this backend drops the cache at once, every other
 * one when the change commits, and an abort replays the invalidation here.
 */
#include "wallet.h"

#include "points_ledger.h"
#include "privileges.h"
#include "referral_gate.h"

#include "access/genam.h"
#include "access/relation.h"
#include "access/skey.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/index.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_trigger.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "common/int.h"
#include "datatype/timestamp.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/datum.h"
#include "utils/datetime.h"
#include "utils/fmgroids.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

/* ---------------------------------------------------------------- saved plans */

#define RULE_COLUMNS \
	"x.rule_id, x.name, x.effect, x.value, x.exclusive, x.valid_from, x.valid_until, x.min_amount, " \
	"x.stores, x.channels, x.payment_methods, x.categories, x.min_tier_rank, x.first_purchase, " \
	"x.days_of_week, x.time_from, x.time_until, x.cap_per_purchase, x.cap_per_member_day, x.cap_per_member"

enum
{
	P_RULES,
	P_SETTLE,
	P_LEDGER,
	P_WRITE,
	P_REST,
	P_POST,
	P_RETRY,
	P_TIER_REVIEW,
	P_FULL,
	P_COUNT
};

static SPIPlanPtr plans[P_COUNT];

/* The parts of the writing statements below (extra: a further condition). */
#define COUNTERS_UPSERT(extra) \
	"INSERT INTO wallet.earning_counters AS c (merchant_id, member_id, rule_id, day, points)" \
	" SELECT $1, $2, u.r, CASE WHEN u.t THEN NULL ELSE $13 END, u.p FROM unnest($14, $15, $16) u(r, t, p)" extra \
	" ON CONFLICT ON CONSTRAINT earning_counters_key DO UPDATE SET points = c.points + excluded.points"
#define ACCOUNT_UPDATE(extra) \
	"UPDATE wallet.accounts y SET ledger = $17, next_event = $18" \
	" WHERE y.account_id = $9 AND $10 > 0" extra " RETURNING y.merchant_id"
#define ENTRY_INSERT \
	"INSERT INTO wallet.entries (entry_id, account_id, kind, amount, balance_after, idempotency_key, reason," \
	" reference, lots, actor, created_at, points, expires_at, merchant_id)" \
	" SELECT $11, $9, 'accrue', $19, $20, 'purchase:' || $3, 'purchase', $3, $21, CURRENT_USER, $22, $10, $23," \
	" a.merchant_id FROM a"

static SPIPlanPtr
purchase_plan(int which)
{
	static const char *const sql[P_COUNT] = {
		/* P_RULES: a program's earning rules, in evaluation order */
		"SELECT " RULE_COLUMNS " FROM wallet.earning_rules x"
		" WHERE x.program_id = $1 ORDER BY x.priority DESC, x.rule_id",
		/* P_SETTLE */
		"SELECT wallet_internal.settle_account($1, $2, $2)",
		/* P_LEDGER */
		"SELECT y.ledger FROM wallet.accounts y WHERE y.account_id = $1",
		/*
		 * P_WRITE: in one statement, the purchase (its unique key stands for
		 * the idempotency check: nothing else is written when it conflicts),
		 * the counters of the capped rules, and what post_entry does for the
		 * accrual (the ledger applied in C, stored; the entry journalled).
		 * The purchase is visible to the tier review that follows (spend).
		 */
		"WITH p AS (INSERT INTO wallet.purchases (merchant_id, member_id, order_ref, amount, currency, occurred_at,"
		"           attributes, program_id, account_id, points, entry_id, rules)"
		"           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
		"           ON CONFLICT ON CONSTRAINT purchases_merchant_id_order_ref_key DO NOTHING"
		"           RETURNING purchase_id),"
		" c AS (" COUNTERS_UPSERT(" WHERE EXISTS (SELECT FROM p)") "),"
		" a AS (" ACCOUNT_UPDATE(" AND EXISTS (SELECT FROM p)") "),"
		" e AS (" ENTRY_INSERT ")"
		" SELECT p.purchase_id FROM p",
		/* P_REST: P_WRITE but the purchase, written by purchase_insert_direct */
		"WITH c AS (" COUNTERS_UPSERT("") "), a AS (" ACCOUNT_UPDATE("") "), e AS (" ENTRY_INSERT ") SELECT",
		/* P_POST: P_REST without counters (no capped rule earned): the accrual only */
		"WITH a AS (" ACCOUNT_UPDATE("") ") " ENTRY_INSERT,
		/* P_RETRY: a retry, or a concurrent call recorded the order first (committed by now) */
		"SELECT wallet_internal.purchase_retry(p, $3, $4, $5) FROM wallet.purchases p"
		" WHERE p.merchant_id = $1 AND p.order_ref = $2",
		/* P_TIER_REVIEW */
		"SELECT wallet_internal.tier_review($1, $2, $3)",
		/* P_FULL */
		"SELECT wallet_internal.record_purchase_full($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
	};
	/* P_WRITE, P_REST and P_POST take the same arguments (InvalidOid: wallet.points_ledger, below) */
#define WRITE_TYPES \
	{INT8OID, INT8OID, TEXTOID, NUMERICOID, TEXTOID, TIMESTAMPTZOID, JSONBOID, INT8OID, INT8OID, INT8OID, INT8OID, \
	JSONBOID, DATEOID, INT8ARRAYOID, BOOLARRAYOID, INT8ARRAYOID, InvalidOid, TIMESTAMPTZOID, INT8OID, INT8OID, \
	JSONBOID, TIMESTAMPTZOID, TIMESTAMPTZOID}
	static const int nargs[P_COUNT] = {1, 2, 1, 23, 23, 23, 5, 3, 10};
	static const Oid types[P_COUNT][23] = {
		{INT8OID},
		{INT8OID, TIMESTAMPTZOID},
		{INT8OID},
		WRITE_TYPES,			/* P_WRITE */
		WRITE_TYPES,			/* P_REST */
		WRITE_TYPES,			/* P_POST */
		{INT8OID, TEXTOID, TEXTOID, NUMERICOID, TEXTOID},
		{INT8OID, TIMESTAMPTZOID, INT8OID},
		{INT8OID, TEXTOID, TEXTOID, NUMERICOID, TEXTOID, TIMESTAMPTZOID, JSONBOID, INT8ARRAYOID, TEXTARRAYOID, INT8OID},
	};

	if (plans[which] == NULL)
	{
		Oid			t[23];
		SPIPlanPtr	p;

		memcpy(t, types[which], sizeof(t));
		if (which == P_WRITE || which == P_REST || which == P_POST)
			t[16] = GetSysCacheOid2(TYPENAMENSP, Anum_pg_type_oid, CStringGetDatum("points_ledger"),
								   ObjectIdGetDatum(get_namespace_oid("wallet", false)));
		/*
		 * Generic plans at once: every statement looks rows up by key, and a
		 * custom plan per call (the plan cache's choice for some of them)
		 * would cost more than the statement itself.
		 */
		p = SPI_prepare_cursor(sql[which], nargs[which], t, CURSOR_OPT_GENERIC_PLAN);
		if (p == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		SPI_keepplan(p);
		plans[which] = p;
	}
	return plans[which];
}

/* The plans name the extension's objects: a re-created extension needs new ones. */
static void
purchase_plans_check(void)
{
	static Oid	seen = InvalidOid;
	Oid			nsp = get_namespace_oid("wallet", true);

	if (nsp == seen)
		return;
	for (int i = 0; i < P_COUNT; i++)
		if (plans[i] != NULL)
		{
			SPI_freeplan(plans[i]);
			plans[i] = NULL;
		}
	seen = nsp;
}

static uint64
purchase_run(int which, Datum *values, const char *nulls, bool read_only)
{
	int			rc = SPI_execute_plan(purchase_plan(which), values, nulls, read_only, 0);

	if (rc < 0)
		elog(ERROR, "SPI_execute_plan failed: %s", SPI_result_code_string(rc));
	return SPI_processed;
}

/* ---------------------------------------------------------------- rule cache */

typedef enum RuleEffect
{
	EFFECT_PER_UNIT,
	EFFECT_MULTIPLIER,
	EFFECT_FIXED
} RuleEffect;

/* A text[] condition: NULL array = no condition. */
typedef struct TextSet
{
	bool		given;
	bool		has_null;		/* an element is NULL: no match is unknown, not false */
	int			n;
	char	  **v;
} TextSet;

typedef struct PurchaseRule
{
	int64		rule_id;
	char	   *name;
	RuleEffect	effect;
	Numeric		value;
	bool		exclusive;
	TimestampTz valid_from;
	bool		has_until;
	TimestampTz valid_until;
	Numeric		min_amount;		/* NULL: none */
	TextSet		stores,
				channels,
				payments;
	Datum		categories;		/* text[] for ?|; 0: none */
	bool		has_min_tier;
	int32		min_tier_rank;
	bool		first_purchase;
	bool		has_dow;
	bool		dow_null;		/* days_of_week holds a NULL */
	int			dow_mask;		/* bit d: ISO day d */
	bool		has_time;
	TimeADT		time_from,
				time_until;
	int64		cap_purchase,	/* 0: none (caps are > 0) */
				cap_day,
				cap_member;
} PurchaseRule;

typedef struct RuleSet
{
	int64		program_id;		/* hash key */
	int			n;
	PurchaseRule *rules;		/* priority DESC, rule_id */
} RuleSet;

static HTAB *rule_sets = NULL;
static MemoryContext rule_cxt = NULL;	/* holds rule_sets and the rules */
static MemoryContext rule_graveyard = NULL; /* dropped rule_cxts, freed outside evaluations */
static int	eval_depth = 0;
static bool rule_callback = false;
static Oid	rules_relid = InvalidOid;
static uint64 rule_generation = 0;	/* bumped by every invalidation */

/*
 * Drop the compiled rules.  An invalidation can arrive while an evaluation
 * holds pointers into them (any lock taken by its query reads the queue),
 * so their memory is only retired here and freed by the next evaluation.
 */
static void
rule_cache_drop(void)
{
	if (rule_cxt != NULL)
		MemoryContextSetParent(rule_cxt, rule_graveyard);
	rule_cxt = NULL;
	rule_sets = NULL;
	rules_relid = InvalidOid;
	rule_generation++;
}

static void
rule_cache_invalidate(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == rules_relid || rules_relid == InvalidOid)
		rule_cache_drop();
}

static void
rule_cache_ready(void)
{
	HASHCTL		ctl;
	Oid			nsp;

	if (!rule_callback)
	{
		rule_graveyard = AllocSetContextCreate(CacheMemoryContext, "wallet earning rules dropped", ALLOCSET_SMALL_SIZES);
		wallet_register_relcache_callback(rule_cache_invalidate);
		rule_callback = true;
	}
	if (eval_depth == 0)
		MemoryContextReset(rule_graveyard);
	if (rule_sets != NULL)
		return;
	rule_cxt = AllocSetContextCreate(CacheMemoryContext, "wallet earning rules", ALLOCSET_SMALL_SIZES);
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(RuleSet);
	ctl.hcxt = rule_cxt;
	rule_sets = hash_create("wallet earning rules", 16, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	nsp = get_namespace_oid("wallet", true);
	rules_relid = OidIsValid(nsp) ? get_relname_relid("earning_rules", nsp) : InvalidOid;
}

static void
textset_load(TextSet *ts, Datum d, bool isnull)
{
	Datum	   *vals;
	bool	   *nulls;
	int			n,
				i;

	memset(ts, 0, sizeof(*ts));
	if (isnull)
		return;
	ts->given = true;
	deconstruct_array(DatumGetArrayTypeP(d), TEXTOID, -1, false, TYPALIGN_INT, &vals, &nulls, &n);
	ts->v = palloc(sizeof(char *) * Max(n, 1));
	for (i = 0; i < n; i++)
	{
		if (nulls[i])
			ts->has_null = true;
		else
			ts->v[ts->n++] = TextDatumGetCString(vals[i]);
	}
}

/* TRUE of "set IS NOT NULL AND (x IS NULL OR NOT x = ANY (set))": the rule does not hold. */
static bool
textset_excludes(const TextSet *ts, const char *x)
{
	int			i;

	if (!ts->given)
		return false;
	if (x == NULL)
		return true;
	for (i = 0; i < ts->n; i++)
		if (strcmp(ts->v[i], x) == 0)
			return false;
	return !ts->has_null;		/* x = ANY is NULL, not false, with a NULL element */
}

static Numeric
numeric_keep(Datum d)
{
	return DatumGetNumericCopy(d);
}

/* Under SPI: the program's rules, read and compiled into rule_cxt. */
static void
rule_set_load(RuleSet *rs, int64 program_id)
{
	Datum		arg = Int64GetDatum(program_id);
	MemoryContext old;
	uint64		i;

	if (SPI_execute_plan(purchase_plan(P_RULES), &arg, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "reading wallet.earning_rules failed");
	old = MemoryContextSwitchTo(rule_cxt);
	rs->program_id = program_id;
	rs->n = (int) SPI_processed;
	rs->rules = palloc0(sizeof(PurchaseRule) * Max(rs->n, 1));
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	td = SPI_tuptable->tupdesc;
		PurchaseRule *r = &rs->rules[i];
		Datum		d;
		bool		isnull;
		char	   *effect;

#define COL(n) (d = SPI_getbinval(tup, td, (n), &isnull))
		r->rule_id = DatumGetInt64(COL(1));
		r->name = TextDatumGetCString(COL(2));
		effect = TextDatumGetCString(COL(3));
		r->effect = strcmp(effect, "per_unit") == 0 ? EFFECT_PER_UNIT
			: strcmp(effect, "multiplier") == 0 ? EFFECT_MULTIPLIER : EFFECT_FIXED;
		r->value = numeric_keep(COL(4));
		r->exclusive = DatumGetBool(COL(5));
		r->valid_from = DatumGetTimestampTz(COL(6));
		COL(7);
		r->has_until = !isnull;
		r->valid_until = isnull ? 0 : DatumGetTimestampTz(d);
		COL(8);
		r->min_amount = isnull ? NULL : numeric_keep(d);
		COL(9);
		textset_load(&r->stores, d, isnull);
		COL(10);
		textset_load(&r->channels, d, isnull);
		COL(11);
		textset_load(&r->payments, d, isnull);
		COL(12);
		r->categories = isnull ? (Datum) 0 : PointerGetDatum(DatumGetArrayTypePCopy(d));
		COL(13);
		r->has_min_tier = !isnull;
		r->min_tier_rank = isnull ? 0 : DatumGetInt32(d);
		COL(14);
		r->first_purchase = !isnull && DatumGetBool(d);
		COL(15);
		r->has_dow = !isnull;
		if (!isnull)
		{
			Datum	   *vals;
			bool	   *nulls;
			int			n;

			deconstruct_array(DatumGetArrayTypeP(d), INT4OID, 4, true, TYPALIGN_INT, &vals, &nulls, &n);
			for (int k = 0; k < n; k++)
			{
				int32		v = DatumGetInt32(vals[k]);

				if (nulls[k])
					r->dow_null = true;
				else if (v >= 1 && v <= 7)
					r->dow_mask |= 1 << v;
			}
		}
		COL(16);
		r->has_time = !isnull;
		r->time_from = isnull ? 0 : DatumGetTimeADT(d);
		COL(17);
		r->has_time = r->has_time && !isnull;
		r->time_until = isnull ? 0 : DatumGetTimeADT(d);
		COL(18);
		r->cap_purchase = isnull ? 0 : DatumGetInt64(d);
		COL(19);
		r->cap_day = isnull ? 0 : DatumGetInt64(d);
		COL(20);
		r->cap_member = isnull ? 0 : DatumGetInt64(d);
#undef COL
	}
	MemoryContextSwitchTo(old);
}

/*
 * Under SPI, inside an evaluation: the compiled rules of a program.  A load
 * that raced an invalidation serves this call only (its memory is retired,
 * not freed, until the evaluation ends); the next call reads them again.
 */
static RuleSet *
rule_set_get(int64 program_id)
{
	static RuleSet uncached;
	RuleSet    *rs;
	RuleSet		tmp;
	uint64		gen;

	rule_cache_ready();
	rs = hash_search(rule_sets, &program_id, HASH_FIND, NULL);
	if (rs != NULL)
		return rs;
	gen = rule_generation;
	rule_set_load(&tmp, program_id);
	if (gen != rule_generation)
	{
		uncached = tmp;
		return &uncached;
	}
	rs = hash_search(rule_sets, &program_id, HASH_ENTER, NULL);
	*rs = tmp;
	return rs;
}

PG_FUNCTION_INFO_V1(purchase_rules_changed);

/* Statement trigger on wallet.earning_rules: every backend drops its compiled rules. */
Datum
purchase_rules_changed(PG_FUNCTION_ARGS)
{
	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("purchase_rules_changed must be called as a trigger"),
				 errdetail("It resets the per-session cache of earning rules when wallet.earning_rules changes.")));
	CacheInvalidateRelcache(((TriggerData *) fcinfo->context)->tg_relation);
	rule_cache_drop();
	return PointerGetDatum(NULL);
}

/* ---------------------------------------------------------------- evaluation */

typedef struct PurchaseInput
{
	int64		merchant_id;
	int64		program_id;
	const char *rounding;
	bool		has_member;
	int64		member_id;
	bool		has_account;
	int64		account_id;
	const char *time_zone;		/* NULL: UTC */
	Numeric		amount;
	const char *currency;
	TimestampTz occurred_at;
	Jsonb	   *attributes;
} PurchaseInput;

typedef struct CounterBump
{
	int64		rule_id;
	bool		total;			/* the member's total (day NULL) */
	int64		points;
} CounterBump;

typedef struct PurchaseEval
{
	int64		points;
	char	   *rules;			/* json text of [{rule_id, points, why}] */
	DateADT		day;			/* the local day of the purchase */
	int			ncounters;
	CounterBump *counters;
	bool		held_known;		/* the account's wallet.account_tiers row was read: */
	int32		held_rank;		/* its rank (0: no row) */
	bool		held_below;		/* its below_since is set */
} PurchaseEval;

static const char *
numeric_text(Numeric n)
{
	return DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(n)));
}

static Numeric
round_points(Numeric raw, const char *rounding)
{
	Datum		d = NumericGetDatum(raw);

	if (strcmp(rounding, "ceiling") == 0)
		return DatumGetNumeric(DirectFunctionCall1(numeric_ceil, d));
	if (strcmp(rounding, "nearest") == 0)
		return DatumGetNumeric(DirectFunctionCall2(numeric_round, d, Int32GetDatum(0)));
	return DatumGetNumeric(DirectFunctionCall1(numeric_floor, d));
}

static bool
numeric_greater(Numeric a, Numeric b)
{
	return DatumGetBool(DirectFunctionCall2(numeric_gt, NumericGetDatum(a), NumericGetDatum(b)));
}

/* WL205: the points of a purchase do not fit a bigint (README "Errors") */
static void
points_out_of_range(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_WL_AMOUNT_OUT_OF_RANGE),
			 errmsg("points out of range"),
			 errdetail("The points of the purchase would exceed %lld.", (long long) PG_INT64_MAX)));
}

/* a rounded number of points as a bigint; WL205 when it is not one */
static int64
points_of(Numeric n)
{
	if (numeric_is_nan(n) || numeric_is_inf(n) ||
		numeric_greater(n, int64_to_numeric(PG_INT64_MAX)) ||
		numeric_greater(int64_to_numeric(PG_INT64_MIN), n))
		points_out_of_range();
	return DatumGetInt64(DirectFunctionCall1(numeric_int8, NumericGetDatum(n)));
}

/* base * (factor - 1), the extra part of a multiplier */
static Numeric
extra_of(int64 base, Numeric factor)
{
	Numeric		minus1 = DatumGetNumeric(DirectFunctionCall2(numeric_sub, NumericGetDatum(factor),
															 NumericGetDatum(int64_to_numeric(1))));

	return DatumGetNumeric(DirectFunctionCall2(numeric_mul, NumericGetDatum(int64_to_numeric(base)),
											   NumericGetDatum(minus1)));
}

/* attributes ->> key (NULL when absent or JSON null) */
static char *
attribute_text(Jsonb *attrs, const char *key)
{
	JsonbValue	v;

	if (!JB_ROOT_IS_OBJECT(attrs) ||
		getKeyJsonValueFromContainer(&attrs->root, key, strlen(key), &v) == NULL)
		return NULL;
	switch (v.type)
	{
		case jbvNull:
			return NULL;
		case jbvString:
			return pnstrdup(v.val.string.val, v.val.string.len);
		case jbvNumeric:
			return DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v.val.numeric)));
		case jbvBool:
			return pstrdup(v.val.boolean ? "true" : "false");
		default:
			return JsonbToCString(NULL, v.val.binary.data, v.val.binary.len);
	}
}

/* attributes -> key as a jsonb Datum, 0 when absent */
static Datum
attribute_jsonb(Jsonb *attrs, const char *key)
{
	JsonbValue	v;

	if (!JB_ROOT_IS_OBJECT(attrs) ||
		getKeyJsonValueFromContainer(&attrs->root, key, strlen(key), &v) == NULL)
		return (Datum) 0;
	return JsonbPGetDatum(JsonbValueToJsonb(&v));
}

static void
append_rule(StringInfo buf, bool *first, bool has_id, int64 rule_id, int64 points, const char *why)
{
	if (!*first)
		appendStringInfoString(buf, ", ");
	*first = false;
	if (has_id)
		appendStringInfo(buf, "{\"rule_id\": " INT64_FORMAT, rule_id);
	else
		appendStringInfoString(buf, "{\"rule_id\": null");
	appendStringInfo(buf, ", \"points\": " INT64_FORMAT ", \"why\": ", points);
	escape_json(buf, why);
	appendStringInfoChar(buf, '}');
}

/* ---------------------------------------------------------------- direct reads */

/*
 * The usual call reads single rows by a unique key (and the first of the
 * member's purchases in the program): straight from the index and the heap
 * here, which costs a fraction of an SPI plan's execution (its executor
 * start and end per statement).  The function runs as the tables' owner,
 * and every row read belongs to the merchant the caller acts for (checked
 * first), so their row-level security would let each one through.
 */
enum
{
	D_MEMBERS,
	D_PROGRAMS,
	D_ACCOUNTS,
	D_ACCOUNT_TIERS,
	D_TIERS,
	D_PURCHASES,
	D_COUNTERS,
	D_ORDERS,
	D_COUNT
};

static const char *const direct_names[D_COUNT][2] = {
	{"members", "members_merchant_id_member_ref_key"},
	{"programs", "programs_earning_currency_idx"},
	{"accounts", "accounts_program_id_member_ref_key"},
	{"account_tiers", "account_tiers_pkey"},
	{"tiers", "tiers_pkey"},
	{"purchases", "purchases_member_idx"},
	{"earning_counters", "earning_counters_key"},
	{"purchases", "purchases_merchant_id_order_ref_key"},
};
static Oid	direct_oids[D_COUNT][2];

/* rel still is wallet.<name> (a cached oid may name a dropped or re-created relation) */
static bool
direct_is(Relation rel, const char *name, Oid nsp)
{
	return RelationGetNamespace(rel) == nsp && strcmp(RelationGetRelationName(rel), name) == 0;
}

/*
 * Opens a table and its index, locked until the transaction ends as a query
 * would, and (slot not NULL) a slot for the table's rows.
 */
static void
direct_open(int which, LOCKMODE mode, Relation *heap, Relation *index, TupleTableSlot **slot)
{
	Oid			nsp = get_namespace_oid("wallet", false);

	for (int attempt = 0;; attempt++)
	{
		Relation	h = NULL,
					i = NULL;

		if (OidIsValid(direct_oids[which][0]))
		{
			h = try_relation_open(direct_oids[which][0], mode);
			i = try_relation_open(direct_oids[which][1], AccessShareLock);
		}
		if (h != NULL && i != NULL && direct_is(h, direct_names[which][0], nsp) &&
			direct_is(i, direct_names[which][1], nsp) && i->rd_rel->relkind == RELKIND_INDEX &&
			i->rd_index->indrelid == RelationGetRelid(h))
		{
			*heap = h;
			*index = i;
			if (slot != NULL)
				*slot = table_slot_create(h, NULL);
			return;
		}
		/* a cached oid of another relation by now: no lock kept on it */
		if (h != NULL)
			relation_close(h, mode);
		if (i != NULL)
			relation_close(i, AccessShareLock);
		if (attempt > 0)
			elog(ERROR, "wallet.%s or its index %s is missing", direct_names[which][0], direct_names[which][1]);
		direct_oids[which][0] = get_relname_relid(direct_names[which][0], nsp);
		direct_oids[which][1] = get_relname_relid(direct_names[which][1], nsp);
	}
}

static void
direct_close(Relation heap, Relation index, TupleTableSlot *slot)
{
	if (slot != NULL)
		ExecDropSingleTupleTableSlot(slot);
	index_close(index, NoLock);
	table_close(heap, NoLock);
}

/* equality on index column att, compared in the index's collation */
static void
direct_key(ScanKey k, Relation index, AttrNumber att, RegProcedure eq, Datum v)
{
	ScanKeyEntryInitialize(k, 0, att, BTEqualStrategyNumber, InvalidOid, index->rd_indcollation[att - 1], eq, v);
}

/* index column att IS NULL */
static void
direct_key_null(ScanKey k, AttrNumber att)
{
	ScanKeyEntryInitialize(k, SK_ISNULL | SK_SEARCHNULL, att, InvalidStrategy, InvalidOid, InvalidOid, InvalidOid,
						   (Datum) 0);
}

static AttrNumber
direct_att(Relation rel, const char *name)
{
	TupleDesc	td = RelationGetDescr(rel);

	for (int i = 0; i < td->natts; i++)
		if (!TupleDescAttr(td, i)->attisdropped && strcmp(NameStr(TupleDescAttr(td, i)->attname), name) == 0)
			return i + 1;
	elog(ERROR, "column %s of wallet.%s is missing", name, RelationGetRelationName(rel));
	return InvalidAttrNumber;	/* not reached */
}

static Datum
direct_get(Relation rel, TupleTableSlot *slot, const char *name, bool *isnull)
{
	return slot_getattr(slot, direct_att(rel, name), isnull);
}

/* The row visible to snap whose index key equals keys (the first one), into slot. */
static bool
direct_fetch(Relation heap, Relation index, Snapshot snap, ScanKey keys, int nkeys, TupleTableSlot *slot)
{
	IndexScanDesc scan = index_beginscan(heap, index, snap, nkeys, 0);
	bool		found;

	index_rescan(scan, keys, nkeys, NULL, 0);
	found = index_getnext_slot(scan, ForwardScanDirection, slot);
	index_endscan(scan);
	return found;
}

/* What the usual call needs of the member, its program and its locked account. */
typedef struct PurchaseLocked
{
	int64		member_id;
	char	   *time_zone;		/* NULL: none */
	int64		program_id;
	char	   *rounding;
	Interval   *expiry;			/* NULL: never */
	char	   *granularity;
	int64		account_id;
	struct varlena *ledger;
	bool		due;
	TimestampTz due_at;			/* the account's next_event */
} PurchaseLocked;

/*
 * What wallet_internal.record_purchase_full's first query does, read
 * directly: the member (merchant_id, member_ref), the merchant's open
 * program earning in the currency, the member's account in it, locked FOR
 * NO KEY UPDATE as that query's row mark locks it: its latest version,
 * waiting for a concurrent updater (in READ COMMITTED; under a transaction
 * snapshot a concurrent update is left to the full path's query, which
 * raises the serialization failure).  False: no such row, or one that
 * changed under the lock so that it no longer matches: the full path decides.
 */
static bool
purchase_lock_direct(int64 merchant_id, text *member_ref, text *currency, PurchaseLocked *o)
{
	Snapshot	snap;
	Relation	heap,
				index;
	TupleTableSlot *slot;
	ScanKeyData k[2];
	bool		found,
				isnull;
	Datum		d;
	ItemPointerData tid;
	TM_FailureData tmfd;

	/* as SPI runs a statement that may write: earlier writes seen, a new snapshot */
	CommandCounterIncrement();
	snap = RegisterSnapshot(GetTransactionSnapshot());

	direct_open(D_MEMBERS, AccessShareLock, &heap, &index, &slot);
	direct_key(&k[0], index, 1, F_INT8EQ, Int64GetDatum(merchant_id));
	direct_key(&k[1], index, 2, F_TEXTEQ, PointerGetDatum(member_ref));
	found = direct_fetch(heap, index, snap, k, 2, slot);
	if (found)
	{
		o->member_id = DatumGetInt64(direct_get(heap, slot, "member_id", &isnull));
		d = direct_get(heap, slot, "time_zone", &isnull);
		o->time_zone = isnull ? NULL : TextDatumGetCString(d);
	}
	direct_close(heap, index, slot);

	if (found)
	{
		/* the partial unique index holds the open programs earning in a currency */
		direct_open(D_PROGRAMS, AccessShareLock, &heap, &index, &slot);
		direct_key(&k[0], index, 1, F_INT8EQ, Int64GetDatum(merchant_id));
		direct_key(&k[1], index, 2, F_TEXTEQ, PointerGetDatum(currency));
		found = direct_fetch(heap, index, snap, k, 2, slot);
		if (found)
		{
			(void) direct_get(heap, slot, "closed_at", &isnull);
			found = isnull;
		}
		if (found)
		{
			o->program_id = DatumGetInt64(direct_get(heap, slot, "program_id", &isnull));
			o->rounding = TextDatumGetCString(direct_get(heap, slot, "rounding", &isnull));
			d = direct_get(heap, slot, "expiry", &isnull);
			o->expiry = isnull ? NULL : DatumGetIntervalP(datumCopy(d, false, sizeof(Interval)));
			o->granularity = TextDatumGetCString(direct_get(heap, slot, "granularity", &isnull));
		}
		direct_close(heap, index, slot);
	}

	if (found)
	{
		direct_open(D_ACCOUNTS, RowShareLock, &heap, &index, &slot);
		direct_key(&k[0], index, 1, F_INT8EQ, Int64GetDatum(o->program_id));
		direct_key(&k[1], index, 2, F_TEXTEQ, PointerGetDatum(member_ref));
		found = direct_fetch(heap, index, snap, k, 2, slot);
		if (found)
		{
			tid = slot->tts_tid;
			found = table_tuple_lock(heap, &tid, snap, slot, GetCurrentCommandId(true), LockTupleNoKeyExclusive,
									 LockWaitBlock,
									 TUPLE_LOCK_FLAG_LOCK_UPDATE_IN_PROGRESS |
									 (IsolationUsesXactSnapshot() ? 0 : TUPLE_LOCK_FLAG_FIND_LAST_VERSION),
									 &tmfd) == TM_Ok;
		}
		if (found && tmfd.traversed)
		{
			/* a newer version: the query would check it against the join again */
			found = DatumGetInt64(direct_get(heap, slot, "program_id", &isnull)) == o->program_id &&
				DatumGetBool(DirectFunctionCall2Coll(texteq, index->rd_indcollation[1],
													 direct_get(heap, slot, "member_ref", &isnull),
													 PointerGetDatum(member_ref)));
		}
		if (found)
		{
			o->account_id = DatumGetInt64(direct_get(heap, slot, "account_id", &isnull));
			d = direct_get(heap, slot, "ledger", &isnull);
			o->ledger = isnull ? NULL : (struct varlena *) PG_DETOAST_DATUM_COPY(d);
			d = direct_get(heap, slot, "next_event", &isnull);
			o->due = !isnull;
			o->due_at = isnull ? 0 : DatumGetTimestampTz(d);
		}
		direct_close(heap, index, slot);
	}
	UnregisterSnapshot(snap);
	return found;
}

/* The columns of wallet.purchases that purchase_insert_direct writes: a[i] of P_WRITE's arguments, or below. */
static const char *const purchase_columns[] = {
	"merchant_id", "member_id", "order_ref", "amount", "currency", "occurred_at", "attributes", "program_id",
	"account_id", "points", "entry_id", "rules",
	/* not arguments */
	"purchase_id", "refunded_amount", "refunded_points", "created_at"
};

/*
 * The purchase row of P_WRITE (arguments a, n), written directly as its
 * INSERT ... ON CONFLICT DO NOTHING would: the row inserted speculatively,
 * its entry in the order's unique index first (checked without waiting),
 * then confirmed, or taken back when the order_ref is taken or being taken.
 * The executor's cost for one row (plan, start and end of a statement with
 * its indexes opened) is most of what such an insert costs; the statement's
 * look-up of the key before the insert is left out too, as a retry is rare
 * and the unique entry finds it.  False, having written nothing (the row
 * taken back is dead to all): the order_ref is taken or being taken (a
 * retry, a concurrent call), or the table has what this code does not do (a
 * trigger that fires on insert, a CHECK constraint, an index on an
 * expression, a partial or an exclusion one, a column it does not know):
 * P_WRITE's statement decides, waiting for a concurrent insert as ON
 * CONFLICT does.
 */
static bool
purchase_insert_direct(Datum *a, const char *n, int64 *purchase_id)
{
	Relation	heap,
				uidx;
	TupleDesc	td;
	TupleTableSlot *slot;
	List	   *oids;
	ListCell   *lc;
	Relation   *idx;
	IndexInfo **info;
	IndexInfo  *uinfo = NULL;
	int			nidx = 0,
				i;
	bool		ok = true;
	uint32		token;
	Oid			seq;

	direct_open(D_ORDERS, RowExclusiveLock, &heap, &uidx, NULL);
	td = RelationGetDescr(heap);
	/* no CHECK constraint (none is evaluated here) */
	if (td->constr != NULL && td->constr->num_check > 0)
		ok = false;
	/* only the referral trigger, whose WHEN the fast path knows to be false */
	if (heap->trigdesc != NULL)
		for (i = 0; i < heap->trigdesc->numtriggers; i++)
			if (TRIGGER_FOR_INSERT(heap->trigdesc->triggers[i].tgtype) &&
				strcmp(heap->trigdesc->triggers[i].tgname, "referral_purchase") != 0)
				ok = false;

	/* the row, column by column: every column known */
	slot = MakeSingleTupleTableSlot(td, &TTSOpsVirtual);
	ExecClearTuple(slot);
	for (i = 0; ok && i < td->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(td, i);
		int			c;

		slot->tts_isnull[i] = true;
		slot->tts_values[i] = (Datum) 0;
		if (att->attisdropped)
			continue;
		for (c = 0; c < lengthof(purchase_columns); c++)
			if (strcmp(NameStr(att->attname), purchase_columns[c]) == 0)
				break;
		if (c == lengthof(purchase_columns))
			ok = false;
		else if (c < 12)
		{
			slot->tts_values[i] = a[c];
			slot->tts_isnull[i] = n[c] == 'n';
		}
		else if (c == 13)
		{
			slot->tts_values[i] = NumericGetDatum(int64_to_numeric(0));
			slot->tts_isnull[i] = false;
		}
		else if (c == 14)
		{
			slot->tts_values[i] = Int64GetDatum(0);
			slot->tts_isnull[i] = false;
		}
		else if (c == 15)
		{
			slot->tts_values[i] = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());
			slot->tts_isnull[i] = false;
		}
		/* purchase_id: below, once the row is known to go in */
	}

	/* the indexes, each a plain one on columns */
	oids = ok ? RelationGetIndexList(heap) : NIL;
	idx = palloc(sizeof(Relation) * Max(list_length(oids), 1));
	info = palloc(sizeof(IndexInfo *) * Max(list_length(oids), 1));
	foreach(lc, oids)
	{
		Relation	r = index_open(lfirst_oid(lc), RowExclusiveLock);

		idx[nidx] = r;
		info[nidx] = BuildIndexInfo(r);
		if (RelationGetRelid(r) == RelationGetRelid(uidx))
			uinfo = info[nidx];
		nidx++;
		if (info[nidx - 1]->ii_Expressions != NIL || info[nidx - 1]->ii_Predicate != NIL ||
			info[nidx - 1]->ii_ExclusionOps != NULL)
			ok = false;
	}

	if (ok && uinfo == NULL)
		elog(ERROR, "wallet.purchases_merchant_id_order_ref_key is not an index of wallet.purchases");
	if (ok)
	{
		Datum		v[INDEX_MAX_KEYS];
		bool		vnull[INDEX_MAX_KEYS];
		int			p = -1;

		for (i = 0; i < td->natts; i++)
			if (!TupleDescAttr(td, i)->attisdropped && strcmp(NameStr(TupleDescAttr(td, i)->attname), "purchase_id") == 0)
				p = i;
		seq = get_relname_relid("purchases_purchase_id_seq", RelationGetNamespace(heap));
		if (p < 0 || !OidIsValid(seq))
			elog(ERROR, "wallet.purchases_purchase_id_seq is missing");
		*purchase_id = DatumGetInt64(DirectFunctionCall1(nextval_oid, ObjectIdGetDatum(seq)));
		slot->tts_values[p] = Int64GetDatum(*purchase_id);
		slot->tts_isnull[p] = false;
		ExecStoreVirtualTuple(slot);

		token = SpeculativeInsertionLockAcquire(GetCurrentTransactionId());
		table_tuple_insert_speculative(heap, slot, GetCurrentCommandId(true), 0, NULL, token);
		/* the order's unique key first: a conflict, committed or not, leaves it to the statement */
		FormIndexDatum(uinfo, slot, NULL, v, vnull);
		ok = index_insert(uidx, v, vnull, &slot->tts_tid, heap, UNIQUE_CHECK_PARTIAL, false, uinfo);
		for (i = 0; ok && i < nidx; i++)
		{
			if (RelationGetRelid(idx[i]) == RelationGetRelid(uidx) || !info[i]->ii_ReadyForInserts)
				continue;
			FormIndexDatum(info[i], slot, NULL, v, vnull);
			index_insert(idx[i], v, vnull, &slot->tts_tid, heap,
						 idx[i]->rd_index->indisunique ? UNIQUE_CHECK_YES : UNIQUE_CHECK_NO, false, info[i]);
		}
		table_tuple_complete_speculative(heap, slot, token, ok);
		SpeculativeInsertionLockRelease(GetCurrentTransactionId());
	}
	for (i = 0; i < nidx; i++)
		index_close(idx[i], NoLock);
	ExecDropSingleTupleTableSlot(slot);
	direct_close(heap, uidx, NULL);
	return ok;
}

/* The counter of a capped rule for the member, on day (or in all: total), 0 when none. */
static int64
direct_counter(Relation heap, Relation index, Snapshot snap, TupleTableSlot *slot, int64 rule_id, int64 member_id,
			   bool total, DateADT day)
{
	ScanKeyData k[3];
	bool		isnull;
	int64		v = 0;

	direct_key(&k[0], index, 1, F_INT8EQ, Int64GetDatum(rule_id));
	direct_key(&k[1], index, 2, F_INT8EQ, Int64GetDatum(member_id));
	if (total)
		direct_key_null(&k[2], 3);
	else
		direct_key(&k[2], index, 3, F_DATE_EQ, DateADTGetDatum(day));
	if (direct_fetch(heap, index, snap, k, 3, slot))
	{
		Datum		d = direct_get(heap, slot, "points", &isnull);

		v = isnull ? 0 : DatumGetInt64(d);
	}
	ExecClearTuple(slot);
	return v;
}

/*
 * The member's state for the rules (called under the account's lock, with a
 * snapshot taken now: what the previous holder of the lock committed is
 * seen): the tier (wallet.account_tiers, wallet.tiers: rank 0, no name and
 * multiplier 1 without one), whether this is the member's first purchase in
 * the program (asked only when need_first), and the counters of the capped
 * rules among cand (used_day, used_member; 0 when none) on out->day.  The
 * account_tiers row's rank and below_since go to out (held_*): the tier
 * review after the posting needs them, and sweeps change them only under
 * the account's lock.  Without a member or an account, what they would
 * have: no tier, a first purchase, no counts.
 */
static void
purchase_state_direct(const PurchaseInput *in, PurchaseRule **cand, int ncand, bool need_first, PurchaseEval *out,
					  int32 *tier_rank, char **tier_name, Numeric *tier_mult, bool *first,
					  int64 *used_day, int64 *used_member)
{
	DateADT		day = out->day;
	Snapshot	snap;
	Relation	heap,
				index;
	TupleTableSlot *slot;
	ScanKeyData k[2];
	bool		isnull;
	Datum		d;

	*tier_rank = 0;
	*tier_name = NULL;
	*tier_mult = int64_to_numeric(1);
	*first = need_first;
	CommandCounterIncrement();
	snap = RegisterSnapshot(GetTransactionSnapshot());

	if (in->has_account)
	{
		int64		tier_id = 0;
		bool		has_tier = false;

		direct_open(D_ACCOUNT_TIERS, AccessShareLock, &heap, &index, &slot);
		direct_key(&k[0], index, 1, F_INT8EQ, Int64GetDatum(in->account_id));
		out->held_known = true;
		if (direct_fetch(heap, index, snap, k, 1, slot))
		{
			d = direct_get(heap, slot, "tier_id", &isnull);
			has_tier = !isnull;
			tier_id = isnull ? 0 : DatumGetInt64(d);
			out->held_rank = DatumGetInt32(direct_get(heap, slot, "rank", &isnull));
			(void) direct_get(heap, slot, "below_since", &isnull);
			out->held_below = !isnull;
		}
		direct_close(heap, index, slot);
		if (has_tier)
		{
			direct_open(D_TIERS, AccessShareLock, &heap, &index, &slot);
			direct_key(&k[0], index, 1, F_INT8EQ, Int64GetDatum(tier_id));
			if (direct_fetch(heap, index, snap, k, 1, slot))
			{
				*tier_rank = DatumGetInt32(direct_get(heap, slot, "rank", &isnull));
				*tier_name = TextDatumGetCString(direct_get(heap, slot, "name", &isnull));
				*tier_mult = DatumGetNumericCopy(direct_get(heap, slot, "multiplier", &isnull));
			}
			direct_close(heap, index, slot);
		}
	}

	if (need_first && in->has_member)
	{
		IndexScanDesc scan;
		AttrNumber	att;

		/* the member's purchases (purchases_member_idx), any in the program */
		direct_open(D_PURCHASES, AccessShareLock, &heap, &index, &slot);
		att = direct_att(heap, "program_id");
		direct_key(&k[0], index, 1, F_INT8EQ, Int64GetDatum(in->merchant_id));
		direct_key(&k[1], index, 2, F_INT8EQ, Int64GetDatum(in->member_id));
		scan = index_beginscan(heap, index, snap, 2, 0);
		index_rescan(scan, k, 2, NULL, 0);
		while (*first && index_getnext_slot(scan, ForwardScanDirection, slot))
		{
			d = slot_getattr(slot, att, &isnull);
			if (!isnull && DatumGetInt64(d) == in->program_id)
				*first = false;
		}
		index_endscan(scan);
		direct_close(heap, index, slot);
	}

	if (in->has_member)
	{
		bool		capped = false;

		for (int i = 0; i < ncand; i++)
			capped = capped || cand[i]->cap_day > 0 || cand[i]->cap_member > 0;
		if (capped)
		{
			direct_open(D_COUNTERS, AccessShareLock, &heap, &index, &slot);
			for (int i = 0; i < ncand; i++)
			{
				if (cand[i]->cap_day > 0)
					used_day[i] = direct_counter(heap, index, snap, slot, cand[i]->rule_id, in->member_id, false, day);
				if (cand[i]->cap_member > 0)
					used_member[i] = direct_counter(heap, index, snap, slot, cand[i]->rule_id, in->member_id, true, 0);
			}
			direct_close(heap, index, slot);
		}
	}
	UnregisterSnapshot(snap);
}

/*
 * Under SPI: the points a purchase earns, as wallet_internal.purchase_points
 * documents them (its COMMENT and README "Loyalty"): the rules valid at
 * occurred_at whose conditions hold, highest priority first (ties: lowest
 * rule_id), an exclusive one alone; per_unit rules make the base, the tier
 * multiplier and multiplier rules add base * (factor - 1), fixed rules their
 * points; each rule's points rounded per the program, then capped.  The
 * member's tier, first purchase and cap counters are read directly
 * (purchase_state_direct; the caller holds the account's lock).
 */
static void
purchase_evaluate_pinned(const PurchaseInput *in, PurchaseEval *out)
{
	RuleSet    *rs;
	PurchaseRule **cand;
	int			ncand = 0;
	Timestamp	lt;
	int64		days,
				rem;
	int			dow;
	TimeADT		tod;
	char	   *store,
			   *channel,
			   *pay;
	Datum		cats;
	int32		tier_rank = 0;
	char	   *tier_name = NULL;
	Numeric		tier_mult = NULL;
	bool		first = true;
	int64	   *used_day,
			   *used_member;
	PurchaseRule **fired;
	int			n = 0;
	int64	   *pts;
	char	  **whys;
	int64		base = 0;
	StringInfoData buf;
	bool		firstjson = true;
	int			i,
				pass;

	out->points = 0;
	out->rules = "[]";
	out->ncounters = 0;
	out->counters = NULL;
	out->day = 0;
	out->held_known = false;
	out->held_rank = 0;
	out->held_below = false;
	if (in->program_id == 0)
		return;

	/* local time of the purchase in the member's zone */
	if (TIMESTAMP_NOT_FINITE(in->occurred_at))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("occurred_at must be finite"),
				 errdetail("A purchase is made at a real instant.")));
	lt = DatumGetTimestamp(DirectFunctionCall2(timestamptz_zone,
											   CStringGetTextDatum(in->time_zone ? in->time_zone : "UTC"),
											   TimestampTzGetDatum(in->occurred_at)));
	days = lt / USECS_PER_DAY;
	rem = lt % USECS_PER_DAY;
	if (rem < 0)
	{
		days--;
		rem += USECS_PER_DAY;
	}
	dow = j2day((int) (days + POSTGRES_EPOCH_JDATE));
	if (dow == 0)
		dow = 7;
	tod = rem;
	out->day = (DateADT) days;
	store = attribute_text(in->attributes, "store");
	channel = attribute_text(in->attributes, "channel");
	pay = attribute_text(in->attributes, "payment_method");
	cats = attribute_jsonb(in->attributes, "categories");

	/* the rules whose conditions that need no state hold */
	rs = rule_set_get(in->program_id);
	cand = palloc(sizeof(PurchaseRule *) * Max(rs->n, 1));
	for (i = 0; i < rs->n; i++)
	{
		PurchaseRule *r = &rs->rules[i];

		if (r->valid_from > in->occurred_at || (r->has_until && r->valid_until <= in->occurred_at))
			continue;
		if (r->min_amount != NULL && numeric_greater(r->min_amount, in->amount))
			continue;
		if (textset_excludes(&r->stores, store) || textset_excludes(&r->channels, channel) ||
			textset_excludes(&r->payments, pay))
			continue;
		if (r->categories != (Datum) 0 &&
			(cats == (Datum) 0 || !DatumGetBool(DirectFunctionCall2(jsonb_exists_any, cats, r->categories))))
			continue;
		if (r->has_dow && !(r->dow_mask & (1 << dow)) && !r->dow_null)
			continue;
		if (r->has_time &&
			((r->time_from < r->time_until && !(tod >= r->time_from && tod < r->time_until)) ||
			 (r->time_from > r->time_until && !(tod >= r->time_from || tod < r->time_until))))
			continue;
		cand[ncand++] = r;
	}

	/* the member's state: tier, first purchase, counters of the capped rules */
	used_day = palloc0(sizeof(int64) * Max(ncand, 1));
	used_member = palloc0(sizeof(int64) * Max(ncand, 1));
	{
		bool		need_first = false;

		for (i = 0; i < ncand; i++)
			need_first = need_first || cand[i]->first_purchase;
		purchase_state_direct(in, cand, ncand, need_first, out, &tier_rank, &tier_name, &tier_mult, &first,
							  used_day, used_member);
	}

	/* the conditions on the state, then stacking: an exclusive rule fires alone, and only when no rule of higher priority fired */
	fired = palloc(sizeof(PurchaseRule *) * Max(ncand, 1));
	{
		int64	   *ud = palloc(sizeof(int64) * Max(ncand, 1));
		int64	   *um = palloc(sizeof(int64) * Max(ncand, 1));
		int			k = 0;

		for (i = 0; i < ncand; i++)
		{
			if (cand[i]->has_min_tier && cand[i]->min_tier_rank > tier_rank)
				continue;
			if (cand[i]->first_purchase && !first)
				continue;
			fired[k] = cand[i];
			ud[k] = used_day[i];
			um[k] = used_member[i];
			k++;
		}
		for (i = 0; i < k; i++)
		{
			if (fired[i]->exclusive)
			{
				n = i == 0 ? 1 : i;
				break;
			}
			n = i + 1;
		}
		used_day = ud;
		used_member = um;
	}
	if (n == 0 && !numeric_greater(tier_mult, int64_to_numeric(1)) &&
		!numeric_greater(int64_to_numeric(1), tier_mult))
		return;

	pts = palloc0(sizeof(int64) * Max(n, 1));
	whys = palloc0(sizeof(char *) * Max(n, 1));
	out->counters = palloc(sizeof(CounterBump) * Max(2 * n, 1));
	/* per_unit rules first: the others build on their base */
	for (pass = 1; pass <= 2; pass++)
		for (i = 0; i < n; i++)
		{
			PurchaseRule *r = fired[i];
			Numeric		raw;
			int64		p;
			StringInfoData why;

			if ((pass == 1) != (r->effect == EFFECT_PER_UNIT))
				continue;
			initStringInfo(&why);
			switch (r->effect)
			{
				case EFFECT_PER_UNIT:
					raw = DatumGetNumeric(DirectFunctionCall2(numeric_mul, NumericGetDatum(in->amount),
															  NumericGetDatum(r->value)));
					appendStringInfo(&why, "%s: %s points per %s on %s %s", r->name, numeric_text(r->value),
									 in->currency, numeric_text(in->amount), in->currency);
					break;
				case EFFECT_MULTIPLIER:
					raw = extra_of(base, r->value);
					appendStringInfo(&why, "%s: x%s on " INT64_FORMAT " base points", r->name,
									 numeric_text(r->value), base);
					break;
				default:
					raw = r->value;
					appendStringInfo(&why, "%s: %s bonus points", r->name, numeric_text(r->value));
					break;
			}
			p = points_of(round_points(raw, in->rounding));
			if (r->cap_purchase > 0 && p > r->cap_purchase)
			{
				p = r->cap_purchase;
				appendStringInfo(&why, ", capped at " INT64_FORMAT " per purchase", r->cap_purchase);
			}
			if (r->cap_day > 0 && p > 0 && p > r->cap_day - used_day[i])
			{
				p = Max(r->cap_day - used_day[i], 0);
				appendStringInfo(&why, ", capped at " INT64_FORMAT " per day (%s)", r->cap_day,
								 DatumGetCString(DirectFunctionCall1(date_out, DateADTGetDatum(out->day))));
			}
			if (r->cap_member > 0 && p > 0 && p > r->cap_member - used_member[i])
			{
				p = Max(r->cap_member - used_member[i], 0);
				appendStringInfo(&why, ", capped at " INT64_FORMAT " per member", r->cap_member);
			}
			if (pass == 1 && pg_add_s64_overflow(base, p, &base))
				points_out_of_range();
			pts[i] = p;
			whys[i] = why.data;
			if (p > 0 && r->cap_day > 0)
				out->counters[out->ncounters++] = (CounterBump) {r->rule_id, false, p};
			if (p > 0 && r->cap_member > 0)
				out->counters[out->ncounters++] = (CounterBump) {r->rule_id, true, p};
		}
	initStringInfo(&buf);
	appendStringInfoChar(&buf, '[');
	for (i = 0; i < n; i++)
	{
		append_rule(&buf, &firstjson, true, fired[i]->rule_id, pts[i], whys[i]);
		if (pg_add_s64_overflow(out->points, pts[i], &out->points))
			points_out_of_range();
	}
	/* the tier's multiplier, on the base like a multiplier rule */
	if ((numeric_greater(tier_mult, int64_to_numeric(1)) || numeric_greater(int64_to_numeric(1), tier_mult)) &&
		base > 0)
	{
		int64		p = points_of(round_points(extra_of(base, tier_mult), in->rounding));
		char	   *why = psprintf("tier %s: x%s on " INT64_FORMAT " base points", tier_name ? tier_name : "",
								   numeric_text(tier_mult), base);

		append_rule(&buf, &firstjson, false, 0, p, why);
		if (pg_add_s64_overflow(out->points, p, &out->points))
			points_out_of_range();
	}
	appendStringInfoChar(&buf, ']');
	out->rules = buf.data;
}

/* purchase_evaluate_pinned, with the compiled rules kept alive until it returns */
static void
purchase_evaluate(const PurchaseInput *in, PurchaseEval *out)
{
	rule_cache_ready();			/* frees retired rules: no evaluation is running */
	eval_depth++;
	PG_TRY();
	{
		purchase_evaluate_pinned(in, out);
	}
	PG_FINALLY();
	{
		eval_depth--;
	}
	PG_END_TRY();
}

/* The counter increments as jsonb [{rule_id, day, points}] (day null: the member's total). */
static char *
counters_json(const PurchaseEval *ev)
{
	StringInfoData buf;
	char		day[MAXDATELEN + 1];

	JsonEncodeDateTime(day, DateADTGetDatum(ev->day), DATEOID, NULL);
	initStringInfo(&buf);
	appendStringInfoChar(&buf, '[');
	for (int i = 0; i < ev->ncounters; i++)
	{
		if (i > 0)
			appendStringInfoString(&buf, ", ");
		appendStringInfo(&buf, "{\"rule_id\": " INT64_FORMAT ", \"day\": ", ev->counters[i].rule_id);
		if (ev->counters[i].total)
			appendStringInfoString(&buf, "null");
		else
			escape_json(&buf, day);
		appendStringInfo(&buf, ", \"points\": " INT64_FORMAT "}", ev->counters[i].points);
	}
	appendStringInfoChar(&buf, ']');
	return buf.data;
}

#define ARG_OR(i, get, dflt) (PG_ARGISNULL(i) ? (dflt) : get(i))

PG_FUNCTION_INFO_V1(purchase_points);

/*
 * wallet_internal.purchase_points(merchant_id, program_id, rounding,
 * member_id, account_id, time_zone, amount, currency, occurred_at,
 * attributes) -> (points, rules, counters): the evaluator above for
 * wallet.preview_purchase and wallet_internal.record_purchase_full.
 */
Datum
purchase_points(PG_FUNCTION_ARGS)
{
	TupleDesc	desc;
	PurchaseInput in;
	PurchaseEval ev;
	MemoryContext outer = CurrentMemoryContext;
	Datum		values[3];
	bool		nulls[3] = {false, false, false};

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "purchase_points must return a record");
	memset(&in, 0, sizeof(in));
	in.program_id = ARG_OR(1, PG_GETARG_INT64, 0);
	if (in.program_id == 0)
	{
		values[0] = Int64GetDatum(0);
		values[1] = DirectFunctionCall1(jsonb_in, CStringGetDatum("[]"));
		values[2] = values[1];
		PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
	}
	if (PG_ARGISNULL(0) || PG_ARGISNULL(2) || PG_ARGISNULL(6) || PG_ARGISNULL(7) || PG_ARGISNULL(8) || PG_ARGISNULL(9))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("purchase_points needs the merchant, rounding, amount, currency, instant and attributes"),
				 errdetail("Only the member, its account and its time zone may be unknown (NULL).")));
	in.merchant_id = PG_GETARG_INT64(0);
	in.rounding = text_to_cstring(PG_GETARG_TEXT_PP(2));
	in.has_member = !PG_ARGISNULL(3);
	in.member_id = ARG_OR(3, PG_GETARG_INT64, 0);
	in.has_account = !PG_ARGISNULL(4);
	in.account_id = ARG_OR(4, PG_GETARG_INT64, 0);
	in.time_zone = PG_ARGISNULL(5) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(5));
	in.amount = PG_GETARG_NUMERIC(6);
	in.currency = text_to_cstring(PG_GETARG_TEXT_PP(7));
	in.occurred_at = PG_GETARG_TIMESTAMPTZ(8);
	in.attributes = PG_GETARG_JSONB_P(9);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	purchase_plans_check();
	purchase_evaluate(&in, &ev);
	MemoryContextSwitchTo(outer);
	values[0] = Int64GetDatum(ev.points);
	values[1] = DirectFunctionCall1(jsonb_in, CStringGetDatum(ev.rules));
	values[2] = DirectFunctionCall1(jsonb_in, CStringGetDatum(counters_json(&ev)));
	SPI_finish();
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}

/* ---------------------------------------------------------------- record_purchase */

/* wallet.policy_expiry(at, expiry, granularity) of a program (22023 past the range of timestamps) */
static TimestampTz
program_expiry(TimestampTz at, Interval *expiry, const char *granularity)
{
	if (expiry == NULL)
		return DT_NOEND;
	return wallet_policy_expiry(at, expiry, strcmp(granularity, "month") == 0);
}

/* btrim(s) = '' for text: only spaces */
static bool
text_blank(text *t)
{
	const char *p = VARDATA_ANY(t);
	int			len = VARSIZE_ANY_EXHDR(t);

	for (int i = 0; i < len; i++)
		if (p[i] != ' ')
			return false;
	return true;
}

static int
text_chars(text *t)
{
	return pg_mbstrlen_with_len(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
}

/*
 * What wallet_internal.purchase_check accepts, tested without raising: any
 * doubt sends the call to the full path, which raises the exact error.
 */
static bool
purchase_args_usual(FunctionCallInfo fcinfo)
{
	text	   *member_ref,
			   *order_ref,
			   *currency;
	Numeric		amount;
	Jsonb	   *attrs;
	const char *c;
	static const char *const strings[] = {"store", "channel", "payment_method"};

	for (int i = 0; i <= 6; i++)
		if (PG_ARGISNULL(i))
			return false;
	if (!PG_ARGISNULL(7) || !PG_ARGISNULL(8) || !PG_ARGISNULL(9))
		return false;			/* offers and codes: issue 11's full path */
	if (!wallet_acts_for_merchant(PG_GETARG_INT64(0)))
		return false;
	/*
	 * A referral program's trigger on wallet.purchases may post to the same
	 * account: its order relative to the purchase's posting is the full
	 * path's (the purchase, the trigger, then the posting).
	 */
	if (wallet_merchant_refers(PG_GETARG_INT64(0)))
		return false;
	member_ref = PG_GETARG_TEXT_PP(1);
	if (text_blank(member_ref) || text_chars(member_ref) > 256 ||
		(VARSIZE_ANY_EXHDR(member_ref) >= 10 && memcmp(VARDATA_ANY(member_ref), "forgotten:", 10) == 0))
		return false;
	order_ref = PG_GETARG_TEXT_PP(2);
	if (text_blank(order_ref) || text_chars(order_ref) > 200)
		return false;
	amount = PG_GETARG_NUMERIC(3);
	if (numeric_is_nan(amount) || !numeric_greater(amount, int64_to_numeric(0)) ||
		numeric_greater(amount, int64_to_numeric(INT64CONST(1000000000000000))))
		return false;
	currency = PG_GETARG_TEXT_PP(4);
	c = VARDATA_ANY(currency);
	if (VARSIZE_ANY_EXHDR(currency) != 3 || c[0] < 'A' || c[0] > 'Z' || c[1] < 'A' || c[1] > 'Z' ||
		c[2] < 'A' || c[2] > 'Z')
		return false;
	/*
	 * purchase_check refuses an occurred_at over 100 years (by the calendar)
	 * from now(): usual within 36,000 days, the full path decides the rest
	 */
	if (TIMESTAMP_NOT_FINITE(PG_GETARG_TIMESTAMPTZ(5)) ||
		PG_GETARG_TIMESTAMPTZ(5) < GetCurrentTransactionStartTimestamp() - INT64CONST(36000) * USECS_PER_DAY ||
		PG_GETARG_TIMESTAMPTZ(5) > GetCurrentTransactionStartTimestamp() + INT64CONST(36000) * USECS_PER_DAY)
		return false;
	attrs = PG_GETARG_JSONB_P(6);
	if (!JB_ROOT_IS_OBJECT(attrs))
		return false;
	for (int i = 0; i < lengthof(strings); i++)
	{
		JsonbValue	v;

		if (getKeyJsonValueFromContainer(&attrs->root, strings[i], strlen(strings[i]), &v) != NULL &&
			v.type != jbvString)
			return false;
	}
	{
		JsonbValue	v;

		if (getKeyJsonValueFromContainer(&attrs->root, "categories", strlen("categories"), &v) != NULL)
		{
			JsonbIterator *it;
			JsonbValue	e;
			JsonbIteratorToken tok;

			if (v.type != jbvBinary || !JsonContainerIsArray(v.val.binary.data) ||
				JsonContainerIsScalar(v.val.binary.data))
				return false;
			it = JsonbIteratorInit(v.val.binary.data);
			while ((tok = JsonbIteratorNext(&it, &e, true)) != WJB_DONE)
				if (tok == WJB_ELEM && e.type != jbvString)
					return false;
		}
	}
	return true;
}

/*
 * The accrual on the ledger, computed before the purchase is inserted (one
 * statement writes both).  The full path computes it after the insert, so
 * that a retry returns the first result even where the accrual would fail
 * (a ledger at its size limit, points out of range): such a failure, from
 * pure computation that holds no resource, is caught here and the call left
 * to the full path, which gives the retry's result or raises the same error.
 */
static bool
accrue_or_defer(struct varlena *ledger, TimestampTz at, int64 points, Interval *expiry, const char *granularity,
				TimestampTz *expires_at, WalletLedgerStep *s)
{
	MemoryContext cxt = CurrentMemoryContext;
	volatile bool ok = true;

	PG_TRY();
	{
		*expires_at = program_expiry(at, expiry, granularity);
		wallet_ledger_accrue(ledger, at, points, *expires_at, s);
	}
	PG_CATCH();
	{
		ErrorData  *e;

		MemoryContextSwitchTo(cxt);
		e = CopyErrorData();
		if (e->sqlerrcode != ERRCODE_WL_AMOUNT_OUT_OF_RANGE && e->sqlerrcode != ERRCODE_PROGRAM_LIMIT_EXCEEDED &&
			e->sqlerrcode != ERRCODE_INVALID_PARAMETER_VALUE && e->sqlerrcode != ERRCODE_DATETIME_VALUE_OUT_OF_RANGE)
			PG_RE_THROW();
		FlushErrorState();
		FreeErrorData(e);
		ok = false;
	}
	PG_END_TRY();
	return ok;
}

/*
 * Under SPI, after purchase_args_usual: the fast path.  Returns false (having
 * written nothing but, maybe, the settlement of the account the full path
 * would make too) when the member, its account or the program is missing, or
 * the accrual must be left to the full path; else fills *result (allocated
 * in outer).
 */
static bool
record_purchase_fast(FunctionCallInfo fcinfo, TupleDesc desc, MemoryContext outer, Datum *result)
{
	int64		merchant_id = PG_GETARG_INT64(0);
	text	   *member_ref = PG_GETARG_TEXT_PP(1);
	text	   *order_ref = PG_GETARG_TEXT_PP(2);
	Numeric		amount = PG_GETARG_NUMERIC(3);
	text	   *currency = PG_GETARG_TEXT_PP(4);
	TimestampTz occurred_at = PG_GETARG_TIMESTAMPTZ(5);
	Jsonb	   *attrs = PG_GETARG_JSONB_P(6);
	Datum		a[23];
	char		n[23];
	bool		isnull;
	PurchaseInput in;
	PurchaseEval ev;
	PurchaseLocked lk;
	struct varlena *ledger;
	bool		due;
	TimestampTz due_at,
				at;
	Interval   *expiry;
	char	   *granularity;
	Datum		rules;
	int64		purchase_id,
				entry_id = 0;
	struct varlena *posted_ledger = NULL;

	memset(n, ' ', sizeof(n));
	if (!purchase_lock_direct(merchant_id, member_ref, currency, &lk))
		return false;
	memset(&in, 0, sizeof(in));
	in.merchant_id = merchant_id;
	in.has_member = true;
	in.member_id = lk.member_id;
	in.time_zone = lk.time_zone;
	in.program_id = lk.program_id;
	in.rounding = lk.rounding;
	in.has_account = true;
	in.account_id = lk.account_id;
	ledger = lk.ledger;
	due_at = lk.due_at;
	due = lk.due;
	expiry = lk.expiry;
	granularity = lk.granularity;
	in.amount = amount;
	in.currency = text_to_cstring(currency);
	in.occurred_at = occurred_at;
	in.attributes = attrs;

	/* the posting's instant: the clock right after the lock, as lock_account */
	at = GetCurrentTimestamp();
	if (due && due_at <= at)
	{
		a[0] = Int64GetDatum(in.account_id);
		a[1] = TimestampTzGetDatum(at);
		purchase_run(P_SETTLE, a, n, false);
		purchase_run(P_LEDGER, a, n, false);
		ledger = (struct varlena *) DatumGetPointer(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		ledger = isnull ? NULL : (struct varlena *) PG_DETOAST_DATUM_COPY(PointerGetDatum(ledger));
	}

	/* the member's tier and first purchase are read after the lock */
	purchase_evaluate(&in, &ev);
	rules = DirectFunctionCall1(jsonb_in, CStringGetDatum(ev.rules));

	memset(n, ' ', sizeof(n));
	if (ev.points > 0)
	{
		/* the ledger's own accrual (ledger_ops.c) on the locked ledger */
		WalletLedgerStep s;
		TimestampTz expires_at = 0;
		Oid			seq = get_relname_relid("entries_entry_id_seq", get_namespace_oid("wallet", false));

		if (!accrue_or_defer(ledger, at, ev.points, expiry, granularity, &expires_at, &s))
			return false;
		entry_id = DatumGetInt64(DirectFunctionCall1(nextval_oid, ObjectIdGetDatum(seq)));
		a[16] = PointerGetDatum(s.ledger);
		a[17] = TimestampTzGetDatum(s.next_event);
		n[17] = s.next_event_null ? 'n' : ' ';
		a[18] = Int64GetDatum(s.amount);
		a[19] = Int64GetDatum(s.balance_after);
		a[20] = s.lots;
		a[21] = TimestampTzGetDatum(at);
		a[22] = TimestampTzGetDatum(expires_at);
		posted_ledger = s.ledger;
	}
	else
		for (int i = 16; i < 23; i++)
		{
			a[i] = (Datum) 0;
			n[i] = 'n';
		}
	{
		Datum	   *r = palloc(sizeof(Datum) * Max(ev.ncounters, 1));
		Datum	   *t = palloc(sizeof(Datum) * Max(ev.ncounters, 1));
		Datum	   *p = palloc(sizeof(Datum) * Max(ev.ncounters, 1));

		for (int i = 0; i < ev.ncounters; i++)
		{
			r[i] = Int64GetDatum(ev.counters[i].rule_id);
			t[i] = BoolGetDatum(ev.counters[i].total);
			p[i] = Int64GetDatum(ev.counters[i].points);
		}
		a[12] = DateADTGetDatum(ev.day);
		a[13] = PointerGetDatum(construct_array(r, ev.ncounters, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
		a[14] = PointerGetDatum(construct_array(t, ev.ncounters, BOOLOID, 1, true, TYPALIGN_CHAR));
		a[15] = PointerGetDatum(construct_array(p, ev.ncounters, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	}
	a[0] = Int64GetDatum(merchant_id);
	a[1] = Int64GetDatum(in.member_id);
	a[2] = PointerGetDatum(order_ref);
	a[3] = NumericGetDatum(amount);
	a[4] = PointerGetDatum(currency);
	a[5] = TimestampTzGetDatum(occurred_at);
	a[6] = JsonbPGetDatum(attrs);
	a[7] = Int64GetDatum(in.program_id);
	a[8] = Int64GetDatum(in.account_id);
	a[9] = Int64GetDatum(ev.points);
	a[10] = Int64GetDatum(entry_id);
	n[10] = ev.points > 0 ? ' ' : 'n';
	a[11] = rules;
	if (purchase_insert_direct(a, n, &purchase_id))
	{
		/* the rest of P_WRITE, when there is anything to write */
		if (ev.ncounters > 0)
			purchase_run(P_REST, a, n, false);
		else if (ev.points > 0)
			purchase_run(P_POST, a, n, false);
	}
	else if (purchase_run(P_WRITE, a, n, false) == 0)
	{
		memset(n, ' ', sizeof(n));
		a[0] = Int64GetDatum(merchant_id);
		a[1] = PointerGetDatum(order_ref);
		a[2] = PointerGetDatum(member_ref);
		a[3] = NumericGetDatum(amount);
		a[4] = PointerGetDatum(currency);
		if (purchase_run(P_RETRY, a, n, false) != 1)
			elog(ERROR, "the purchase that conflicted with order_ref is missing");
		*result = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		if (isnull)
			elog(ERROR, "wallet_internal.purchase_retry returned NULL");
		*result = SPI_datumTransfer(*result, false, -1);
		return true;
	}
	else
		purchase_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));

	/* tiers (README "Tiers"): the posting that crosses a threshold upgrades */
	if (ev.points > 0 &&
		(ev.held_known ? wallet_tier_posting_review_held(in.program_id, ev.held_rank, ev.held_below, posted_ledger, at)
		 : wallet_tier_posting_review(in.program_id, in.account_id, posted_ledger, at)))
	{
		memset(n, ' ', sizeof(n));
		a[0] = Int64GetDatum(in.account_id);
		a[1] = TimestampTzGetDatum(at);
		a[2] = Int64GetDatum(entry_id);
		purchase_run(P_TIER_REVIEW, a, n, false);
	}

	{
		MemoryContext old = MemoryContextSwitchTo(outer);
		Datum		v[11];
		bool		nl[11] = {false};

		v[0] = Int64GetDatum(purchase_id);
		v[1] = PointerGetDatum(order_ref);
		v[2] = Int64GetDatum(in.member_id);
		v[3] = Int64GetDatum(in.program_id);
		v[4] = Int64GetDatum(in.account_id);
		v[5] = NumericGetDatum(amount);
		v[6] = PointerGetDatum(currency);
		v[7] = TimestampTzGetDatum(occurred_at);
		v[8] = Int64GetDatum(ev.points);
		v[9] = Int64GetDatum(entry_id);
		nl[9] = ev.points == 0;
		v[10] = datumCopy(rules, false, -1);
		*result = HeapTupleGetDatum(heap_form_tuple(desc, v, nl));
		MemoryContextSwitchTo(old);
	}
	return true;
}

PG_FUNCTION_INFO_V1(record_purchase);

/*
 * wallet.record_purchase(merchant_id, member_ref, order_ref, amount,
 * currency, occurred_at, attributes, offers, codes, quote_id): the fast path
 * above, else wallet_internal.record_purchase_full.
 */
Datum
record_purchase(PG_FUNCTION_ARGS)
{
	TupleDesc	desc;
	MemoryContext outer = CurrentMemoryContext;
	Datum		result = (Datum) 0;
	bool		done = false;

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "record_purchase must return wallet.purchase_result");
	desc = BlessTupleDesc(desc);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	purchase_plans_check();
	if (purchase_args_usual(fcinfo))
		done = record_purchase_fast(fcinfo, desc, outer, &result);
	if (!done)
	{
		Datum		a[10];
		char		n[10];
		bool		isnull;

		for (int i = 0; i < 10; i++)
		{
			a[i] = PG_ARGISNULL(i) ? (Datum) 0 : PG_GETARG_DATUM(i);
			n[i] = PG_ARGISNULL(i) ? 'n' : ' ';
		}
		if (purchase_run(P_FULL, a, n, false) != 1)
			elog(ERROR, "wallet_internal.record_purchase_full returned no row");
		result = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		if (isnull)
			elog(ERROR, "wallet_internal.record_purchase_full returned NULL");
		result = SPI_datumTransfer(result, false, -1);
	}
	SPI_finish();
	PG_RETURN_DATUM(result);
}
