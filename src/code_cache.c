/*
 * code_cache.c: per-backend cache of campaigns' code parameters and key
 * versions, and code authentication on top of it.
 */
#include "wallet.h"

#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/uuid.h"
#include "access/xact.h"

#include "keys.h"
#include "code_cache.h"
#include "privileges.h"
#include "code_hmac.h"

static HTAB *campaign_cache = NULL;
static bool cache_valid = false;
static bool callback_registered = false;
static Oid	campaigns_relid = InvalidOid;
static Oid	code_keys_relid = InvalidOid;

/*
 * Whether wallet.code_keys has the column installation_id (0.2.0): a
 * database still on the 0.1.0 SQL has none, and all its key versions use the
 * legacy derivation.
 */
static bool code_keys_bound = false;

/*
 * Entries are read with a fresh snapshot, taken after the invalidations
 * processed so far, so that no change whose invalidation this backend has
 * already consumed can be missing from them.  A parallel operation cannot
 * take one: entries read then (under the statement's or the transaction's
 * snapshot) are dropped when the transaction ends, so that a stale entry
 * never outlives the snapshot it was read under.
 */
static bool transient_entries = false;

/* Bounds memory when many unknown campaign ids are looked up (forgeries). */
#define CAMPAIGN_CACHE_MAX 10000

/*
 * Relcache callback: any change to the two tables (signalled by their
 * triggers, by DDL, or a full reset) drops the whole cache.  Only a flag is
 * set here; the cache is rebuilt at the next lookup, in a safe context.
 */
static void
campaign_cache_callback(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == campaigns_relid || relid == code_keys_relid)
		cache_valid = false;
}

static void
campaign_cache_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			if (transient_entries)
				cache_valid = false;
			transient_entries = false;
			break;
		default:
			break;
	}
}

static void
campaign_cache_reset(void)
{
	HASHCTL		ctl;
	Oid			nsp;

	if (!callback_registered)
	{
		wallet_register_relcache_callback(campaign_cache_callback);
		RegisterXactCallback(campaign_cache_xact_callback, NULL);
		callback_registered = true;
	}
	if (campaign_cache != NULL)
		hash_destroy(campaign_cache);
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(uint32);
	ctl.entrysize = sizeof(CampaignInfo);
	ctl.hcxt = TopMemoryContext;
	campaign_cache = hash_create("wallet campaign cache", 64, &ctl,
								 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	nsp = get_namespace_oid("wallet", true);
	campaigns_relid = OidIsValid(nsp) ? get_relname_relid("campaigns", nsp) : InvalidOid;
	code_keys_relid = OidIsValid(nsp) ? get_relname_relid("code_keys", nsp) : InvalidOid;
	/* ALTER EXTENSION UPDATE adds the column: the relcache callback resets us */
	code_keys_bound = OidIsValid(code_keys_relid) &&
		get_attnum(code_keys_relid, "installation_id") != InvalidAttrNumber;
	cache_valid = true;
	transient_entries = false;
}

static void
campaign_load(CampaignInfo *info)
{
	Oid			argtypes[1] = {INT8OID};
	Datum		args[1];
	uint64		i;
	int			rc;
	bool		have_installation = false;
	SPIPlanPtr	plan;
	Snapshot	snap = InvalidSnapshot;
	Oid			save_user;
	int			save_sec;

	args[0] = Int64GetDatum((int64) info->campaign_id);
	info->exists = false;
	memset(info->known, 0, sizeof(info->known));
	memset(info->retired, 0, sizeof(info->retired));
	memset(info->bound, 0, sizeof(info->bound));

	/*
	 * Read as the owner: the cache serves every role of the session, so a
	 * reader's row-level security must not hide a campaign from it (merchant
	 * isolation is applied on use, wallet_code_verify).
	 */
	GetUserIdAndSecContext(&save_user, &save_sec);
	SetUserIdAndSecContext(wallet_owner(), save_sec | SECURITY_LOCAL_USERID_CHANGE);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	/*
	 * Parsed under the caller's search_path: every name and operator is
	 * schema-qualified, or a function or operator planted in a schema the
	 * caller searches first would run with the caller's privileges.
	 */
	plan = SPI_prepare(code_keys_bound
					   ? "SELECT c.mac_bits, c.prefix, c.current_key_version, k.key_version, k.retired_at IS NOT NULL, k.installation_id, c.merchant_id"
					   "  FROM wallet.campaigns c LEFT JOIN wallet.code_keys k ON k.campaign_id OPERATOR(pg_catalog.=) c.campaign_id"
					   " WHERE c.campaign_id OPERATOR(pg_catalog.=) $1"
					   : "SELECT c.mac_bits, c.prefix, c.current_key_version, k.key_version, k.retired_at IS NOT NULL, NULL::pg_catalog.uuid, c.merchant_id"
					   "  FROM wallet.campaigns c LEFT JOIN wallet.code_keys k ON k.campaign_id OPERATOR(pg_catalog.=) c.campaign_id"
					   " WHERE c.campaign_id OPERATOR(pg_catalog.=) $1",
					   1, argtypes);
	if (plan == NULL)
		elog(ERROR, "preparing the read of wallet.campaigns failed: %s", SPI_result_code_string(SPI_result));
	if (IsInParallelMode())
		transient_entries = true;	/* read under the current snapshot, see above */
	else
		snap = GetLatestSnapshot();
	rc = SPI_execute_snapshot(plan, args, NULL, snap, InvalidSnapshot, true, false, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "reading wallet.campaigns failed: %s", SPI_result_code_string(rc));
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	td = SPI_tuptable->tupdesc;
		bool		isnull;
		Datum		d;

		if (i == 0)
		{
			info->exists = true;
			info->mac_bits = (uint8) DatumGetInt32(SPI_getbinval(tup, td, 1, &isnull));
			d = SPI_getbinval(tup, td, 2, &isnull);
			if (isnull)
			{
				info->prefix[0] = '\0';
				info->prefix_folded[0] = '\0';
			}
			else
			{
				char	   *p = TextDatumGetCString(d);

				if (strlen(p) > CODE_MAX_PREFIX)
					p[CODE_MAX_PREFIX] = '\0';
				strlcpy(info->prefix, p, sizeof(info->prefix));
				wallet_code_fold_prefix(p, info->prefix_folded);
			}
			info->current_version = (uint16) DatumGetInt32(SPI_getbinval(tup, td, 3, &isnull));
			info->merchant_id = DatumGetInt64(SPI_getbinval(tup, td, 7, &isnull));
		}
		d = SPI_getbinval(tup, td, 4, &isnull);
		if (!isnull)
		{
			int32		v = DatumGetInt32(d);

			if (v >= 1 && v <= CODE_MAX_VERSION)
			{
				info->known[v >> 3] |= 1 << (v & 7);
				if (DatumGetBool(SPI_getbinval(tup, td, 5, &isnull)))
					info->retired[v >> 3] |= 1 << (v & 7);
				d = SPI_getbinval(tup, td, 6, &isnull);
				if (!isnull)
				{
					const pg_uuid_t *u = DatumGetUUIDP(d);

					/* one installation id per database (wallet.installation has one row) */
					if (have_installation &&
						memcmp(info->installation_id, u->data, UUID_LEN) != 0)
						elog(ERROR, "key versions of campaign %u are bound to different installation ids",
							 info->campaign_id);
					memcpy(info->installation_id, u->data, UUID_LEN);
					have_installation = true;
					info->bound[v >> 3] |= 1 << (v & 7);
				}
			}
		}
	}
	SPI_finish();
	SetUserIdAndSecContext(save_user, save_sec);
}

const CampaignInfo *
wallet_campaign_info(uint32 campaign_id)
{
	CampaignInfo *info;
	CampaignInfo loaded;
	bool		found;
	int			tries;

	if (!cache_valid || campaign_cache == NULL ||
		hash_get_num_entries(campaign_cache) >= CAMPAIGN_CACHE_MAX)
		campaign_cache_reset();
	info = hash_search(campaign_cache, &campaign_id, HASH_FIND, NULL);
	if (info != NULL)
		return info;

	/*
	 * Load first, insert after: an error while loading leaves no half entry.
	 * The snapshot is taken after planning has locked the tables (which
	 * processes pending invalidations), so it shows every change announced
	 * so far.  Should an invalidation still arrive while loading, the change
	 * it announces may be missing: load again.
	 */
	memset(&loaded, 0, sizeof(loaded));
	loaded.campaign_id = campaign_id;
	for (tries = 0;; tries++)
	{
		campaign_load(&loaded);
		if (cache_valid)
			break;
		campaign_cache_reset();
		if (tries == 2)
		{
			/* still changing: use it, but only until the transaction ends */
			transient_entries = true;
			break;
		}
	}
	info = hash_search(campaign_cache, &campaign_id, HASH_ENTER, &found);
	memcpy(info, &loaded, sizeof(loaded));
	return info;
}

CodeAuth
wallet_code_verify(const CodeFields *f)
{
	const CampaignInfo *info = wallet_campaign_info(f->campaign);
	char		folded[CODE_MAX_PREFIX + 1];
	unsigned char want[8],
				got[8];
	uint64		mac;
	int			i;

	/*
	 * A code must carry its campaign's MAC length and prefix: otherwise a
	 * forger could pick a 32-bit MAC for a 64-bit campaign.  Another
	 * merchant's campaign is as unknown as a missing one.
	 */
	if (!info->exists || !wallet_acts_for_merchant(info->merchant_id) || f->mac_bits != info->mac_bits ||
		f->version < 1 || f->version > CODE_MAX_VERSION ||
		!CAMPAIGN_VERSION_BIT(info->known, f->version))
		return CODE_AUTH_FORGED;
	wallet_code_fold_prefix(f->prefix, folded);
	if (strcmp(folded, info->prefix_folded) != 0)
		return CODE_AUTH_FORGED;

	mac = wallet_code_compute_mac(f, CAMPAIGN_VERSION_INSTALLATION(info, f->version));
	for (i = 0; i < 8; i++)
	{
		want[i] = (unsigned char) (mac >> (56 - 8 * i));
		got[i] = (unsigned char) (f->mac >> (56 - 8 * i));
	}
	if (sodium_memcmp(want, got, 8) != 0)
		return CODE_AUTH_FORGED;
	if (CAMPAIGN_VERSION_BIT(info->retired, f->version))
		return CODE_AUTH_RETIRED;
	return CODE_AUTH_OK;
}

PG_FUNCTION_INFO_V1(code_cache_invalidate);

/*
 * Statement trigger on wallet.campaigns and wallet.code_keys: queues a
 * relcache invalidation of the table, which reaches this backend at the next
 * command and every other backend at commit; each then drops its cache.
 */
Datum
code_cache_invalidate(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("wallet_internal.code_cache_invalidate() must be called as a trigger")));
	CacheInvalidateRelcache(trigdata->tg_relation);
	return PointerGetDatum(NULL);
}
