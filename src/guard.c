/*
 * guard.c: the brute-force guard's counters — wallet_internal.code_guard_attempt
 * and wallet_internal.code_guard_forget.
 *
 * Why shared memory and not a table: a failed check must count whether or
 * not the caller's transaction commits, or an attacker guesses in rolled
 * back savepoints for free.  A row written in the caller's transaction
 * vanishes with it; a background worker or a second connection would make
 * every failed check wait for another process and still need a lock around
 * the check-and-count.  A counter in shared memory, read and bumped under
 * one LWLock, is outside every transaction, exact under any concurrency (the
 * check and the count are one critical section, so N sessions racing for one
 * member are judged exactly up to the threshold) and costs microseconds.
 * The price: counters are lost on a server restart (documented), and the
 * table is bounded (wallet.guard_max_entries); when it is full of live
 * counters a failing check that needs a new one is refused as throttled
 * rather than forgotten, while genuine codes, which need no counter, pass.
 *
 * A counter is per database, per merchant (the scope the caller passes: the
 * merchant of the campaign the text names, else the one merchant the caller
 * acts for, else 0 — a text naming no campaign, malformed, mistyped or of an
 * unknown campaign, checked by a role acting for several merchants or all),
 * per kind (member or source) and per value, the value stored as a keyed BLAKE2b digest (its
 * key drawn at server start, so no one can craft two values that share a
 * counter).  Windows are fixed: a counter starts at its first failure and
 * lasts failure_window; the next failure after that starts a new one.
 */
#include "wallet.h"

#include <sodium.h>

#include "common/int.h"
#include "datatype/timestamp.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/timestamp.h"

#include "guard.h"

#define GUARD_MEMBER 1
#define GUARD_SOURCE 2
#define GUARD_DIGEST_BYTES 16

typedef struct GuardKey
{
	Oid			dbid;
	uint32		kind;			/* GUARD_MEMBER or GUARD_SOURCE */
	int64		merchant;		/* 0: no campaign named, caller of several merchants */
	uint8		digest[GUARD_DIGEST_BYTES];
} GuardKey;

typedef struct GuardEntry
{
	GuardKey	key;
	TimestampTz started;		/* first failure of the current window */
	TimestampTz evictable;		/* started + the window in force then */
	int32		failures;		/* failures since started */
} GuardEntry;

typedef struct GuardShared
{
	LWLock	   *lock;
	TimestampTz next_evictable; /* no entry is evictable before this */
	TimestampTz last_full_log;	/* rate-limits the "table full" message */
	uint8		digest_key[crypto_generichash_KEYBYTES];
} GuardShared;

static int	guard_max_entries = 16384;
static GuardShared *guard;
static HTAB *guard_htab;
static shmem_request_hook_type prev_shmem_request_hook;
static shmem_startup_hook_type prev_shmem_startup_hook;

static void
guard_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(add_size(MAXALIGN(sizeof(GuardShared)),
									hash_estimate_size(guard_max_entries, sizeof(GuardEntry))));
	RequestNamedLWLockTranche("wallet_guard", 1);
}

static void
guard_shmem_startup(void)
{
	HASHCTL		info;
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	guard = ShmemInitStruct("wallet guard", sizeof(GuardShared), &found);
	if (!found)
	{
		guard->lock = &(GetNamedLWLockTranche("wallet_guard"))->lock;
		guard->next_evictable = 0;
		guard->last_full_log = 0;
		randombytes_buf(guard->digest_key, sizeof(guard->digest_key));
	}
	info.keysize = sizeof(GuardKey);
	info.entrysize = sizeof(GuardEntry);
	/* fixed size: every entry is allocated now, none later */
	guard_htab = ShmemInitHash("wallet guard counters", guard_max_entries, guard_max_entries,
							   &info, HASH_ELEM | HASH_BLOBS | HASH_FIXED_SIZE);
	LWLockRelease(AddinShmemInitLock);
}

void
wallet_guard_init(void)
{
	if (!process_shared_preload_libraries_in_progress)
		return;
	DefineCustomIntVariable("wallet.guard_max_entries",
							"Counters of failed code checks the brute-force guard keeps in shared memory.",
							"One per member and per source with a failure within its window, per merchant; about 100 bytes each.",
							&guard_max_entries, 16384, 64, 16 * 1024 * 1024, PGC_POSTMASTER,
							0, NULL, NULL, NULL);
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = guard_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = guard_shmem_startup;
}

static void
guard_require(void)
{
	if (guard == NULL || guard_htab == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the brute-force guard of wallet is not available"),
				 errdetail("wallet is not in shared_preload_libraries, so the guard's counters were not set up at server start."),
				 errhint("Add wallet to shared_preload_libraries and restart the server.")));
}

/* The counter key of (merchant, kind, value) in this database. */
static void
guard_key(GuardKey *key, int64 merchant, uint32 kind, text *value)
{
	memset(key, 0, sizeof(*key));	/* compared as bytes: no stray padding */
	key->dbid = MyDatabaseId;
	key->kind = kind;
	key->merchant = merchant;
	crypto_generichash(key->digest, GUARD_DIGEST_BYTES,
					   (const unsigned char *) VARDATA_ANY(value), VARSIZE_ANY_EXHDR(value),
					   guard->digest_key, sizeof(guard->digest_key));
}

/* A window as microseconds, clamped to a century (months count 30 days). */
static int64
window_usecs(Interval *iv)
{
	const int64 max = INT64CONST(100) * 366 * USECS_PER_DAY;
	int64		days = (int64) iv->month * DAYS_PER_MONTH + iv->day;
	int64		us;

	if (days > max / USECS_PER_DAY)
		return max;
	if (pg_add_s64_overflow(days * USECS_PER_DAY, iv->time, &us) || us > max)
		return max;
	if (us <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("failure window must be positive"),
				 errdetail("The brute-force guard counts failures over a window; %s is not a positive interval.",
						   DatumGetCString(DirectFunctionCall1(interval_out, IntervalPGetDatum(iv))))));
	return us;
}

/* Failures of an entry within its current window (0 once it has passed). */
static int32
live_failures(GuardEntry *e, TimestampTz now, int64 window)
{
	if (e == NULL || now - e->started >= window)
		return 0;
	return e->failures;
}

/*
 * Frees the entries whose window has passed; caller holds the lock
 * exclusively.  Skipped while none can have passed, so that a table kept
 * full of live counters is not scanned on every refused failure.
 */
static void
evict_expired(TimestampTz now)
{
	HASH_SEQ_STATUS seq;
	GuardEntry *e;
	TimestampTz next = DT_NOEND;

	if (now < guard->next_evictable)
		return;
	hash_seq_init(&seq, guard_htab);
	while ((e = hash_seq_search(&seq)) != NULL)
	{
		if (now >= e->evictable)
			hash_search(guard_htab, &e->key, HASH_REMOVE, NULL);
		else if (e->evictable < next)
			next = e->evictable;
	}
	guard->next_evictable = next;
}

/* The entry of key, made (with no failure yet) if needed; NULL when full. */
static GuardEntry *
entry_for(GuardKey *key, TimestampTz now, int64 window)
{
	GuardEntry *e = hash_search(guard_htab, key, HASH_FIND, NULL);
	bool		found;

	if (e != NULL)
		return e;
	if (hash_get_num_entries(guard_htab) >= guard_max_entries)
		evict_expired(now);
	if (hash_get_num_entries(guard_htab) >= guard_max_entries)
		return NULL;
	e = hash_search(guard_htab, key, HASH_ENTER_NULL, &found);
	if (e == NULL)
		return NULL;
	e->started = now;
	e->evictable = now + window;
	e->failures = 0;
	if (e->evictable < guard->next_evictable)
		guard->next_evictable = e->evictable;
	return e;
}

/* One more failure in e, starting a new window if the last one passed. */
static void
count_failure(GuardEntry *e, TimestampTz now, int64 window)
{
	if (now - e->started >= window)
	{
		e->started = now;
		e->evictable = now + window;
		e->failures = 0;
		if (e->evictable < guard->next_evictable)
			guard->next_evictable = e->evictable;
	}
	if (e->failures < PG_INT32_MAX)
		e->failures++;
}

PG_FUNCTION_INFO_V1(code_guard_attempt);

/*
 * wallet_internal.code_guard_attempt(merchant_id, member_ref, source, failed,
 * max_per_member, max_per_source, failure_window) → throttled: whether the
 * member or the source has reached its threshold in the merchant's scope;
 * if not and the check failed, counts the failure for both, in the same
 * critical section.  A NULL threshold (or source) is not checked.
 */
Datum
code_guard_attempt(PG_FUNCTION_ARGS)
{
	int64		merchant = PG_ARGISNULL(0) ? 0 : PG_GETARG_INT64(0);
	bool		failed = !PG_ARGISNULL(3) && PG_GETARG_BOOL(3);
	bool		use_member = !PG_ARGISNULL(1) && !PG_ARGISNULL(4);
	bool		use_source = !PG_ARGISNULL(2) && !PG_ARGISNULL(5);
	int32		max_member = use_member ? PG_GETARG_INT32(4) : 0;
	int32		max_source = use_source ? PG_GETARG_INT32(5) : 0;
	int64		window;
	GuardKey	mkey,
				skey;
	GuardEntry *me = NULL,
			   *se = NULL;
	TimestampTz now;
	bool		throttled = false;
	bool		full = false;
	bool		log_full = false;

	guard_require();
	if (PG_ARGISNULL(6))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("failure window must not be null"),
				 errdetail("The brute-force guard counts failures over a window.")));
	window = window_usecs(PG_GETARG_INTERVAL_P(6));
	if (use_member)
		guard_key(&mkey, merchant, GUARD_MEMBER, PG_GETARG_TEXT_PP(1));
	if (use_source)
		guard_key(&skey, merchant, GUARD_SOURCE, PG_GETARG_TEXT_PP(2));

	/* a genuine code changes no counter: shared, so that they never queue */
	LWLockAcquire(guard->lock, failed ? LW_EXCLUSIVE : LW_SHARED);
	now = GetCurrentTimestamp();
	if (use_member)
	{
		me = hash_search(guard_htab, &mkey, HASH_FIND, NULL);
		throttled = live_failures(me, now, window) >= max_member;
	}
	if (use_source && !throttled)
	{
		se = hash_search(guard_htab, &skey, HASH_FIND, NULL);
		throttled = live_failures(se, now, window) >= max_source;
	}
	if (failed && !throttled)
	{
		/* both entries first, so that a full table counts neither */
		if (use_member && me == NULL && (me = entry_for(&mkey, now, window)) == NULL)
			full = true;
		if (use_source && !full && se == NULL && (se = entry_for(&skey, now, window)) == NULL)
			full = true;
		if (!full)
		{
			if (me)
				count_failure(me, now, window);
			if (se)
				count_failure(se, now, window);
		}
	}
	/* say so in the server log, at most once a minute */
	if (full && now - guard->last_full_log >= 60 * USECS_PER_SEC)
	{
		guard->last_full_log = now;
		log_full = true;
	}
	LWLockRelease(guard->lock);

	if (log_full)
		ereport(LOG,
				(errmsg("wallet: brute-force guard counters are full; failed code checks needing a new counter are answered throttled"),
				 errhint("Raise wallet.guard_max_entries (%d) or shorten the failure windows.", guard_max_entries)));
	PG_RETURN_BOOL(throttled || full);
}

PG_FUNCTION_INFO_V1(code_guard_forget);

/*
 * wallet_internal.code_guard_forget(merchant_id, member_ref, source) → counters
 * dropped: the counters of the member and of the source (NULL: none) in the
 * merchant's scope, or in every scope of the database when merchant_id is
 * NULL.  Takes effect at once, whatever becomes of the caller's transaction.
 */
Datum
code_guard_forget(PG_FUNCTION_ARGS)
{
	bool		all_scopes = PG_ARGISNULL(0);
	int64		merchant = all_scopes ? 0 : PG_GETARG_INT64(0);
	GuardKey	mkey,
				skey;
	HASH_SEQ_STATUS seq;
	GuardEntry *e;
	int64		dropped = 0;

	guard_require();
	/* the scope is compared below; the key's merchant is left 0 */
	if (!PG_ARGISNULL(1))
		guard_key(&mkey, 0, GUARD_MEMBER, PG_GETARG_TEXT_PP(1));
	if (!PG_ARGISNULL(2))
		guard_key(&skey, 0, GUARD_SOURCE, PG_GETARG_TEXT_PP(2));
	if (PG_ARGISNULL(1) && PG_ARGISNULL(2))
		PG_RETURN_INT64(0);

	LWLockAcquire(guard->lock, LW_EXCLUSIVE);
	hash_seq_init(&seq, guard_htab);
	while ((e = hash_seq_search(&seq)) != NULL)
	{
		GuardKey   *k = &e->key;
		GuardKey   *want;

		if (k->dbid != MyDatabaseId || (!all_scopes && k->merchant != merchant))
			continue;
		want = k->kind == GUARD_MEMBER ? (PG_ARGISNULL(1) ? NULL : &mkey)
			: (PG_ARGISNULL(2) ? NULL : &skey);
		if (want != NULL && memcmp(k->digest, want->digest, GUARD_DIGEST_BYTES) == 0)
		{
			hash_search(guard_htab, k, HASH_REMOVE, NULL);
			dropped++;
		}
	}
	LWLockRelease(guard->lock);
	PG_RETURN_INT64(dropped);
}
