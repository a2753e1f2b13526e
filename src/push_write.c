/*
 * push_write.c: the rows wallet.enqueue_push writes, without an executor
 * (issue 12; direct.h), and the member's state it reads.
 *
 * Why: by its kept SPI plan the message's INSERT started an executor,
 * routed the row to its partition and parsed the table's three CHECK
 * constraints again on every call; that was more than a quarter of an
 * enqueue, the row and its four index entries about a tenth.  Here the row
 * goes straight into its partition with its index entries, exactly what the
 * statement wrote:
 *
 *   - the locks are the statement's: ROW EXCLUSIVE on wallet.push_messages,
 *     then the queue slot read from wallet_internal.push_queue_slot, then
 *     ROW EXCLUSIVE on the partition (a rotation that made it current holds
 *     it until its TRUNCATE commits, as for the statement's routing);
 *   - the values are built here to satisfy the CHECK constraints they skip
 *     (status and outcome from enqueue_push's constants, part = 3 exactly
 *     for a finished message) and the partition's bound (part);
 *   - a partition whose shape is not the one known here (a column, check
 *     constraint, default, trigger or rule added) is left to the statement,
 *     which honours it; so is a queue slot sequence never set (no last
 *     value).
 */
#include "wallet.h"

#include "direct.h"
#include "push.h"

#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_collation.h"
#include "commands/sequence.h"
#include "executor/tuptable.h"
#include "access/tableam.h"
#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/fmgrprotos.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

/* wallet.push_dedup: the key claimed (created_at written as its default, now()) */
static const char *const dedup_cols[] = {"merchant_id", "dedup_key", "push_id", "created_at"};

/* the columns read: of wallet.members, push_consents and push_preferences */
static const char *const member_cols[5] = {"member_id", "merchant_id", "member_ref", "status", "time_zone"};
static const char *const consent_cols[5] = {"merchant_id", "member_id", "channel", "topic", "granted"};
static const char *const pref_cols[6] = {"member_id", "quiet_start", "quiet_end", "topics", "max_per_day", "max_per_week"};

/* the columns of wallet.push_messages as 0.2.0 creates them, in its order */
static const char *const message_cols[] = {"push_id", "merchant_id", "member_id", "channel", "topic", "cap_group",
	"service", "payload", "campaign_id", "dedup_key", "priority", "not_before", "expires_at", "created_at", "outcome",
	"outcome_reason", "status", "reason", "due_at", "slot_at", "attempts", "claimed_at", "sent_at",
"provider_message_id", "last_error", "finished_at", "part", "requeued_attempts"};
static const char *const message_checks[] = {"push_messages_check", "push_messages_outcome_check",
"push_messages_status_check"};
/* what the statement leaves to defaults of none (created_at, attempts and requeued_attempts it defaults) */
static const char *const message_no_default[] = {"push_id", "merchant_id", "member_id", "channel", "topic",
	"cap_group", "service", "payload", "campaign_id", "dedup_key", "priority", "not_before", "expires_at", "outcome",
	"outcome_reason", "status", "reason", "due_at", "slot_at", "claimed_at", "sent_at", "provider_message_id",
"last_error", "finished_at", "part"};
static const char *const part_names[4] = {"push_messages_q0", "push_messages_q1", "push_messages_q2",
"push_messages_done"};

typedef struct WriteRels
{
	bool		valid;			/* built since the last relcache invalidation */
	bool		usable;			/* every relation where and as 0.2.0 made it */
	Oid			parent;
	Oid			part[4];
	Oid			slot_seq;
	AttrNumber	att[lengthof(message_cols)];	/* the columns' numbers, as in message_cols */
	/* what member_read's statement reads and claims */
	bool		read_usable;
	Oid			members,
				members_pkey,
				consents,
				consents_pkey,
				prefs,
				prefs_pkey,
				dedup;
	AttrNumber	m_att[5];		/* as member_cols */
	AttrNumber	c_att[5];		/* as consent_cols */
	AttrNumber	p_att[6];		/* as pref_cols */
	Oid			members_ref_key;	/* (merchant_id, member_ref) */
	Oid			push_id_seq;
	AttrNumber	d_cols[4];		/* as dedup_cols */
} WriteRels;

static WriteRels write_rels;
static bool write_rels_callback = false;

static void write_rels_build(void);

/*
 * Dropped by an invalidation of one of the relations it names (any DDL on
 * them sends one: columns, checks, defaults, triggers, rules, indexes) or
 * of all; others' DDL (a temporary table) leaves it.  A relation renamed to
 * one of the names sends one for the relation it replaces.
 */
static void
write_rels_invalidate(Datum arg, Oid relid)
{
	const Oid	mine[] = {write_rels.parent, write_rels.part[0], write_rels.part[1], write_rels.part[2],
		write_rels.part[3], write_rels.slot_seq, write_rels.members, write_rels.members_pkey,
		write_rels.consents, write_rels.consents_pkey, write_rels.prefs, write_rels.prefs_pkey,
		write_rels.dedup, write_rels.members_ref_key, write_rels.push_id_seq};

	/* unusable, it may name none of them (one missing): any DDL may mend it */
	if (!OidIsValid(relid) || !write_rels.usable || !write_rels.read_usable)
		write_rels.valid = false;
	for (int i = 0; i < lengthof(mine); i++)
		if (mine[i] == relid)
			write_rels.valid = false;
}

/* The numbers of live columns of rel into atts; *ok false when one is missing. */
static void
columns_of(Relation rel, const char *const *names, int n, AttrNumber *atts, bool *ok)
{
	for (int i = 0; i < n; i++)
		if ((atts[i] = direct_attnum(rel, names[i])) == InvalidAttrNumber)
			*ok = false;
}

/* Opens relid to check it: a plain table without forced row security (the owner's reads ignore policies, as the statement's do). */
static Relation
read_rel_open(Oid relid, bool *ok)
{
	Relation	rel;

	if (!OidIsValid(relid))
	{
		*ok = false;
		return NULL;
	}
	rel = table_open(relid, AccessShareLock);
	if (rel->rd_rel->relkind != RELKIND_RELATION || rel->rd_rel->relforcerowsecurity)
		*ok = false;
	return rel;
}

/* The tables member_read's statement reads, their keys and wallet.push_dedup, as 0.2.0 made them. */
static void
read_rels_check(Oid nsp)
{
	bool		ok = true;
	Relation	rel;

	write_rels.members = get_relname_relid("members", nsp);
	write_rels.members_pkey = get_relname_relid("members_pkey", nsp);
	write_rels.consents = get_relname_relid("push_consents", nsp);
	write_rels.consents_pkey = get_relname_relid("push_consents_pkey", nsp);
	write_rels.prefs = get_relname_relid("push_preferences", nsp);
	write_rels.prefs_pkey = get_relname_relid("push_preferences_pkey", nsp);
	write_rels.dedup = get_relname_relid("push_dedup", nsp);
	write_rels.members_ref_key = get_relname_relid("members_merchant_id_member_ref_key", nsp);
	write_rels.push_id_seq = get_relname_relid("push_messages_push_id_seq", nsp);
	ok = OidIsValid(write_rels.members_pkey) && OidIsValid(write_rels.consents_pkey) &&
		OidIsValid(write_rels.prefs_pkey) && OidIsValid(write_rels.members_ref_key) &&
		get_rel_relkind(write_rels.push_id_seq) == RELKIND_SEQUENCE;
	if ((rel = read_rel_open(write_rels.members, &ok)) != NULL)
	{
		columns_of(rel, member_cols, 5, write_rels.m_att, &ok);
		table_close(rel, AccessShareLock);
	}
	if ((rel = read_rel_open(write_rels.consents, &ok)) != NULL)
	{
		columns_of(rel, consent_cols, 5, write_rels.c_att, &ok);
		table_close(rel, AccessShareLock);
	}
	if ((rel = read_rel_open(write_rels.prefs, &ok)) != NULL)
	{
		columns_of(rel, pref_cols, 6, write_rels.p_att, &ok);
		table_close(rel, AccessShareLock);
	}
	if ((rel = read_rel_open(write_rels.dedup, &ok)) != NULL)
	{
		if (!direct_insertable(rel, dedup_cols, lengthof(dedup_cols), NULL, 0, NULL, dedup_cols, 3) ||
			!direct_default_is(rel, "created_at", "now()"))
			ok = false;
		columns_of(rel, dedup_cols, 4, write_rels.d_cols, &ok);
		table_close(rel, AccessShareLock);
	}
	write_rels.read_usable = ok;
}

/* The defaults push_insert_direct writes itself (created_at, attempts, requeued_attempts), unchanged on rel. */
static bool
message_defaults_ok(Relation rel)
{
	return direct_default_is(rel, "created_at", "now()") && direct_default_is(rel, "attempts", "0") &&
		direct_default_is(rel, "requeued_attempts", "0");
}

/*
 * The parent of the queue slots: an INSERT into it fires its statement
 * triggers and rules, which its partitions do not carry, and applies its
 * forced row security.
 */
static bool
parent_ok(Oid parent)
{
	Relation	rel = table_open(parent, AccessShareLock);
	bool		ok = rel->rd_rel->relkind == RELKIND_PARTITIONED_TABLE && rel->rd_rules == NULL &&
		rel->trigdesc == NULL && !rel->rd_rel->relforcerowsecurity;

	/* its defaults are the statement's (ALTER TABLE ONLY sets them apart from the slots') */
	for (int i = 0; i < lengthof(message_no_default) && ok; i++)
	{
		AttrNumber	a = direct_attnum(rel, message_no_default[i]);

		ok = a != InvalidAttrNumber && !TupleDescAttr(RelationGetDescr(rel), a - 1)->atthasdef;
	}
	ok = ok && message_defaults_ok(rel);
	table_close(rel, AccessShareLock);
	return ok;
}

/*
 * The relations, checked once per relcache invalidation (any DDL on them
 * sends one).  The relations are looked at without keeping their locks: a
 * caller checks write_rels.valid again once it holds the lock it writes
 * or reads under, so DDL committed while it waited sends it to the
 * statement.  An invalidation that comes while the check runs makes it
 * check again.
 */
static const WriteRels *
write_rels_get(void)
{
	AcceptInvalidationMessages();
	if (write_rels.valid)
		return &write_rels;
	if (!write_rels_callback)
	{
		wallet_register_relcache_callback(write_rels_invalidate);
		write_rels_callback = true;
	}
	do
		write_rels_build();
	while (!write_rels.valid);
	return &write_rels;
}

/* One check of write_rels_get's; write_rels.valid false when an invalidation came meanwhile. */
static void
write_rels_build(void)
{
	Oid			nsp;

	memset(&write_rels, 0, sizeof(write_rels));
	write_rels.valid = true;
	nsp = get_namespace_oid("wallet", false);
	write_rels.parent = get_relname_relid("push_messages", nsp);
	write_rels.slot_seq = get_relname_relid("push_queue_slot", get_namespace_oid("wallet_internal", false));
	write_rels.usable = OidIsValid(write_rels.parent) && OidIsValid(write_rels.slot_seq) &&
		parent_ok(write_rels.parent);
	for (int p = 0; p < 4 && write_rels.usable; p++)
	{
		Relation	rel;

		write_rels.part[p] = get_relname_relid(part_names[p], nsp);
		if (!OidIsValid(write_rels.part[p]))
		{
			write_rels.usable = false;
			break;
		}
		rel = table_open(write_rels.part[p], AccessShareLock);
		/* and the defaults it writes itself (created_at, attempts, requeued_attempts) */
		write_rels.usable = rel->rd_rel->relispartition &&
			direct_insertable(rel, message_cols, lengthof(message_cols), message_checks, lengthof(message_checks),
							  NULL, message_no_default, lengthof(message_no_default)) &&
			message_defaults_ok(rel);
		/* the partitions share the parent's column order (they were created from it) */
		for (int i = 0; i < lengthof(message_cols) && write_rels.usable; i++)
		{
			AttrNumber	a = direct_attnum(rel, message_cols[i]);

			if (p == 0)
				write_rels.att[i] = a;
			else if (write_rels.att[i] != a)
				write_rels.usable = false;
		}
		table_close(rel, AccessShareLock);
	}
	read_rels_check(nsp);
}

/* The current queue slot (last_value % 4 of the rotation's sequence); false when it was never set. */
static bool
queue_slot(Oid seq, int16 *slot)
{
	LOCAL_FCINFO(fc, 1);
	Datum		v;

	InitFunctionCallInfoData(*fc, NULL, 1, InvalidOid, NULL, NULL);
	fc->args[0].value = ObjectIdGetDatum(seq);
	fc->args[0].isnull = false;
	v = pg_sequence_last_value(fc);
	if (fc->isnull)
		return false;
	*slot = (int16) (DatumGetInt64(v) % 4);
	return true;
}

/*
 * The message enqueue_push decided, written as its kept INSERT would write
 * it from the same 18 arguments (args and nulls as for SPI_execute_plan:
 * $1 push_id ... $18 finished_at, NULL for a queued or deferred message);
 * false when nothing was written and the statement must do it.
 */
bool
push_insert_direct(Datum *args, const char *argnulls)
{
	const WriteRels *rels;
	Relation	parent,
				rel;
	TupleDesc	td;
	Datum	   *values;
	bool	   *nulls;
	int16		part;
	bool		finished = argnulls[17] != 'n';
	/* the column each argument fills, by position in message_cols */
	static const int arg_col[18] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 15, 16, 18, 25};

	parent = table_open(get_relname_relid("push_messages", get_namespace_oid("wallet", false)), RowExclusiveLock);
	rels = write_rels_get();
	if (!rels->usable || RelationGetRelid(parent) != rels->parent)
	{
		table_close(parent, NoLock);
		return false;
	}
	if (finished)
		part = 3;
	else if (!queue_slot(rels->slot_seq, &part) || part > 2)
	{
		table_close(parent, NoLock);
		return false;
	}
	rel = table_open(rels->part[part], RowExclusiveLock);
	if (!write_rels.valid)
	{
		/* DDL committed while we waited for the slot: the statement honours it */
		table_close(rel, NoLock);
		table_close(parent, NoLock);
		return false;
	}
	td = RelationGetDescr(rel);
	values = palloc0(td->natts * sizeof(Datum));
	nulls = palloc(td->natts * sizeof(bool));
	memset(nulls, true, td->natts * sizeof(bool));
	for (int i = 0; i < 18; i++)
		if (argnulls[i] != 'n')
		{
			values[rels->att[arg_col[i]] - 1] = args[i];
			nulls[rels->att[arg_col[i]] - 1] = false;
		}
	/* $15 is reason too, $17 slot_at too; then the defaults and the partition */
#define SET(col, v) (values[rels->att[col] - 1] = (v), nulls[rels->att[col] - 1] = false)
	if (argnulls[14] != 'n')
		SET(17, args[14]);
	if (argnulls[16] != 'n')
		SET(19, args[16]);
	SET(13, TimestampTzGetDatum(GetCurrentTransactionStartTimestamp()));
	SET(20, Int32GetDatum(0));
	SET(27, Int32GetDatum(0));
	SET(26, Int16GetDatum(part));
#undef SET
	(void) direct_insert(rel, values, nulls, false);
	table_close(rel, NoLock);
	table_close(parent, NoLock);
	/* as after the statement: the rest of the transaction sees the row */
	CommandCounterIncrement();
	return true;
}

/* topic_not_chosen as the statement computes it: coalesce(topics IS NOT NULL AND NOT (topic = ANY (topics)), false) */
static bool
topic_not_chosen(Datum topics, const char *topic)
{
	ArrayType  *arr = DatumGetArrayTypeP(topics);
	Datum	   *elems;
	bool	   *enulls;
	int			n;
	bool		saw_null = false;

	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &enulls, &n);
	for (int i = 0; i < n; i++)
	{
		if (enulls[i])
			saw_null = true;
		else if (strcmp(TextDatumGetCString(elems[i]), topic) == 0)
			return false;		/* = ANY is true */
	}
	/* = ANY is NULL with a NULL element (then NOT NULL, coalesced to false), else false */
	return !saw_null;
}

/*
 * The member's push state as member_read's statement returns it, into
 * v[0..9] and n[0..9]: erased, time zone, consent granted, own quiet hours,
 * quiet_start, quiet_end, topic not chosen, max_per_day, max_per_week and
 * (with dedup_key) whether the key was taken; the key, when given, claimed
 * for push_id first (INSERT ... ON CONFLICT DO NOTHING).  Under READ
 * COMMITTED only (the statement's conflict check under a transaction
 * snapshot is its own), but for the claim's check (latest, no key), which
 * reads the newest state under any isolation; false, with nothing written,
 * when the statement must run.
 */
bool
push_member_read_direct(int64 merchant_id, int64 member_id, const char *channel, const char *topic,
						text *dedup_key, int64 push_id, Datum *v, bool *n, Datum *member_ref, bool latest)
{
	const WriteRels *rels;
	Relation	members,
				dedup,
				consents,
				prefs;
	Snapshot	snap;
	ScanKeyData keys[4];
	HeapTuple	t;
	bool		isnull;

	/*
	 * the claim's check reads the newest state under REPEATABLE READ too:
	 * it decides a send outside the database, so a withdrawal or another
	 * claim's send committed after the transaction's snapshot (the member's
	 * lock taken since) must count; the dedup claim keeps the statement's
	 * conflict check under a transaction snapshot
	 */
	if (IsolationUsesXactSnapshot() && !(latest && dedup_key == NULL))
		return false;
	members = table_open(get_relname_relid("members", get_namespace_oid("wallet", false)), AccessShareLock);
	rels = write_rels_get();
	if (!rels->read_usable || RelationGetRelid(members) != rels->members)
	{
		table_close(members, NoLock);
		return false;
	}
	for (int i = 0; i < 10; i++)
	{
		v[i] = (Datum) 0;
		n[i] = true;
	}
	/* every lock first (the key's as the statement takes it), then the check that nothing changed meanwhile */
	dedup = dedup_key != NULL ? table_open(rels->dedup, RowExclusiveLock) : NULL;
	consents = table_open(rels->consents, AccessShareLock);
	prefs = table_open(rels->prefs, AccessShareLock);
	if (!write_rels.valid)
	{
		if (dedup != NULL)
			table_close(dedup, NoLock);
		table_close(prefs, NoLock);
		table_close(consents, NoLock);
		table_close(members, NoLock);
		return false;
	}
	if (dedup != NULL)
	{
		TupleDesc	td = RelationGetDescr(dedup);
		Datum	   *values = palloc0(td->natts * sizeof(Datum));
		bool	   *nulls = palloc(td->natts * sizeof(bool));

		memset(nulls, true, td->natts * sizeof(bool));
#define SET(i, d) (values[rels->d_cols[i] - 1] = (d), nulls[rels->d_cols[i] - 1] = false)
		SET(0, Int64GetDatum(merchant_id));
		SET(1, PointerGetDatum(dedup_key));
		SET(2, Int64GetDatum(push_id));
		SET(3, TimestampTzGetDatum(GetCurrentTransactionStartTimestamp()));
#undef SET
		v[9] = BoolGetDatum(!direct_insert(dedup, values, nulls, true));
		n[9] = false;
		table_close(dedup, NoLock);
	}
	/* as SPI before a statement: the calls' own earlier rows seen, a fresh snapshot */
	CommandCounterIncrement();
	snap = RegisterSnapshot(latest && IsolationUsesXactSnapshot() ? GetLatestSnapshot() : GetTransactionSnapshot());

	direct_key(&keys[0], rels->m_att[0], F_INT8EQ, Int64GetDatum(member_id));
	t = direct_fetch(members, "members_pkey", 1, keys, snap);
	if (t == NULL)
		elog(ERROR, "member " INT64_FORMAT " not found", member_id);
	{
		Datum		s = heap_getattr(t, rels->m_att[3], RelationGetDescr(members), &isnull);

		v[0] = BoolGetDatum(!isnull && strcmp(TextDatumGetCString(s), "forgotten") == 0);
		n[0] = isnull;
		v[1] = heap_getattr(t, rels->m_att[4], RelationGetDescr(members), &n[1]);
		if (member_ref != NULL)
			*member_ref = heap_getattr(t, rels->m_att[2], RelationGetDescr(members), &isnull);
	}
	direct_key(&keys[0], rels->c_att[0], F_INT8EQ, Int64GetDatum(merchant_id));
	direct_key(&keys[1], rels->c_att[1], F_INT8EQ, Int64GetDatum(member_id));
	direct_key(&keys[2], rels->c_att[2], F_TEXTEQ, CStringGetTextDatum(channel));
	direct_key(&keys[3], rels->c_att[3], F_TEXTEQ, CStringGetTextDatum(topic));
	if ((t = direct_fetch(consents, "push_consents_pkey", 4, keys, snap)) != NULL)
		v[2] = heap_getattr(t, rels->c_att[4], RelationGetDescr(consents), &n[2]);
	direct_key(&keys[0], rels->p_att[0], F_INT8EQ, Int64GetDatum(member_id));
	t = direct_fetch(prefs, "push_preferences_pkey", 1, keys, snap);
	v[3] = BoolGetDatum(false);
	n[3] = false;
	v[6] = BoolGetDatum(false);
	n[6] = false;
	if (t != NULL)
	{
		TupleDesc	td = RelationGetDescr(prefs);
		Datum		topics;

		v[4] = heap_getattr(t, rels->p_att[1], td, &n[4]);
		v[5] = heap_getattr(t, rels->p_att[2], td, &n[5]);
		v[3] = BoolGetDatum(!n[4]);
		topics = heap_getattr(t, rels->p_att[3], td, &isnull);
		if (!isnull)
			v[6] = BoolGetDatum(topic_not_chosen(topics, topic));
		v[7] = heap_getattr(t, rels->p_att[4], td, &n[7]);
		v[8] = heap_getattr(t, rels->p_att[5], td, &n[8]);
	}
	UnregisterSnapshot(snap);
	table_close(prefs, NoLock);
	table_close(consents, NoLock);
	table_close(members, NoLock);
	return true;
}

/*
 * The member named by (merchant_id, member_ref), locked FOR NO KEY UPDATE,
 * and a message id drawn for it, as enqueue_push's look-up statement does:
 * *found false (no id drawn) when there is no such member.  A row updated
 * meanwhile is locked in its last version and checked again (an erased
 * member's row no longer carries the reference), as the statement's
 * recheck does.  Under READ COMMITTED only; false, having locked nothing,
 * when the statement must run.
 */
bool
push_member_lock_direct(int64 merchant_id, text *member_ref, int64 *member_id, int64 *push_id, bool *found)
{
	const WriteRels *rels;
	Relation	members;
	Snapshot	snap;
	ScanKeyData keys[2];
	HeapTuple	t;
	TupleTableSlot *slot;
	TM_FailureData tmfd;
	TM_Result	r;
	bool		isnull;
	bool		done = true;

	if (IsolationUsesXactSnapshot())
		return false;
	/* SELECT ... FOR NO KEY UPDATE: ROW SHARE on the table */
	members = table_open(get_relname_relid("members", get_namespace_oid("wallet", false)), RowShareLock);
	rels = write_rels_get();
	if (!rels->read_usable || RelationGetRelid(members) != rels->members)
	{
		table_close(members, NoLock);
		return false;
	}
	CommandCounterIncrement();
	snap = RegisterSnapshot(GetTransactionSnapshot());
	direct_key(&keys[0], rels->m_att[1], F_INT8EQ, Int64GetDatum(merchant_id));
	direct_key(&keys[1], rels->m_att[2], F_TEXTEQ, PointerGetDatum(member_ref));
	t = direct_fetch(members, "members_merchant_id_member_ref_key", 2, keys, snap);
	*found = false;
	if (t != NULL)
	{
		slot = table_slot_create(members, NULL);
		r = table_tuple_lock(members, &t->t_self, snap, slot, GetCurrentCommandId(false),
							 LockTupleNoKeyExclusive, LockWaitBlock, TUPLE_LOCK_FLAG_FIND_LAST_VERSION, &tmfd);
		if (r == TM_Ok)
		{
			/* the version locked still names the member (the statement's recheck) */
			Datum		m = slot_getattr(slot, rels->m_att[1], &isnull);
			Datum		ref = slot_getattr(slot, rels->m_att[2], &isnull);

			if (DatumGetInt64(m) == merchant_id &&
				DatumGetBool(DirectFunctionCall2Coll(texteq, DEFAULT_COLLATION_OID, ref, PointerGetDatum(member_ref))))
			{
				*found = true;
				*member_id = DatumGetInt64(slot_getattr(slot, rels->m_att[0], &isnull));
			}
		}
		else if (r != TM_Deleted)
			done = false;		/* anything else (our own later update...) is the statement's */
		ExecDropSingleTupleTableSlot(slot);
	}
	UnregisterSnapshot(snap);
	table_close(members, NoLock);
	if (*found)
		*push_id = nextval_internal(rels->push_id_seq, false);
	return done;
}
