/*
 * code_cache.h: per-backend cache of what code validation needs from
 * wallet.campaigns and wallet.code_keys, so that no table is read per code.
 * Invalidated through the relcache of those tables (their triggers call
 * wallet_internal.code_cache_invalidate()).
 */
#ifndef WALLET_CODE_CACHE_H
#define WALLET_CODE_CACHE_H

#include "marketing_code.h"

typedef struct CampaignInfo
{
	uint32		campaign_id;	/* hash key */
	bool		exists;
	int64		merchant_id;	/* merchant running the campaign */
	uint8		mac_bits;
	char		prefix[CODE_MAX_PREFIX + 1];	/* as written, for new codes */
	char		prefix_folded[CODE_MAX_PREFIX + 1]; /* as input reads it */
	uint16		current_version;
	uint8		known[(CODE_MAX_VERSION + 8) / 8];	/* bit per key version with a key row */
	uint8		retired[(CODE_MAX_VERSION + 8) / 8];	/* ... and retired */
	uint8		bound[(CODE_MAX_VERSION + 8) / 8];	/* ... bound to installation_id */
	uint8		installation_id[16];	/* what bound versions are bound to */
} CampaignInfo;

#define CAMPAIGN_VERSION_BIT(set, v) (((set)[(v) >> 3] >> ((v) & 7)) & 1)

/*
 * The installation id key version v is bound to, or NULL when v uses the
 * legacy derivation of 0.1.0 (wallet_code_compute_mac's second argument).
 */
#define CAMPAIGN_VERSION_INSTALLATION(info, v) \
	(CAMPAIGN_VERSION_BIT((info)->bound, (v)) ? (info)->installation_id : NULL)

/* The cached campaign (exists = false for an unknown one). */
extern const CampaignInfo *wallet_campaign_info(uint32 campaign_id);

typedef enum CodeAuth
{
	CODE_AUTH_OK,
	CODE_AUTH_FORGED,			/* MAC wrong, unknown campaign/version, or prefix/MAC length not the campaign's */
	CODE_AUTH_RETIRED			/* MAC right, key version retired */
} CodeAuth;

/* Authenticates a decoded code: MAC (constant-time compare) and key state. */
extern CodeAuth wallet_code_verify(const CodeFields *f);

#endif							/* WALLET_CODE_CACHE_H */
