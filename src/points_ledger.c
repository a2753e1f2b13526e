/*
 * points_ledger.c: the wallet.points_ledger type: storage format, text and
 * binary I/O, and the read-only functions (balance, expiring, earned, lots).
 * The mutations live in ledger_ops.c.
 */
#include "wallet.h"

#include "points_ledger.h"

#include "common/int.h"
#include "funcapi.h"
#include "libpq/pqformat.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/json.h"
#include "utils/timestamp.h"

#define USECS_PER_DAY_I64	INT64CONST(86400000000)

/* ---------- in-memory helpers ---------- */

void
wallet_ledger_init(Ledger *l)
{
	memset(l, 0, sizeof(Ledger));
	l->last_month = LEDGER_NO_MONTH;
}

/* A lot is spendable at t iff t < expires_at; never-expiring lots always are. */
bool
wallet_lot_alive(const LedgerLot *lot, TimestampTz t)
{
	return lot->expires_at == DT_NOEND || t < lot->expires_at;
}

static void
lots_reserve(LotList *ll, int extra)
{
	if (ll->n + extra <= ll->max)
		return;
	ll->max = Max(ll->max * 2, ll->n + extra + 4);
	ll->lots = ll->lots ? repalloc(ll->lots, ll->max * sizeof(LedgerLot))
		: palloc(ll->max * sizeof(LedgerLot));
}

static void
lot_overflow(int errcode_on_overflow)
{
	ereport(ERROR,
			(errcode(errcode_on_overflow),
			 errmsg("points out of range"),
			 errdetail("A lot would hold more than %lld points.", (long long) PG_INT64_MAX)));
}

/*
 * Insert a lot keeping expiry order; a lot of an existing expiry is merged.
 * Binary search, and appending (the usual case: lots taken in expiry order)
 * costs no shifting.
 */
void
wallet_lots_add(LotList *ll, int64 points, TimestampTz expires_at, int errcode_on_overflow)
{
	int			lo = 0,
				hi = ll->n;

	Assert(points > 0);
	if (ll->n > 0 && ll->lots[ll->n - 1].expires_at < expires_at)
		lo = ll->n;
	else
		while (lo < hi)
		{
			int			mid = lo + (hi - lo) / 2;

			/* DT_NOEND is the largest timestamp, so never-expiring lots sort last */
			if (ll->lots[mid].expires_at < expires_at)
				lo = mid + 1;
			else
				hi = mid;
		}
	if (lo < ll->n && ll->lots[lo].expires_at == expires_at)
	{
		if (pg_add_s64_overflow(ll->lots[lo].points, points, &ll->lots[lo].points))
			lot_overflow(errcode_on_overflow);
		return;
	}
	lots_reserve(ll, 1);
	memmove(&ll->lots[lo + 1], &ll->lots[lo], (ll->n - lo) * sizeof(LedgerLot));
	ll->lots[lo].points = points;
	ll->lots[lo].expires_at = expires_at;
	ll->n++;
}

/* Append without ordering; wallet_lots_sort_merge puts the list in order afterwards. */
void
wallet_lots_append_raw(LotList *ll, int64 points, TimestampTz expires_at)
{
	lots_reserve(ll, 1);
	ll->lots[ll->n].points = points;
	ll->lots[ll->n].expires_at = expires_at;
	ll->n++;
}

static int
lot_cmp(const void *a, const void *b)
{
	TimestampTz x = ((const LedgerLot *) a)->expires_at;
	TimestampTz y = ((const LedgerLot *) b)->expires_at;

	return x < y ? -1 : x > y ? 1 : 0;
}

/* Sort by expiry and merge lots of equal expiry: O(n log n) for any input. */
void
wallet_lots_sort_merge(LotList *ll, int errcode_on_overflow)
{
	int			i,
				k = 0;

	if (ll->n < 2)
		return;
	qsort(ll->lots, ll->n, sizeof(LedgerLot), lot_cmp);
	for (i = 1; i < ll->n; i++)
	{
		CHECK_FOR_INTERRUPTS();
		if (ll->lots[i].expires_at == ll->lots[k].expires_at)
		{
			if (pg_add_s64_overflow(ll->lots[k].points, ll->lots[i].points, &ll->lots[k].points))
				lot_overflow(errcode_on_overflow);
		}
		else
			ll->lots[++k] = ll->lots[i];
	}
	ll->n = k + 1;
}

/* Merge the sorted list `from` into the sorted list `into`, in O(n + m). */
void
wallet_lots_merge(LotList *into, const LotList *from, int errcode_on_overflow)
{
	LedgerLot  *out;
	int			i = 0,
				j = 0,
				k = 0;

	if (from->n == 0)
		return;
	out = palloc((into->n + from->n) * sizeof(LedgerLot));
	while (i < into->n || j < from->n)
	{
		CHECK_FOR_INTERRUPTS();
		if (j == from->n || (i < into->n && into->lots[i].expires_at < from->lots[j].expires_at))
			out[k++] = into->lots[i++];
		else if (i == into->n || from->lots[j].expires_at < into->lots[i].expires_at)
			out[k++] = from->lots[j++];
		else
		{
			out[k].expires_at = into->lots[i].expires_at;
			if (pg_add_s64_overflow(into->lots[i].points, from->lots[j].points, &out[k].points))
				lot_overflow(errcode_on_overflow);
			i++, j++, k++;
		}
	}
	into->max = into->n + from->n;
	into->lots = out;
	into->n = k;
}

/* Lots of a value, spendable and held together (what LEDGER_MAX_LOTS bounds). */
int
wallet_ledger_lot_count(const Ledger *l)
{
	int			n = l->lots.n,
				i;

	for (i = 0; i < l->nholds; i++)
		n += l->holds[i].lots.n;
	return n;
}

/* Whether every point in the value (spendable and held), less the debt, adds up within bigint. */
static bool
total_fits(const Ledger *l)
{
	int64		sum = 0;
	int			i,
				j;

	for (i = 0; i < l->lots.n; i++)
		if (pg_add_s64_overflow(sum, l->lots.lots[i].points, &sum))
			return false;
	for (i = 0; i < l->nholds; i++)
		for (j = 0; j < l->holds[i].lots.n; j++)
			if (pg_add_s64_overflow(sum, l->holds[i].lots.lots[j].points, &sum))
				return false;
	return !pg_sub_s64_overflow(sum, l->debt, &sum);
}

/*
 * Every point in the value (spendable and held) must add up within bigint,
 * so that any balance computed from it cannot overflow.
 */
void
wallet_ledger_check_total(const Ledger *l, int errcode_on_overflow)
{
	if (!total_fits(l))
		ereport(ERROR,
				(errcode(errcode_on_overflow),
				 errmsg("points out of range"),
				 errdetail("The points of one account must add up to at most %lld.", (long long) PG_INT64_MAX)));
}

/* Spendable at t: live spendable lots, plus the live lots of lapsed holds, minus debt. */
static int64
ledger_balance_at(const Ledger *l, TimestampTz t)
{
	int64		b = 0;
	int			i,
				j;

	for (i = 0; i < l->lots.n; i++)
		if (wallet_lot_alive(&l->lots.lots[i], t))
			b += l->lots.lots[i].points;	/* cannot overflow: wallet_ledger_check_total */
	for (i = 0; i < l->nholds; i++)
	{
		if (t < l->holds[i].expires_at)
			continue;
		for (j = 0; j < l->holds[i].lots.n; j++)
			if (wallet_lot_alive(&l->holds[i].lots.lots[j], t))
				b += l->holds[i].lots.lots[j].points;
	}
	return b - l->debt;
}

/* Month number since 2000-01 of instant t, in UTC. */
int
wallet_ledger_month_of(TimestampTz t)
{
	struct pg_tm tm;
	fsec_t		fsec;

	if (TIMESTAMP_NOT_FINITE(t) || timestamp2tm(t, NULL, &tm, &fsec, NULL, NULL) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("timestamp out of range"),
				 errdetail("Points can only be earned at a finite instant.")));
	return (tm.tm_year - 2000) * 12 + (tm.tm_mon - 1);
}

static TimestampTz
month_start(int month)
{
	struct pg_tm tm;
	Timestamp	ts;
	int			y = 2000 + (month >= 0 ? month / 12 : -((-month + 11) / 12));

	memset(&tm, 0, sizeof(tm));
	tm.tm_year = y;
	tm.tm_mon = month - (y - 2000) * 12 + 1;
	tm.tm_mday = 1;
	/* the first month's start (4714-11-01 BC) precedes the earliest timestamp */
	if (tm2timestamp(&tm, 0, NULL, &ts) != 0 || !IS_VALID_TIMESTAMP(ts))
		return month < 0 ? DT_NOBEGIN : DT_NOEND;
	return ts;
}

/* First instant (UTC) of a month since 2000-01; for tiers.c's windows. */
TimestampTz
wallet_ledger_month_start(int month)
{
	return month_start(month);
}

/* ---------- storage encoding ---------- */

static void
put_uvarint(StringInfo buf, uint64 v)
{
	while (v >= 0x80)
	{
		appendStringInfoChar(buf, (char) ((v & 0x7f) | 0x80));
		v >>= 7;
	}
	appendStringInfoChar(buf, (char) v);
}

static inline uint64
zigzag(int64 v)
{
	return ((uint64) v << 1) ^ (uint64) (v >> 63);
}

static inline int64
unzigzag(uint64 v)
{
	return (int64) (v >> 1) ^ -(int64) (v & 1);
}

/*
 * Timestamp as a delta from the previous one of its chain, in the coarsest
 * exact unit (2 low bits: 0 microseconds, 1 seconds, 2 days, 3 special:
 * 0 = never, 1 = a raw microsecond delta follows).  Wrapping uint64
 * arithmetic makes every delta representable and exactly reversible.
 */
static void
put_ts(StringInfo buf, TimestampTz *prev, TimestampTz t)
{
	int64		d;
	uint64		z;

	if (t == DT_NOEND)
	{
		put_uvarint(buf, 3);
		return;
	}
	d = (int64) ((uint64) t - (uint64) *prev);
	*prev = t;
	if (d % USECS_PER_DAY_I64 == 0)
		put_uvarint(buf, (zigzag(d / USECS_PER_DAY_I64) << 2) | 2);
	else if (d % USECS_PER_SEC == 0)
		put_uvarint(buf, (zigzag(d / USECS_PER_SEC) << 2) | 1);
	else if ((z = zigzag(d)) < (UINT64CONST(1) << 62))
		put_uvarint(buf, z << 2);
	else
	{
		put_uvarint(buf, (1 << 2) | 3);
		put_uvarint(buf, z);
	}
}

static void
put_lots(StringInfo buf, const LotList *ll)
{
	TimestampTz prev = 0;
	int			i;

	put_uvarint(buf, ll->n);
	for (i = 0; i < ll->n; i++)
	{
		put_uvarint(buf, (uint64) ll->lots[i].points);
		put_ts(buf, &prev, ll->lots[i].expires_at);
	}
}

struct varlena *
wallet_ledger_encode(const Ledger *l)
{
	StringInfoData buf;
	int			nmonths = 0;
	int			i;
	struct varlena *result;

	initStringInfo(&buf);
	appendStringInfoSpaces(&buf, VARHDRSZ);
	appendStringInfoChar(&buf, LEDGER_FORMAT_VERSION);
	put_uvarint(&buf, l->debt);
	put_uvarint(&buf, l->earned);
	put_uvarint(&buf, l->redeemed);
	put_uvarint(&buf, l->expired);
	/* months: trailing (oldest) zero buckets are not stored */
	if (l->last_month != LEDGER_NO_MONTH)
		for (i = 0; i < LEDGER_MONTHS; i++)
			if (l->months[i] != 0)
				nmonths = i + 1;
	put_uvarint(&buf, nmonths);
	if (nmonths > 0)
	{
		put_uvarint(&buf, zigzag(l->last_month));
		for (i = 0; i < nmonths; i++)
			put_uvarint(&buf, (uint64) l->months[i]);
	}
	put_lots(&buf, &l->lots);
	put_uvarint(&buf, l->nholds);
	for (i = 0; i < l->nholds; i++)
	{
		TimestampTz prev = 0;

		put_uvarint(&buf, (uint64) l->holds[i].hold_id);
		put_ts(&buf, &prev, l->holds[i].expires_at);
		put_lots(&buf, &l->holds[i].lots);
	}
	result = (struct varlena *) buf.data;
	SET_VARSIZE(result, buf.len);
	return result;
}

typedef struct Dec
{
	const unsigned char *p;
	const unsigned char *end;
} Dec;

static void
corrupt(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_DATA_CORRUPTED),
			 errmsg("corrupt wallet.points_ledger value"),
			 errdetail("The stored bytes do not follow the points_ledger format version %d.", LEDGER_FORMAT_VERSION)));
}

static uint64
get_uvarint(Dec *d)
{
	uint64		v = 0;
	int			shift = 0;

	for (;;)
	{
		unsigned char c;

		if (d->p >= d->end || shift > 63)
			corrupt();
		c = *d->p++;
		v |= (uint64) (c & 0x7f) << shift;
		if (!(c & 0x80))
			return v;
		shift += 7;
	}
}

static int64
get_nonneg(Dec *d)
{
	uint64		v = get_uvarint(d);

	if (v > (uint64) PG_INT64_MAX)
		corrupt();
	return (int64) v;
}

static TimestampTz
get_ts(Dec *d, TimestampTz *prev)
{
	uint64		v = get_uvarint(d);
	int64		delta;

	switch (v & 3)
	{
		case 0:
			delta = unzigzag(v >> 2);
			break;
		case 1:
			delta = unzigzag(v >> 2) * USECS_PER_SEC;
			break;
		case 2:
			delta = unzigzag(v >> 2) * USECS_PER_DAY_I64;
			break;
		default:
			if ((v >> 2) == 0)
				return DT_NOEND;
			if ((v >> 2) != 1)
				corrupt();
			delta = unzigzag(get_uvarint(d));
			break;
	}
	*prev = (TimestampTz) ((uint64) *prev + (uint64) delta);
	return *prev;
}

static void
get_lots(Dec *d, LotList *ll)
{
	TimestampTz prev = 0;
	uint64		n = get_uvarint(d);
	int			i;

	if (n > (uint64) (d->end - d->p))	/* every lot takes at least 2 bytes */
		corrupt();
	ll->n = ll->max = (int) n;
	ll->lots = n ? palloc(n * sizeof(LedgerLot)) : NULL;
	for (i = 0; i < (int) n; i++)
	{
		CHECK_FOR_INTERRUPTS();
		ll->lots[i].points = get_nonneg(d);
		ll->lots[i].expires_at = get_ts(d, &prev);
	}
}

/*
 * The format version, debt, lifetime totals and monthly buckets: what comes
 * first in every value (l's other fields are left as they are).
 */
static void
decode_head(Dec *d, struct varlena *v, Ledger *l)
{
	uint64		n;
	int			i;

	d->p = (const unsigned char *) VARDATA_ANY(v);
	d->end = d->p + VARSIZE_ANY_EXHDR(v);
	if (d->p >= d->end || *d->p != LEDGER_FORMAT_VERSION)
		corrupt();
	d->p++;
	l->debt = get_nonneg(d);
	l->earned = get_nonneg(d);
	l->redeemed = get_nonneg(d);
	l->expired = get_nonneg(d);
	l->last_month = LEDGER_NO_MONTH;
	memset(l->months, 0, sizeof(l->months));
	n = get_uvarint(d);
	if (n > LEDGER_MONTHS)
		corrupt();
	if (n > 0)
	{
		l->last_month = (int32) unzigzag(get_uvarint(d));
		for (i = 0; i < (int) n; i++)
			l->months[i] = get_nonneg(d);
	}
}

Ledger *
wallet_ledger_decode(struct varlena *v)
{
	Ledger	   *l = palloc(sizeof(Ledger));
	Dec			d;
	uint64		n;
	int			i;

	wallet_ledger_init(l);
	decode_head(&d, v, l);
	get_lots(&d, &l->lots);
	n = get_uvarint(&d);
	if (n > (uint64) (d.end - d.p))
		corrupt();
	l->nholds = l->maxholds = (int) n;
	l->holds = n ? palloc0(n * sizeof(LedgerHold)) : NULL;
	for (i = 0; i < l->nholds; i++)
	{
		TimestampTz prev = 0;

		CHECK_FOR_INTERRUPTS();
		l->holds[i].hold_id = get_nonneg(&d);
		l->holds[i].expires_at = get_ts(&d, &prev);
		get_lots(&d, &l->holds[i].lots);
	}
	if (d.p != d.end)
		corrupt();
	return l;
}

/*
 * The totals and monthly buckets alone (tier sweeps read the buckets of
 * every account of a program, and nothing else): the lots and holds stored
 * after them are neither decoded nor allocated.  v may be packed.
 */
void
wallet_ledger_decode_months(struct varlena *v, Ledger *l)
{
	Dec			d;

	decode_head(&d, v, l);
}

/* ---------- validation shared by text input, binary input and ledger_apply ---------- */

/*
 * Refuse a value: 22P02 from text input, 22P03 from binary input, and from
 * ledger_apply (whose result is checked too, so that every stored value can
 * be dumped and restored) the code it passes.
 */
static void
invalid(int code, const char *detail)
{
	ereport(ERROR,
			(errcode(code),
			 errmsg(code == ERRCODE_INVALID_TEXT_REPRESENTATION ? "invalid input syntax for type points_ledger"
					: code == ERRCODE_INVALID_BINARY_REPRESENTATION ? "invalid binary value of type points_ledger"
					: "inconsistent points_ledger value"),
			 errdetail("%s", detail)));
}

static void
check_lots(const LotList *ll, int code)
{
	int			i;

	for (i = 0; i < ll->n; i++)
	{
		const LedgerLot *lot = &ll->lots[i];

		CHECK_FOR_INTERRUPTS();
		if (lot->points <= 0)
			invalid(code, "The points of a lot must be positive.");
		if (lot->expires_at == DT_NOBEGIN)
			invalid(code, "A lot cannot expire at -infinity.");
		if (lot->expires_at != DT_NOEND && !IS_VALID_TIMESTAMP(lot->expires_at))
			invalid(code, "An expiry timestamp is out of range.");
		if (i > 0 && lot->expires_at <= ll->lots[i - 1].expires_at)
			invalid(code, "The lots of a list must be in expiry order, one lot per expiry.");
	}
}

/*
 * Every invariant that ledger_apply keeps, whatever its arguments (it checks
 * its own result with this function too):
 * - debt and lifetime totals are >= 0;
 * - lots have positive points, a valid expiry or none (never), are sorted by
 *   expiry with one lot per expiry; all points add up within bigint;
 * - holds have positive unique ids (sorted), a finite valid end, >= 1 lot;
 * - monthly buckets are >= 0, the newest kept one is non-zero, every
 *   non-zero one is a month of a valid timestamp (4714-11 BC to 294276-12),
 *   and together they are at most the lifetime earned total (an accrual adds
 *   to both, its reversal takes from both, and old months drop out);
 * - a debt is only owed while no never-expiring points are spendable: every
 *   credit pays a debt off first, and a debt arises only when a reversal has
 *   taken every spendable point (never-expiring ones are always spendable).
 * The lifetime totals are otherwise independent of the lots: adjust adds and
 * removes points without touching them, so e.g. lots={100@never} earned=0 is
 * a real state (a positive adjustment).
 */
void
wallet_ledger_validate(const Ledger *l, int code)
{
	int			i;
	int64		msum = 0;

	if (l->debt < 0 || l->earned < 0 || l->redeemed < 0 || l->expired < 0)
		invalid(code, "Debt and lifetime totals cannot be negative.");
	check_lots(&l->lots, code);
	for (i = 0; i < l->nholds; i++)
	{
		const LedgerHold *h = &l->holds[i];

		if (h->hold_id <= 0)
			invalid(code, "A hold id must be positive.");
		if (i > 0 && h->hold_id <= l->holds[i - 1].hold_id)
			invalid(code, "A hold id appears twice.");
		if (TIMESTAMP_NOT_FINITE(h->expires_at) || !IS_VALID_TIMESTAMP(h->expires_at))
			invalid(code, "A hold must end at a finite instant within the timestamp range.");
		if (h->lots.n == 0)
			invalid(code, "A hold must hold at least one lot.");
		check_lots(&h->lots, code);
	}
	if (!total_fits(l))
		invalid(code, psprintf("The points of one account must add up to at most %lld.", (long long) PG_INT64_MAX));
	if (l->last_month == LEDGER_NO_MONTH)
	{
		for (i = 0; i < LEDGER_MONTHS; i++)
			if (l->months[i] != 0)
				invalid(code, "Monthly earned points need a month.");
	}
	else if (l->months[0] == 0)
		invalid(code, "The newest month of earned points must be non-zero.");
	for (i = 0; i < LEDGER_MONTHS; i++)
	{
		int64		m = (int64) l->last_month - i;

		if (l->months[i] < 0)
			invalid(code, "Monthly earned points cannot be negative.");
		if (l->months[i] != 0 && (m < LEDGER_MIN_MONTH || m > LEDGER_MAX_MONTH))
			invalid(code, "A month of earned points is out of range: months run from 4714-11 BC to 294276-12.");
		if (pg_add_s64_overflow(msum, l->months[i], &msum))
			msum = PG_INT64_MAX;
	}
	if (msum > l->earned)
		invalid(code, psprintf("The monthly earned points add up to %lld, more than the lifetime earned total %lld.",
							   (long long) msum, (long long) l->earned));
	if (l->debt > 0 && l->lots.n > 0 && l->lots.lots[l->lots.n - 1].expires_at == DT_NOEND)
		invalid(code, "A debt is owed while never-expiring points are spendable, but every credit pays a debt off first.");
}

static int
hold_cmp(const void *a, const void *b)
{
	int64		x = ((const LedgerHold *) a)->hold_id;
	int64		y = ((const LedgerHold *) b)->hold_id;

	return x < y ? -1 : x > y ? 1 : 0;
}

/* Input read into l in any order: sort and merge its lists, then validate. */
static void
finish_input(Ledger *l, int code)
{
	int			i;

	wallet_lots_sort_merge(&l->lots, code);
	for (i = 0; i < l->nholds; i++)
		wallet_lots_sort_merge(&l->holds[i].lots, code);
	if (l->nholds > 1)
		qsort(l->holds, l->nholds, sizeof(LedgerHold), hold_cmp);
	wallet_ledger_validate(l, code);
}

/* Count lots and holds as they are read, so that an oversized input stops early. */
static void
count_input(int *nlots, int add_lots, int nholds, int code)
{
	*nlots += add_lots;
	if (*nlots > LEDGER_MAX_LOTS)
		invalid(code, psprintf("A points_ledger value holds at most %d lots, spendable and held together.", LEDGER_MAX_LOTS));
	if (nholds > LEDGER_MAX_HOLDS)
		invalid(code, psprintf("A points_ledger value holds at most %d open holds.", LEDGER_MAX_HOLDS));
}

/* ---------- text I/O ---------- */

/*
 * Text form (every part optional on input, any order, always all on output):
 *   lots={100@2027-02-01T00:00:00+00:00,50@never}
 *   holds={7@2026-11-23T10:00:00+00:00[30@2027-02-01T00:00:00+00:00]}
 *   debt=0 earned=150 redeemed=0 expired=0 months={2026-11:150,2026-10:20}
 * Timestamps are written in ISO 8601 UTC so the output does not depend on
 * DateStyle or TimeZone; input takes any timestamptz spelling (in double
 * quotes if it has spaces), and "never" (or "infinity") for no expiry.
 */
static void
append_ts(StringInfo buf, TimestampTz t, bool quote_spaces)
{
	int			utc = 0;
	char	   *s;

	if (t == DT_NOEND)
	{
		appendStringInfoString(buf, "never");
		return;
	}
	s = JsonEncodeDateTime(NULL, TimestampTzGetDatum(t), TIMESTAMPTZOID, &utc);
	/* BC instants end in " BC": quoted, so that the input reads them back */
	if (quote_spaces && strchr(s, ' ') != NULL)
		appendStringInfo(buf, "\"%s\"", s);
	else
		appendStringInfoString(buf, s);
}

static void
append_lots(StringInfo buf, const LotList *ll, char open, char close)
{
	int			i;

	appendStringInfoChar(buf, open);
	for (i = 0; i < ll->n; i++)
	{
		if (i > 0)
			appendStringInfoChar(buf, ',');
		appendStringInfo(buf, INT64_FORMAT "@", ll->lots[i].points);
		append_ts(buf, ll->lots[i].expires_at, true);
	}
	appendStringInfoChar(buf, close);
}

/* JSON array elements {"points": n, "expires_at": "..."|null} for entries.lots */
void
wallet_lots_append_json(StringInfo buf, const LotList *ll, bool *first)
{
	int			i;

	for (i = 0; i < ll->n; i++)
	{
		if (!*first)
			appendStringInfoString(buf, ", ");
		*first = false;
		appendStringInfo(buf, "{\"points\": " INT64_FORMAT ", \"expires_at\": ", ll->lots[i].points);
		if (ll->lots[i].expires_at == DT_NOEND)
			appendStringInfoString(buf, "null");
		else
		{
			appendStringInfoChar(buf, '"');
			append_ts(buf, ll->lots[i].expires_at, false);
			appendStringInfoChar(buf, '"');
		}
		appendStringInfoChar(buf, '}');
	}
}

PG_FUNCTION_INFO_V1(points_ledger_out);
Datum
points_ledger_out(PG_FUNCTION_ARGS)
{
	Ledger	   *l = wallet_ledger_decode(PG_GETARG_POINTS_LEDGER_P(0));
	StringInfoData buf;
	int			i;
	bool		first = true;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "lots=");
	append_lots(&buf, &l->lots, '{', '}');
	appendStringInfoString(&buf, " holds={");
	for (i = 0; i < l->nholds; i++)
	{
		if (i > 0)
			appendStringInfoChar(&buf, ',');
		appendStringInfo(&buf, INT64_FORMAT "@", l->holds[i].hold_id);
		append_ts(&buf, l->holds[i].expires_at, true);
		append_lots(&buf, &l->holds[i].lots, '[', ']');
	}
	appendStringInfo(&buf, "} debt=" INT64_FORMAT " earned=" INT64_FORMAT
					 " redeemed=" INT64_FORMAT " expired=" INT64_FORMAT " months={",
					 l->debt, l->earned, l->redeemed, l->expired);
	if (l->last_month != LEDGER_NO_MONTH)
		for (i = 0; i < LEDGER_MONTHS; i++)
		{
			int			m = l->last_month - i;
			int			y = 2000 + (m >= 0 ? m / 12 : -((-m + 11) / 12));

			if (l->months[i] == 0)
				continue;
			/* year 0 is 1 BC (astronomical numbering, as timestamp2tm counts) */
			appendStringInfo(&buf, "%s%04d-%02d%s:" INT64_FORMAT, first ? "" : ",",
							 y > 0 ? y : 1 - y, m - (y - 2000) * 12 + 1, y > 0 ? "" : " BC", l->months[i]);
			first = false;
		}
	appendStringInfoChar(&buf, '}');
	PG_RETURN_CSTRING(buf.data);
}

typedef struct Parser
{
	const char *s;
	const char *p;
	int			nlots;			/* lots read so far, spendable and held */
} Parser;

static void
syntax(Parser *ps, const char *what)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
			 errmsg("invalid input syntax for type points_ledger: \"%s\"", ps->s),
			 errdetail("Expected %s at character %d.", what, (int) (ps->p - ps->s) + 1)));
}

static void
skip_ws(Parser *ps)
{
	while (*ps->p && isspace((unsigned char) *ps->p))
		ps->p++;
}

static void
expect(Parser *ps, char c)
{
	char		what[8];

	if (*ps->p != c)
	{
		snprintf(what, sizeof(what), "\"%c\"", c);
		syntax(ps, what);
	}
	ps->p++;
}

/* A non-negative bigint; a minus sign is "out of range", not bad syntax. */
static int64
parse_int(Parser *ps, const char *what)
{
	int64		v = 0;

	if (*ps->p == '-' && isdigit((unsigned char) ps->p[1]))
		invalid(ERRCODE_INVALID_TEXT_REPRESENTATION,
				psprintf("The number given for the %s cannot be negative.", what));
	if (!isdigit((unsigned char) *ps->p))
		syntax(ps, what);
	while (isdigit((unsigned char) *ps->p))
	{
		if (pg_mul_s64_overflow(v, 10, &v) || pg_add_s64_overflow(v, *ps->p - '0', &v))
			invalid(ERRCODE_INVALID_TEXT_REPRESENTATION,
					psprintf("The number given for the %s is beyond the bigint range.", what));
		ps->p++;
	}
	return v;
}

static TimestampTz
parse_ts(Parser *ps)
{
	const char *start = ps->p;
	char	   *tok;
	char		workbuf[MAXDATELEN + MAXDATEFIELDS];
	char	   *field[MAXDATEFIELDS];
	int			ftype[MAXDATEFIELDS];
	int			nf,
				dtype,
				tz,
				dterr;
	struct pg_tm tm;
	fsec_t		fsec;
	TimestampTz result;

	if (*ps->p == '"')
	{
		/* quoted: any timestamptz spelling, spaces included */
		start = ++ps->p;
		while (*ps->p && *ps->p != '"')
			ps->p++;
		if (*ps->p != '"')
			syntax(ps, "a closing double quote");
		tok = pnstrdup(start, ps->p - start);
		ps->p++;
	}
	else
	{
		while (*ps->p && !strchr(",}][ \t\r\n", *ps->p))
			ps->p++;
		if (ps->p == start)
			syntax(ps, "a timestamp");
		tok = pnstrdup(start, ps->p - start);
	}
	if (*tok == '\0')
		syntax(ps, "a timestamp");
	if (pg_strcasecmp(tok, "never") == 0)
		return DT_NOEND;
	dterr = ParseDateTime(tok, workbuf, sizeof(workbuf), field, ftype, MAXDATEFIELDS, &nf);
	if (dterr == 0)
	{
		/*
		 * DecodeDateTime reports an unknown time zone name itself (22023);
		 * any error it raises is this input's fault, so it is caught and
		 * reported as 22P02 like every other refused text.  It only parses
		 * (no locks, buffers or catalog access), so nothing needs cleaning up.
		 */
		MemoryContext mcxt = CurrentMemoryContext;

		PG_TRY();
		{
			dterr = DecodeDateTime(field, ftype, nf, &dtype, &tm, &fsec, &tz);
		}
		PG_CATCH();
		{
			ErrorData  *e;

			MemoryContextSwitchTo(mcxt);
			e = CopyErrorData();
			FlushErrorState();
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
					 errmsg("invalid input syntax for type points_ledger: \"%s\"", ps->s),
					 errdetail("\"%s\" is not a timestamp: %s.", tok, e->message)));
		}
		PG_END_TRY();
	}
	if (dterr != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("invalid input syntax for type points_ledger: \"%s\"", ps->s),
				 errdetail(dterr == DTERR_FIELD_OVERFLOW || dterr == DTERR_TZDISP_OVERFLOW
						   ? "The timestamp \"%s\" is out of range." : "\"%s\" is not a timestamp.", tok)));
	if (dtype == DTK_LATE)
		return DT_NOEND;
	if (dtype != DTK_DATE)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("invalid input syntax for type points_ledger: \"%s\"", ps->s),
				 errdetail("\"%s\" is not a finite timestamp or \"never\".", tok)));
	if (tm2timestamp(&tm, fsec, &tz, &result) != 0 || !IS_VALID_TIMESTAMP(result))
		invalid(ERRCODE_INVALID_TEXT_REPRESENTATION, psprintf("The timestamp \"%s\" is out of range.", tok));
	return result;
}

/* "{p@ts,...}" or "[p@ts,...]", appended to ll (finish_input sorts and merges) */
static void
parse_lots(Parser *ps, LotList *ll, char open, char close)
{
	expect(ps, open);
	skip_ws(ps);
	if (*ps->p == close)
	{
		ps->p++;
		return;
	}
	for (;;)
	{
		int64		points;
		TimestampTz exp;

		CHECK_FOR_INTERRUPTS();
		count_input(&ps->nlots, 1, 0, ERRCODE_INVALID_TEXT_REPRESENTATION);
		skip_ws(ps);
		points = parse_int(ps, "points of a lot");
		expect(ps, '@');
		exp = parse_ts(ps);
		wallet_lots_append_raw(ll, points, exp);
		skip_ws(ps);
		if (*ps->p == close)
		{
			ps->p++;
			return;
		}
		expect(ps, ',');
	}
}

static void
parse_holds(Parser *ps, Ledger *l)
{
	expect(ps, '{');
	skip_ws(ps);
	if (*ps->p == '}')
	{
		ps->p++;
		return;
	}
	for (;;)
	{
		LedgerHold *h;

		CHECK_FOR_INTERRUPTS();
		count_input(&ps->nlots, 0, l->nholds + 1, ERRCODE_INVALID_TEXT_REPRESENTATION);
		if (l->nholds == l->maxholds)
		{
			l->maxholds = Max(4, l->maxholds * 2);
			l->holds = l->holds ? repalloc(l->holds, l->maxholds * sizeof(LedgerHold))
				: palloc(l->maxholds * sizeof(LedgerHold));
		}
		h = &l->holds[l->nholds++];
		memset(h, 0, sizeof(LedgerHold));
		skip_ws(ps);
		h->hold_id = parse_int(ps, "hold id");
		expect(ps, '@');
		h->expires_at = parse_ts(ps);
		parse_lots(ps, &h->lots, '[', ']');
		skip_ws(ps);
		if (*ps->p == '}')
		{
			ps->p++;
			return;
		}
		expect(ps, ',');
	}
}

/*
 * "{YYYY-MM:points,...}", BC months as "YYYY-MM BC:points".  Zero buckets may
 * be written; the newest non-zero month becomes months[0].  Ranges are
 * checked by wallet_ledger_validate, as for binary input.
 */
static void
parse_months(Parser *ps, Ledger *l)
{
	int			ms[LEDGER_MONTHS];
	int64		vs[LEDGER_MONTHS];
	int			n = 0,
				i,
				last = LEDGER_NO_MONTH;

	expect(ps, '{');
	skip_ws(ps);
	while (*ps->p != '}')
	{
		int64		y,
					m;

		if (n > 0)
		{
			expect(ps, ',');
			skip_ws(ps);
		}
		if (n == LEDGER_MONTHS)
			syntax(ps, "at most 24 months");
		y = parse_int(ps, "year of a month");
		expect(ps, '-');
		m = parse_int(ps, "month");
		skip_ws(ps);
		if (y < 1 || y > 294276 || m < 1 || m > 12)
			invalid(ERRCODE_INVALID_TEXT_REPRESENTATION,
					"A month must be written YYYY-MM (YYYY-MM BC before year 1), YYYY from 1 to 294276 and MM from 01 to 12.");
		if (pg_strncasecmp(ps->p, "BC", 2) == 0)
		{
			y = 1 - y;			/* astronomical: 1 BC is year 0 */
			ps->p += 2;
			skip_ws(ps);
		}
		expect(ps, ':');
		skip_ws(ps);
		ms[n] = (int) ((y - 2000) * 12 + m - 1);
		vs[n] = parse_int(ps, "points earned in a month");
		for (i = 0; i < n; i++)
			if (ms[i] == ms[n])
				invalid(ERRCODE_INVALID_TEXT_REPRESENTATION, "A month appears twice.");
		if (vs[n] != 0 && (last == LEDGER_NO_MONTH || ms[n] > last))
			last = ms[n];
		n++;
		skip_ws(ps);
	}
	ps->p++;
	l->last_month = last;
	for (i = 0; i < n; i++)
	{
		if (vs[i] == 0)
			continue;
		if (last - ms[i] >= LEDGER_MONTHS)
			invalid(ERRCODE_INVALID_TEXT_REPRESENTATION, "Monthly earned points are kept for 24 consecutive months only.");
		l->months[last - ms[i]] = vs[i];
	}
}

PG_FUNCTION_INFO_V1(points_ledger_in);
Datum
points_ledger_in(PG_FUNCTION_ARGS)
{
	char	   *str = PG_GETARG_CSTRING(0);
	Ledger		l;
	Parser		ps;
	int			seen = 0;
	static const char *const keys[] = {"lots", "holds", "debt", "earned", "redeemed", "expired", "months"};

	wallet_ledger_init(&l);
	ps.s = ps.p = str;
	ps.nlots = 0;
	for (;;)
	{
		int			k;
		size_t		len;

		skip_ws(&ps);
		if (*ps.p == '\0')
			break;
		for (k = 0; k < lengthof(keys); k++)
		{
			len = strlen(keys[k]);
			if (strncmp(ps.p, keys[k], len) == 0 && ps.p[len] == '=')
				break;
		}
		if (k == lengthof(keys))
			syntax(&ps, "one of lots=, holds=, debt=, earned=, redeemed=, expired=, months=");
		if (seen & (1 << k))
			syntax(&ps, "each part once");
		seen |= 1 << k;
		ps.p += len + 1;
		switch (k)
		{
			case 0:
				parse_lots(&ps, &l.lots, '{', '}');
				break;
			case 1:
				parse_holds(&ps, &l);
				break;
			case 2:
				l.debt = parse_int(&ps, "debt");
				break;
			case 3:
				l.earned = parse_int(&ps, "earned total");
				break;
			case 4:
				l.redeemed = parse_int(&ps, "redeemed total");
				break;
			case 5:
				l.expired = parse_int(&ps, "expired total");
				break;
			case 6:
				parse_months(&ps, &l);
				break;
		}
		if (*ps.p != '\0' && !isspace((unsigned char) *ps.p))
			syntax(&ps, "a space between parts");
	}
	finish_input(&l, ERRCODE_INVALID_TEXT_REPRESENTATION);
	PG_RETURN_POINTER(wallet_ledger_encode(&l));
}

/* ---------- binary I/O ---------- */

static void
send_lots(StringInfo buf, const LotList *ll)
{
	int			i;

	pq_sendint32(buf, ll->n);
	for (i = 0; i < ll->n; i++)
	{
		pq_sendint64(buf, ll->lots[i].points);
		pq_sendint64(buf, ll->lots[i].expires_at);
	}
}

PG_FUNCTION_INFO_V1(points_ledger_send);
Datum
points_ledger_send(PG_FUNCTION_ARGS)
{
	Ledger	   *l = wallet_ledger_decode(PG_GETARG_POINTS_LEDGER_P(0));
	StringInfoData buf;
	int			i;

	pq_begintypsend(&buf);
	pq_sendbyte(&buf, LEDGER_FORMAT_VERSION);
	pq_sendint64(&buf, l->debt);
	pq_sendint64(&buf, l->earned);
	pq_sendint64(&buf, l->redeemed);
	pq_sendint64(&buf, l->expired);
	pq_sendint32(&buf, l->last_month);
	for (i = 0; i < LEDGER_MONTHS; i++)
		pq_sendint64(&buf, l->months[i]);
	send_lots(&buf, &l->lots);
	pq_sendint32(&buf, l->nholds);
	for (i = 0; i < l->nholds; i++)
	{
		pq_sendint64(&buf, l->holds[i].hold_id);
		pq_sendint64(&buf, l->holds[i].expires_at);
		send_lots(&buf, &l->holds[i].lots);
	}
	PG_RETURN_BYTEA_P(pq_endtypsend(&buf));
}

static void
recv_lots(StringInfo buf, LotList *ll, int *nlots)
{
	int			n = pq_getmsgint(buf, 4);
	int			i;

	if (n < 0)
		invalid(ERRCODE_INVALID_BINARY_REPRESENTATION, "The lot count does not match the message.");
	count_input(nlots, n, 0, ERRCODE_INVALID_BINARY_REPRESENTATION);
	if (n > (buf->len - buf->cursor) / 16)
		invalid(ERRCODE_INVALID_BINARY_REPRESENTATION, "The lot count does not match the message.");
	for (i = 0; i < n; i++)
	{
		int64		points = pq_getmsgint64(buf);
		TimestampTz exp = pq_getmsgint64(buf);

		CHECK_FOR_INTERRUPTS();
		wallet_lots_append_raw(ll, points, exp);
	}
}

PG_FUNCTION_INFO_V1(points_ledger_recv);
Datum
points_ledger_recv(PG_FUNCTION_ARGS)
{
	StringInfo	buf = (StringInfo) PG_GETARG_POINTER(0);
	Ledger		l;
	int			version = pq_getmsgbyte(buf);
	int			i,
				n,
				nlots = 0;

	if (version != LEDGER_FORMAT_VERSION)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
				 errmsg("unsupported points_ledger binary format version %d", version),
				 errdetail("This version of wallet reads format version %d only.", LEDGER_FORMAT_VERSION)));
	wallet_ledger_init(&l);
	l.debt = pq_getmsgint64(buf);
	l.earned = pq_getmsgint64(buf);
	l.redeemed = pq_getmsgint64(buf);
	l.expired = pq_getmsgint64(buf);
	l.last_month = pq_getmsgint(buf, 4);
	for (i = 0; i < LEDGER_MONTHS; i++)
		l.months[i] = pq_getmsgint64(buf);
	recv_lots(buf, &l.lots, &nlots);
	n = pq_getmsgint(buf, 4);
	if (n < 0)
		invalid(ERRCODE_INVALID_BINARY_REPRESENTATION, "The hold count does not match the message.");
	count_input(&nlots, 0, n, ERRCODE_INVALID_BINARY_REPRESENTATION);
	if (n > (buf->len - buf->cursor) / 20)
		invalid(ERRCODE_INVALID_BINARY_REPRESENTATION, "The hold count does not match the message.");
	l.nholds = l.maxholds = n;
	l.holds = n ? palloc0(n * sizeof(LedgerHold)) : NULL;
	for (i = 0; i < n; i++)
	{
		CHECK_FOR_INTERRUPTS();
		l.holds[i].hold_id = pq_getmsgint64(buf);
		l.holds[i].expires_at = pq_getmsgint64(buf);
		recv_lots(buf, &l.holds[i].lots, &nlots);
	}
	pq_getmsgend(buf);
	finish_input(&l, ERRCODE_INVALID_BINARY_REPRESENTATION);
	PG_RETURN_POINTER(wallet_ledger_encode(&l));
}

/* ---------- read-only functions ---------- */

PG_FUNCTION_INFO_V1(ledger_balance);
Datum
ledger_balance(PG_FUNCTION_ARGS)
{
	Ledger	   *l = wallet_ledger_decode(PG_GETARG_POINTS_LEDGER_P(0));

	PG_RETURN_INT64(ledger_balance_at(l, PG_GETARG_TIMESTAMPTZ(1)));
}

/*
 * *result = t + iv computed in UTC (so that it does not depend on TimeZone),
 * step by step as timestamp_pl_interval does (months, clamped to the end of
 * the month, then days, then the time); false where a step leaves the
 * timestamp range, where that function raises 22008.  An infinite t stays.
 */
bool
wallet_add_interval_utc(TimestampTz t, const Interval *iv, TimestampTz *result)
{
	struct pg_tm tt,
			   *tm = &tt;
	fsec_t		fsec;

	*result = t;
	if (TIMESTAMP_NOT_FINITE(t))
		return true;
	if (iv->month != 0)
	{
		int64		mon;

		if (timestamp2tm(t, NULL, tm, &fsec, NULL, NULL) != 0)
			return false;
		mon = (int64) tm->tm_year * MONTHS_PER_YEAR + (tm->tm_mon - 1) + iv->month;
		if (mon < (int64) JULIAN_MINYEAR * MONTHS_PER_YEAR || mon > (int64) JULIAN_MAXYEAR * MONTHS_PER_YEAR)
			return false;
		/* floor division: years before 1 AD are negative */
		tm->tm_year = (int) (mon >= 0 ? mon / MONTHS_PER_YEAR : -((-mon - 1) / MONTHS_PER_YEAR) - 1);
		tm->tm_mon = (int) (mon - (int64) tm->tm_year * MONTHS_PER_YEAR) + 1;
		if (tm->tm_mday > day_tab[isleap(tm->tm_year)][tm->tm_mon - 1])
			tm->tm_mday = day_tab[isleap(tm->tm_year)][tm->tm_mon - 1];
		if (tm2timestamp(tm, fsec, NULL, result) != 0 || !IS_VALID_TIMESTAMP(*result))
			return false;
	}
	if (iv->day != 0)
	{
		int64		julian;

		if (timestamp2tm(*result, NULL, tm, &fsec, NULL, NULL) != 0)
			return false;
		julian = (int64) date2j(tm->tm_year, tm->tm_mon, tm->tm_mday) + iv->day;
		if (julian < 0 || julian >= TIMESTAMP_END_JULIAN)
			return false;
		j2date((int) julian, &tm->tm_year, &tm->tm_mon, &tm->tm_mday);
		if (tm2timestamp(tm, fsec, NULL, result) != 0 || !IS_VALID_TIMESTAMP(*result))
			return false;
	}
	if (pg_add_s64_overflow(*result, iv->time, result) || !IS_VALID_TIMESTAMP(*result))
		return false;
	return true;
}

/*
 * The lot expiry of a program's policy for points earned at a finite at:
 * at + expiry rounded up to the end of its UTC day or month (the exclusive
 * expiry is the start of the next one); 22023 where that leaves the
 * timestamp range.
 */
TimestampTz
wallet_policy_expiry(TimestampTz at, const Interval *expiry, bool month)
{
	Interval	one;
	TimestampTz t;

	memset(&one, 0, sizeof(one));
	if (month)
		one.month = 1;
	else
		one.day = 1;
	if (!wallet_add_interval_utc(at, expiry, &t) ||
		!wallet_add_interval_utc(DatumGetTimestamp(DirectFunctionCall2(timestamp_trunc,
																	   CStringGetTextDatum(month ? "month" : "day"),
																	   TimestampGetDatum(t))),
								 &one, &t))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("expiry out of range"),
				 errdetail("Points earned at %s expire %s later, rounded up to the end of a %s, which is past the last timestamp.",
						   timestamptz_to_str(at),
						   DatumGetCString(DirectFunctionCall1(interval_out, IntervalPGetDatum(expiry))),
						   month ? "month" : "day")));
	return t;
}

/*
 * wallet.policy_expiry(at, expiry, granularity): a NULL at gives NULL (a
 * value handed row by row), a NULL expiry infinity (never); the arguments
 * are checked as create_program checks them.
 */
PG_FUNCTION_INFO_V1(policy_expiry);
Datum
policy_expiry(PG_FUNCTION_ARGS)
{
	char	   *granularity;
	Interval   *expiry;
	Interval	zero;

	if (PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("granularity must not be null"),
				 errdetail("Expiry is rounded up to the end of a 'day' or a 'month'.")));
	granularity = text_to_cstring(PG_GETARG_TEXT_PP(2));
	if (strcmp(granularity, "day") != 0 && strcmp(granularity, "month") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown granularity \"%s\"", granularity),
				 errdetail("Expiry is rounded up to the end of a 'day' or a 'month'.")));
	if (PG_ARGISNULL(1))
		PG_RETURN_TIMESTAMPTZ(DT_NOEND);
	expiry = PG_GETARG_INTERVAL_P(1);
	memset(&zero, 0, sizeof(zero));
	if (DatumGetInt32(DirectFunctionCall2(interval_cmp, IntervalPGetDatum(expiry), IntervalPGetDatum(&zero))) <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("expiry must be positive"),
				 errdetail("Points expire a positive time after they are earned, or never (NULL).")));
	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	if (TIMESTAMP_NOT_FINITE(PG_GETARG_TIMESTAMPTZ(0)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("at must be finite"),
				 errdetail("Points are earned at a real instant.")));
	PG_RETURN_TIMESTAMPTZ(wallet_policy_expiry(PG_GETARG_TIMESTAMPTZ(0), expiry, strcmp(granularity, "month") == 0));
}

/* Spendable points at as_of that expire in (as_of, as_of + within]. */
PG_FUNCTION_INFO_V1(ledger_expiring);
Datum
ledger_expiring(PG_FUNCTION_ARGS)
{
	Ledger	   *l = wallet_ledger_decode(PG_GETARG_POINTS_LEDGER_P(0));
	TimestampTz as_of = PG_GETARG_TIMESTAMPTZ(1);
	TimestampTz until;
	int64		sum = 0;
	int			i,
				j;

	if (!wallet_add_interval_utc(as_of, PG_GETARG_INTERVAL_P(2), &until))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("as_of + within is out of range"),
				 errdetail("Points expiring up to %s after %s are counted, and that instant is past the range of timestamps.",
						   DatumGetCString(DirectFunctionCall1(interval_out, PG_GETARG_DATUM(2))),
						   timestamptz_to_str(as_of))));

	for (i = 0; i < l->lots.n; i++)
	{
		LedgerLot  *lot = &l->lots.lots[i];

		if (lot->expires_at != DT_NOEND && lot->expires_at > as_of && lot->expires_at <= until)
			sum += lot->points;
	}
	for (i = 0; i < l->nholds; i++)
		if (as_of >= l->holds[i].expires_at)
			for (j = 0; j < l->holds[i].lots.n; j++)
			{
				LedgerLot  *lot = &l->holds[i].lots.lots[j];

				if (lot->expires_at != DT_NOEND && lot->expires_at > as_of && lot->expires_at <= until)
					sum += lot->points;
			}
	PG_RETURN_INT64(sum);
}

/* Points earned in the months (UTC) whose first instant lies in [from, to). */
PG_FUNCTION_INFO_V1(ledger_earned);
Datum
ledger_earned(PG_FUNCTION_ARGS)
{
	Ledger	   *l = wallet_ledger_decode(PG_GETARG_POINTS_LEDGER_P(0));
	TimestampTz from = PG_GETARG_TIMESTAMPTZ(1);
	TimestampTz to = PG_GETARG_TIMESTAMPTZ(2);
	int64		sum = 0;
	int			i;

	if (l->last_month != LEDGER_NO_MONTH)
		for (i = 0; i < LEDGER_MONTHS; i++)
		{
			TimestampTz start = month_start(l->last_month - i);

			if (start >= from && start < to &&
				pg_add_s64_overflow(sum, l->months[i], &sum))
				ereport(ERROR,
						(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
						 errmsg("points out of range"),
						 errdetail("The monthly earned points of the period add up to more than %lld.",
								   (long long) PG_INT64_MAX)));
		}
	PG_RETURN_INT64(sum);
}

/* Every lot: spendable ones (hold_id NULL), then those of each hold. */
PG_FUNCTION_INFO_V1(ledger_lots);
Datum
ledger_lots(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Ledger	   *l = wallet_ledger_decode(PG_GETARG_POINTS_LEDGER_P(0));
	int			i,
				j;

	InitMaterializedSRF(fcinfo, 0);
	for (i = -1; i < l->nholds; i++)
	{
		LotList    *ll = i < 0 ? &l->lots : &l->holds[i].lots;

		for (j = 0; j < ll->n; j++)
		{
			Datum		values[4];
			bool		nulls[4] = {false, false, false, false};

			values[0] = Int64GetDatum(ll->lots[j].points);
			values[1] = TimestampTzGetDatum(ll->lots[j].expires_at);
			nulls[1] = ll->lots[j].expires_at == DT_NOEND;
			values[2] = Int64GetDatum(i < 0 ? 0 : l->holds[i].hold_id);
			nulls[2] = i < 0;
			values[3] = TimestampTzGetDatum(i < 0 ? 0 : l->holds[i].expires_at);
			nulls[3] = i < 0;
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		}
	}
	return (Datum) 0;
}

/* Scalar totals, one call for the record-returning SQL wrapper. */
PG_FUNCTION_INFO_V1(ledger_totals);
Datum
ledger_totals(PG_FUNCTION_ARGS)
{
	Ledger	   *l = wallet_ledger_decode(PG_GETARG_POINTS_LEDGER_P(0));
	TupleDesc	desc;
	Datum		values[5];
	bool		nulls[5] = {false, false, false, false, false};

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "ledger_totals must return a record");
	values[0] = Int64GetDatum(l->debt);
	values[1] = Int64GetDatum(l->earned);
	values[2] = Int64GetDatum(l->redeemed);
	values[3] = Int64GetDatum(l->expired);
	values[4] = Int32GetDatum(l->nholds);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}

/*
 * NULL when both values hold the same state, else a sentence naming the
 * first difference (used by verify_ledger).  The encoding is canonical, so
 * equal states have equal bytes.
 */
PG_FUNCTION_INFO_V1(ledger_diff);
Datum
ledger_diff(PG_FUNCTION_ARGS)
{
	struct varlena *a;
	struct varlena *b;
	Ledger	   *x,
			   *y;

	/* not STRICT: NULL is this function's answer for "equal" */
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("ledgers to compare must not be null"),
				 errdetail("wallet.ledger_diff answers NULL for two equal ledgers, so it takes no NULL ledger.")));
	a = PG_GETARG_POINTS_LEDGER_P(0);
	b = PG_GETARG_POINTS_LEDGER_P(1);
	if (VARSIZE_ANY_EXHDR(a) == VARSIZE_ANY_EXHDR(b) &&
		memcmp(VARDATA_ANY(a), VARDATA_ANY(b), VARSIZE_ANY_EXHDR(a)) == 0)
		PG_RETURN_NULL();
	x = wallet_ledger_decode(a);
	y = wallet_ledger_decode(b);
	if (x->lots.n != y->lots.n ||
		(x->lots.n > 0 && memcmp(x->lots.lots, y->lots.lots, x->lots.n * sizeof(LedgerLot)) != 0))
		PG_RETURN_TEXT_P(cstring_to_text("The spendable lots differ."));
	if (x->nholds != y->nholds)
		PG_RETURN_TEXT_P(cstring_to_text("The open holds differ."));
	if (x->debt != y->debt)
		PG_RETURN_TEXT_P(cstring_to_text("The debt differs."));
	if (x->earned != y->earned || x->redeemed != y->redeemed || x->expired != y->expired)
		PG_RETURN_TEXT_P(cstring_to_text("The lifetime totals differ."));
	if (x->last_month != y->last_month || memcmp(x->months, y->months, sizeof(x->months)) != 0)
		PG_RETURN_TEXT_P(cstring_to_text("The monthly earned points differ."));
	PG_RETURN_TEXT_P(cstring_to_text("The open holds differ."));
}
