/*
 * time_zones.c: wallet_internal.time_zone_known, whether a name is one of
 * pg_timezone_names.
 *
 * pg_timezone_names loads every file of the time zone database on each scan
 * (tens of milliseconds), which made upsert_member with a time zone cost as
 * much, and a bulk import of members hours.  The names are read once per
 * backend into a sorted array and looked up by binary search: the same
 * answer as the view, until the server's time zone files change under a
 * running backend (a new session then sees the new names).
 */
#include "wallet.h"

#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

static char **zone_names = NULL;
static int	zone_count = 0;

static int
compare_names(const void *a, const void *b)
{
	return strcmp(*(char *const *) a, *(char *const *) b);
}

/* the names of pg_timezone_names, sorted, in TopMemoryContext */
static void
load_zone_names(void)
{
	char	  **names;
	uint64		i,
				n;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute("SELECT z.name FROM pg_catalog.pg_timezone_names z", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "reading pg_timezone_names failed");
	n = SPI_processed;
	names = MemoryContextAlloc(TopMemoryContext, sizeof(char *) * (n + 1));
	for (i = 0; i < n; i++)
		names[i] = MemoryContextStrdup(TopMemoryContext,
									   SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1));
	SPI_finish();
	qsort(names, n, sizeof(char *), compare_names);
	zone_names = names;
	zone_count = (int) n;
}

PG_FUNCTION_INFO_V1(time_zone_known);
/* wallet_internal.time_zone_known(name text) -> boolean (STRICT) */
Datum
time_zone_known(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));

	if (zone_names == NULL)
		load_zone_names();
	PG_RETURN_BOOL(bsearch(&name, zone_names, zone_count, sizeof(char *), compare_names) != NULL);
}
