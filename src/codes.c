/*
 * codes.c: generating and checking marketing codes — wallet.generate_codes,
 * wallet.code_authentic, wallet.parse_code.
 */
#include "wallet.h"

#include "access/htup_details.h"
#include "access/xlog.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "commands/sequence.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"

#include "keys.h"
#include "privileges.h"
#include "marketing_code.h"
#include "code_cache.h"
#include "code_hmac.h"

typedef struct GenerateState
{
	CodeFields	f;				/* template: campaign, version, prefix, MAC bits */
	bool		bound;			/* the version's key is bound to installation_id */
	uint8		installation_id[16];
	uint64		next;			/* next serial to emit */
	uint64		end;			/* one past the last reserved serial */
} GenerateState;

/* The message of WL106 (serials exhausted). */
static char *
serials_exhausted_message(uint32 campaign_id, int32 n)
{
	return psprintf("campaign %u has not enough serial numbers left for %d code%s", campaign_id, n, n == 1 ? "" : "s");
}

/* WL106 for n codes when first is the next free serial (0: none left). */
static void
serials_exhausted_error(uint32 campaign_id, int32 n, int64 first)
{
	ereport(ERROR,
			(errcode(ERRCODE_WL_SERIALS_EXHAUSTED),
			 errmsg_internal("%s", serials_exhausted_message(campaign_id, n)),
			 first > 0 ?
			 errdetail("Serial numbers go up to 2^38 - 1 and " INT64_FORMAT " is the next free one.", first) :
			 errdetail("Serial numbers go up to 2^38 - 1 and all of them are handed out."),
			 errhint("Create a new campaign.")));
}

/*
 * Reserves n serials of the campaign from its sequence
 * wallet.campaign_<id>_serials (created with the campaign): nextval gives the
 * first, setval moves the sequence past the block.  Sequences are not
 * transactional, so a block is never handed out again, even when the
 * caller's transaction rolls back after streaming its codes; and no row of
 * wallet.campaigns is locked, so generators never wait for each other's
 * transactions.  Only the two calls are serialised, by a lock on the
 * sequence held for microseconds: O(1) per call whatever n is.
 */
static void
reserve_serials(uint32 campaign_id, int32 n, GenerateState *st)
{
	Oid			nsp = get_namespace_oid("wallet", false);
	Oid			campaigns = get_relname_relid("campaigns", nsp);
	char		seqname[NAMEDATALEN];
	Oid			seqoid;
	Oid			seqowner;
	HeapTuple	tup;
	AclResult	aclresult;
	Oid			save_userid;
	int			save_sec;
	MemoryContext oldcxt = CurrentMemoryContext;
	XLogRecPtr	wal_before = XactLastRecEnd;
	int64		first = 0;
	bool		exhausted = false;

	/* who may generate codes is unchanged: whoever may update campaigns */
	aclresult = pg_class_aclcheck(campaigns, GetUserId(), ACL_UPDATE);
	if (aclresult != ACLCHECK_OK)
		aclcheck_error(aclresult, OBJECT_TABLE, "campaigns");

	snprintf(seqname, sizeof(seqname), "campaign_%u_serials", campaign_id);
	seqoid = get_relname_relid(seqname, nsp);
	if (!OidIsValid(seqoid) || get_rel_relkind(seqoid) != RELKIND_SEQUENCE)
		ereport(ERROR,
				(errcode(ERRCODE_WL_SERIAL_SEQUENCE_MISSING),
				 errmsg("campaign %u has no serial number sequence", campaign_id),
				 errdetail("The sequence wallet.%s that hands out the campaign's serial numbers does not exist.", seqname),
				 errhint("Recreate it with CREATE SEQUENCE wallet.%s MAXVALUE 274877906943 START WITH a number above every serial already handed out.", seqname)));
	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(seqoid));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for relation %u", seqoid);
	seqowner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
	ReleaseSysCache(tup);

	/*
	 * Self-conflicting, but not with the RowExclusiveLock that nextval keeps
	 * until the end of each generator's transaction: released right below.
	 */
	LockRelationOid(seqoid, ShareUpdateExclusiveLock);
	GetUserIdAndSecContext(&save_userid, &save_sec);
	/* as the sequence's owner: the privilege check was the one above */
	SetUserIdAndSecContext(seqowner, save_sec | SECURITY_LOCAL_USERID_CHANGE);
	PG_TRY();
	{
		first = nextval_internal(seqoid, false);
		if (first < 1 || (uint64) first + (uint64) n - 1 > CODE_MAX_SERIAL)
		{
			/* no serial is emitted: give the one taken back (we hold the lock) */
			exhausted = true;
			DirectFunctionCall3(setval3_oid, ObjectIdGetDatum(seqoid), Int64GetDatum(first), BoolGetDatum(false));
		}
		else if (n > 1)
			DirectFunctionCall2(setval_oid, ObjectIdGetDatum(seqoid), Int64GetDatum(first + n - 1));
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		SetUserIdAndSecContext(save_userid, save_sec);
		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		if (edata->sqlerrcode != ERRCODE_SEQUENCE_GENERATOR_LIMIT_EXCEEDED)
			PG_RE_THROW();
		/* the sequence is at its MAXVALUE 2^38 - 1: say so in our terms */
		FlushErrorState();
		edata->sqlerrcode = ERRCODE_WL_SERIALS_EXHAUSTED;
		edata->message = serials_exhausted_message(campaign_id, n);
		edata->detail = pstrdup("Serial numbers go up to 2^38 - 1 and all of them are handed out.");
		edata->hint = pstrdup("Create a new campaign.");
		ReThrowError(edata);
	}
	PG_END_TRY();
	SetUserIdAndSecContext(save_userid, save_sec);
	UnlockRelationOid(seqoid, ShareUpdateExclusiveLock);

	/*
	 * The sequence's WAL must be on disk before any code leaves: a rolled
	 * back transaction's WAL is not flushed, and after a crash the sequence
	 * would restart below codes already handed out.  nextval logs once per
	 * 32 calls, setval always, so calls that logged nothing flush nothing.
	 */
	if (XactLastRecEnd != wal_before)
		XLogFlush(XactLastRecEnd);

	if (exhausted)
		serials_exhausted_error(campaign_id, n, first);
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
		int64		campaign_id;
		int32		n;
		MemoryContext oldcxt;
		const CampaignInfo *info;

		/* not STRICT: a NULL argument is an error, not an empty result */
		if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("%s must not be null", PG_ARGISNULL(0) ? "campaign_id" : "n"),
					 errdetail("Codes are generated in a campaign, named by its id, and in a given number.")));
		campaign_id = PG_GETARG_INT64(0);
		n = PG_GETARG_INT32(1);
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
					(errcode(ERRCODE_WL_UNKNOWN_CAMPAIGN),
					 errmsg("campaign %lld does not exist", (long long) campaign_id),
					 errdetail("There is no campaign %lld of a merchant the caller acts for.", (long long) campaign_id),
					 errhint("Create it with wallet.create_campaign.")));
		oldcxt = MemoryContextSwitchTo(funcctx->multi_call_memory_ctx);
		st = palloc0(sizeof(GenerateState));
		MemoryContextSwitchTo(oldcxt);
		/*
		 * Every check before the reservation, so that a failing call uses up
		 * no serials.  The campaign comes from the session's cache, brought
		 * up to date with changes committed since the transaction last took
		 * a lock (a key rotation, say).  It must exist even for n = 0.
		 */
		AcceptInvalidationMessages();
		info = wallet_campaign_info((uint32) campaign_id);
		/* another merchant's campaign is as unknown as a missing one */
		if (!info->exists || !wallet_acts_for_merchant(info->merchant_id))
			ereport(ERROR,
					(errcode(ERRCODE_WL_UNKNOWN_CAMPAIGN),
					 errmsg("campaign %lld does not exist", (long long) campaign_id),
					 errdetail("There is no campaign %lld of a merchant the caller acts for.", (long long) campaign_id),
					 errhint("Create it with wallet.create_campaign.")));
		if (n > 0)
		{
			st->f.campaign = (uint32) campaign_id;
			st->f.version = info->current_version;
			st->f.mac_bits = info->mac_bits;
			strlcpy(st->f.prefix, info->prefix, sizeof(st->f.prefix));
			/* copied: the cache may be rebuilt while the codes stream out */
			st->bound = CAMPAIGN_VERSION_INSTALLATION(info, st->f.version) != NULL;
			memcpy(st->installation_id, info->installation_id, sizeof(st->installation_id));
			if (!CAMPAIGN_VERSION_BIT(info->known, st->f.version))
				ereport(ERROR,
						(errcode(ERRCODE_WL_UNKNOWN_KEY_VERSION),
						 errmsg("campaign %lld has no key row for its current key version %d", (long long) campaign_id, st->f.version),
						 errdetail("wallet.code_keys was changed by hand."),
						 errhint("Call wallet.rotate_code_key to make a new key version current.")));
			if (CAMPAIGN_VERSION_BIT(info->retired, st->f.version))
				ereport(ERROR,
						(errcode(ERRCODE_WL_CURRENT_KEY_RETIRED),
						 errmsg("the current key version %d of campaign %lld is retired", st->f.version, (long long) campaign_id),
						 errhint("Call wallet.rotate_code_key to make a new key version current.")));
			reserve_serials((uint32) campaign_id, n, st);
		}
		funcctx->user_fctx = st;
	}

	funcctx = SRF_PERCALL_SETUP();
	st = (GenerateState *) funcctx->user_fctx;
	if (st->next < st->end)
	{
		MarketingCode *c = palloc(sizeof(MarketingCode));

		st->f.serial = st->next++;
		st->f.mac = wallet_code_compute_mac(&st->f, st->bound ? st->installation_id : NULL);
		wallet_code_pack(&st->f, c);
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
	wallet_code_unpack(PG_GETARG_MARKETING_CODE_P(0), &f);
	PG_RETURN_BOOL(wallet_code_verify(&f) == CODE_AUTH_OK);
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
 * input; status is ok, malformed, mistyped, forged or retired_key.  Not
 * STRICT: a NULL input is no input at all, a missing argument (22004).
 */
Datum
parse_code(PG_FUNCTION_ARGS)
{
	char	   *str;
	TupleDesc	tupdesc;
	Datum		values[2];
	bool		nulls[2] = {false, true};
	CodeFields	f;
	char	   *detail = NULL;
	const char *status;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("input must not be null"),
				 errdetail("A code is read from a text; an empty text is malformed, a NULL is no text at all.")));
	str = text_to_cstring(PG_GETARG_TEXT_PP(0));
	wallet_require_root_key();
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	switch (wallet_code_from_text(str, &f, &detail))
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

				wallet_code_pack(&f, c);
				values[1] = MarketingCodePGetDatum(c);
				nulls[1] = false;
				status = code_auth_status(wallet_code_verify(&f));
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
	wallet_code_unpack(PG_GETARG_MARKETING_CODE_P(0), &f);
	PG_RETURN_TEXT_P(cstring_to_text(code_auth_status(wallet_code_verify(&f))));
}
