/*
 * redeem.c: C helpers of the redemption layer — wallet_internal.code_caps_unchanged.
 */
#include "wallet.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/snapmgr.h"

PG_FUNCTION_INFO_V1(code_caps_unchanged);

/*
 * wallet_internal.code_caps_unchanged(campaign_id, max_per_code, max_per_member,
 * max_total): raises a serialization failure (40001) unless the campaign's
 * latest committed caps are the given ones (read by the caller under its
 * transaction snapshot).
 *
 * Under REPEATABLE READ a transaction's snapshot may predate a change of the
 * caps; SELECT ... FOR SHARE would detect it but needs UPDATE on
 * wallet.campaigns, the right to mint codes, which a redeeming role must not
 * need.  Reading the row again under the latest snapshot (as foreign key
 * checks do) needs only SELECT and catches every change committed before
 * the call; one committed later is ordered after this redemption, as under
 * READ COMMITTED.
 */
Datum
code_caps_unchanged(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	Datum		id;
	bool		same;
	int			i;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("campaign_id must not be null"),
				 errdetail("The caps of a campaign are checked, named by its id.")));
	id = PG_GETARG_DATUM(0);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (plan == NULL)
	{
		Oid			argtypes[1] = {INT8OID};
		SPIPlanPtr	p = SPI_prepare("SELECT c.max_redemptions_per_code::pg_catalog.int8, c.max_redemptions_per_member::pg_catalog.int8,"
									" c.max_redemptions_total FROM wallet.campaigns c"
									" WHERE c.campaign_id OPERATOR(pg_catalog.=) $1",
									1, argtypes);

		if (p == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		SPI_keepplan(p);
		plan = p;
	}
	if (SPI_execute_snapshot(plan, &id, NULL, GetLatestSnapshot(), InvalidSnapshot,
							 true, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "SPI_execute_snapshot failed");
	same = SPI_processed == 1;
	for (i = 0; same && i < 3; i++)
	{
		bool		isnull;
		Datum		v = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, i + 1, &isnull);

		if (isnull != PG_ARGISNULL(i + 1))
			same = false;
		else if (!isnull)
			same = DatumGetInt64(v) == (i < 2 ? (int64) PG_GETARG_INT32(i + 1) : PG_GETARG_INT64(i + 1));
	}
	SPI_finish();
	if (!same)
		ereport(ERROR,
				(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
				 errmsg("could not serialize access due to a concurrent change of campaign %lld",
						(long long) DatumGetInt64(id)),
				 errdetail("The campaign's redemption caps changed, or it was deleted, after this transaction's snapshot was taken."),
				 errhint("Retry the transaction.")));
	PG_RETURN_VOID();
}
