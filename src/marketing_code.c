/*
 * marketing_code.c: the wallet.marketing_code type — packing, the text form
 * (prefix, Crockford base32 body, two check symbols; 0.1.0's one check symbol
 * still read), binary I/O, comparison, hashing and accessors.  The MAC is
 * code_hmac.c's.  docs/code-format.md is the spec.
 */
#include "wallet.h"

#include <ctype.h>

#include "common/hashfn.h"
#include "libpq/pqformat.h"
#include "utils/builtins.h"
#include "utils/sortsupport.h"

#include "marketing_code.h"

/* Crockford base32: value -> symbol */
static const char b32_symbols[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/*
 * Values 0..36 of the mod-37 check sum -> symbol (Crockford's check
 * alphabet): 32..36 appear only as the one check symbol of a 0.1.0 text, or
 * (U) in a prefix; the check symbols printed since 0.2.0 are base32.
 */
static const char check_symbols[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ*~$=U";

/* Prefix characters in the order of the prefix number's digits (value = index + 1) */
static const char prefix_chars[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";

/* Widths of the campaign and serial fields, chosen by two header bits each */
static const int campaign_widths[4] = {8, 16, 20, 32};
static const int serial_widths[4] = {16, 24, 32, 38};

#define HEADER_BITS 6
#define MIN_BODY	14			/* ceil((6 + 6 + 8 + 16 + 32) / 5) */
#define MAX_BODY	32			/* ceil((6 + 6 + 10 + 38 + 32 + 64) / 5) */
#define MIN_SYMBOLS (MIN_BODY + 1)	/* a 0.1.0 text: one check symbol */
#define MAX_SYMBOLS (CODE_MAX_PREFIX + MAX_BODY + 2)

/*
 * Value of a symbol for the check sum, as input reads it: base32 value,
 * O as 0, I and L as 1, U = 36 (a prefix letter, and a 0.1.0 check symbol);
 * -1 = not a symbol.  '*', '~', '$', '=' are 0.1.0 check symbols only (32..35).
 */
static int
symbol_value(int ch)
{
	const char *p;

	ch = toupper((unsigned char) ch);
	if (ch == 'O')
		return 0;
	if (ch == 'I' || ch == 'L')
		return 1;
	if (ch == '\0')
		return -1;
	p = strchr(check_symbols, ch);
	return p ? (int) (p - check_symbols) : -1;
}

/* ---- 192-bit body number -------------------------------------------- */

typedef struct U192
{
	uint64		w[3];			/* little-endian limbs */
} U192;

/* b = b << bits | v (0 < bits <= 64, v < 2^bits) */
static inline void
u192_push(U192 *b, uint64 v, int bits)
{
	if (bits == 64)
	{
		b->w[2] = b->w[1];
		b->w[1] = b->w[0];
		b->w[0] = v;
		return;
	}
	b->w[2] = (b->w[2] << bits) | (b->w[1] >> (64 - bits));
	b->w[1] = (b->w[1] << bits) | (b->w[0] >> (64 - bits));
	b->w[0] = (b->w[0] << bits) | v;
}

/* returns b mod 2^bits and shifts b right by bits (0 < bits <= 64) */
static inline uint64
u192_pop(U192 *b, int bits)
{
	uint64		v;

	if (bits == 64)
	{
		v = b->w[0];
		b->w[0] = b->w[1];
		b->w[1] = b->w[2];
		b->w[2] = 0;
		return v;
	}
	v = b->w[0] & ((UINT64CONST(1) << bits) - 1);
	b->w[0] = (b->w[0] >> bits) | (b->w[1] << (64 - bits));
	b->w[1] = (b->w[1] >> bits) | (b->w[2] << (64 - bits));
	b->w[2] >>= bits;
	return v;
}

/* the 5 bits of b at bit offset off */
static inline int
u192_symbol(const U192 *b, int off)
{
	int			word = off / 64,
				shift = off % 64;
	uint64		v = b->w[word] >> shift;

	if (shift > 59 && word < 2)
		v |= b->w[word + 1] << (64 - shift);
	return (int) (v & 31);
}

/* ---- packing ---------------------------------------------------------- */

static uint64
prefix_number(const char *prefix)
{
	uint64		num = 0;

	for (; *prefix; prefix++)
		num = num * 37 + 1 + (strchr(prefix_chars, *prefix) - prefix_chars);
	return num;
}

static void
prefix_from_number(uint64 num, char *out)
{
	char		rev[CODE_MAX_PREFIX];
	int			n = 0,
				i;

	while (num != 0 && n < CODE_MAX_PREFIX)
	{
		rev[n++] = prefix_chars[num % 37 - 1];
		num /= 37;
	}
	for (i = 0; i < n; i++)
		out[i] = rev[n - 1 - i];
	out[n] = '\0';
}

void
wallet_code_fold_prefix(const char *prefix, char *out)
{
	for (; *prefix; prefix++)
		*out++ = (*prefix == 'O') ? '0' : (*prefix == 'I' || *prefix == 'L') ? '1' : *prefix;
	*out = '\0';
}

void
wallet_code_pack(const CodeFields *f, MarketingCode *c)
{
	uint64		num = prefix_number(f->prefix);

	c->campaign = f->campaign;
	c->vm = (uint16) ((f->version << 6) | (f->mac_bits - CODE_MIN_MAC_BITS));
	c->prefix_hi = (uint16) (num >> 26);
	c->sp = (f->serial << 26) | (num & ((UINT64CONST(1) << 26) - 1));
	c->mac = f->mac;
}

void
wallet_code_unpack(const MarketingCode *c, CodeFields *f)
{
	f->campaign = c->campaign;
	f->version = c->vm >> 6;
	f->mac_bits = (c->vm & 63) + CODE_MIN_MAC_BITS;
	f->serial = c->sp >> 26;
	f->mac = c->mac;
	prefix_from_number(((uint64) c->prefix_hi << 26) | (c->sp & ((UINT64CONST(1) << 26) - 1)), f->prefix);
}

/* ---- text form ---------------------------------------------------------- */

static int
campaign_class(uint32 campaign)
{
	int			k;

	for (k = 0; k < 3; k++)
		if ((uint64) campaign < (UINT64CONST(1) << campaign_widths[k]))
			return k;
	return 3;
}

static int
serial_class(uint64 serial)
{
	int			k;

	for (k = 0; k < 3; k++)
		if (serial < (UINT64CONST(1) << serial_widths[k]))
			return k;
	return 3;
}

/*
 * The check sum: Σ weight(j) · value(symbol j) mod 37 over every symbol,
 * j counted from the right from 1.  It is 0 for every valid text, of either
 * form, so a single substitution or adjacent swap is caught before the form
 * is even decided (docs/code-format.md 3.2 has the proof).
 */
static int
check_sum(const int *vals, int nsym)
{
	int			sum = 0,
				i;

	for (i = 0; i < nsym; i++)
		sum += (1 + (nsym - 1 - i) % 36) * vals[i];
	return sum % 37;
}

/* What the header in the last 4 body symbols says (docs 3.1). */
typedef struct CodeHeader
{
	int			cw,
				sw,
				mac_bits;
	bool		m_flag,
				v_flag;
} CodeHeader;

/*
 * Reads the header from the values of the last 4 body symbols; returns the
 * body's length in symbols, or -1 if a symbol is not base32 (U) or the MAC
 * length is invalid.
 */
static int
read_header(const int *v, CodeHeader *h)
{
	uint32		tail;
	int			hdr;

	if (v[0] > 31 || v[1] > 31 || v[2] > 31 || v[3] > 31)
		return -1;
	tail = (v[0] << 15) | (v[1] << 10) | (v[2] << 5) | v[3];
	hdr = tail & 63;
	h->cw = hdr & 3;
	h->sw = (hdr >> 2) & 3;
	h->m_flag = (hdr >> 4) & 1;
	h->v_flag = (hdr >> 5) & 1;
	h->mac_bits = h->m_flag ? (int) ((tail >> 6) & 63) + CODE_MIN_MAC_BITS : CODE_DEFAULT_MAC_BITS;
	if (h->mac_bits > CODE_MAX_MAC_BITS || (h->m_flag && h->mac_bits == CODE_DEFAULT_MAC_BITS))
		return -1;
	return (HEADER_BITS + (h->m_flag ? 6 : 0) + (h->v_flag ? 10 : 0) + h->mac_bits +
			campaign_widths[h->cw] + serial_widths[h->sw] + 4) / 5;
}

/*
 * Whether a text (valid check sum) is in the 0.1.0 form: the 4 symbols
 * before its last one are a header whose body leaves 0 to 8 prefix symbols.
 * Genuine 0.1.0 texts always are; texts printed since 0.2.0 never are,
 * because their check pair is chosen so (check_pair).
 */
static bool
reads_as_0_1_0(const int *vals, int nsym)
{
	CodeHeader	h;
	int			n = read_header(vals + nsym - 5, &h);

	return n >= 0 && nsym - 1 - n >= 0 && nsym - 1 - n <= CODE_MAX_PREFIX;
}

/*
 * Sets vals[nsym], vals[nsym + 1] to the check pair after the nsym symbols
 * of prefix and body: the smallest c1 (with its c0, both base32) that makes
 * the check sum 0 and keeps the text from reading as a 0.1.0 one.  Some c1
 * always does (docs 3.2: enumerated by docs/code_reference.py --prove).
 */
static void
check_pair(int *vals, int nsym)
{
	int			t,
				c1;

	vals[nsym] = vals[nsym + 1] = 0;
	t = (37 - check_sum(vals, nsym + 2)) % 37;	/* 2 c1 + c0 must make up t */
	for (c1 = 0; c1 < 32; c1++)
	{
		int			c0 = (t + 74 - 2 * c1) % 37;

		if (c0 > 31)
			continue;
		vals[nsym] = c1;
		vals[nsym + 1] = c0;
		if (!reads_as_0_1_0(vals, nsym + 2))
			return;
	}
	elog(ERROR, "wallet: no check pair for a marketing code");	/* cannot happen */
}

int
wallet_code_to_text(const CodeFields *f, char *buf)
{
	U192		b = {{0, 0, 0}};
	int			cw = campaign_class(f->campaign),
				sw = serial_class(f->serial);
	bool		m_flag = f->mac_bits != CODE_DEFAULT_MAC_BITS;
	bool		v_flag = f->version != 1;
	int			bits,
				n,
				k,
				plen = strlen(f->prefix),
				nsym,
				len = 0;
	int			vals[MAX_SYMBOLS];
	char		syms[MAX_SYMBOLS];

	/* most significant field first, so the header ends up in the low bits */
	u192_push(&b, f->campaign, campaign_widths[cw]);
	u192_push(&b, f->serial, serial_widths[sw]);
	u192_push(&b, f->mac, f->mac_bits);
	bits = campaign_widths[cw] + serial_widths[sw] + f->mac_bits + HEADER_BITS;
	if (v_flag)
	{
		u192_push(&b, f->version, 10);
		bits += 10;
	}
	if (m_flag)
	{
		u192_push(&b, f->mac_bits - CODE_MIN_MAC_BITS, 6);
		bits += 6;
	}
	u192_push(&b, cw | (sw << 2) | (m_flag << 4) | (v_flag << 5), HEADER_BITS);
	n = (bits + 4) / 5;

	nsym = 0;
	for (k = 0; k < plen; k++)
	{
		syms[nsym] = f->prefix[k];
		vals[nsym++] = symbol_value(f->prefix[k]);
	}
	for (k = 0; k < n; k++)
	{
		int			v = u192_symbol(&b, (n - 1 - k) * 5);

		syms[nsym] = b32_symbols[v];
		vals[nsym++] = v;
	}
	check_pair(vals, nsym);
	syms[nsym] = b32_symbols[vals[nsym]];
	syms[nsym + 1] = b32_symbols[vals[nsym + 1]];
	nsym += 2;

	if (plen > 0)
	{
		memcpy(buf, f->prefix, plen);
		len = plen;
		buf[len++] = '-';
	}
	for (k = plen; k < nsym; k++)
	{
		if (k > plen && (k - plen) % 4 == 0)
			buf[len++] = '-';
		buf[len++] = syms[k];
	}
	buf[len] = '\0';
	return len;
}

/* errdetail for a symbol that is not allowed where it stands */
static char *
bad_symbol_detail(const char *str, int pos, const char *what)
{
	unsigned char ch = (unsigned char) str[pos - 1];

	if (ch >= 0x20 && ch < 0x7f)
		return psprintf("The character \"%c\" at position %d is not a %s.", ch, pos, what);
	return psprintf("The byte 0x%02x at position %d is not a %s.", ch, pos, what);
}

CodeTextStatus
wallet_code_from_text(const char *str, CodeFields *f, char **detail)
{
	char		syms[MAX_SYMBOLS];
	int			pos[MAX_SYMBOLS];
	int			vals[MAX_SYMBOLS + 2];
	int			nsym = 0,
				i,
				j,
				n,
				end,
				plen;
	CodeHeader	h;
	U192		b = {{0, 0, 0}};

	/* normalise: drop white space and hyphens, upper-case, remember positions */
	for (i = 0; str[i] != '\0'; i++)
	{
		int			ch = (unsigned char) str[i];

		if (ch == '-' || isspace(ch))
			continue;
		if (nsym == MAX_SYMBOLS)
		{
			*detail = psprintf("A marketing code has at most %d symbols, not counting spaces and hyphens.", MAX_SYMBOLS);
			return CODE_TEXT_MALFORMED;
		}
		syms[nsym] = toupper(ch);
		pos[nsym++] = i + 1;
	}
	/* letters and digits; the last symbol may be a 0.1.0 check symbol */
	for (i = 0; i < nsym; i++)
	{
		int			v = symbol_value(syms[i]);
		bool		ok = (i == nsym - 1) ? v >= 0 : (v >= 0 && (isalnum((unsigned char) syms[i])));

		if (!ok)
		{
			*detail = bad_symbol_detail(str, pos[i], i == nsym - 1 ? "check symbol" : "letter or digit");
			return CODE_TEXT_MALFORMED;
		}
		vals[i] = v;
	}
	if (nsym < MIN_SYMBOLS)
	{
		*detail = psprintf("A marketing code has %d to %d symbols, not counting spaces and hyphens, but this has %d.",
						   MIN_SYMBOLS, MAX_SYMBOLS, nsym);
		return CODE_TEXT_MALFORMED;
	}

	/* the check sum comes first: it catches every single typo, in either form */
	if (check_sum(vals, nsym) != 0)
	{
		*detail = pstrdup("The check symbols do not match the rest of the code, so a symbol was probably mistyped or two were swapped.");
		return CODE_TEXT_MISTYPED;
	}

	if (reads_as_0_1_0(vals, nsym))
		end = nsym - 1;			/* one check symbol, as wallet 0.1.0 printed */
	else
	{
		/* two check symbols, base32, and the pair check_pair chooses */
		end = nsym - 2;
		for (i = end; i < nsym; i++)
			if (vals[i] > 31)
			{
				*detail = bad_symbol_detail(str, pos[i], "Crockford base32 symbol");
				return CODE_TEXT_MALFORMED;
			}
		check_pair(vals, end);
		if (vals[end] != symbol_value(syms[end]) || vals[end + 1] != symbol_value(syms[end + 1]))
		{
			*detail = pstrdup("The check symbols do not match the rest of the code, so symbols were probably mistyped.");
			return CODE_TEXT_MISTYPED;
		}
	}

	/*
	 * The body ends just before the check symbols; its last 20 bits (4
	 * symbols, always body) hold the header and the MAC length, which give
	 * the body's length and hence where the prefix ends.
	 */
	for (i = end - 4; i < end; i++)
		if (vals[i] > 31)
		{
			*detail = bad_symbol_detail(str, pos[i], "Crockford base32 symbol");
			return CODE_TEXT_MALFORMED;
		}
	n = read_header(vals + end - 4, &h);
	if (n < 0)
	{
		*detail = psprintf("The code's header gives a MAC length of %d bits, which is not valid.", h.mac_bits);
		return CODE_TEXT_MALFORMED;
	}
	plen = end - n;
	if (plen < 0 || plen > CODE_MAX_PREFIX)
	{
		*detail = psprintf("The code has %d symbols but its header calls for a body of %d symbols, check symbols and a prefix of at most %d characters.",
						   nsym, n, CODE_MAX_PREFIX);
		return CODE_TEXT_MALFORMED;
	}
	for (i = plen; i < end; i++)
	{
		if (vals[i] > 31)
		{
			*detail = bad_symbol_detail(str, pos[i], "Crockford base32 symbol");
			return CODE_TEXT_MALFORMED;
		}
		u192_push(&b, vals[i], 5);
	}

	(void) u192_pop(&b, HEADER_BITS);
	if (h.m_flag)
		(void) u192_pop(&b, 6);
	f->version = h.v_flag ? (uint16) u192_pop(&b, 10) : 1;
	f->mac_bits = h.mac_bits;
	f->mac = u192_pop(&b, h.mac_bits);
	f->serial = u192_pop(&b, serial_widths[h.sw]);
	f->campaign = (uint32) u192_pop(&b, campaign_widths[h.cw]);
	if (b.w[0] != 0 || b.w[1] != 0 || b.w[2] != 0)
	{
		*detail = pstrdup("The code's body has bits set beyond its fields.");
		return CODE_TEXT_MALFORMED;
	}
	/* one text per value: fields use the narrowest width, flags only when needed */
	if ((h.v_flag && f->version < 2) || campaign_class(f->campaign) != h.cw ||
		serial_class(f->serial) != h.sw)
	{
		*detail = pstrdup("The code's body is not in canonical form.");
		return CODE_TEXT_MALFORMED;
	}
	for (j = 0; j < plen; j++)
		f->prefix[j] = syms[j];
	f->prefix[plen] = '\0';
	return CODE_TEXT_OK;
}

/* ---- SQL: I/O ------------------------------------------------------------- */

PG_FUNCTION_INFO_V1(marketing_code_in);
Datum
marketing_code_in(PG_FUNCTION_ARGS)
{
	char	   *str = PG_GETARG_CSTRING(0);
	CodeFields	f;
	char	   *detail = NULL;
	MarketingCode *c;

	if (wallet_code_from_text(str, &f, &detail) != CODE_TEXT_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("invalid input syntax for type %s: \"%s\"", "wallet.marketing_code", str),
				 errdetail_internal("%s", detail)));
	c = palloc(sizeof(MarketingCode));
	wallet_code_pack(&f, c);
	PG_RETURN_MARKETING_CODE_P(c);
}

PG_FUNCTION_INFO_V1(marketing_code_out);
Datum
marketing_code_out(PG_FUNCTION_ARGS)
{
	MarketingCode *c = PG_GETARG_MARKETING_CODE_P(0);
	CodeFields	f;
	char	   *buf = palloc(CODE_MAX_TEXT);

	wallet_code_unpack(c, &f);
	wallet_code_to_text(&f, buf);
	PG_RETURN_CSTRING(buf);
}

/*
 * Binary form: format version byte 1, campaign (4 bytes), serial (8), key
 * version (2), MAC bits (1), MAC (8), prefix length (1) and characters.
 */
#define CODE_BINARY_VERSION 1

PG_FUNCTION_INFO_V1(marketing_code_send);
Datum
marketing_code_send(PG_FUNCTION_ARGS)
{
	MarketingCode *c = PG_GETARG_MARKETING_CODE_P(0);
	CodeFields	f;
	StringInfoData buf;
	int			plen;

	wallet_code_unpack(c, &f);
	plen = strlen(f.prefix);
	pq_begintypsend(&buf);
	pq_sendint8(&buf, CODE_BINARY_VERSION);
	pq_sendint32(&buf, f.campaign);
	pq_sendint64(&buf, f.serial);
	pq_sendint16(&buf, f.version);
	pq_sendint8(&buf, f.mac_bits);
	pq_sendint64(&buf, f.mac);
	pq_sendint8(&buf, plen);
	pq_sendbytes(&buf, f.prefix, plen);
	PG_RETURN_BYTEA_P(pq_endtypsend(&buf));
}

PG_FUNCTION_INFO_V1(marketing_code_recv);
Datum
marketing_code_recv(PG_FUNCTION_ARGS)
{
	StringInfo	buf = (StringInfo) PG_GETARG_POINTER(0);
	CodeFields	f;
	int			version = pq_getmsgint(buf, 1);
	int			plen,
				i;
	MarketingCode *c;

	if (version != CODE_BINARY_VERSION)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
				 errmsg("unsupported binary format version %d of type wallet.marketing_code", version),
				 errdetail("This server reads format version %d.", CODE_BINARY_VERSION)));
	f.campaign = (uint32) pq_getmsgint(buf, 4);
	f.serial = (uint64) pq_getmsgint64(buf);
	f.version = (uint16) pq_getmsgint(buf, 2);
	f.mac_bits = (uint8) pq_getmsgint(buf, 1);
	f.mac = (uint64) pq_getmsgint64(buf);
	plen = pq_getmsgint(buf, 1);
	if (f.serial > CODE_MAX_SERIAL || f.version < 1 || f.version > CODE_MAX_VERSION ||
		f.mac_bits < CODE_MIN_MAC_BITS || f.mac_bits > CODE_MAX_MAC_BITS ||
		(f.mac_bits < 64 && (f.mac >> f.mac_bits) != 0) || plen > CODE_MAX_PREFIX)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
				 errmsg("invalid binary value of type wallet.marketing_code"),
				 errdetail("A field is out of range: serial below 2^38, key version 1 to 1023, MAC 32 to 64 bits, prefix at most 8 characters.")));
	memcpy(f.prefix, pq_getmsgbytes(buf, plen), plen);
	f.prefix[plen] = '\0';
	for (i = 0; i < plen; i++)
		if (!((f.prefix[i] >= 'A' && f.prefix[i] <= 'Z') || (f.prefix[i] >= '0' && f.prefix[i] <= '9')))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
					 errmsg("invalid binary value of type wallet.marketing_code"),
					 errdetail("The prefix may hold only A to Z and 0 to 9.")));
	c = palloc(sizeof(MarketingCode));
	wallet_code_pack(&f, c);
	PG_RETURN_MARKETING_CODE_P(c);
}

/* ---- SQL: comparison and hashing -------------------------------------------- */

static uint64
folded_prefix_number(const MarketingCode *c)
{
	char		p[CODE_MAX_PREFIX + 1],
				folded[CODE_MAX_PREFIX + 1];

	prefix_from_number(((uint64) c->prefix_hi << 26) | (c->sp & ((UINT64CONST(1) << 26) - 1)), p);
	wallet_code_fold_prefix(p, folded);
	return prefix_number(folded);
}

/*
 * Order: campaign, serial, key version, MAC length, MAC, then the prefix as
 * input reads it (so "SH0P-..." equals "SHOP-...": they are one code).
 */
static int
code_cmp_internal(const MarketingCode *a, const MarketingCode *b)
{
	uint64		x,
				y;

	if (a->campaign != b->campaign)
		return a->campaign < b->campaign ? -1 : 1;
	x = a->sp >> 26;
	y = b->sp >> 26;
	if (x != y)
		return x < y ? -1 : 1;
	if (a->vm != b->vm)
		return a->vm < b->vm ? -1 : 1;
	if (a->mac != b->mac)
		return a->mac < b->mac ? -1 : 1;
	if (a->prefix_hi == b->prefix_hi && ((a->sp ^ b->sp) & ((UINT64CONST(1) << 26) - 1)) == 0)
		return 0;
	x = folded_prefix_number(a);
	y = folded_prefix_number(b);
	return x < y ? -1 : x > y ? 1 : 0;
}

#define CODE_CMP_FN(name, expr) \
PG_FUNCTION_INFO_V1(name); \
Datum \
name(PG_FUNCTION_ARGS) \
{ \
	int			r = code_cmp_internal(PG_GETARG_MARKETING_CODE_P(0), PG_GETARG_MARKETING_CODE_P(1)); \
	PG_RETURN_BOOL(expr); \
}

CODE_CMP_FN(marketing_code_eq, r == 0)
CODE_CMP_FN(marketing_code_ne, r != 0)
CODE_CMP_FN(marketing_code_lt, r < 0)
CODE_CMP_FN(marketing_code_le, r <= 0)
CODE_CMP_FN(marketing_code_gt, r > 0)
CODE_CMP_FN(marketing_code_ge, r >= 0)

PG_FUNCTION_INFO_V1(marketing_code_cmp);
Datum
marketing_code_cmp(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(code_cmp_internal(PG_GETARG_MARKETING_CODE_P(0), PG_GETARG_MARKETING_CODE_P(1)));
}

/* Sorting (ORDER BY, CREATE INDEX, merge joins) without a function call per comparison. */
static int
code_fastcmp(Datum x, Datum y, SortSupport ssup)
{
	return code_cmp_internal(DatumGetMarketingCodeP(x), DatumGetMarketingCodeP(y));
}

PG_FUNCTION_INFO_V1(marketing_code_sortsupport);
Datum
marketing_code_sortsupport(PG_FUNCTION_ARGS)
{
	SortSupport ssup = (SortSupport) PG_GETARG_POINTER(0);

	ssup->comparator = code_fastcmp;
	PG_RETURN_VOID();
}

/* Hashes exactly what equality compares (with the folded prefix). */
static void
code_hash_key(const MarketingCode *c, uint64 *key)
{
	key[0] = ((uint64) c->campaign << 16) | c->vm;
	key[1] = c->sp >> 26;
	key[2] = c->mac;
	key[3] = folded_prefix_number(c);
}

PG_FUNCTION_INFO_V1(marketing_code_hash);
Datum
marketing_code_hash(PG_FUNCTION_ARGS)
{
	uint64		key[4];

	code_hash_key(PG_GETARG_MARKETING_CODE_P(0), key);
	return hash_any((unsigned char *) key, sizeof(key));
}

PG_FUNCTION_INFO_V1(marketing_code_hash_extended);
Datum
marketing_code_hash_extended(PG_FUNCTION_ARGS)
{
	uint64		key[4];

	code_hash_key(PG_GETARG_MARKETING_CODE_P(0), key);
	return hash_any_extended((unsigned char *) key, sizeof(key), PG_GETARG_INT64(1));
}

/* ---- SQL: accessors --------------------------------------------------------- */

PG_FUNCTION_INFO_V1(code_campaign);
Datum
code_campaign(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT64((int64) PG_GETARG_MARKETING_CODE_P(0)->campaign);
}

PG_FUNCTION_INFO_V1(code_serial);
Datum
code_serial(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT64((int64) (PG_GETARG_MARKETING_CODE_P(0)->sp >> 26));
}

PG_FUNCTION_INFO_V1(code_key_version);
Datum
code_key_version(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32((int32) (PG_GETARG_MARKETING_CODE_P(0)->vm >> 6));
}

PG_FUNCTION_INFO_V1(code_mac_bits);
Datum
code_mac_bits(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32((int32) (PG_GETARG_MARKETING_CODE_P(0)->vm & 63) + CODE_MIN_MAC_BITS);
}

PG_FUNCTION_INFO_V1(code_prefix);
Datum
code_prefix(PG_FUNCTION_ARGS)
{
	CodeFields	f;

	wallet_code_unpack(PG_GETARG_MARKETING_CODE_P(0), &f);
	if (f.prefix[0] == '\0')
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(f.prefix));
}
