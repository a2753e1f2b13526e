/*
 * code_hmac.h: a code's MAC (docs/code-format.md section 2): the 24-byte
 * message, and HMAC-SHA-256 of it from a keyed libsodium state, using the
 * CPU's SHA extensions when it has them.
 */
#ifndef WALLET_CODE_HMAC_H
#define WALLET_CODE_HMAC_H

#include <sodium.h>

#include "marketing_code.h"

/* The canonical 24-byte MAC message of everything but the MAC. */
#define CODE_MAC_MESSAGE_BYTES 24
extern void wallet_code_mac_message(const CodeFields *f, unsigned char *msg);

/*
 * The truncated MAC of f under the code key of (campaign, version), bound to
 * installation_id (16 bytes), or of the legacy derivation when it is NULL.
 */
extern uint64 wallet_code_compute_mac(const CodeFields *f, const uint8 *installation_id);

/* First 8 bytes of HMAC-SHA-256(key, msg[24]) as a big-endian integer. */
extern uint64 wallet_code_hmac64(const crypto_auth_hmacsha256_state *keyed, const unsigned char *msg);

#endif							/* WALLET_CODE_HMAC_H */
