/*
 * codes.c: generating and checking marketing codes — wallet.generate_codes,
 * wallet.code_authentic, wallet.parse_code.
 */
#include "wallet.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "utils/builtins.h"

#include "keys.h"
#include "marketing_code.h"
#include "code_cache.h"

typedef struct GenerateState
{
	CodeFields	f;				/* template: campaign, version, prefix, MAC bits */
	uint64		next;			/* next serial to emit */
	uint64		end;			/* one past the last reserved serial */
} GenerateState;

/*
 * Reserves n serials of the campaign with one UPDATE ... RETURNING: the row
 * lock serialises concurrent generators, each getting its own block.
 */
static void
reserve_serials(int64 campaign_id, int32 n, GenerateState *st)
{
	Oid			argtypes[2] = {INT8OID, INT8OID};
	Datum		args[2];
	int			rc;
	bool		isnull;
	HeapTuple	tup;
	TupleDesc	td;
	Datum		d;
	int64		first;
	int32		version;

	args[0] = Int64GetDatum(campaign_id);
	args[1] = Int64GetDatum((int64) n);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	rc = SPI_execute_with_args(
		"UPDATE wallet.campaigns SET next_serial = next_serial + $2"
		" WHERE campaign_id = $1"
		" RETURNING next_serial - $2, current_key_version, mac_bits, prefix",
		2, argtypes, args, NULL, false, 0);
	if (rc != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "reserving serials failed: %s", SPI_result_code_string(rc));
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_WALLET_UNKNOWN_CAMPAIGN),
				 errmsg("campaign %lld does not exist", (long long) campaign_id),
				 errhint("Create it with wallet.create_campaign.")));
	tup = SPI_tuptable->vals[0];
	td = SPI_tuptable->tupdesc;
	first = DatumGetInt64(SPI_getbinval(tup, td, 1, &isnull));
	version = DatumGetInt32(SPI_getbinval(tup, td, 2, &isnull));
	st->f.mac_bits = (uint8) DatumGetInt32(SPI_getbinval(tup, td, 3, &isnull));
	d = SPI_getbinval(tup, td, 4, &isnull);
	if (isnull)
		st->f.prefix[0] = '\0';
	else
		strlcpy(st->f.prefix, TextDatumGetCString(d), sizeof(st->f.prefix));
	SPI_finish();

	/* raising here rolls the reservation back with the transaction */
	if ((uint64) first + (uint64) n - 1 > CODE_MAX_SERIAL)
		ereport(ERROR,
				(errcode(ERRCODE_WALLET_SERIALS_EXHAUSTED),
				 errmsg("campaign %lld has not enough serial numbers left for %d codes", (long long) campaign_id, n),
				 errdetail("Serial numbers go up to 2^38 - 1 and %lld is the next free one.", (long long) first),
				 errhint("Create a new campaign.")));
	st->f.campaign = (uint32) campaign_id;
	st->f.version = (uint16) version;
	st->next = (uint64) first;
	st->end = (uint64) first + (uint64) n;
}

PG_FUNCTION_INFO_V1(generate_codes);

/*
 * wallet.generate_codes(campaign_id, n): n fresh codes, value per call so
 * that a caller streaming them never holds them all in memory.
 */
Datum
generate_codes(PG_FUNCTION_ARGS)
{
	FuncCallContext *funcctx;
	GenerateState *st;

	if (SRF_IS_FIRSTCALL())
	{
		int64		campaign_id = PG_GETARG_INT64(0);
		int32		n = PG_GETARG_INT32(1);
		MemoryContext oldcxt;
		const CampaignInfo *info;

		funcctx = SRF_FIRSTCALL_INIT();
		if (n < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("number of codes must not be negative"),
					 errdetail("%d codes were asked for.", n)));
		/* before reserving anything: without the key no code can be made */
		wallet_require_root_key();
		if (campaign_id < 1 || (uint64) campaign_id > CODE_MAX_CAMPAIGN)
			ereport(ERROR,
					(errcode(ERRCODE_WALLET_UNKNOWN_CAMPAIGN),
					 errmsg("campaign %lld does not exist", (long long) campaign_id),
					 errhint("Create it with wallet.create_campaign.")));
		oldcxt = MemoryContextSwitchTo(funcctx->multi_call_memory_ctx);
		st = palloc0(sizeof(GenerateState));
		MemoryContextSwitchTo(oldcxt);
		if (n > 0)
		{
			reserve_serials(campaign_id, n, st);
			info = campaign_info(st->f.campaign);
			if (!info->exists || !CAMPAIGN_VERSION_BIT(info->known, st->f.version))
				ereport(ERROR,
						(errcode(ERRCODE_WALLET_UNKNOWN_KEY_VERSION),
						 errmsg("campaign %lld has no key row for its current key version %d", (long long) campaign_id, st->f.version),
						 errdetail("wallet.code_keys was changed by hand."),
						 errhint("Call wallet.rotate_code_key to make a new key version current.")));
			if (CAMPAIGN_VERSION_BIT(info->retired, st->f.version))
				ereport(ERROR,
						(errcode(ERRCODE_WALLET_KEY_RETIRED),
						 errmsg("the current key version %d of campaign %lld is retired", st->f.version, (long long) campaign_id),
						 errhint("Call wallet.rotate_code_key to make a new key version current.")));
		}
		funcctx->user_fctx = st;
	}

	funcctx = SRF_PERCALL_SETUP();
	st = (GenerateState *) funcctx->user_fctx;
	if (st->next < st->end)
	{
		MarketingCode *c = palloc(sizeof(MarketingCode));

		st->f.serial = st->next++;
		st->f.mac = code_compute_mac(&st->f);
		code_pack(&st->f, c);
		SRF_RETURN_NEXT(funcctx, MarketingCodePGetDatum(c));
	}
	SRF_RETURN_DONE(funcctx);
}

PG_FUNCTION_INFO_V1(code_authentic);

/* wallet.code_authentic(code): MAC right and key version not retired. */
Datum
code_authentic(PG_FUNCTION_ARGS)
{
	CodeFields	f;

	wallet_require_root_key();
	code_unpack(PG_GETARG_MARKETING_CODE_P(0), &f);
	PG_RETURN_BOOL(code_verify(&f) == CODE_AUTH_OK);
}

/* The status names of wallet.parse_code and wallet.code_status. */
static const char *
code_auth_status(CodeAuth auth)
{
	switch (auth)
	{
		case CODE_AUTH_OK:
			return "ok";
		case CODE_AUTH_RETIRED:
			return "retired_key";
		case CODE_AUTH_FORGED:
			break;
	}
	return "forged";
}

PG_FUNCTION_INFO_V1(parse_code);

/*
 * wallet.parse_code(input, OUT status, OUT code): never raises for bad
 * input; status is ok, malformed, mistyped, forged or retired_key.
 */
Datum
parse_code(PG_FUNCTION_ARGS)
{
	char	   *str = text_to_cstring(PG_GETARG_TEXT_PP(0));
	TupleDesc	tupdesc;
	Datum		values[2];
	bool		nulls[2] = {false, true};
	CodeFields	f;
	char	   *detail = NULL;
	const char *status;

	wallet_require_root_key();
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	switch (code_from_text(str, &f, &detail))
	{
		case CODE_TEXT_MALFORMED:
			status = "malformed";
			break;
		case CODE_TEXT_MISTYPED:
			status = "mistyped";
			break;
		default:
			{
				MarketingCode *c = palloc(sizeof(MarketingCode));

				code_pack(&f, c);
				values[1] = MarketingCodePGetDatum(c);
				nulls[1] = false;
				status = code_auth_status(code_verify(&f));
			}
	}
	values[0] = CStringGetTextDatum(status);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls)));
}

PG_FUNCTION_INFO_V1(code_status);

/* wallet.code_status(code): ok, forged or retired_key, for a value. */
Datum
code_status(PG_FUNCTION_ARGS)
{
	CodeFields	f;

	wallet_require_root_key();
	code_unpack(PG_GETARG_MARKETING_CODE_P(0), &f);
	PG_RETURN_TEXT_P(cstring_to_text(code_auth_status(code_verify(&f))));
}
