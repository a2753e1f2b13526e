/*
 * ledger_ops.c: every change of a wallet.points_ledger, in one pure function
 * wallet.ledger_apply(), so that the SQL operations and verify_ledger's
 * journal replay run exactly the same code.
 */
#include "wallet.h"

#include "points_ledger.h"

#include "catalog/pg_type.h"
#include "common/int.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

static void
out_of_range(const char *what)
{
	ereport(ERROR,
			(errcode(ERRCODE_WL_AMOUNT_OUT_OF_RANGE),
			 errmsg("points out of range"),
			 errdetail("The %s would exceed %lld points.", what, (long long) PG_INT64_MAX)));
}

static void
add_total(int64 *total, int64 points, const char *what)
{
	if (pg_add_s64_overflow(*total, points, total))
		out_of_range(what);
}

/* Lifetime totals shrink on reversal; a consistent journal never takes them below 0. */
static void
sub_total(int64 *total, int64 points)
{
	*total = *total > points ? *total - points : 0;
}

static void
lots_compact(LotList *ll)
{
	int			i,
				k = 0;

	for (i = 0; i < ll->n; i++)
		if (ll->lots[i].points > 0)
			ll->lots[k++] = ll->lots[i];
	ll->n = k;
}

static int64
lots_sum(const LotList *ll, TimestampTz at, bool all)
{
	int64		sum = 0;
	int			i;

	for (i = 0; i < ll->n; i++)
		if (all || wallet_lot_alive(&ll->lots[i], at))
			add_total(&sum, ll->lots[i].points, "balance");
	return sum;
}

/*
 * Take `points` from the lots alive at `at` (all lots when `all`), soonest
 * expiry first, into `taken`.  The caller has checked there are enough.
 */
static void
take_fifo(LotList *from, TimestampTz at, bool all, int64 points, LotList *taken)
{
	int			i;

	for (i = 0; i < from->n && points > 0; i++)
	{
		LedgerLot  *lot = &from->lots[i];
		int64		t;

		CHECK_FOR_INTERRUPTS();
		if (!all && !wallet_lot_alive(lot, at))
			continue;
		t = Min(lot->points, points);
		lot->points -= t;
		points -= t;
		wallet_lots_add(taken, t, lot->expires_at, ERRCODE_WL_AMOUNT_OUT_OF_RANGE);
	}
	lots_compact(from);
}

/* NULL points are a missing argument (22004), not a bad amount (WL204). */
static void
require_given(bool isnull, const char *what)
{
	if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("points must not be null"),
				 errdetail("The points to %s must be given.", what)));
}

static void
require_positive(int64 points, bool isnull, const char *what)
{
	require_given(isnull, what);
	if (points <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_WL_INVALID_AMOUNT),
				 errmsg("invalid amount of points"),
				 errdetail("The points to %s must be a positive number.", what)));
}

static void
spend(Ledger *l, TimestampTz at, int64 points, LotList *taken)
{
	/* a debt is owed before anything can be spent (credits pay it off first, so normally it is 0 here) */
	int64		avail = lots_sum(&l->lots, at, false) - l->debt;

	if (avail < points)
		ereport(ERROR,
				(errcode(ERRCODE_WL_INSUFFICIENT_POINTS),
				 errmsg("insufficient points"),
				 errdetail("The account has " INT64_FORMAT " spendable points and needs " INT64_FORMAT ".",
						   avail, points)));
	take_fifo(&l->lots, at, false, points, taken);
}

/* Credit points as a lot; an outstanding debt is paid off first. */
static void
credit(Ledger *l, int64 points, TimestampTz expires_at, LotList *added)
{
	int64		paid = Min(l->debt, points);

	l->debt -= paid;
	points -= paid;
	if (points > 0)
	{
		wallet_lots_add(&l->lots, points, expires_at, ERRCODE_WL_AMOUNT_OUT_OF_RANGE);
		if (added)
			wallet_lots_add(added, points, expires_at, ERRCODE_WL_AMOUNT_OUT_OF_RANGE);
	}
}

/*
 * Lots coming back from a hold or a reversed redemption: those still alive
 * at `at` become spendable (paying off a debt first), those whose expiry
 * passed meanwhile count as expired at once, so that an entry's amount is
 * always the change of the spendable balance.  Returns the points that
 * became spendable.
 */
static int64
give_back(Ledger *l, const LotList *lots, TimestampTz at)
{
	LotList		back = {0, 0, NULL};
	int64		alive = 0;
	int			i;

	/* lots are in expiry order, so the debt is paid from the soonest-expiring ones, as credit() would */
	for (i = 0; i < lots->n; i++)
	{
		const LedgerLot *lot = &lots->lots[i];

		CHECK_FOR_INTERRUPTS();
		if (wallet_lot_alive(lot, at))
		{
			int64		paid = Min(l->debt, lot->points);

			l->debt -= paid;
			if (lot->points > paid)
				wallet_lots_add(&back, lot->points - paid, lot->expires_at, ERRCODE_WL_AMOUNT_OUT_OF_RANGE);
			add_total(&alive, lot->points, "balance");
		}
		else
			add_total(&l->expired, lot->points, "lifetime expired total");
	}
	/* one merge, not one insertion per lot: linear in the lots of both */
	wallet_lots_merge(&l->lots, &back, ERRCODE_WL_AMOUNT_OUT_OF_RANGE);
	return alive;
}

static void
add_earned_month(Ledger *l, TimestampTz at, int64 points)
{
	int			m = wallet_ledger_month_of(at);
	int			d;

	if (l->last_month == LEDGER_NO_MONTH)
	{
		memset(l->months, 0, sizeof(l->months));
		l->last_month = m;
	}
	else if (m > l->last_month)
	{
		d = m - l->last_month;
		if (d >= LEDGER_MONTHS)
			memset(l->months, 0, sizeof(l->months));
		else
		{
			memmove(&l->months[d], &l->months[0], (LEDGER_MONTHS - d) * sizeof(int64));
			memset(&l->months[0], 0, d * sizeof(int64));
		}
		l->last_month = m;
	}
	d = l->last_month - m;
	if (d < LEDGER_MONTHS)		/* older than the kept window: totals only */
		add_total(&l->months[d], points, "monthly earned total");
}

/* Points taken back from an accrual earned at `earned_at` leave its month's bucket too. */
static void
sub_earned_month(Ledger *l, TimestampTz earned_at, int64 points)
{
	int			d;

	if (l->last_month == LEDGER_NO_MONTH)
		return;
	d = l->last_month - wallet_ledger_month_of(earned_at);
	if (d >= 0 && d < LEDGER_MONTHS)
		sub_total(&l->months[d], points);
}

/*
 * A reversal takes what it took back off the lifetime earned total and off
 * its accrual's monthly bucket, while that month is kept.  The accrual added
 * its points to both, so the kept months never add up to more than the
 * lifetime total (wallet_ledger_validate checks it); a reversal that would break
 * that, or take the total below zero, reverses no accrual of this ledger
 * (e.g. the month of the accrual is missing) and is refused.
 */
static void
take_back_earned(Ledger *l, int64 taken, bool no_month, TimestampTz earned_at)
{
	int64		msum = 0;
	int			i;

	if (taken > l->earned)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("reversal exceeds the points earned"),
				 errdetail("The ledger has earned " INT64_FORMAT " points in all, fewer than the " INT64_FORMAT " to take back.",
						   l->earned, taken)));
	l->earned -= taken;
	if (!no_month)
		sub_earned_month(l, earned_at, taken);
	for (i = 0; i < LEDGER_MONTHS; i++)
		if (pg_add_s64_overflow(msum, l->months[i], &msum))
			msum = PG_INT64_MAX;
	if (msum > l->earned)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("reversal exceeds the points earned"),
				 errdetail("Taking back " INT64_FORMAT " points would leave a lifetime earned total of " INT64_FORMAT
						   ", less than the " INT64_FORMAT " earned in the months kept: the accrual's month (earned_at) must be given.",
						   taken, l->earned, msum)));
}

/*
 * Canonical form of the monthly buckets: the newest kept month is non-zero
 * (or there are none), so that equal states have equal bytes.
 */
static void
normalize_months(Ledger *l)
{
	int			shift = 0;

	if (l->last_month == LEDGER_NO_MONTH)
		return;
	while (shift < LEDGER_MONTHS && l->months[shift] == 0)
		shift++;
	if (shift == LEDGER_MONTHS)
	{
		l->last_month = LEDGER_NO_MONTH;
		return;
	}
	if (shift > 0)
	{
		memmove(&l->months[0], &l->months[shift], (LEDGER_MONTHS - shift) * sizeof(int64));
		memset(&l->months[LEDGER_MONTHS - shift], 0, shift * sizeof(int64));
		l->last_month -= shift;
	}
}

static int
find_hold(Ledger *l, int64 hold_id)
{
	int			i;

	for (i = 0; i < l->nholds; i++)
		if (l->holds[i].hold_id == hold_id)
			return i;
	ereport(ERROR,
			(errcode(ERRCODE_WL_UNKNOWN_HOLD),
			 errmsg("unknown hold"),
			 errdetail("Hold " INT64_FORMAT " is not open on this account.", hold_id)));
	return -1;					/* keep compiler quiet */
}

static void
remove_hold(Ledger *l, int i)
{
	memmove(&l->holds[i], &l->holds[i + 1], (l->nholds - i - 1) * sizeof(LedgerHold));
	l->nholds--;
}

/* Instant of the next change that needs a journal entry: a lot expiry or a hold lapse. */
static TimestampTz
next_event(const Ledger *l, bool *isnull)
{
	TimestampTz t = DT_NOEND;
	int			i;

	/* spendable lots are sorted, so the first one expires soonest */
	if (l->lots.n > 0)
		t = l->lots.lots[0].expires_at;
	for (i = 0; i < l->nholds; i++)
		t = Min(t, l->holds[i].expires_at);
	*isnull = (t == DT_NOEND);
	return t;
}

/*
 * One change of a ledger: its arguments, read once by ledger_apply, and
 * what the handler of its kind did.
 */
typedef struct LedgerChange
{
	TimestampTz at;
	int64		points;			/* 0 when NULL */
	bool		points_null;
	TimestampTz ts;				/* DT_NOEND when NULL */
	int64		hold_id;		/* 0 when NULL */
	int			hold;			/* index of the open hold hold_id names (needs_hold) */
	ArrayType  *lot_points;		/* needs_lots */
	ArrayType  *lot_expiries;
	bool		unlimited;		/* uses_policy: 'unlimited' rather than 'within_balance' */
	bool		earned_at_null;
	TimestampTz earned_at;
	LotList		touched;		/* the lots the change moved */
	int64		amount;			/* the change of the spendable balance */
} LedgerChange;

/* What a kind requires of the points argument, checked before its handler runs. */
typedef enum PointsRule
{
	POINTS_UNUSED = 0,			/* ignored (the default) */
	POINTS_POSITIVE,			/* given and > 0 (WL204) */
	POINTS_NONZERO,				/* given and != 0, signed (WL204) */
	POINTS_OPTIONAL				/* NULL has a meaning; the handler checks a given value */
} PointsRule;

typedef struct LedgerKind
{
	const char *name;
	void		(*apply) (Ledger *l, LedgerChange *c);
	PointsRule	points;
	const char *verb;			/* of POINTS_POSITIVE's error detail */
	bool		needs_hold;		/* hold_id names an open hold (WL206) */
	bool		needs_lots;		/* lot_points and lot_expiries are given (22004) */
	bool		uses_policy;	/* policy is NULL, 'within_balance' or 'unlimited' */
} LedgerKind;

/* Credit points as a new lot; an accrual also counts as earned in its month. */
static void
post_credit(Ledger *l, LedgerChange *c, bool accrual)
{
	if (c->ts != DT_NOEND && c->ts <= c->at)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("expiry must be later than the accrual"),
				 errdetail("Points accrued at an instant must expire after it.")));
	credit(l, c->points, c->ts, &c->touched);
	if (accrual)
	{
		add_total(&l->earned, c->points, "lifetime earned total");
		add_earned_month(l, c->at, c->points);
	}
	c->amount = c->points;
}

/* accrue: points > 0, ts = the lot's expiry; a debt is paid first. */
static void
apply_accrue(Ledger *l, LedgerChange *c)
{
	post_credit(l, c, true);
}

/* redeem: points > 0, spent soonest expiry first. */
static void
apply_redeem(Ledger *l, LedgerChange *c)
{
	spend(l, c->at, c->points, &c->touched);
	add_total(&l->redeemed, c->points, "lifetime redeemed total");
	c->amount = -c->points;
}

/* adjust: points signed, non-zero; ts = the lot's expiry when points > 0. */
static void
apply_adjust(Ledger *l, LedgerChange *c)
{
	if (c->points > 0)
	{
		post_credit(l, c, false);
		return;
	}
	if (c->points == PG_INT64_MIN)
		out_of_range("adjustment");
	spend(l, c->at, -c->points, &c->touched);
	c->amount = c->points;
}

/* hold: points > 0, ts = the hold's expiry, hold_id = the hold entry's id. */
static void
apply_hold(Ledger *l, LedgerChange *c)
{
	LedgerHold *h;
	int			i;

	if (c->hold_id <= 0 || TIMESTAMP_NOT_FINITE(c->ts) || c->ts <= c->at)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a hold needs an id and a finite expiry after its start"),
				 errdetail("The hold's time to live must be positive.")));
	for (i = 0; i < l->nholds; i++)
		if (l->holds[i].hold_id == c->hold_id)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("hold " INT64_FORMAT " already exists", c->hold_id),
					 errdetail("Every hold has its own id.")));
	spend(l, c->at, c->points, &c->touched);
	/* keep holds sorted by id: new ids are normally the largest */
	l->holds = l->holds ? repalloc(l->holds, (l->nholds + 1) * sizeof(LedgerHold))
		: palloc(sizeof(LedgerHold));
	for (i = l->nholds; i > 0 && l->holds[i - 1].hold_id > c->hold_id; i--)
		l->holds[i] = l->holds[i - 1];
	h = &l->holds[i];
	h->hold_id = c->hold_id;
	h->expires_at = c->ts;
	h->lots = c->touched;
	l->nholds++;
	l->maxholds = l->nholds;
	c->amount = -c->points;
}

/* Close hold c->hold: what it still holds goes back. */
static void
settle_hold(Ledger *l, LedgerChange *c)
{
	c->amount = give_back(l, &l->holds[c->hold].lots, c->at);
	remove_hold(l, c->hold);
}

/* capture: hold_id; points NULL = all the hold holds; the rest goes back. */
static void
apply_capture(Ledger *l, LedgerChange *c)
{
	LedgerHold *h = &l->holds[c->hold];
	int64		held = lots_sum(&h->lots, c->at, true);
	int64		points = c->points_null ? held : c->points;

	if (c->at >= h->expires_at)
		ereport(ERROR,
				(errcode(ERRCODE_WL_HOLD_EXPIRED),
				 errmsg("hold expired"),
				 errdetail("Hold " INT64_FORMAT " stopped holding its points when its time to live ran out.", c->hold_id)));
	require_positive(points, false, "capture");
	if (points > held)
		ereport(ERROR,
				(errcode(ERRCODE_WL_CAPTURE_EXCEEDS_HOLD),
				 errmsg("capture exceeds hold"),
				 errdetail("Hold " INT64_FORMAT " holds " INT64_FORMAT " points, " INT64_FORMAT " cannot be captured.",
						   c->hold_id, held, points)));
	/* held points are captured whatever their own lots' expiry: the hold guaranteed them */
	take_fifo(&h->lots, c->at, true, points, &c->touched);
	add_total(&l->redeemed, points, "lifetime redeemed total");
	settle_hold(l, c);
}

/* release: hold_id; everything the hold holds goes back. */
static void
apply_release(Ledger *l, LedgerChange *c)
{
	c->touched = l->holds[c->hold].lots;
	settle_hold(l, c);
}

/* expire: the lots dead at `at` leave the balance. */
static void
apply_expire(Ledger *l, LedgerChange *c)
{
	int			i;

	for (i = 0; i < l->lots.n; i++)
	{
		LedgerLot  *lot = &l->lots.lots[i];

		CHECK_FOR_INTERRUPTS();
		if (wallet_lot_alive(lot, c->at))
			continue;
		wallet_lots_add(&c->touched, lot->points, lot->expires_at, ERRCODE_WL_AMOUNT_OUT_OF_RANGE);
		add_total(&l->expired, lot->points, "lifetime expired total");
		c->amount -= lot->points;
		lot->points = 0;
	}
	lots_compact(&l->lots);
}

/*
 * reverse_accrual: points = the accrued points, ts = the accrual's lot
 * expiry, policy, earned_at = the accrual's month (its bucket).
 */
static void
apply_reverse_accrual(Ledger *l, LedgerChange *c)
{
	int64		want = c->points;
	int			i;

	/* what is unspent of the accrual: its own lot (same expiry), while alive */
	for (i = 0; i < l->lots.n; i++)
	{
		LedgerLot  *lot = &l->lots.lots[i];

		if (lot->expires_at == c->ts && wallet_lot_alive(lot, c->at))
		{
			int64		t = Min(lot->points, want);

			lot->points -= t;
			want -= t;
			wallet_lots_add(&c->touched, t, lot->expires_at, ERRCODE_WL_AMOUNT_OUT_OF_RANGE);
		}
	}
	lots_compact(&l->lots);
	if (c->unlimited && want > 0)
	{
		/* the spent part: from the other lots, then as debt */
		int64		avail = lots_sum(&l->lots, c->at, false);
		int64		t = Min(avail, want);

		take_fifo(&l->lots, c->at, false, t, &c->touched);
		add_total(&l->debt, want - t, "debt");
		c->amount = -c->points;
	}
	else
		c->amount = -(c->points - want);
	take_back_earned(l, -c->amount, c->earned_at_null, c->earned_at);
}

/* restore: lot_points/lot_expiries = the lots a redemption consumed come back. */
static void
apply_restore(Ledger *l, LedgerChange *c)
{
	Datum	   *pv,
			   *ev;
	bool	   *pn,
			   *en;
	int			np,
				nexp,
				i;

	deconstruct_array(c->lot_points, INT8OID, 8, true, TYPALIGN_DOUBLE, &pv, &pn, &np);
	deconstruct_array(c->lot_expiries, TIMESTAMPTZOID, 8, true, TYPALIGN_DOUBLE, &ev, &en, &nexp);
	if (np != nexp)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("lot arrays differ in length"),
				 errdetail("Every restored lot needs one points value and one expiry.")));
	/* a journal entry lists at most the lots of one ledger */
	if (np > LEDGER_MAX_LOTS)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("too many lots to restore"),
				 errdetail("A points ledger holds at most %d lots; %d were given.", LEDGER_MAX_LOTS, np)));
	for (i = 0; i < np; i++)
	{
		int64		p = pn[i] ? 0 : DatumGetInt64(pv[i]);
		TimestampTz e = en[i] ? DT_NOEND : DatumGetTimestampTz(ev[i]);

		CHECK_FOR_INTERRUPTS();
		require_positive(p, pn[i], "restore");
		if (e == DT_NOBEGIN)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("a restored lot cannot expire at -infinity"),
					 errdetail("Restored lots keep the expiry they had, which is a finite instant or none.")));
		wallet_lots_append_raw(&c->touched, p, e);
	}
	wallet_lots_sort_merge(&c->touched, ERRCODE_WL_AMOUNT_OUT_OF_RANGE);
	sub_total(&l->redeemed, lots_sum(&c->touched, c->at, true));
	c->amount = give_back(l, &c->touched, c->at);
}

/* The kinds of change: what each requires of its arguments, and its handler. */
static const LedgerKind ledger_kinds[] = {
	{.name = "accrue", .apply = apply_accrue, .points = POINTS_POSITIVE, .verb = "accrue"},
	{.name = "redeem", .apply = apply_redeem, .points = POINTS_POSITIVE, .verb = "redeem"},
	{.name = "adjust", .apply = apply_adjust, .points = POINTS_NONZERO},
	{.name = "hold", .apply = apply_hold, .points = POINTS_POSITIVE, .verb = "hold"},
	{.name = "capture", .apply = apply_capture, .points = POINTS_OPTIONAL, .needs_hold = true},
	{.name = "release", .apply = apply_release, .needs_hold = true},
	{.name = "expire", .apply = apply_expire},
	{.name = "reverse_accrual", .apply = apply_reverse_accrual, .points = POINTS_POSITIVE, .verb = "reverse",
	.uses_policy = true},
	{.name = "restore", .apply = apply_restore, .needs_lots = true},
};

static const LedgerKind *
find_kind(const char *name)
{
	int			i;

	for (i = 0; i < lengthof(ledger_kinds); i++)
		if (strcmp(ledger_kinds[i].name, name) == 0)
			return &ledger_kinds[i];
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unknown ledger change \"%s\"", name),
			 errdetail("The kind is one of accrue, redeem, adjust, hold, capture, release, expire, reverse_accrual, restore.")));
	return NULL;				/* keep compiler quiet */
}

#define ARG_NULL(n) PG_ARGISNULL(n)

/*
 * The argument requirements of kind k, in the order the checks have always
 * run: the lots to restore, the reversal policy, the hold, then the points.
 */
static void
check_arguments(FunctionCallInfo fcinfo, const LedgerKind *k, Ledger *l, LedgerChange *c)
{
	if (k->needs_lots)
	{
		if (ARG_NULL(6) || ARG_NULL(7))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("lots to restore are required"),
					 errdetail("Restoring a redemption needs the points and expiry of every lot it consumed.")));
		c->lot_points = PG_GETARG_ARRAYTYPE_P(6);
		c->lot_expiries = PG_GETARG_ARRAYTYPE_P(7);
		/* deconstruct_array would flatten a 2-D array */
		if (ARR_NDIM(c->lot_points) > 1 || ARR_NDIM(c->lot_expiries) > 1)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("lot_points and lot_expiries must be one-dimensional arrays"),
					 errdetail("The arrays list the restored lots, their points and their expiries, one after the other.")));
	}
	if (k->uses_policy)
	{
		char	   *policy = ARG_NULL(8) ? "within_balance" : text_to_cstring(PG_GETARG_TEXT_PP(8));

		c->unlimited = strcmp(policy, "unlimited") == 0;
		if (!c->unlimited && strcmp(policy, "within_balance") != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("unknown reversal policy \"%s\"", policy),
					 errdetail("The policy is 'within_balance' or 'unlimited'.")));
	}
	if (k->needs_hold)
		c->hold = find_hold(l, c->hold_id);
	switch (k->points)
	{
		case POINTS_POSITIVE:
			require_positive(c->points, c->points_null, k->verb);
			break;
		case POINTS_NONZERO:
			require_given(c->points_null, "adjust");
			if (c->points == 0)
				ereport(ERROR,
						(errcode(ERRCODE_WL_INVALID_AMOUNT),
						 errmsg("invalid amount of points"),
						 errdetail("An adjustment must add or remove a non-zero number of points.")));
			break;
		case POINTS_UNUSED:
		case POINTS_OPTIONAL:
			break;
	}
}

/*
 * After the handler ran: check the result's bounds and invariants and fill
 * *out with what wallet.ledger_step returns.
 */
static void
finish_change(Ledger *l, LedgerChange *c, int lots_before, int holds_before, WalletLedgerStep *out)
{
	StringInfoData json;
	bool		first = true;

	wallet_ledger_check_total(l, ERRCODE_WL_AMOUNT_OUT_OF_RANGE);
	normalize_months(l);
	/* a value only grows past a bound by a posting; one already past it may shrink */
	if ((wallet_ledger_lot_count(l) > LEDGER_MAX_LOTS && wallet_ledger_lot_count(l) > lots_before) ||
		(l->nholds > LEDGER_MAX_HOLDS && l->nholds > holds_before))
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("points ledger too large"),
				 errdetail("A points ledger holds at most %d lots (spendable and held together) and %d open holds; this change would make it %d lots and %d holds.",
						   LEDGER_MAX_LOTS, LEDGER_MAX_HOLDS, wallet_ledger_lot_count(l), l->nholds),
				 errhint("Expire or redeem points of the account, or settle its holds, first.")));
	/* what is stored must be readable back: the invariants of text and binary input hold */
	wallet_ledger_validate(l, ERRCODE_DATA_CORRUPTED);

	initStringInfo(&json);
	appendStringInfoChar(&json, '[');
	wallet_lots_append_json(&json, &c->touched, &first);
	appendStringInfoChar(&json, ']');

	out->ledger = wallet_ledger_encode(l);
	out->amount = c->amount;
	/*
	 * Balance after: open holds count as held even if lapsed, so that every
	 * entry's balance_after is the previous one plus its amount (a lapsed
	 * hold is journalled by its own release entry).
	 */
	out->balance_after = lots_sum(&l->lots, c->at, false) - l->debt;
	out->lots = DirectFunctionCall1(jsonb_in, CStringGetDatum(json.data));
	out->next_event = next_event(l, &out->next_event_null);
}

static void
check_instant(TimestampTz at)
{
	if (TIMESTAMP_NOT_FINITE(at))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("ledger changes need a finite instant"),
				 errdetail("A change of a points ledger happens at a finite point in time.")));
}

/*
 * wallet.ledger_apply(l, kind, at, points, ts, hold_id, lot_points,
 *                     lot_expiries, policy, earned_at) -> wallet.ledger_step
 *
 * Decodes l, applies the change `kind` (ledger_kinds above: each kind's
 * handler says what it does with the arguments), checks the result's bounds
 * and invariants and returns it with what the change did.
 */
PG_FUNCTION_INFO_V1(ledger_apply);
Datum
ledger_apply(PG_FUNCTION_ARGS)
{
	Ledger	   *l;
	const LedgerKind *kind;
	LedgerChange c;
	WalletLedgerStep step;
	TupleDesc	desc;
	Datum		values[5];
	bool		nulls[5] = {false, false, false, false, false};
	int			lots_before,
				holds_before;

	if (ARG_NULL(1) || ARG_NULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("kind and instant of a ledger change are required"),
				 errdetail("wallet.ledger_apply needs a kind and the instant the change happens at.")));
	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "ledger_apply must return wallet.ledger_step");
	if (ARG_NULL(0))
	{
		l = palloc(sizeof(Ledger));
		wallet_ledger_init(l);
	}
	else
		l = wallet_ledger_decode(PG_GETARG_POINTS_LEDGER_P(0));
	lots_before = wallet_ledger_lot_count(l);
	holds_before = l->nholds;

	memset(&c, 0, sizeof(c));
	c.at = PG_GETARG_TIMESTAMPTZ(2);
	c.points_null = ARG_NULL(3);
	c.points = c.points_null ? 0 : PG_GETARG_INT64(3);
	c.ts = ARG_NULL(4) ? DT_NOEND : PG_GETARG_TIMESTAMPTZ(4);
	c.hold_id = ARG_NULL(5) ? 0 : PG_GETARG_INT64(5);
	c.earned_at_null = ARG_NULL(9);
	c.earned_at = c.earned_at_null ? 0 : PG_GETARG_TIMESTAMPTZ(9);
	check_instant(c.at);

	kind = find_kind(text_to_cstring(PG_GETARG_TEXT_PP(1)));
	check_arguments(fcinfo, kind, l, &c);
	kind->apply(l, &c);
	finish_change(l, &c, lots_before, holds_before, &step);

	values[0] = PointerGetDatum(step.ledger);
	values[1] = Int64GetDatum(step.amount);
	values[2] = Int64GetDatum(step.balance_after);
	values[3] = step.lots;
	values[4] = TimestampTzGetDatum(step.next_event);
	nulls[4] = step.next_event_null;
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}

/*
 * The accrue change of wallet.ledger_apply for C callers (record_purchase's
 * fast path, src/purchase.c): the same handler and checks, without a call
 * through SQL.  v NULL: an empty ledger.
 */
void
wallet_ledger_accrue(struct varlena *v, TimestampTz at, int64 points, TimestampTz expires_at, WalletLedgerStep *out)
{
	Ledger	   *l;
	LedgerChange c;
	int			lots_before,
				holds_before;

	if (v == NULL)
	{
		l = palloc(sizeof(Ledger));
		wallet_ledger_init(l);
	}
	else
		l = wallet_ledger_decode(v);
	lots_before = wallet_ledger_lot_count(l);
	holds_before = l->nholds;
	memset(&c, 0, sizeof(c));
	c.at = at;
	c.points = points;
	c.ts = expires_at;
	c.earned_at_null = true;
	check_instant(at);
	require_positive(points, false, "accrue");
	apply_accrue(l, &c);
	finish_change(l, &c, lots_before, holds_before, out);
}

/*
 * The prefixes of the keys the extension journals its own postings under
 * (a purchase's accrual, a refund, an offer's cashback, referral and share
 * rewards); an app's posting under one would take the key of an order,
 * refund or reward still to come.  In C: every posting call checks it, and a
 * PL/pgSQL helper with a pinned search_path would cost each a GUC push.
 */
static const char *const app_key_reserved[] = {"purchase:", "refund:", "offer:", "referral:", "share:"};

PG_FUNCTION_INFO_V1(check_app_key);
/* wallet_internal.check_app_key(idempotency_key): 22023 for a reserved prefix; NULL passes */
Datum
check_app_key(PG_FUNCTION_ARGS)
{
	text	   *key;
	const char *p;
	int			len;

	if (PG_ARGISNULL(0))
		PG_RETURN_VOID();
	key = PG_GETARG_TEXT_PP(0);
	p = VARDATA_ANY(key);
	len = VARSIZE_ANY_EXHDR(key);
	for (int i = 0; i < (int) lengthof(app_key_reserved); i++)
	{
		int			n = strlen(app_key_reserved[i]);

		if (len >= n && memcmp(p, app_key_reserved[i], n) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("idempotency key must not start with \"%s\"", app_key_reserved[i]),
					 errdetail("Keys starting with purchase:, refund:, offer:, referral: or share: name the extension's own postings (purchases, refunds, offers' cashback, referral and share rewards).")));
	}
	PG_RETURN_VOID();
}
