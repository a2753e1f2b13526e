/*
 * points_ledger.h: the wallet.points_ledger type (one account's whole state)
 * and the pure functions that read and change it.
 *
 * On disk the value is a varlena: a format-version byte, then a stream of
 * varints (timestamps delta-encoded in whole days or seconds where exact), so
 * that two years of daily activity fit in a few hundred bytes.  In memory it
 * is the expanded Ledger below; every function decodes, works, re-encodes.
 *
 * Time convention: a lot is spendable at instant t iff t < expires_at
 * (expires_at is exclusive); DT_NOEND means "never expires".  A hold keeps
 * its lots inside the value; once t >= the hold's expiry its lots count as
 * spendable again (the hold has lapsed), with no cleanup job needed.
 */
#ifndef POINTS_LEDGER_H
#define POINTS_LEDGER_H

#include "wallet.h"

#include "datatype/timestamp.h"
#include "fmgr.h"
#include "lib/stringinfo.h"

#define LEDGER_FORMAT_VERSION	1
#define LEDGER_MONTHS			24	/* monthly earned buckets kept */
#define LEDGER_NO_MONTH			PG_INT32_MIN

/*
 * Bounds of one value, so that no single call can run long: every function
 * decodes, works on and re-encodes the whole value, in time linear in its
 * lots (n log n on input), and the call that touches every lot (a hold or
 * expiry of all of them, which also lists them all as jsonb) costs about
 * 0.7 us per lot: at 2,000 lots about 1.4 ms, an ordinary posting ~0.05 ms.
 * A real account has one lot per distinct expiry: one per UTC day under a
 * day-granularity policy, one per month under month granularity, one in all
 * for points that never expire; 2,000 lots are 5.5 years of daily accruals
 * under a 5.5-year day-granularity policy.  Holds last minutes: an account
 * has a few open at once, not hundreds.
 */
#define LEDGER_MAX_LOTS			2000	/* lots in a value, spendable and held together */
#define LEDGER_MAX_HOLDS		1000	/* open holds in a value */

/* Months (since 2000-01) of the first and last valid timestamp: 4714-11 BC, 294276-12 */
#define LEDGER_MIN_MONTH		((-4713 - 2000) * 12 + 10)
#define LEDGER_MAX_MONTH		((294276 - 2000) * 12 + 11)

typedef struct LedgerLot
{
	int64		points;			/* > 0 */
	TimestampTz expires_at;		/* exclusive; DT_NOEND = never */
} LedgerLot;

typedef struct LotList
{
	int			n;
	int			max;
	LedgerLot  *lots;			/* sorted by expires_at, never-expiring last */
} LotList;

typedef struct LedgerHold
{
	int64		hold_id;		/* the hold's journal entry id */
	TimestampTz expires_at;		/* the hold stops holding at this instant */
	LotList		lots;			/* the lots taken out of the spendable ones */
} LedgerHold;

typedef struct Ledger
{
	int64		debt;			/* >= 0; balance = spendable - debt */
	int64		earned;			/* lifetime totals */
	int64		redeemed;
	int64		expired;
	int32		last_month;		/* month (since 2000-01, UTC) of months[0], or LEDGER_NO_MONTH */
	int64		months[LEDGER_MONTHS];	/* months[i]: earned in last_month - i */
	LotList		lots;			/* spendable lots */
	int			nholds;
	int			maxholds;
	LedgerHold *holds;			/* sorted by hold_id */
} Ledger;

/* Detoasting argument fetch: the value is small but may be compressed. */
#define DatumGetPointsLedgerP(X)	((struct varlena *) PG_DETOAST_DATUM(X))
#define PG_GETARG_POINTS_LEDGER_P(n)	DatumGetPointsLedgerP(PG_GETARG_DATUM(n))

extern Ledger *wallet_ledger_decode(struct varlena *v);
extern void wallet_ledger_decode_months(struct varlena *v, Ledger *l);
extern struct varlena *wallet_ledger_encode(const Ledger *l);
extern void wallet_ledger_init(Ledger *l);

extern bool wallet_lot_alive(const LedgerLot *lot, TimestampTz t);
extern int	wallet_ledger_month_of(TimestampTz t);
extern TimestampTz wallet_ledger_month_start(int month);

extern void wallet_lots_add(LotList *ll, int64 points, TimestampTz expires_at, int errcode_on_overflow);
extern void wallet_lots_append_raw(LotList *ll, int64 points, TimestampTz expires_at);
extern void wallet_lots_sort_merge(LotList *ll, int errcode_on_overflow);
extern void wallet_lots_merge(LotList *into, const LotList *from, int errcode_on_overflow);
extern int	wallet_ledger_lot_count(const Ledger *l);
extern void wallet_ledger_validate(const Ledger *l, int errcode);
extern void wallet_lots_append_json(StringInfo buf, const LotList *ll, bool *first);
extern void wallet_ledger_check_total(const Ledger *l, int errcode_on_overflow);

/* What one change of a ledger did (wallet.ledger_step, ledger_ops.c). */
typedef struct WalletLedgerStep
{
	struct varlena *ledger;		/* the new value */
	int64		amount;			/* change of the spendable balance */
	int64		balance_after;
	Datum		lots;			/* jsonb: the lots the change moved */
	TimestampTz next_event;
	bool		next_event_null;
} WalletLedgerStep;

extern bool wallet_add_interval_utc(TimestampTz t, const Interval *iv, TimestampTz *result);
extern TimestampTz wallet_policy_expiry(TimestampTz at, const Interval *expiry, bool month);

extern void wallet_ledger_accrue(struct varlena *v, TimestampTz at, int64 points, TimestampTz expires_at,
								 WalletLedgerStep *out);

/* tiers.c: whether a posting may change the account's tier */
extern bool wallet_tier_posting_review(int64 program_id, int64 account_id, struct varlena *v, TimestampTz at);
extern bool wallet_tier_posting_review_held(int64 program_id, int32 held, bool below, struct varlena *v,
											TimestampTz at);

#endif							/* POINTS_LEDGER_H */
