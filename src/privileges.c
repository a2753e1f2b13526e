/*
 * privileges.c: who is calling, and which merchants that role acts for.
 *
 * Every API function is SECURITY DEFINER, so inside it current_user is the
 * extension's owner.  The role that called is the "outer" user: the session
 * user or the role set by SET ROLE, which a SECURITY DEFINER call does not
 * change and no argument can forge.  wallet.acts_for() answers, for that
 * role, whether it may see a merchant's objects; row-level security policies
 * and every API function ask it, so its answers are cached in the session
 * until wallet.merchant_roles, a role membership, a role or the schema
 * changes (invalidation callbacks: a grant in another session counts from
 * this session's next transaction, one in this session at once).
 */
#include "wallet.h"
#include "privileges.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"

#define ACTS_FOR_CACHE 32

typedef struct ActsFor
{
	int64		merchant_id;
	bool		allowed;
} ActsFor;

/* the cache: valid for one role at one generation */
static Oid	cache_user = InvalidOid;
static uint64 cache_generation = 0;
static uint64 generation = 1;	/* bumped by every invalidation below */
static bool callbacks_registered = false;
static Oid	merchant_roles_relid = InvalidOid;
static bool cache_sees_all;
static Oid	cache_owner;
static int	cache_used;
static ActsFor cache[ACTS_FOR_CACHE];
static SPIPlanPtr roles_plan = NULL;
/* the one merchant the role acts for (0: none, several or all), once known */
static bool sole_known;
static int64 sole_merchant;
static SPIPlanPtr sole_plan = NULL;

/* Owner of schema wallet: the role that created the extension. */
Oid
wallet_owner(void)
{
	Oid			nsp = get_namespace_oid("wallet", false);
	HeapTuple	tup = SearchSysCache1(NAMESPACEOID, ObjectIdGetDatum(nsp));
	Oid			owner;

	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for schema %u", nsp);
	owner = ((Form_pg_namespace) GETSTRUCT(tup))->nspowner;
	ReleaseSysCache(tup);
	return owner;
}

static void
syscache_changed(Datum arg, int cacheid, uint32 hashvalue)
{
	generation++;
}

static void
relcache_changed(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == merchant_roles_relid || merchant_roles_relid == InvalidOid)
		generation++;
}

/* an aborted grant or revoke must not stay in the cache */
static void
xact_ended(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
		generation++;
}

static void
cache_refresh(Oid user)
{
	Oid			nsp;

	if (!callbacks_registered)
	{
		/* memberships, roles (superuser, rename), the schema's owner */
		CacheRegisterSyscacheCallback(AUTHMEMROLEMEM, syscache_changed, (Datum) 0);
		CacheRegisterSyscacheCallback(AUTHOID, syscache_changed, (Datum) 0);
		CacheRegisterSyscacheCallback(NAMESPACEOID, syscache_changed, (Datum) 0);
		/* wallet.merchant_roles: its trigger sends a relcache invalidation */
		wallet_register_relcache_callback(relcache_changed);
		RegisterXactCallback(xact_ended, NULL);
		callbacks_registered = true;
	}
	if (cache_user == user && cache_generation == generation)
		return;
	cache_owner = wallet_owner();
	nsp = get_namespace_oid("wallet", false);
	merchant_roles_relid = get_relname_relid("merchant_roles", nsp);
	/* a database still on 0.1.0 SQL has no merchant_roles: no isolation yet */
	cache_sees_all = superuser_arg(user) || has_privs_of_role(user, cache_owner) ||
		!OidIsValid(merchant_roles_relid);
	cache_used = 0;
	sole_known = false;
	cache_user = user;
	cache_generation = generation;
}

/*
 * Whether a row of wallet.merchant_roles counts: its role exists under the
 * name it was granted by (a dropped role's id, taken again by another role
 * or restored by pg_dump as a bare number onto another cluster's role, must
 * not pass the grant on; a renamed role is granted again), and none of
 * wallet_admin, wallet_app and wallet_reader is a member of it (that would
 * make every admin, app or reader act for the merchant: grant_merchant
 * refuses such a role, and a membership granted since voids the row).
 */
static bool
grant_counts(Oid role, const char *role_name)
{
	static const char *const groups[] = {"wallet_admin", "wallet_app", "wallet_reader"};
	HeapTuple	tup = SearchSysCache1(AUTHOID, ObjectIdGetDatum(role));
	bool		same;

	if (!HeapTupleIsValid(tup))
		return false;
	same = strcmp(NameStr(((Form_pg_authid) GETSTRUCT(tup))->rolname), role_name) == 0;
	ReleaseSysCache(tup);
	if (!same)
		return false;
	for (int i = 0; i < lengthof(groups); i++)
	{
		Oid			g = get_role_oid(groups[i], true);

		if (OidIsValid(g) && is_member_of_role_nosuper(g, role))
			return false;
	}
	return true;
}

/* the row's role, if the row counts (grant_counts), else InvalidOid */
static Oid
row_role(HeapTuple row, TupleDesc desc, int rolecol)
{
	bool		rnull,
				nnull;
	Datum		role = SPI_getbinval(row, desc, rolecol, &rnull);
	Datum		name = SPI_getbinval(row, desc, rolecol + 1, &nnull);

	if (rnull || nnull || !grant_counts(DatumGetObjectId(role), NameStr(*DatumGetName(name))))
		return InvalidOid;
	return DatumGetObjectId(role);
}

PG_FUNCTION_INFO_V1(wallet_grant_counts);

/* wallet_internal.grant_counts(role, role_name): whether such a row of wallet.merchant_roles counts. */
Datum
wallet_grant_counts(PG_FUNCTION_ARGS)
{
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		PG_RETURN_BOOL(false);
	PG_RETURN_BOOL(grant_counts(PG_GETARG_OID(0), NameStr(*PG_GETARG_NAME(1))));
}

/*
 * Whether user is a member of a role granted the merchant.  The lookup runs
 * as the owner: a reader's query reaches here through a row-level security
 * policy, and readers cannot read wallet.merchant_roles themselves.
 */
static bool
lookup(Oid user, int64 merchant_id)
{
	Oid			save_user;
	int			save_sec;
	bool		allowed = false;
	Datum		arg = Int64GetDatum(merchant_id);
	Oid			argtype = INT8OID;

	GetUserIdAndSecContext(&save_user, &save_sec);
	SetUserIdAndSecContext(cache_owner, save_sec | SECURITY_LOCAL_USERID_CHANGE);
	PG_TRY();
	{
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		if (roles_plan == NULL)
		{
			SPIPlanPtr	plan = SPI_prepare("SELECT r.role, r.role_name FROM wallet.merchant_roles r"
										   " WHERE r.merchant_id OPERATOR(pg_catalog.=) $1",
										   1, &argtype);

			if (plan == NULL)
				elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
			SPI_keepplan(plan);
			roles_plan = plan;
		}
		if (SPI_execute_plan(roles_plan, &arg, NULL, true, 0) != SPI_OK_SELECT)
			elog(ERROR, "reading wallet.merchant_roles failed");
		for (uint64 i = 0; i < SPI_processed && !allowed; i++)
		{
			Oid			role = row_role(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);

			if (OidIsValid(role) && is_member_of_role(user, role))
				allowed = true;
		}
		SPI_finish();
	}
	PG_FINALLY();
	{
		SetUserIdAndSecContext(save_user, save_sec);
	}
	PG_END_TRY();
	return allowed;
}

PG_FUNCTION_INFO_V1(wallet_caller);

/* wallet_internal.caller(): the role acting, whatever SECURITY DEFINER did. */
Datum
wallet_caller(PG_FUNCTION_ARGS)
{
	PG_RETURN_OID(GetOuterUserId());
}

bool
wallet_acts_for_merchant(int64 merchant_id)
{
	Oid			user = GetOuterUserId();
	bool		allowed;

	cache_refresh(user);
	if (cache_sees_all)
		return true;
	for (int i = 0; i < cache_used; i++)
		if (cache[i].merchant_id == merchant_id)
			return cache[i].allowed;
	allowed = lookup(user, merchant_id);
	if (cache_used == ACTS_FOR_CACHE)
		cache_used = 0;
	cache[cache_used].merchant_id = merchant_id;
	cache[cache_used].allowed = allowed;
	cache_used++;
	return allowed;
}

PG_FUNCTION_INFO_V1(wallet_acts_for);

/*
 * wallet.acts_for(merchant_id): whether the calling role acts for it.  Not
 * STRICT: a NULL merchant is a missing argument (22004), as everywhere; the
 * policies of the tables whose merchant_id may be NULL test for NULL first.
 */
Datum
wallet_acts_for(PG_FUNCTION_ARGS)
{
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("merchant_id must not be null"),
				 errdetail("A role acts for a merchant named by its id.")));
	PG_RETURN_BOOL(wallet_acts_for_merchant(PG_GETARG_INT64(0)));
}

/*
 * The one merchant user acts for, or 0 when it acts for none or for several
 * (a member of roles granted different merchants).  Read as the owner, as
 * lookup() does; the membership test is lookup()'s (is_member_of_role).
 */
static int64
sole_lookup(Oid user)
{
	Oid			save_user;
	int			save_sec;
	volatile int64 found = 0;
	volatile bool several = false;

	GetUserIdAndSecContext(&save_user, &save_sec);
	SetUserIdAndSecContext(cache_owner, save_sec | SECURITY_LOCAL_USERID_CHANGE);
	PG_TRY();
	{
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		if (sole_plan == NULL)
		{
			SPIPlanPtr	plan = SPI_prepare("SELECT r.merchant_id, r.role, r.role_name FROM wallet.merchant_roles r"
										   " ORDER BY r.merchant_id", 0, NULL);

			if (plan == NULL)
				elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
			SPI_keepplan(plan);
			sole_plan = plan;
		}
		if (SPI_execute_plan(sole_plan, NULL, NULL, true, 0) != SPI_OK_SELECT)
			elog(ERROR, "reading wallet.merchant_roles failed");
		for (uint64 i = 0; i < SPI_processed && !several; i++)
		{
			bool		mnull;
			Datum		m = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &mnull);
			Oid			role;

			if (mnull || DatumGetInt64(m) == found)
				continue;
			role = row_role(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);
			if (!OidIsValid(role) || !is_member_of_role(user, role))
				continue;
			if (found != 0)
				several = true;
			else
				found = DatumGetInt64(m);
		}
		SPI_finish();
	}
	PG_FINALLY();
	{
		SetUserIdAndSecContext(save_user, save_sec);
	}
	PG_END_TRY();
	return several ? 0 : found;
}

/*
 * The one merchant the calling role acts for; 0 when it acts for none, for
 * several, or for all (the superuser and the owner).  Cached as acts_for is.
 */
int64
wallet_caller_sole_merchant(void)
{
	Oid			user = GetOuterUserId();

	cache_refresh(user);
	if (cache_sees_all)
		return 0;
	if (!sole_known)
	{
		sole_merchant = sole_lookup(user);
		sole_known = true;
	}
	return sole_merchant;
}

/* Whether the calling role acts for every merchant (superuser, owner). */
bool
wallet_caller_sees_all(void)
{
	cache_refresh(GetOuterUserId());
	return cache_sees_all;
}

PG_FUNCTION_INFO_V1(wallet_sole_merchant);

/*
 * wallet_internal.sole_merchant(): the one merchant the calling role acts
 * for, NULL when it acts for none, for several or for all.
 */
Datum
wallet_sole_merchant(PG_FUNCTION_ARGS)
{
	int64		m = wallet_caller_sole_merchant();

	if (m == 0)
		PG_RETURN_NULL();
	PG_RETURN_INT64(m);
}

PG_FUNCTION_INFO_V1(wallet_sees_all);

/* wallet_internal.sees_all(): whether the calling role acts for every merchant. */
Datum
wallet_sees_all(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(wallet_caller_sees_all());
}

PG_FUNCTION_INFO_V1(wallet_merchant_roles_changed);

/*
 * Statement trigger on wallet.merchant_roles: a grant or revoke counts from
 * the next call on, in this transaction too; the relcache invalidation tells
 * the other sessions at commit.
 */
Datum
wallet_merchant_roles_changed(PG_FUNCTION_ARGS)
{
	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("merchant_roles_changed must be called as a trigger"),
				 errdetail("It resets the cache of wallet.acts_for when wallet.merchant_roles changes.")));
	CacheInvalidateRelcache(((TriggerData *) fcinfo->context)->tg_relation);
	generation++;
	return PointerGetDatum(NULL);
}
