/*
 * wallet.c: module entry point and wallet.version().
 */
#include "wallet.h"

#include <sodium.h>

#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/inval.h"

#include "guard.h"
#include "keys.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

/*
 * Runs once per process that loads the library (the postmaster, when wallet
 * is in shared_preload_libraries).  Every later area relies on libsodium
 * being initialised, so a failure stops the load rather than letting a
 * crypto call run on an uninitialised library.
 */
#define WALLET_RELCACHE_CALLBACKS 16
static WalletRelcacheCallback relcache_callbacks[WALLET_RELCACHE_CALLBACKS];
static int	relcache_callbacks_used = 0;

/* The one relcache callback the wallet registers: runs every cache's. */
static void
wallet_relcache_dispatch(Datum arg, Oid relid)
{
	for (int i = 0; i < relcache_callbacks_used; i++)
		relcache_callbacks[i] ((Datum) 0, relid);
}

void
wallet_register_relcache_callback(WalletRelcacheCallback fn)
{
	if (relcache_callbacks_used == 0)
		CacheRegisterRelcacheCallback(wallet_relcache_dispatch, (Datum) 0);
	if (relcache_callbacks_used >= WALLET_RELCACHE_CALLBACKS)
		elog(FATAL, "out of wallet relcache callback slots");
	relcache_callbacks[relcache_callbacks_used++] = fn;
}

void
_PG_init(void)
{
	/* 0 = initialised now, 1 = already initialised, -1 = failure */
	if (sodium_init() < 0)
		ereport(ERROR,
				(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
				 errmsg("could not initialise libsodium"),
				 errdetail("sodium_init() failed, so no cryptographic function of wallet can run."),
				 errhint("Check that the libsodium shared library is installed and that the system can provide random numbers.")));

	/* marketing codes: settings and, when preloaded, the root key */
	wallet_keys_init();

	/* the brute-force guard's counters in shared memory, when preloaded */
	wallet_guard_init();
}

PG_FUNCTION_INFO_V1(wallet_version);

/* wallet.version(): extension version and the libsodium it runs with. */
Datum
wallet_version(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(psprintf("wallet %s (libsodium %s)",
											  WALLET_VERSION,
											  sodium_version_string())));
}
