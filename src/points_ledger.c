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
ledger_init(Ledger *l)
{
	memset(l, 0, sizeof(Ledger));
	l->last_month = LEDGER_NO_MONTH;
}

/* A lot is spendable at t iff t < expires_at; never-expiring lots always are. */
bool
lot_alive(const LedgerLot *lot, TimestampTz t)
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

/* Insert a lot keeping expiry order; a lot of an existing expiry is merged. */
void
lots_add(LotList *ll, int64 points, TimestampTz expires_at, int errcode_on_overflow)
{
	int			i;

	Assert(points > 0);
	for (i = 0; i < ll->n; i++)
	{
		if (ll->lots[i].expires_at == expires_at)
		{
			if (pg_add_s64_overflow(ll->lots[i].points, points, &ll->lots[i].points))
				ereport(ERROR,
						(errcode(errcode_on_overflow),
						 errmsg("points out of range"),
						 errdetail("A lot would hold more than %lld points.", (long long) PG_INT64_MAX)));
			return;
		}
		/* DT_NOEND is the largest timestamp, so never-expiring lots sort last */
		if (ll->lots[i].expires_at > expires_at)
			break;
	}
	lots_reserve(ll, 1);
	memmove(&ll->lots[i + 1], &ll->lots[i], (ll->n - i) * sizeof(LedgerLot));
	ll->lots[i].points = points;
	ll->lots[i].expires_at = expires_at;
	ll->n++;
}

/*
 * Every point in the value (spendable and held) must add up within bigint,
 * so that any balance computed from it cannot overflow.
 */
void
ledger_check_total(const Ledger *l, int errcode_on_overflow)
{
	int64		sum = 0;
	int			i,
				j;

	for (i = 0; i < l->lots.n; i++)
		if (pg_add_s64_overflow(sum, l->lots.lots[i].points, &sum))
			goto overflow;
	for (i = 0; i < l->nholds; i++)
		for (j = 0; j < l->holds[i].lots.n; j++)
			if (pg_add_s64_overflow(sum, l->holds[i].lots.lots[j].points, &sum))
				goto overflow;
	if (pg_sub_s64_overflow(sum, l->debt, &sum))
		goto overflow;
	return;
overflow:
	ereport(ERROR,
			(errcode(errcode_on_overflow),
			 errmsg("points out of range"),
			 errdetail("The points of one account must add up to at most %lld.", (long long) PG_INT64_MAX)));
}

/* Spendable at t: live spendable lots, plus the live lots of lapsed holds, minus debt. */
int64
ledger_balance_at(const Ledger *l, TimestampTz t)
{
	int64		b = 0;
	int			i,
				j;

	for (i = 0; i < l->lots.n; i++)
		if (lot_alive(&l->lots.lots[i], t))
			b += l->lots.lots[i].points;	/* cannot overflow: ledger_check_total */
	for (i = 0; i < l->nholds; i++)
	{
		if (t < l->holds[i].expires_at)
			continue;
		for (j = 0; j < l->holds[i].lots.n; j++)
			if (lot_alive(&l->holds[i].lots.lots[j], t))
				b += l->holds[i].lots.lots[j].points;
	}
	return b - l->debt;
}

/* Month number since 2000-01 of instant t, in UTC. */
int
ledger_month_of(TimestampTz t)
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
	if (tm2timestamp(&tm, 0, NULL, &ts) != 0)
		return DT_NOEND;
	return ts;
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
ledger_encode(const Ledger *l)
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
		ll->lots[i].points = get_nonneg(d);
		ll->lots[i].expires_at = get_ts(d, &prev);
	}
}

Ledger *
ledger_decode(struct varlena *v)
{
	Ledger	   *l = palloc(sizeof(Ledger));
	Dec			d;
	uint64		n;
	int			i;

	ledger_init(l);
	d.p = (const unsigned char *) VARDATA_ANY(v);
	d.end = d.p + VARSIZE_ANY_EXHDR(v);
	if (d.p >= d.end || *d.p != LEDGER_FORMAT_VERSION)
		corrupt();
	d.p++;
	l->debt = get_nonneg(&d);
	l->earned = get_nonneg(&d);
	l->redeemed = get_nonneg(&d);
	l->expired = get_nonneg(&d);
	n = get_uvarint(&d);
	if (n > LEDGER_MONTHS)
		corrupt();
	if (n > 0)
	{
		l->last_month = (int32) unzigzag(get_uvarint(&d));
		for (i = 0; i < (int) n; i++)
			l->months[i] = get_nonneg(&d);
	}
	get_lots(&d, &l->lots);
	n = get_uvarint(&d);
	if (n > (uint64) (d.end - d.p))
		corrupt();
	l->nholds = l->maxholds = (int) n;
	l->holds = n ? palloc0(n * sizeof(LedgerHold)) : NULL;
	for (i = 0; i < l->nholds; i++)
	{
		TimestampTz prev = 0;

		l->holds[i].hold_id = get_nonneg(&d);
		l->holds[i].expires_at = get_ts(&d, &prev);
		get_lots(&d, &l->holds[i].lots);
	}
	if (d.p != d.end)
		corrupt();
	return l;
}

/* ---------- validation shared by text and binary input ---------- */

static void
bad_value(int code, const char *detail)
{
	ereport(ERROR,
			(errcode(code),
			 errmsg(code == ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE
					? "points_ledger value out of range"
					: "invalid input syntax for type points_ledger"),
			 errdetail("%s", detail)));
}

static void
check_lot_input(int64 points, TimestampTz expires_at)
{
	if (points <= 0)
		bad_value(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE, "The points of a lot must be positive.");
	if (expires_at == DT_NOBEGIN)
		bad_value(ERRCODE_INVALID_TEXT_REPRESENTATION, "A lot cannot expire at -infinity.");
	if (expires_at != DT_NOEND && !IS_VALID_TIMESTAMP(expires_at))
		bad_value(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE, "An expiry timestamp is out of range.");
}

static int
hold_cmp(const void *a, const void *b)
{
	int64		x = ((const LedgerHold *) a)->hold_id;
	int64		y = ((const LedgerHold *) b)->hold_id;

	return x < y ? -1 : x > y ? 1 : 0;
}

/* Totals, holds order and uniqueness, overall sum: after lots were merged in. */
static void
check_ledger_input(Ledger *l)
{
	int			i;

	if (l->debt < 0 || l->earned < 0 || l->redeemed < 0 || l->expired < 0)
		bad_value(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE, "Debt and lifetime totals cannot be negative.");
	for (i = 0; i < LEDGER_MONTHS; i++)
		if (l->months[i] < 0)
			bad_value(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE, "Monthly earned points cannot be negative.");
	if (l->nholds > 1)
		qsort(l->holds, l->nholds, sizeof(LedgerHold), hold_cmp);
	for (i = 0; i < l->nholds; i++)
	{
		if (l->holds[i].hold_id <= 0)
			bad_value(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE, "A hold id must be positive.");
		if (i > 0 && l->holds[i].hold_id == l->holds[i - 1].hold_id)
			bad_value(ERRCODE_INVALID_TEXT_REPRESENTATION, "A hold id appears twice.");
		if (TIMESTAMP_NOT_FINITE(l->holds[i].expires_at) || !IS_VALID_TIMESTAMP(l->holds[i].expires_at))
			bad_value(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE, "A hold must expire at a finite instant.");
		if (l->holds[i].lots.n == 0)
			bad_value(ERRCODE_INVALID_TEXT_REPRESENTATION, "A hold must hold at least one lot.");
	}
	ledger_check_total(l, ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE);
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
append_ts(StringInfo buf, TimestampTz t)
{
	int			utc = 0;

	if (t == DT_NOEND)
		appendStringInfoString(buf, "never");
	else
		appendStringInfoString(buf, JsonEncodeDateTime(NULL, TimestampTzGetDatum(t), TIMESTAMPTZOID, &utc));
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
		append_ts(buf, ll->lots[i].expires_at);
	}
	appendStringInfoChar(buf, close);
}

/* JSON array elements {"points": n, "expires_at": "..."|null} for entries.lots */
void
lots_append_json(StringInfo buf, const LotList *ll, bool *first)
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
			append_ts(buf, ll->lots[i].expires_at);
			appendStringInfoChar(buf, '"');
		}
		appendStringInfoChar(buf, '}');
	}
}

PG_FUNCTION_INFO_V1(points_ledger_out);
Datum
points_ledger_out(PG_FUNCTION_ARGS)
{
	Ledger	   *l = ledger_decode(PG_GETARG_POINTS_LEDGER_P(0));
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
		append_ts(&buf, l->holds[i].expires_at);
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
			appendStringInfo(&buf, "%s%04d-%02d:" INT64_FORMAT, first ? "" : ",",
							 y, m - (y - 2000) * 12 + 1, l->months[i]);
			first = false;
		}
	appendStringInfoChar(&buf, '}');
	PG_RETURN_CSTRING(buf.data);
}

typedef struct Parser
{
	const char *s;
	const char *p;
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
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("points_ledger value out of range"),
				 errdetail("The number given for the %s cannot be negative.", what)));
	if (!isdigit((unsigned char) *ps->p))
		syntax(ps, what);
	while (isdigit((unsigned char) *ps->p))
	{
		if (pg_mul_s64_overflow(v, 10, &v) || pg_add_s64_overflow(v, *ps->p - '0', &v))
			ereport(ERROR,
					(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
					 errmsg("points_ledger value out of range"),
					 errdetail("The number given for the %s is beyond the bigint range.", what)));
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
		dterr = DecodeDateTime(field, ftype, nf, &dtype, &tm, &fsec, &tz);
	if (dterr == DTERR_FIELD_OVERFLOW || dterr == DTERR_TZDISP_OVERFLOW)
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("points_ledger value out of range"),
				 errdetail("The timestamp \"%s\" is out of range.", tok)));
	if (dterr != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("invalid input syntax for type points_ledger: \"%s\"", ps->s),
				 errdetail("\"%s\" is not a timestamp.", tok)));
	if (dtype == DTK_LATE)
		return DT_NOEND;
	if (dtype != DTK_DATE)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("invalid input syntax for type points_ledger: \"%s\"", ps->s),
				 errdetail("\"%s\" is not a finite timestamp or \"never\".", tok)));
	if (tm2timestamp(&tm, fsec, &tz, &result) != 0 || !IS_VALID_TIMESTAMP(result))
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("points_ledger value out of range"),
				 errdetail("The timestamp \"%s\" is out of range.", tok)));
	return result;
}

/* "{p@ts,...}" or "[p@ts,...]", merged into ll */
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

		skip_ws(ps);
		points = parse_int(ps, "points of a lot");
		expect(ps, '@');
		exp = parse_ts(ps);
		check_lot_input(points, exp);
		lots_add(ll, points, exp, ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE);
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
		if (y < 1 || y > 294276 || m < 1 || m > 12)
			bad_value(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE, "A month must be written YYYY-MM with MM from 01 to 12.");
		expect(ps, ':');
		ms[n] = (int) ((y - 2000) * 12 + m - 1);
		vs[n] = parse_int(ps, "points earned in a month");
		for (i = 0; i < n; i++)
			if (ms[i] == ms[n])
				bad_value(ERRCODE_INVALID_TEXT_REPRESENTATION, "A month appears twice.");
		if (last == LEDGER_NO_MONTH || ms[n] > last)
			last = ms[n];
		n++;
		skip_ws(ps);
	}
	ps->p++;
	for (i = 0; i < n; i++)
	{
		if (last - ms[i] >= LEDGER_MONTHS)
			bad_value(ERRCODE_INVALID_TEXT_REPRESENTATION, "Monthly earned points are kept for 24 consecutive months only.");
		if (vs[i] == 0)
			continue;
		l->months[last - ms[i]] = vs[i];
		l->last_month = last;
	}
	/* a zero newest month is not representable: keep the newest non-zero one */
	if (l->last_month != LEDGER_NO_MONTH)
	{
		int			shift = 0;

		while (l->months[shift] == 0)
			shift++;
		if (shift > 0)
		{
			memmove(&l->months[0], &l->months[shift], (LEDGER_MONTHS - shift) * sizeof(int64));
			memset(&l->months[LEDGER_MONTHS - shift], 0, shift * sizeof(int64));
			l->last_month -= shift;
		}
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

	ledger_init(&l);
	ps.s = ps.p = str;
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
	check_ledger_input(&l);
	PG_RETURN_POINTER(ledger_encode(&l));
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
	Ledger	   *l = ledger_decode(PG_GETARG_POINTS_LEDGER_P(0));
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
recv_lots(StringInfo buf, LotList *ll)
{
	int			n = pq_getmsgint(buf, 4);
	int			i;

	if (n < 0 || n > (buf->len - buf->cursor) / 16)
		bad_value(ERRCODE_INVALID_BINARY_REPRESENTATION, "The lot count does not match the message.");
	for (i = 0; i < n; i++)
	{
		int64		points = pq_getmsgint64(buf);
		TimestampTz exp = pq_getmsgint64(buf);

		check_lot_input(points, exp);
		lots_add(ll, points, exp, ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE);
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
				n;

	if (version != LEDGER_FORMAT_VERSION)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
				 errmsg("unsupported points_ledger binary format version %d", version),
				 errdetail("This version of wallet reads format version %d only.", LEDGER_FORMAT_VERSION)));
	ledger_init(&l);
	l.debt = pq_getmsgint64(buf);
	l.earned = pq_getmsgint64(buf);
	l.redeemed = pq_getmsgint64(buf);
	l.expired = pq_getmsgint64(buf);
	l.last_month = pq_getmsgint(buf, 4);
	for (i = 0; i < LEDGER_MONTHS; i++)
		l.months[i] = pq_getmsgint64(buf);
	if (l.last_month == LEDGER_NO_MONTH)
	{
		for (i = 0; i < LEDGER_MONTHS; i++)
			if (l.months[i] != 0)
				bad_value(ERRCODE_INVALID_BINARY_REPRESENTATION, "Monthly earned points need a month.");
	}
	else if (l.months[0] == 0)
		bad_value(ERRCODE_INVALID_BINARY_REPRESENTATION, "The newest month of earned points must be non-zero.");
	else if (l.last_month < (1 - 2000) * 12 + LEDGER_MONTHS || l.last_month > (294276 - 2000) * 12)
		bad_value(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE, "The newest month of earned points is out of range.");
	recv_lots(buf, &l.lots);
	n = pq_getmsgint(buf, 4);
	if (n < 0 || n > (buf->len - buf->cursor) / 20)
		bad_value(ERRCODE_INVALID_BINARY_REPRESENTATION, "The hold count does not match the message.");
	l.nholds = l.maxholds = n;
	l.holds = n ? palloc0(n * sizeof(LedgerHold)) : NULL;
	for (i = 0; i < n; i++)
	{
		l.holds[i].hold_id = pq_getmsgint64(buf);
		l.holds[i].expires_at = pq_getmsgint64(buf);
		recv_lots(buf, &l.holds[i].lots);
	}
	pq_getmsgend(buf);
	check_ledger_input(&l);
	PG_RETURN_POINTER(ledger_encode(&l));
}

/* ---------- read-only functions ---------- */

PG_FUNCTION_INFO_V1(ledger_balance);
Datum
ledger_balance(PG_FUNCTION_ARGS)
{
	Ledger	   *l = ledger_decode(PG_GETARG_POINTS_LEDGER_P(0));

	PG_RETURN_INT64(ledger_balance_at(l, PG_GETARG_TIMESTAMPTZ(1)));
}

/* t + interval computed in UTC, so the result does not depend on TimeZone. */
static TimestampTz
add_interval_utc(TimestampTz t, Interval *iv)
{
	return DatumGetTimestamp(DirectFunctionCall2(timestamp_pl_interval,
												 TimestampGetDatum(t),
												 IntervalPGetDatum(iv)));
}

/* Spendable points at as_of that expire in (as_of, as_of + within]. */
PG_FUNCTION_INFO_V1(ledger_expiring);
Datum
ledger_expiring(PG_FUNCTION_ARGS)
{
	Ledger	   *l = ledger_decode(PG_GETARG_POINTS_LEDGER_P(0));
	TimestampTz as_of = PG_GETARG_TIMESTAMPTZ(1);
	TimestampTz until = add_interval_utc(as_of, PG_GETARG_INTERVAL_P(2));
	int64		sum = 0;
	int			i,
				j;

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
	Ledger	   *l = ledger_decode(PG_GETARG_POINTS_LEDGER_P(0));
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
	Ledger	   *l = ledger_decode(PG_GETARG_POINTS_LEDGER_P(0));
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
	Ledger	   *l = ledger_decode(PG_GETARG_POINTS_LEDGER_P(0));
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
	struct varlena *a = PG_GETARG_POINTS_LEDGER_P(0);
	struct varlena *b = PG_GETARG_POINTS_LEDGER_P(1);
	Ledger	   *x,
			   *y;

	if (VARSIZE_ANY_EXHDR(a) == VARSIZE_ANY_EXHDR(b) &&
		memcmp(VARDATA_ANY(a), VARDATA_ANY(b), VARSIZE_ANY_EXHDR(a)) == 0)
		PG_RETURN_NULL();
	x = ledger_decode(a);
	y = ledger_decode(b);
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
