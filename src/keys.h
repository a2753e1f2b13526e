/*
 * keys.h: the server's root key and the per-campaign code keys derived from it.
 *
 * The root key is read once, in the postmaster, from the source named by
 * wallet.root_key_file or wallet.root_key_command; backends inherit it by
 * fork.  It never leaves this module: callers get HMAC states derived from it.
 */
#ifndef WALLET_KEYS_H
#define WALLET_KEYS_H

#include <sodium.h>

#define WALLET_ROOT_KEY_BYTES 32

/* The database's installation id (wallet.installation, a uuid's 16 bytes). */
#define WALLET_INSTALLATION_ID_BYTES 16

/* Defines the settings and, in the postmaster, loads the key (from _PG_init). */
extern void wallet_keys_init(void);

/* Whether the root key is loaded (no error). */
extern bool wallet_root_key_loaded(void);

/* Raises WL001 with a hint naming the settings unless the key is loaded. */
extern void wallet_require_root_key(void);

/*
 * The HMAC-SHA-256 state keyed with the code key of (campaign_id, key_version)
 * bound to installation_id (16 bytes), or derived the legacy, unbound way of
 * 0.1.0 when installation_id is NULL; after the key set-up: copy it, then
 * update with the message and finalise.  Cached per backend in locked,
 * guarded memory; raises WL001 without root key.
 */
extern const crypto_auth_hmacsha256_state *wallet_code_key_state(uint32 campaign_id, uint16 key_version,
																 const uint8 *installation_id);

/*
 * The raw code key of (campaign_id, key_version, installation_id or NULL)
 * into out[32] (the derivation of docs/code-format.md; callers must
 * sodium_memzero it).
 */
extern void wallet_code_key_derive(uint32 campaign_id, uint16 key_version, const uint8 *installation_id,
								   unsigned char *out);

#endif							/* WALLET_KEYS_H */
