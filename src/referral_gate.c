/*
 * referral_gate.c: wallet_internal.merchant_refers, the WHEN clause of the
 * referral trigger on wallet.purchases.
 *
 * Every purchase fires that trigger; most merchants run no referral program,
 * and a PL/pgSQL trigger costs a function call, a search_path switch and a
 * query even when it has nothing to do.  Whether a merchant has any referral
 * program is cached in the session instead.  A statement trigger on
 * wallet.referral_programs clears the cache of its own session at once and
 * sends a relcache invalidation that clears every other session's by its
 * next transaction (how acts_for's cache works, privileges.c).
 */
#include "wallet.h"
#include "privileges.h"
#include "referral_gate.h"

#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"

#define GATE_CACHE 64

typedef struct Gate
{
	int64		merchant_id;
	bool		refers;
} Gate;

static Gate gate[GATE_CACHE];
static int	gate_used = 0;
static bool gate_registered = false;
static Oid	gate_relid = InvalidOid;	/* wallet.referral_programs, once known */
static SPIPlanPtr gate_plan = NULL;

static void
gate_relcache_changed(Datum arg, Oid relid)
{
	/* the table's oid is looked up again: it changes when the extension is re-created */
	if (relid == InvalidOid || relid == gate_relid || gate_relid == InvalidOid)
	{
		gate_used = 0;
		gate_relid = InvalidOid;
	}
}

/* Whether the merchant has a row in wallet.referral_programs, read as the owner. */
static bool
gate_lookup(int64 merchant_id)
{
	Oid			save_user;
	int			save_sec;
	volatile bool refers = false;
	Datum		arg = Int64GetDatum(merchant_id);
	Oid			argtype = INT8OID;

	GetUserIdAndSecContext(&save_user, &save_sec);
	SetUserIdAndSecContext(wallet_owner(), save_sec | SECURITY_LOCAL_USERID_CHANGE);
	PG_TRY();
	{
		bool		isnull;

		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		if (gate_plan == NULL)
		{
			SPIPlanPtr	plan = SPI_prepare("SELECT EXISTS (SELECT FROM wallet.referral_programs r"
										   " WHERE r.merchant_id OPERATOR(pg_catalog.=) $1)",
										   1, &argtype);

			if (plan == NULL)
				elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
			SPI_keepplan(plan);
			gate_plan = plan;
		}
		if (SPI_execute_plan(gate_plan, &arg, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "reading wallet.referral_programs failed");
		refers = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		SPI_finish();
	}
	PG_FINALLY();
	{
		SetUserIdAndSecContext(save_user, save_sec);
	}
	PG_END_TRY();
	return refers;
}

/* Whether the merchant runs any referral program (cached per session). */
bool
wallet_merchant_refers(int64 merchant_id)
{
	bool		refers;

	if (!gate_registered)
	{
		wallet_register_relcache_callback(gate_relcache_changed);
		gate_registered = true;
	}
	if (gate_relid == InvalidOid)
	{
		gate_relid = get_relname_relid("referral_programs", get_namespace_oid("wallet", false));
		gate_used = 0;
	}
	for (int i = 0; i < gate_used; i++)
		if (gate[i].merchant_id == merchant_id)
			return gate[i].refers;
	refers = gate_lookup(merchant_id);
	if (gate_used == GATE_CACHE)
		gate_used = 0;
	gate[gate_used].merchant_id = merchant_id;
	gate[gate_used].refers = refers;
	gate_used++;
	return refers;
}

PG_FUNCTION_INFO_V1(merchant_refers);

/* wallet_internal.merchant_refers(merchant_id): whether it runs any referral program. */
Datum
merchant_refers(PG_FUNCTION_ARGS)
{
	/* no merchant has no referral program (not STRICT: no API-like NULL result) */
	if (PG_ARGISNULL(0))
		PG_RETURN_BOOL(false);
	PG_RETURN_BOOL(wallet_merchant_refers(PG_GETARG_INT64(0)));
}

PG_FUNCTION_INFO_V1(referral_programs_changed);

/*
 * Statement trigger on wallet.referral_programs: a new program counts from
 * the next purchase, in this transaction too; the relcache invalidation
 * tells the other sessions at commit.
 */
Datum
referral_programs_changed(PG_FUNCTION_ARGS)
{
	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("referral_programs_changed must be called as a trigger"),
				 errdetail("It resets the cache of wallet_internal.merchant_refers when wallet.referral_programs changes.")));
	CacheInvalidateRelcache(((TriggerData *) fcinfo->context)->tg_relation);
	gate_used = 0;
	return PointerGetDatum(NULL);
}
