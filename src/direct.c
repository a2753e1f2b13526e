/*
 * direct.c: writes and reads of the extension's own tables without an
 * executor, for the hot paths that would otherwise pay a statement's
 * start-up for one row (redeem_direct.c, push_write.c).
 *
 * Why: a kept SPI plan still starts an executor, revalidates its plan,
 * parses the table's CHECK constraints again and routes the row; for one
 * row that costs more than the row.  Each caller first checks that the
 * table has exactly the shape it was written for (direct_insertable) and
 * otherwise runs its statement, which honours whatever was added.
 */
#include "wallet.h"

#include "direct.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_constraint.h"
#include "executor/executor.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "storage/lmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/ruleutils.h"
#include "utils/syscache.h"

/* Attribute number of a live column, or InvalidAttrNumber. */
AttrNumber
direct_attnum(Relation rel, const char *name)
{
	TupleDesc	td = RelationGetDescr(rel);

	for (int i = 0; i < td->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(td, i);

		if (!att->attisdropped && strcmp(NameStr(att->attname), name) == 0)
			return att->attnum;
	}
	return InvalidAttrNumber;
}

/* Whether the foreign key constraint conoid is on the one column named column of rel. */
static bool
direct_fk_on(Oid conoid, Relation rel, const char *column)
{
	HeapTuple	tup = SearchSysCache1(CONSTROID, ObjectIdGetDatum(conoid));
	bool		isnull;
	Datum		d;
	ArrayType  *arr;
	bool		on = false;

	if (!HeapTupleIsValid(tup))
		return false;
	d = SysCacheGetAttr(CONSTROID, tup, Anum_pg_constraint_conkey, &isnull);
	if (!isnull)
	{
		arr = DatumGetArrayTypeP(d);
		on = ARR_NDIM(arr) == 1 && ARR_DIMS(arr)[0] == 1 &&
			((int16 *) ARR_DATA_PTR(arr))[0] == direct_attnum(rel, column);
	}
	ReleaseSysCache(tup);
	return on;
}

/*
 * Whether rel is a plain table with exactly the given live columns, the
 * given check constraints, no default on the columns no_default (which the
 * statement it stands for leaves to their defaults, and a direct insert
 * NULL), no trigger or rule but foreign-key checks on the one column
 * fk_null (when given), which a direct insert leaves NULL: what it may
 * write without an executor.
 */
bool
direct_insertable(Relation rel, const char *const *columns, int ncolumns,
				  const char *const *checks, int nchecks, const char *fk_null,
				  const char *const *no_default, int nno_default)
{
	TupleDesc	td = RelationGetDescr(rel);
	int			live = 0;
	int			have_checks = td->constr ? td->constr->num_check : 0;

	/* what an INSERT would honour and a heap insert would not */
	if (rel->rd_rel->relkind != RELKIND_RELATION || rel->rd_rules != NULL ||
		rel->rd_rel->relforcerowsecurity || (td->constr && td->constr->has_generated_stored))
		return false;
	for (int i = 0; i < td->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(td, i);

		if (att->attisdropped)
			continue;
		live++;
		if (att->atthasdef)
			for (int k = 0; k < nno_default; k++)
				if (strcmp(NameStr(att->attname), no_default[k]) == 0)
					return false;
	}
	if (live != ncolumns)
		return false;
	for (int i = 0; i < ncolumns; i++)
		if (direct_attnum(rel, columns[i]) == InvalidAttrNumber)
			return false;
	if (have_checks != nchecks)
		return false;
	for (int i = 0; i < nchecks; i++)
	{
		bool		found = false;

		for (int k = 0; k < have_checks && !found; k++)
			found = strcmp(td->constr->check[k].ccname, checks[i]) == 0;
		if (!found)
			return false;
	}
	if (rel->trigdesc != NULL)
		for (int i = 0; i < rel->trigdesc->numtriggers; i++)
		{
			Trigger    *t = &rel->trigdesc->triggers[i];

			if (t->tgfoid == F_RI_FKEY_CHECK_UPD)
				continue;		/* fires on UPDATE only */
			if (t->tgfoid != F_RI_FKEY_CHECK_INS || fk_null == NULL || !direct_fk_on(t->tgconstraint, rel, fk_null))
				return false;
		}
	return true;
}

/*
 * Whether column of rel has exactly the default expr (as pg_get_expr
 * prints it): a caller that writes the default's value itself (now(), 0)
 * checks that nobody changed it.
 */
bool
direct_default_is(Relation rel, const char *column, const char *expr)
{
	TupleDesc	td = RelationGetDescr(rel);
	AttrNumber	a = direct_attnum(rel, column);

	if (a == InvalidAttrNumber || !TupleDescAttr(td, a - 1)->atthasdef || td->constr == NULL)
		return false;
	for (int k = 0; k < td->constr->num_defval; k++)
		if (td->constr->defval[k].adnum == a)
			return strcmp(deparse_expression(stringToNode(td->constr->defval[k].adbin), NIL, false, false),
						  expr) == 0;
	return false;
}

void
direct_key(ScanKey k, AttrNumber att, RegProcedure proc, Datum value)
{
	ScanKeyEntryInitialize(k, 0, att, BTEqualStrategyNumber, InvalidOid,
						   DEFAULT_COLLATION_OID, proc, value);
}

/* The one visible row of heap matching the keys (heap columns) through the index, copied; NULL if none. */
HeapTuple
direct_fetch(Relation heap, const char *index, int nkeys, ScanKey keys, Snapshot snap)
{
	Oid			indexoid = get_relname_relid(index, RelationGetNamespace(heap));
	SysScanDesc scan;
	HeapTuple	t;

	if (!OidIsValid(indexoid))
		elog(ERROR, "index wallet.%s does not exist", index);
	scan = systable_beginscan(heap, indexoid, true, snap, nkeys, keys);
	t = systable_getnext(scan);
	if (t != NULL)
		t = heap_copytuple(t);
	systable_endscan(scan);
	return t;
}

/*
 * Insert one row and its index entries; with fresh_only, by speculative
 * insertion (INSERT ... ON CONFLICT DO NOTHING, under READ COMMITTED: no
 * check that the conflicting row is visible to a transaction snapshot):
 * returns false, having written nothing, when a row with the same unique
 * key exists or is being inserted (after waiting for its transaction).  Otherwise a unique
 * violation raises 23505, as an INSERT does.
 */
bool
direct_insert(Relation rel, Datum *values, bool *nulls, bool fresh_only)
{
	EState	   *estate = CreateExecutorState();
	ResultRelInfo *rri = makeNode(ResultRelInfo);
	TupleTableSlot *slot;
	TupleDesc	td = RelationGetDescr(rel);
	bool		inserted = true;

	estate->es_output_cid = GetCurrentCommandId(true);
	InitResultRelInfo(rri, rel, 1, NULL, 0);
	ExecOpenIndices(rri, fresh_only);
	slot = ExecInitExtraTupleSlot(estate, td, table_slot_callbacks(rel));
	ExecClearTuple(slot);
	for (int i = 0; i < td->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(td, i);

		/* a dropped column is NULL whatever the caller left there */
		if (att->attisdropped)
			nulls[i] = true;
		/* the executor's own error, for a NOT NULL a DBA added meanwhile */
		else if (nulls[i] && att->attnotnull)
			ereport(ERROR,
					(errcode(ERRCODE_NOT_NULL_VIOLATION),
					 errmsg("null value in column \"%s\" of relation \"%s\" violates not-null constraint",
							NameStr(att->attname), RelationGetRelationName(rel)),
					 errtablecol(rel, att->attnum)));
		slot->tts_values[i] = values[i];
		slot->tts_isnull[i] = nulls[i];
	}
	ExecStoreVirtualTuple(slot);
	if (fresh_only)
	{
		ItemPointerData conflict;

		/*
		 * as ExecInsert's ON CONFLICT DO NOTHING: a row inserted meanwhile
		 * by another session (a speculative conflict) sends us back to the
		 * check, which waits for it and finds it, or finds it gone
		 */
		for (;;)
		{
			TransactionId xid;
			uint32		token;
			bool		spec_conflict = false;

			inserted = ExecCheckIndexConstraints(rri, slot, estate, &conflict, NIL);
			if (!inserted)
				break;
			xid = GetCurrentTransactionId();
			token = SpeculativeInsertionLockAcquire(xid);
			table_tuple_insert_speculative(rel, slot, estate->es_output_cid, 0, NULL, token);
			(void) ExecInsertIndexTuples(rri, slot, estate, false, true, &spec_conflict, NIL);
			table_tuple_complete_speculative(rel, slot, token, !spec_conflict);
			SpeculativeInsertionLockRelease(xid);
			if (!spec_conflict)
				break;
			CHECK_FOR_INTERRUPTS();
		}
	}
	else
	{
		table_tuple_insert(rel, slot, estate->es_output_cid, 0, NULL);
		(void) ExecInsertIndexTuples(rri, slot, estate, false, false, NULL, NIL);
	}
	ExecCloseIndices(rri);
	ExecResetTupleTable(estate->es_tupleTable, false);
	FreeExecutorState(estate);
	return inserted;
}

/* Fill values/nulls of rel (all NULL first) by column name. */
void
direct_set(Relation rel, Datum *values, bool *nulls, const char *name, Datum v)
{
	AttrNumber	a = direct_attnum(rel, name);

	values[a - 1] = v;
	nulls[a - 1] = false;
}

