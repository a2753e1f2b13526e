/*
 * direct.h: one-row reads and writes of the extension's tables without an
 * executor (direct.c).  The caller holds the table's lock and checks its
 * shape with direct_insertable before writing.
 *
 *   direct_attnum(rel, name)          a live column's number, or 0
 *   direct_insertable(rel, ...)       whether rel is a plain table of exactly
 *                                     these columns and checks, with no
 *                                     trigger or rule a direct insert would skip
 *   direct_default_is(rel, column, expr)   whether the column's default is
 *                                     exactly expr ("now()", "0")
 *   direct_key(k, att, proc, v)       an equality scan key (default collation)
 *   direct_fetch(heap, index, n, k, snap)   the one visible row, copied, or NULL
 *   direct_insert(rel, values, nulls, fresh_only)   a row and its index
 *                                     entries; fresh_only: ON CONFLICT DO
 *                                     NOTHING (false when the key was taken)
 *   direct_set(rel, values, nulls, name, v)   a column of a row being built
 */
#ifndef WALLET_DIRECT_H
#define WALLET_DIRECT_H

#include "access/skey.h"
#include "access/htup.h"
#include "utils/relcache.h"
#include "utils/snapshot.h"

extern AttrNumber direct_attnum(Relation rel, const char *name);
extern bool direct_insertable(Relation rel, const char *const *columns, int ncolumns,
							  const char *const *checks, int nchecks, const char *fk_null,
							  const char *const *no_default, int nno_default);
extern bool direct_default_is(Relation rel, const char *column, const char *expr);
extern void direct_key(ScanKey k, AttrNumber att, RegProcedure proc, Datum value);
extern HeapTuple direct_fetch(Relation heap, const char *index, int nkeys, ScanKey keys, Snapshot snap);
extern bool direct_insert(Relation rel, Datum *values, bool *nulls, bool fresh_only);
extern void direct_set(Relation rel, Datum *values, bool *nulls, const char *name, Datum v);

#endif
