/*
 * code_hmac.h: HMAC-SHA-256 of a code's 24-byte MAC message from a keyed
 * libsodium state, using the CPU's SHA extensions when it has them.
 */
#ifndef WALLET_CODE_HMAC_H
#define WALLET_CODE_HMAC_H

#include <sodium.h>

/* First 8 bytes of HMAC-SHA-256(key, msg[24]) as a big-endian integer. */
extern uint64 code_hmac64(const crypto_auth_hmacsha256_state *keyed, const unsigned char *msg);

#endif							/* WALLET_CODE_HMAC_H */
