/*
 * code_hmac.c: a code's MAC — its message and the one HMAC per code.
 *
 * A keyed crypto_auth_hmacsha256_state holds the SHA-256 states after the
 * inner and outer key pads (one 64-byte block each).  A code's MAC message
 * is 24 bytes, so the HMAC is exactly two more SHA-256 compressions: the
 * padded message block from the inner state, then the padded inner digest
 * from the outer state.  On CPUs with the SHA extensions these run with the
 * SHA-NI instructions, several times faster than libsodium's portable code;
 * elsewhere libsodium computes the HMAC.  The first use in a process checks
 * both against each other and keeps libsodium if they ever disagree.
 */
#include "wallet.h"

#include "code_hmac.h"
#include "keys.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>
#define HAVE_SHA_NI_CODE 1
#endif

#define MSG_BYTES CODE_MAC_MESSAGE_BYTES

static uint64
hmac64_sodium(const crypto_auth_hmacsha256_state *keyed, const unsigned char *msg)
{
	crypto_auth_hmacsha256_state st;
	unsigned char out[crypto_auth_hmacsha256_BYTES];
	uint64		r = 0;
	int			i;

	memcpy(&st, keyed, sizeof(st));
	crypto_auth_hmacsha256_update(&st, msg, MSG_BYTES);
	crypto_auth_hmacsha256_final(&st, out);
	sodium_memzero(&st, sizeof(st));
	for (i = 0; i < 8; i++)
		r = (r << 8) | out[i];
	sodium_memzero(out, sizeof(out));
	return r;
}

#ifdef HAVE_SHA_NI_CODE

static const uint32 K256[64] __attribute__((aligned(16))) = {
	0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
	0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
	0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
	0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
	0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
	0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
	0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
	0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2
};

/* One SHA-256 compression of a 64-byte block into state (FIPS 180-4 order). */
__attribute__((target("sha,sse4.1")))
static void
sha256_block_ni(uint32 *state, const unsigned char *block)
{
	const __m128i mask = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
	__m128i		s0,
				s1,
				tmp,
				msg,
				abef_save,
				cdgh_save;
	__m128i		m[4];
	int			g;

	tmp = _mm_loadu_si128((const __m128i *) &state[0]);
	s1 = _mm_loadu_si128((const __m128i *) &state[4]);
	tmp = _mm_shuffle_epi32(tmp, 0xB1);		/* CDAB */
	s1 = _mm_shuffle_epi32(s1, 0x1B);	/* EFGH */
	s0 = _mm_alignr_epi8(tmp, s1, 8);	/* ABEF */
	s1 = _mm_blend_epi16(s1, tmp, 0xF0);	/* CDGH */
	abef_save = s0;
	cdgh_save = s1;

	for (g = 0; g < 4; g++)
		m[g] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *) (block + 16 * g)), mask);

#pragma GCC unroll 16
	for (g = 0; g < 16; g++)
	{
		msg = _mm_add_epi32(m[g & 3], _mm_load_si128((const __m128i *) &K256[4 * g]));
		s1 = _mm_sha256rnds2_epu32(s1, s0, msg);
		if (g >= 3 && g <= 14)
		{
			/* finish the schedule words of group g + 1 */
			tmp = _mm_alignr_epi8(m[g & 3], m[(g - 1) & 3], 4);
			m[(g + 1) & 3] = _mm_add_epi32(m[(g + 1) & 3], tmp);
			m[(g + 1) & 3] = _mm_sha256msg2_epu32(m[(g + 1) & 3], m[g & 3]);
		}
		msg = _mm_shuffle_epi32(msg, 0x0E);
		s0 = _mm_sha256rnds2_epu32(s0, s1, msg);
		if (g >= 1 && g <= 12)
			/* start the schedule words of group g + 3 */
			m[(g - 1) & 3] = _mm_sha256msg1_epu32(m[(g - 1) & 3], m[g & 3]);
	}

	s0 = _mm_add_epi32(s0, abef_save);
	s1 = _mm_add_epi32(s1, cdgh_save);
	tmp = _mm_shuffle_epi32(s0, 0x1B);	/* FEBA */
	s1 = _mm_shuffle_epi32(s1, 0xB1);	/* DCHG */
	s0 = _mm_blend_epi16(tmp, s1, 0xF0);	/* DCBA */
	s1 = _mm_alignr_epi8(s1, tmp, 8);	/* HGFE */
	_mm_storeu_si128((__m128i *) &state[0], s0);
	_mm_storeu_si128((__m128i *) &state[4], s1);
}

static uint64
hmac64_ni(const crypto_auth_hmacsha256_state *keyed, const unsigned char *msg)
{
	uint32		st[8];
	unsigned char block[64];
	int			i;

	/* inner: H(ipad block || msg); the pad block is already in ictx */
	memset(block, 0, sizeof(block));
	memcpy(block, msg, MSG_BYTES);
	block[MSG_BYTES] = 0x80;
	block[62] = ((64 + MSG_BYTES) * 8) >> 8;
	block[63] = ((64 + MSG_BYTES) * 8) & 0xff;
	memcpy(st, keyed->ictx.state, sizeof(st));
	sha256_block_ni(st, block);

	/* outer: H(opad block || inner digest) */
	for (i = 0; i < 8; i++)
	{
		block[4 * i] = (unsigned char) (st[i] >> 24);
		block[4 * i + 1] = (unsigned char) (st[i] >> 16);
		block[4 * i + 2] = (unsigned char) (st[i] >> 8);
		block[4 * i + 3] = (unsigned char) st[i];
	}
	memset(block + 32, 0, 32);
	block[32] = 0x80;
	block[62] = ((64 + 32) * 8) >> 8;
	block[63] = ((64 + 32) * 8) & 0xff;
	memcpy(st, keyed->octx.state, sizeof(st));
	sha256_block_ni(st, block);
	sodium_memzero(block, sizeof(block));
	return ((uint64) st[0] << 32) | st[1];
}

/* CPUID: SHA extensions (leaf 7 EBX bit 29) and SSE4.1 (leaf 1 ECX bit 19) */
static bool
cpu_has_sha_ni(void)
{
	unsigned int a,
				b,
				c,
				d;

	if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 19)))
		return false;
	if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
		return false;
	return (b & (1u << 29)) != 0;
}

/* 0 = not decided yet, 1 = SHA-NI, -1 = libsodium */
static int	use_ni = 0;

static bool
ni_agrees(const crypto_auth_hmacsha256_state *keyed, const unsigned char *msg)
{
	unsigned char m2[MSG_BYTES];
	int			i;

	if (hmac64_ni(keyed, msg) != hmac64_sodium(keyed, msg))
		return false;
	for (i = 0; i < MSG_BYTES; i++)
		m2[i] = (unsigned char) (msg[i] ^ (0x5a + 17 * i));
	return hmac64_ni(keyed, m2) == hmac64_sodium(keyed, m2);
}
#endif							/* HAVE_SHA_NI_CODE */

uint64
wallet_code_hmac64(const crypto_auth_hmacsha256_state *keyed, const unsigned char *msg)
{
#ifdef HAVE_SHA_NI_CODE
	if (likely(use_ni > 0))
		return hmac64_ni(keyed, msg);
	if (use_ni == 0)
	{
		/* only the fast path relies on the layout of libsodium's state */
		use_ni = (cpu_has_sha_ni() &&
				  keyed->ictx.count == 512 && keyed->octx.count == 512 &&
				  ni_agrees(keyed, msg)) ? 1 : -1;
		elog(DEBUG1, "wallet: code MACs computed with %s", use_ni > 0 ? "SHA-NI" : "libsodium");
		if (use_ni > 0)
			return hmac64_ni(keyed, msg);
	}
#endif
	return hmac64_sodium(keyed, msg);
}

/* ---- the MAC of a code ---------------------------------------------------- */

void
wallet_code_mac_message(const CodeFields *f, unsigned char *msg)
{
	char		folded[CODE_MAX_PREFIX + 1];
	int			i;

	memset(msg, 0, CODE_MAC_MESSAGE_BYTES);
	msg[0] = 1;					/* encoding version */
	msg[1] = f->mac_bits;
	wallet_code_fold_prefix(f->prefix, folded);
	memcpy(msg + 2, folded, strlen(folded));
	for (i = 0; i < 4; i++)
		msg[10 + i] = (unsigned char) (f->campaign >> (24 - 8 * i));
	for (i = 0; i < 8; i++)
		msg[14 + i] = (unsigned char) (f->serial >> (56 - 8 * i));
	msg[22] = (unsigned char) (f->version >> 8);
	msg[23] = (unsigned char) f->version;
}

uint64
wallet_code_compute_mac(const CodeFields *f, const uint8 *installation_id)
{
	unsigned char msg[CODE_MAC_MESSAGE_BYTES];

	wallet_code_mac_message(f, msg);
	/* the keyed state is cached: one HMAC per message, no key set-up */
	return wallet_code_hmac64(wallet_code_key_state(f->campaign, f->version, installation_id), msg) >> (64 - f->mac_bits);
}
