/*
 * marketing_code.h: the wallet.marketing_code type (see docs/code-format.md).
 *
 * A value is 24 bytes, self-describing: campaign id, serial, key version,
 * MAC length, merchant prefix and the truncated MAC itself.
 */
#ifndef WALLET_MARKETING_CODE_H
#define WALLET_MARKETING_CODE_H

#include "fmgr.h"

/* Ranges the 24-byte value can hold */
#define CODE_MAX_CAMPAIGN	UINT64CONST(0xFFFFFFFF)		/* 32 bits */
#define CODE_SERIAL_BITS	38
#define CODE_MAX_SERIAL		((UINT64CONST(1) << CODE_SERIAL_BITS) - 1)
#define CODE_MAX_VERSION	1023		/* 10 bits; versions start at 1 */
#define CODE_MIN_MAC_BITS	32
#define CODE_MAX_MAC_BITS	64
#define CODE_DEFAULT_MAC_BITS 40
#define CODE_MAX_PREFIX		8

/* Longest text form: 8 prefix + 32 body + 1 check symbols, 11 hyphens, NUL */
#define CODE_MAX_TEXT		64

/*
 * On-disk/in-memory layout (fixed length, 24 bytes, double alignment).
 * The prefix is a base-37 number of its characters as written (digit value
 * 1 + index in "0-9A-Z"; 0 = no prefix); see code_fields for the meaning.
 */
typedef struct MarketingCode
{
	uint32		campaign;
	uint16		vm;				/* key version << 6 | (mac bits - 32) */
	uint16		prefix_hi;		/* prefix number >> 26 */
	uint64		sp;				/* serial << 26 | (prefix number & (2^26 - 1)) */
	uint64		mac;			/* truncated MAC, right-aligned */
} MarketingCode;

/* The unpacked fields of a code. */
typedef struct CodeFields
{
	uint32		campaign;
	uint64		serial;
	uint16		version;
	uint8		mac_bits;
	uint64		mac;
	char		prefix[CODE_MAX_PREFIX + 1];	/* as written, NUL-terminated */
} CodeFields;

#define DatumGetMarketingCodeP(X)	((MarketingCode *) DatumGetPointer(X))
#define MarketingCodePGetDatum(X)	PointerGetDatum(X)
#define PG_GETARG_MARKETING_CODE_P(n)	DatumGetMarketingCodeP(PG_GETARG_DATUM(n))
#define PG_RETURN_MARKETING_CODE_P(x)	return MarketingCodePGetDatum(x)

/* Result of decoding text: what parse_code reports and the input function raises. */
typedef enum CodeTextStatus
{
	CODE_TEXT_OK,
	CODE_TEXT_MALFORMED,		/* bad symbol, wrong length, bad structure */
	CODE_TEXT_MISTYPED			/* check symbols do not match */
} CodeTextStatus;

extern void wallet_code_pack(const CodeFields *f, MarketingCode *c);
extern void wallet_code_unpack(const MarketingCode *c, CodeFields *f);

/* Text form; returns the length written into buf (at least CODE_MAX_TEXT bytes). */
extern int	wallet_code_to_text(const CodeFields *f, char *buf);

/* Decodes text; on failure *detail is a palloc'd errdetail sentence. */
extern CodeTextStatus wallet_code_from_text(const char *str, CodeFields *f, char **detail);

/* Folds a prefix the way input reads it (O as 0, I and L as 1) into out[9]. */
extern void wallet_code_fold_prefix(const char *prefix, char *out);

#endif							/* WALLET_MARKETING_CODE_H */
