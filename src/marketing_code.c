/*
 * marketing_code.c: the wallet.marketing_code type — packing, the text form
 * (prefix, Crockford base32 body, mod-37 check symbol), binary I/O,
 * comparison, hashing and accessors.  docs/code-format.md is the spec.
 */
#include "wallet.h"

#include <ctype.h>

#include "common/hashfn.h"
#include "libpq/pqformat.h"
#include "utils/builtins.h"
#include "utils/sortsupport.h"

#include "keys.h"
#include "code_hmac.h"
#include "marketing_code.h"

/* Crockford base32: value -> symbol */
static const char b32_symbols[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/* Check symbols: value 0..36 -> symbol (Crockford's check alphabet) */
static const char check_symbols[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ*~$=U";

/* Prefix characters in the order of the prefix number's digits (value = index + 1) */
static const char prefix_chars[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";

/* Widths of the campaign and serial fields, chosen by two header bits each */
static const int campaign_widths[4] = {8, 16, 20, 32};
static const int serial_widths[4] = {16, 24, 32, 38};

#define HEADER_BITS 6
#define MIN_BODY	13			/* ceil((6 + 8 + 16 + 32) / 5) */
#define MAX_BODY	32			/* ceil((6 + 6 + 10 + 38 + 32 + 64) / 5) */
#define MIN_SYMBOLS (MIN_BODY + 1)
#define MAX_SYMBOLS (CODE_MAX_PREFIX + MAX_BODY + 1)

/*
 * Value of a symbol for the check sum, as input reads it: base32 value,
 * O as 0, I and L as 1, U = 36 (a prefix letter, and a check symbol);
 * -1 = not a symbol.  '*', '~', '$', '=' are check symbols only (32..35).
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
code_fold_prefix(const char *prefix, char *out)
{
	for (; *prefix; prefix++)
		*out++ = (*prefix == 'O') ? '0' : (*prefix == 'I' || *prefix == 'L') ? '1' : *prefix;
	*out = '\0';
}

void
code_pack(const CodeFields *f, MarketingCode *c)
{
	uint64		num = prefix_number(f->prefix);

	c->campaign = f->campaign;
	c->vm = (uint16) ((f->version << 6) | (f->mac_bits - CODE_MIN_MAC_BITS));
	c->prefix_hi = (uint16) (num >> 26);
	c->sp = (f->serial << 26) | (num & ((UINT64CONST(1) << 26) - 1));
	c->mac = f->mac;
}

void
code_unpack(const MarketingCode *c, CodeFields *f)
{
	f->campaign = c->campaign;
	f->version = c->vm >> 6;
	f->mac_bits = (c->vm & 63) + CODE_MIN_MAC_BITS;
	f->serial = c->sp >> 26;
	f->mac = c->mac;
	prefix_from_number(((uint64) c->prefix_hi << 26) | (c->sp & ((UINT64CONST(1) << 26) - 1)), f->prefix);
}

/* ---- MAC -------------------------------------------------------------- */

void
code_mac_message(const CodeFields *f, unsigned char *msg)
{
	char		folded[CODE_MAX_PREFIX + 1];
	int			i;

	memset(msg, 0, CODE_MAC_MESSAGE_BYTES);
	msg[0] = 1;					/* encoding version */
	msg[1] = f->mac_bits;
	code_fold_prefix(f->prefix, folded);
	memcpy(msg + 2, folded, strlen(folded));
	for (i = 0; i < 4; i++)
		msg[10 + i] = (unsigned char) (f->campaign >> (24 - 8 * i));
	for (i = 0; i < 8; i++)
		msg[14 + i] = (unsigned char) (f->serial >> (56 - 8 * i));
	msg[22] = (unsigned char) (f->version >> 8);
	msg[23] = (unsigned char) f->version;
}

uint64
code_compute_mac(const CodeFields *f, const uint8 *installation_id)
{
	unsigned char msg[CODE_MAC_MESSAGE_BYTES];

	code_mac_message(f, msg);
	/* the keyed state is cached: one HMAC per message, no key set-up */
	return code_hmac64(code_key_state(f->campaign, f->version, installation_id), msg) >> (64 - f->mac_bits);
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

/* weight of the j-th symbol from the right (j = 1 is the check symbol) */
static inline int
check_weight(int j)
{
	return 1 + (j - 1) % 36;
}

int
code_to_text(const CodeFields *f, char *buf)
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
				sum = 0,
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
	/* weights count from the right, the check symbol having weight 1 */
	for (k = 0; k < nsym; k++)
		sum += check_weight(nsym + 1 - k) * vals[k];
	syms[nsym] = check_symbols[(37 - sum % 37) % 37];
	nsym++;

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

CodeTextStatus
code_from_text(const char *str, CodeFields *f, char **detail)
{
	char		syms[MAX_SYMBOLS];
	int			pos[MAX_SYMBOLS];
	int			vals[MAX_SYMBOLS];
	int			nsym = 0,
				i,
				j,
				sum,
				n,
				plen,
				bits,
				hdr,
				cw,
				sw,
				mbits;
	bool		m_flag,
				v_flag;
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
	for (i = 0; i < nsym; i++)
	{
		int			v = symbol_value(syms[i]);
		bool		ok = (i == nsym - 1) ? v >= 0 : (v >= 0 && (isalnum((unsigned char) syms[i])));

		if (!ok)
		{
			unsigned char ch = (unsigned char) str[pos[i] - 1];

			if (ch >= 0x20 && ch < 0x7f)
				*detail = psprintf("The character \"%c\" at position %d is not a %s.",
								   ch, pos[i], i == nsym - 1 ? "check symbol" : "letter or digit");
			else
				*detail = psprintf("The byte 0x%02x at position %d is not a %s.",
								   ch, pos[i], i == nsym - 1 ? "check symbol" : "letter or digit");
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

	/* the check symbol: weighted sum mod 37 over every symbol must be 0 */
	sum = 0;
	for (i = 0; i < nsym; i++)
		sum += check_weight(nsym - i) * vals[i];
	if (sum % 37 != 0)
	{
		*detail = pstrdup("The check symbol does not match the rest of the code, so a symbol was probably mistyped or two were swapped.");
		return CODE_TEXT_MISTYPED;
	}

	/*
	 * The body ends just before the check symbol; its last 20 bits (4
	 * symbols, always body) hold the header and the MAC length, which give
	 * the body's length and hence where the prefix ends.
	 */
	for (i = nsym - 5; i < nsym - 1; i++)
		if (vals[i] > 31 || syms[i] == 'U')
		{
			*detail = psprintf("The character \"%c\" at position %d is not a Crockford base32 symbol.",
							   str[pos[i] - 1], pos[i]);
			return CODE_TEXT_MALFORMED;
		}
	{
		uint32		tail = (vals[nsym - 5] << 15) | (vals[nsym - 4] << 10) | (vals[nsym - 3] << 5) | vals[nsym - 2];

		hdr = tail & 63;
		cw = hdr & 3;
		sw = (hdr >> 2) & 3;
		m_flag = (hdr >> 4) & 1;
		v_flag = (hdr >> 5) & 1;
		mbits = m_flag ? (int) ((tail >> 6) & 63) + CODE_MIN_MAC_BITS : CODE_DEFAULT_MAC_BITS;
	}
	if (mbits > CODE_MAX_MAC_BITS || (m_flag && mbits == CODE_DEFAULT_MAC_BITS))
	{
		*detail = psprintf("The code's header gives a MAC length of %d bits, which is not valid.", mbits);
		return CODE_TEXT_MALFORMED;
	}
	bits = HEADER_BITS + (m_flag ? 6 : 0) + (v_flag ? 10 : 0) + mbits + campaign_widths[cw] + serial_widths[sw];
	n = (bits + 4) / 5;
	plen = nsym - 1 - n;
	if (plen < 0 || plen > CODE_MAX_PREFIX)
	{
		*detail = psprintf("The code has %d symbols but its header calls for a body of %d symbols, a check symbol and a prefix of at most %d characters.",
						   nsym, n, CODE_MAX_PREFIX);
		return CODE_TEXT_MALFORMED;
	}
	for (i = plen; i < nsym - 1; i++)
	{
		if (vals[i] > 31 || syms[i] == 'U')
		{
			*detail = psprintf("The character \"%c\" at position %d is not a Crockford base32 symbol.",
							   str[pos[i] - 1], pos[i]);
			return CODE_TEXT_MALFORMED;
		}
		u192_push(&b, vals[i], 5);
	}

	(void) u192_pop(&b, HEADER_BITS);
	if (m_flag)
		(void) u192_pop(&b, 6);
	f->version = v_flag ? (uint16) u192_pop(&b, 10) : 1;
	f->mac_bits = mbits;
	f->mac = u192_pop(&b, mbits);
	f->serial = u192_pop(&b, serial_widths[sw]);
	f->campaign = (uint32) u192_pop(&b, campaign_widths[cw]);
	if (b.w[0] != 0 || b.w[1] != 0 || b.w[2] != 0)
	{
		*detail = pstrdup("The code's body has bits set beyond its fields.");
		return CODE_TEXT_MALFORMED;
	}
	/* one text per value: fields use the narrowest width, flags only when needed */
	if ((v_flag && f->version < 2) || campaign_class(f->campaign) != cw ||
		serial_class(f->serial) != sw)
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

	if (code_from_text(str, &f, &detail) != CODE_TEXT_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("invalid input syntax for type %s: \"%s\"", "wallet.marketing_code", str),
				 errdetail_internal("%s", detail)));
	c = palloc(sizeof(MarketingCode));
	code_pack(&f, c);
	PG_RETURN_MARKETING_CODE_P(c);
}

PG_FUNCTION_INFO_V1(marketing_code_out);
Datum
marketing_code_out(PG_FUNCTION_ARGS)
{
	MarketingCode *c = PG_GETARG_MARKETING_CODE_P(0);
	CodeFields	f;
	char	   *buf = palloc(CODE_MAX_TEXT);

	code_unpack(c, &f);
	code_to_text(&f, buf);
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

	code_unpack(c, &f);
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
	code_pack(&f, c);
	PG_RETURN_MARKETING_CODE_P(c);
}

/* ---- SQL: comparison and hashing -------------------------------------------- */

static uint64
folded_prefix_number(const MarketingCode *c)
{
	char		p[CODE_MAX_PREFIX + 1],
				folded[CODE_MAX_PREFIX + 1];

	prefix_from_number(((uint64) c->prefix_hi << 26) | (c->sp & ((UINT64CONST(1) << 26) - 1)), p);
	code_fold_prefix(p, folded);
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

	code_unpack(PG_GETARG_MARKETING_CODE_P(0), &f);
	if (f.prefix[0] == '\0')
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(f.prefix));
}
