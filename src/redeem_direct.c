/*
 * redeem_direct.c: wallet.redeem_code's common case under READ COMMITTED by
 * direct index probes and heap inserts, without SPI (issue 11).
 *
 * Why: by kept SPI plans (redeem.c) a redemption ran five statements, and
 * their executor start-up, plan revalidation and snapshots, not the rows
 * written, were most of its cost.  Here the reads are index probes under one
 * snapshot and the writes are a heap insert plus its index entries, exactly
 * what the statements did:
 *
 *   - the order of locks is the SPI path's: idempotency key (taken by the
 *     caller), ROW EXCLUSIVE on code_redemptions and code_reservations, then
 *     the counter row of the one cap set;
 *   - the counter row must be fresh (inserted by this call, born counting,
 *     as the SPI path's INSERT ... ON CONFLICT DO NOTHING does, by the same
 *     speculative insertion); when it exists, or more than one counter is
 *     involved (per-code and per-member caps together, a total cap), nothing
 *     is written here and the SPI path decides;
 *   - one snapshot, taken after the table locks, serves every read: when the
 *     counter row is fresh, no reservation counted under it can have
 *     committed after the snapshot (its maker would have created or locked
 *     that row first, and our insert would have met it);
 *   - a table whose shape is not the one known here (an added column, check
 *     constraint or trigger) is left to the SPI path, which honours it.
 */
#include "wallet.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/dependency.h"
#include "catalog/namespace.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_constraint.h"
#include "catalog/pg_type.h"
#include "commands/sequence.h"
#include "executor/executor.h"
#include "nodes/makefuncs.h"
#include "storage/lmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "direct.h"
#include "guard.h"
#include "redeem.h"

/*
 * Active, unexpired reservations of a code (by_member false) or of a member
 * in a campaign, under snap: what the SPI path's count over the partial
 * indexes code_reservations_active_code_idx / _member_idx returns.
 */
static int64
direct_reservations(Relation res, int64 campaign_id, Datum code_or_member, bool by_member,
					TimestampTz now, Snapshot snap)
{
	ScanKeyData keys[3];
	AttrNumber	a_state = direct_attnum(res, "state");
	AttrNumber	a_expires = direct_attnum(res, "expires_at");
	Oid			indexoid = get_relname_relid(by_member ? "code_reservations_active_member_idx"
											 : "code_reservations_active_code_idx",
											 RelationGetNamespace(res));
	SysScanDesc scan;
	HeapTuple	t;
	int64		n = 0;

	if (!OidIsValid(indexoid) || a_state == InvalidAttrNumber || a_expires == InvalidAttrNumber)
		elog(ERROR, "wallet.code_reservations is not as created by the extension");
	direct_key(&keys[0], direct_attnum(res, "campaign_id"), F_INT8EQ, Int64GetDatum(campaign_id));
	if (by_member)
		direct_key(&keys[1], direct_attnum(res, "member_ref"), F_TEXTEQ, code_or_member);
	else
		direct_key(&keys[1], direct_attnum(res, "serial"), F_INT8EQ, code_or_member);
	ScanKeyEntryInitialize(&keys[2], 0, a_expires, BTGreaterStrategyNumber, InvalidOid,
						   InvalidOid, F_TIMESTAMPTZ_GT, TimestampTzGetDatum(now));
	scan = systable_beginscan(res, indexoid, true, snap, 3, keys);
	while ((t = systable_getnext(scan)) != NULL)
	{
		bool		isnull;
		Datum		state = heap_getattr(t, a_state, RelationGetDescr(res), &isnull);

		/* the index holds only active rows; the row itself says so too */
		if (!isnull && strcmp(TextDatumGetCString(state), "active") == 0)
			n++;
	}
	systable_endscan(scan);
	return n;
}

/* The counter tables' columns (wallet.code_use_counts, wallet.member_use_counts). */
static const char *const code_counter_cols[] = {"campaign_id", "serial", "redeemed", "merchant_id"};
static const char *const member_counter_cols[] = {"campaign_id", "member_ref", "redeemed", "merchant_id"};
static const char *const redemption_cols[] = {"redemption_id", "campaign_id", "serial", "code", "member_ref",
	"idempotency_key", "context", "reservation_id", "redeemed_at", "undone_at", "undo_reason", "merchant_id"};

/* Source of the guard: left(context ->> 'source', 256), or NULL. */
static Datum
direct_source(Jsonb *ctx, bool *isnull)
{
	LOCAL_FCINFO(fc, 2);
	Datum		v;

	InitFunctionCallInfoData(*fc, NULL, 2, InvalidOid, NULL, NULL);
	fc->args[0].value = JsonbPGetDatum(ctx);
	fc->args[0].isnull = false;
	fc->args[1].value = CStringGetTextDatum("source");
	fc->args[1].isnull = false;
	v = jsonb_object_field_text(fc);
	*isnull = fc->isnull;
	if (*isnull)
		return (Datum) 0;
	return DirectFunctionCall2(text_left, v, Int32GetDatum(256));
}

RedeemDirect
wallet_redeem_direct(const RedeemRequest *q, RedeemResult *r)
{
	Oid			nsp = get_namespace_oid("wallet", false);
	Relation	red,
				res,
				camp,
				bind,
				guard;
	Relation	counter = NULL;
	Snapshot	snap;
	ScanKeyData keys[2];
	HeapTuple	t;
	RedeemDirect answer = REDEEM_DIRECT_NO;
	bool		isnull;
	TimestampTz now;
	Datum		starts;
	Datum		ends;
	bool		ends_null;
	bool		capnull[3];
	int64		caps[3] = {0, 0, 0};
	Datum		thresholds[3];
	bool		thresholds_null[3];
	bool		found;
	int			which;			/* the counter: 0 code, 1 member, -1 none */

	r->campaign_id = q->campaign_id;
	r->serial = q->serial;

	/* ROW EXCLUSIVE first (wallet_internal.code_lock_counters' order), then one snapshot */
	red = table_open(get_relname_relid("code_redemptions", nsp), RowExclusiveLock);
	res = table_open(get_relname_relid("code_reservations", nsp), RowExclusiveLock);
	camp = table_open(get_relname_relid("campaigns", nsp), AccessShareLock);
	bind = table_open(get_relname_relid("code_bindings", nsp), AccessShareLock);
	guard = table_open(get_relname_relid("code_guard_settings", nsp), AccessShareLock);
	snap = RegisterSnapshot(GetLatestSnapshot());

	/* a replay, or the key of a reservation: the full path answers */
	direct_key(&keys[0], direct_attnum(red, "idempotency_key"), F_TEXTEQ, PointerGetDatum(q->key));
	direct_key(&keys[1], direct_attnum(red, "merchant_id"), F_INT8EQ, Int64GetDatum(q->merchant_id));
	if ((t = direct_fetch(red, "code_redemptions_idempotency_key_idx", 2, keys, snap)) != NULL)
		goto out;
	direct_key(&keys[0], direct_attnum(res, "idempotency_key"), F_TEXTEQ, PointerGetDatum(q->key));
	direct_key(&keys[1], direct_attnum(res, "merchant_id"), F_INT8EQ, Int64GetDatum(q->merchant_id));
	if ((t = direct_fetch(res, "code_reservations_idempotency_key_idx", 2, keys, snap)) != NULL)
		goto out;

	/* the campaign: window and caps, read after the table locks */
	direct_key(&keys[0], direct_attnum(camp, "campaign_id"), F_INT8EQ, Int64GetDatum(q->campaign_id));
	if ((t = direct_fetch(camp, "campaigns_pkey", 1, keys, snap)) == NULL)
		goto out;
	starts = heap_getattr(t, direct_attnum(camp, "starts_at"), RelationGetDescr(camp), &isnull);
	ends = heap_getattr(t, direct_attnum(camp, "ends_at"), RelationGetDescr(camp), &ends_null);
	{
		static const char *const capcols[3] = {"max_redemptions_per_code", "max_redemptions_per_member",
		"max_redemptions_total"};

		for (int i = 0; i < 3; i++)
		{
			Datum		d = heap_getattr(t, direct_attnum(camp, capcols[i]), RelationGetDescr(camp), &capnull[i]);

			if (!capnull[i])
				caps[i] = i < 2 ? (int64) DatumGetInt32(d) : DatumGetInt64(d);
		}
	}

	/* the guard's thresholds: the merchant's row, else the global one, else the defaults */
	direct_key(&keys[0], direct_attnum(guard, "merchant_id"), F_INT8EQ, Int64GetDatum(q->merchant_id));
	t = direct_fetch(guard, "code_guard_settings_merchant_id_key", 1, keys, snap);
	if (t == NULL)
	{
		ScanKeyEntryInitialize(&keys[0], SK_ISNULL | SK_SEARCHNULL, direct_attnum(guard, "merchant_id"),
							   InvalidStrategy, InvalidOid, InvalidOid, InvalidOid, (Datum) 0);
		t = direct_fetch(guard, "code_guard_settings_merchant_id_key", 1, keys, snap);
	}
	found = t != NULL;
	if (found)
	{
		static const char *const gcols[3] = {"max_failures_per_member", "max_failures_per_source", "failure_window"};

		for (int i = 0; i < 3; i++)
			thresholds[i] = heap_getattr(t, direct_attnum(guard, gcols[i]), RelationGetDescr(guard), &thresholds_null[i]);
	}
	else
	{
		Interval   *quarter = palloc0(sizeof(Interval));

		quarter->time = 15 * 60 * USECS_PER_SEC;
		thresholds[0] = Int32GetDatum(10);
		thresholds[1] = Int32GetDatum(30);
		thresholds[2] = IntervalPGetDatum(quarter);
		thresholds_null[0] = thresholds_null[1] = thresholds_null[2] = false;
	}
	{
		/* a genuine code counts nothing, so the SPI path asking again is harmless */
		LOCAL_FCINFO(g, 7);

		InitFunctionCallInfoData(*g, NULL, 7, InvalidOid, NULL, NULL);
		g->args[0].value = Int64GetDatum(q->merchant_id);
		g->args[0].isnull = false;
		g->args[1].value = PointerGetDatum(q->member);
		g->args[1].isnull = false;
		g->args[2].value = direct_source(q->ctx, &g->args[2].isnull);
		g->args[3].value = BoolGetDatum(false);
		g->args[3].isnull = false;
		for (int i = 0; i < 3; i++)
		{
			g->args[4 + i].value = thresholds[i];
			g->args[4 + i].isnull = thresholds_null[i];
		}
		if (DatumGetBool(code_guard_attempt(g)))
			goto out;
	}
	now = GetCurrentTimestamp();
	if (now < DatumGetTimestampTz(starts) || (!ends_null && now >= DatumGetTimestampTz(ends)))
		goto out;

	/* bound to a member: only that one (another is refused by the full path) */
	direct_key(&keys[0], direct_attnum(bind, "campaign_id"), F_INT8EQ, Int64GetDatum(q->campaign_id));
	direct_key(&keys[1], direct_attnum(bind, "serial"), F_INT8EQ, Int64GetDatum(q->serial));
	if ((t = direct_fetch(bind, "code_bindings_pkey", 2, keys, snap)) != NULL)
	{
		Datum		bound = heap_getattr(t, direct_attnum(bind, "member_ref"), RelationGetDescr(bind), &isnull);

		if (isnull || !DatumGetBool(DirectFunctionCall2Coll(texteq, DEFAULT_COLLATION_OID, bound,
															  PointerGetDatum(q->member))))
			goto out;
	}

	/* at most one counter, fresh: anything else is the SPI path's */
	if (!capnull[2] || (!capnull[0] && !capnull[1]))
		goto out;
	which = !capnull[0] ? 0 : !capnull[1] ? 1 : -1;
	if (!direct_insertable(red, redemption_cols, lengthof(redemption_cols),
						   (const char *const[]) {"code_redemptions_check"}, 1, "reservation_id",
						   (const char *const[]) {"undone_at", "undo_reason"}, 2))
		goto out;
	if (which >= 0)
	{
		Datum	   *values;
		bool	   *nulls;
		static const char *const counter_check[2] = {"code_use_counts_redeemed_check",
		"member_use_counts_redeemed_check"};

		counter = table_open(get_relname_relid(which == 0 ? "code_use_counts" : "member_use_counts", nsp),
							 RowExclusiveLock);
		if (!direct_insertable(counter, which == 0 ? code_counter_cols : member_counter_cols, 4,
							   &counter_check[which], 1, NULL, NULL, 0))
			goto out;
		values = palloc0(RelationGetDescr(counter)->natts * sizeof(Datum));
		nulls = palloc(RelationGetDescr(counter)->natts * sizeof(bool));
		memset(nulls, true, RelationGetDescr(counter)->natts * sizeof(bool));
		direct_set(counter, values, nulls, "campaign_id", Int64GetDatum(q->campaign_id));
		if (which == 0)
			direct_set(counter, values, nulls, "serial", Int64GetDatum(q->serial));
		else
			direct_set(counter, values, nulls, "member_ref", PointerGetDatum(q->member));
		direct_set(counter, values, nulls, "redeemed", Int32GetDatum(1));
		direct_set(counter, values, nulls, "merchant_id", Int64GetDatum(q->merchant_id));
		if (!direct_insert(counter, values, nulls, true))
			goto out;			/* the row exists: the SPI path locks it */

		/* wallet_internal.code_caps_status: active reservations count too */
		now = GetCurrentTimestamp();
		if (direct_reservations(res, q->campaign_id,
								which == 0 ? Int64GetDatum(q->serial) : PointerGetDatum(q->member),
								which == 1, now, snap) >= caps[which])
		{
			r->status = which == 0 ? "exhausted" : "member_limit_reached";
			answer = which == 0 ? REDEEM_DIRECT_REFUSED_CODE : REDEEM_DIRECT_REFUSED_MEMBER;
			CommandCounterIncrement();
			goto out;
		}
	}

	/* the redemption */
	{
		TupleDesc	td = RelationGetDescr(red);
		Datum	   *values = palloc0(td->natts * sizeof(Datum));
		bool	   *nulls = palloc(td->natts * sizeof(bool));
		MarketingCode *code = palloc(sizeof(MarketingCode));
		AttrNumber	a_id = direct_attnum(red, "redemption_id");
		static Oid	seq_of = InvalidOid;
		static Oid	seq = InvalidOid;

		/* the identity's sequence, looked up again if the table or it changed */
		if (seq_of != RelationGetRelid(red) || get_rel_relkind(seq) != RELKIND_SEQUENCE)
		{
			seq = getIdentitySequence(RelationGetRelid(red), a_id, false);
			seq_of = RelationGetRelid(red);
		}
		memset(nulls, true, td->natts * sizeof(bool));
		wallet_code_pack(&q->f, code);
		r->redemption_id = nextval_internal(seq, false);
		r->redeemed_at = GetCurrentTimestamp();
		direct_set(red, values, nulls, "redemption_id", Int64GetDatum(r->redemption_id));
		direct_set(red, values, nulls, "campaign_id", Int64GetDatum(q->campaign_id));
		direct_set(red, values, nulls, "serial", Int64GetDatum(q->serial));
		direct_set(red, values, nulls, "code", MarketingCodePGetDatum(code));
		direct_set(red, values, nulls, "member_ref", PointerGetDatum(q->member));
		direct_set(red, values, nulls, "idempotency_key", PointerGetDatum(q->key));
		direct_set(red, values, nulls, "context", JsonbPGetDatum(q->ctx));
		direct_set(red, values, nulls, "redeemed_at", TimestampTzGetDatum(r->redeemed_at));
		direct_set(red, values, nulls, "merchant_id", Int64GetDatum(q->merchant_id));
		(void) direct_insert(red, values, nulls, false);
	}
	/* as after each SPI statement: the rest of the transaction sees the rows */
	CommandCounterIncrement();
	r->status = "ok";
	answer = REDEEM_DIRECT_DONE;

out:
	UnregisterSnapshot(snap);
	if (counter != NULL)
		table_close(counter, NoLock);
	table_close(guard, NoLock);
	table_close(bind, NoLock);
	table_close(camp, NoLock);
	table_close(res, NoLock);
	table_close(red, NoLock);
	return answer;
}
