/*
 * redeem.h: what wallet.redeem_code's two fast paths share (redeem.c: by
 * kept SPI plans; redeem_direct.c: by direct index and heap access).
 */
#ifndef WALLET_REDEEM_H
#define WALLET_REDEEM_H

#include "fmgr.h"
#include "datatype/timestamp.h"
#include "utils/jsonb.h"

#include "code_cache.h"
#include "marketing_code.h"

/* A well-formed call naming an authentic code of a campaign the caller acts for. */
typedef struct RedeemRequest
{
	text	   *member;
	text	   *key;
	Jsonb	   *ctx;
	CodeFields	f;
	int64		merchant_id;
	int64		campaign_id;
	int64		serial;
} RedeemRequest;

typedef struct RedeemResult
{
	const char *status;
	int64		redemption_id;	/* 0: none */
	int64		campaign_id;
	int64		serial;
	TimestampTz redeemed_at;
} RedeemResult;

typedef enum RedeemDirect
{
	REDEEM_DIRECT_NO,			/* not decided, nothing written: take the SPI path */
	REDEEM_DIRECT_DONE,			/* decided: the result is set */
	REDEEM_DIRECT_REFUSED_CODE, /* refused after inserting a fresh code counter */
	REDEEM_DIRECT_REFUSED_MEMBER	/* ... a fresh member counter */
} RedeemDirect;

/*
 * The common case under READ COMMITTED by direct access (redeem_direct.c).
 * The caller holds the idempotency key's lock.  A REFUSED_* answer leaves a
 * fresh counter row counting this refused call: the caller takes it back.
 */
extern RedeemDirect wallet_redeem_direct(const RedeemRequest *q, RedeemResult *r);

#endif							/* WALLET_REDEEM_H */
