/*
 * wallet.h: what every wallet source file shares.
 *
 * SQLSTATEs of the project's own class "WL" are all in errcodes.h.
 */
#ifndef WALLET_H
#define WALLET_H

#include "postgres.h"

#include "errcodes.h"

#ifndef WALLET_VERSION
#error "WALLET_VERSION must be defined by the build (see Makefile)"
#endif

/*
 * The extension's relcache invalidation callbacks, run by one callback it
 * registers with PostgreSQL (wallet.c): a backend has room for ten in all,
 * shared with PostgreSQL's own caches, and the wallet keeps more caches
 * than that leaves.  Same signature as CacheRegisterRelcacheCallback's.
 */
typedef void (*WalletRelcacheCallback) (Datum arg, Oid relid);
extern void wallet_register_relcache_callback(WalletRelcacheCallback fn);

#endif							/* WALLET_H */
