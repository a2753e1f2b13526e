/*
 * push_worker: a sending worker of the wallet push queue (README "Push"),
 * in C with libpq.
 *
 *   cc -o push_worker examples/push_worker.c -I$(pg_config --includedir) -L$(pg_config --libdir) -lpq
 *   push_worker [-c channel] [-n batch] [-l lease_seconds] [-p poll_seconds] [-f fail_rate] [-s seed] "conninfo"
 *
 * For each merchant it acts for (wallet.my_merchants) it LISTENs on the
 * merchant's wake-up name of the channel, wallet.push_channel(merchant,
 * channel): a name derived from the merchant's secret key, so that no role
 * acting for another merchant can listen to it.  It claims up to n due
 * messages with
 * wallet.claim_pushes, hands each to a stub provider that fails now and then
 * (a fail_rate share of the sends: two thirds of those retryable, one third
 * not), and reports each with wallet.ack_push or wallet.fail_push, naming
 * its claim by the attempt claim_pushes returned (a message claimed again
 * after this worker's lease lapsed is dropped, not reported).  With
 * nothing to claim it sleeps on the connection's socket until a NOTIFY
 * arrives or poll_seconds pass (the queue throttles its NOTIFYs, so the
 * poll is the safety net).  SIGINT or SIGTERM stop it cleanly: the batch in
 * hand is finished and reported, then it prints its counts and exits 0.
 * Messages it claimed but could not report (a crash) are claimed again by
 * any worker once their lease lapses.  Every 5 seconds it also turns the
 * queue slots (wallet.rotate_push_queue, which does nothing until the
 * current slot is 10 s old): the queue's dead tuples are then emptied by
 * TRUNCATE within a few turns, without waiting for the maintenance.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

static volatile sig_atomic_t stop_requested = 0;

static void
on_signal(int sig)
{
	(void) sig;
	stop_requested = 1;
}

static void
die(PGconn *conn, const char *what)
{
	fprintf(stderr, "push_worker: %s: %s", what, conn ? PQerrorMessage(conn) : "\n");
	if (conn)
		PQfinish(conn);
	exit(1);
}

/* The stub provider: 0 delivered, 1 retryable failure, 2 permanent failure. */
static int
provider_send(const char *member_ref, const char *payload, double fail_rate)
{
	double		r = (double) rand() / RAND_MAX;

	(void) member_ref;
	(void) payload;
	if (r >= fail_rate)
		return 0;
	return r < fail_rate * 2.0 / 3.0 ? 1 : 2;
}

/* Runs a one-row command with parameters; exits on error. */
/*
 * Runs a report (ack or fail) with the claim's attempt: NULL when the message
 * was claimed again after this worker's lease lapsed (WL702, "claimed
 * again"): the other worker owns it now, and this one drops it.
 */
static PGresult *
report(PGconn *conn, const char *sql, int nparams, const char *const *params)
{
	PGresult   *res = PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0);
	const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

	if (PQresultStatus(res) == PGRES_TUPLES_OK)
		return res;
	if (state != NULL && strcmp(state, "WL702") == 0)
	{
		fprintf(stderr, "push_worker: %s", PQresultErrorMessage(res));
		PQclear(res);
		return NULL;
	}
	die(conn, sql);
	return NULL;
}

/* Waits for a NOTIFY or the poll timeout (or a signal); drains notifications. */
static void
wait_for_work(PGconn *conn, int poll_seconds)
{
	int			sock = PQsocket(conn);
	fd_set		fds;
	struct timeval tv;
	PGnotify   *n;

	/* a NOTIFY that came in with the last results is already here */
	if (!PQconsumeInput(conn))
		die(conn, "connection lost");
	if ((n = PQnotifies(conn)) != NULL)
	{
		do
			PQfreemem(n);
		while ((n = PQnotifies(conn)) != NULL);
		return;
	}
	FD_ZERO(&fds);
	FD_SET(sock, &fds);
	tv.tv_sec = poll_seconds;
	tv.tv_usec = 0;
	if (select(sock + 1, &fds, NULL, NULL, &tv) < 0 && errno != EINTR)
		die(NULL, "select failed");
	if (!PQconsumeInput(conn))
		die(conn, "connection lost");
	while ((n = PQnotifies(conn)) != NULL)
		PQfreemem(n);
}

int
main(int argc, char **argv)
{
	const char *channel = "push";
	int			batch = 10;
	int			lease = 30;
	int			poll_seconds = 1;
	double		fail_rate = 0.0;
	unsigned	seed = (unsigned) getpid();
	long		sent = 0,
				retried = 0,
				dead = 0;
	time_t		last_turn = 0;
	char		sql[256];
	char		lease_text[32];
	char		batch_text[32];
	PGconn	   *conn;
	PGresult   *res;
	struct sigaction sa;
	int			opt;

	while ((opt = getopt(argc, argv, "c:n:l:p:f:s:")) != -1)
	{
		switch (opt)
		{
			case 'c': channel = optarg; break;
			case 'n': batch = atoi(optarg); break;
			case 'l': lease = atoi(optarg); break;
			case 'p': poll_seconds = atoi(optarg); break;
			case 'f': fail_rate = atof(optarg); break;
			case 's': seed = (unsigned) strtoul(optarg, NULL, 10); break;
			default:
				fprintf(stderr, "usage: push_worker [-c channel] [-n batch] [-l lease_s] [-p poll_s] [-f fail_rate] [-s seed] conninfo\n");
				return 2;
		}
	}
	if (optind >= argc || batch < 1 || lease < 1 || poll_seconds < 1 || strlen(channel) > 40)
	{
		fprintf(stderr, "push_worker: a conninfo, a positive batch, lease and poll, a channel of at most 40 characters\n");
		return 2;
	}
	srand(seed);

	/* SIGINT/SIGTERM interrupt select() (no SA_RESTART) and stop the loop */
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	conn = PQconnectdb(argv[optind]);
	if (PQstatus(conn) != CONNECTION_OK)
		die(conn, "connection failed");

	/*
	 * the wake-up names of the channel, one per merchant acted for (a merchant
	 * granted later is heard after a restart; the poll finds its messages
	 * meanwhile); LISTEN takes an identifier: quoted
	 */
	{
		const char *params[1] = {channel};
		int			i,
					merchants;

		res = PQexecParams(conn,
						   "SELECT wallet.push_channel(m.merchant_id, $1) FROM wallet.my_merchants() m ORDER BY m.merchant_id",
						   1, NULL, params, NULL, NULL, 0);
		if (PQresultStatus(res) != PGRES_TUPLES_OK)
			die(conn, "push_channel");
		merchants = PQntuples(res);
		for (i = 0; i < merchants; i++)
		{
			const char *name = PQgetvalue(res, i, 0);
			char	   *quoted = PQescapeIdentifier(conn, name, strlen(name));
			PGresult   *lres;

			if (quoted == NULL)
				die(conn, "channel name");
			snprintf(sql, sizeof(sql), "LISTEN %s", quoted);
			PQfreemem(quoted);
			lres = PQexec(conn, sql);
			if (PQresultStatus(lres) != PGRES_COMMAND_OK)
				die(conn, "LISTEN");
			PQclear(lres);
		}
		PQclear(res);
		printf("push_worker: listening on channel %s of %d merchant%s\n", channel, merchants, merchants == 1 ? "" : "s");
	}
	snprintf(lease_text, sizeof(lease_text), "%d seconds", lease);
	snprintf(batch_text, sizeof(batch_text), "%d", batch);
	fflush(stdout);

	while (!stop_requested)
	{
		const char *claim_params[3] = {channel, batch_text, lease_text};
		int			i,
					rows;

		/* the turn of the slots: its own short transaction, never in the way of a claim */
		if (time(NULL) - last_turn >= 5)
		{
			res = PQexec(conn, "SELECT wallet.rotate_push_queue()");
			if (PQresultStatus(res) != PGRES_TUPLES_OK)
				die(conn, "rotate_push_queue");
			PQclear(res);
			last_turn = time(NULL);
		}

		res = PQexecParams(conn,
						   "SELECT push_id, member_ref, payload, attempts FROM wallet.claim_pushes($1, $2::int, $3::interval)",
						   3, NULL, claim_params, NULL, NULL, 0);
		if (PQresultStatus(res) != PGRES_TUPLES_OK)
			die(conn, "claim_pushes");
		rows = PQntuples(res);
		/* a batch in hand is finished even when a stop was requested meanwhile */
		for (i = 0; i < rows; i++)
		{
			const char *push_id = PQgetvalue(res, i, 0);
			const char *attempt = PQgetvalue(res, i, 3);
			char		provider_id[64];
			PGresult   *r;
			int			outcome = provider_send(PQgetvalue(res, i, 1), PQgetvalue(res, i, 2), fail_rate);

			if (outcome == 0)
			{
				const char *p[3] = {push_id, provider_id, attempt};

				snprintf(provider_id, sizeof(provider_id), "stub-%s", push_id);
				r = report(conn, "SELECT wallet.ack_push($1::bigint, $2, $3::int)", 3, p);
				if (r != NULL)
				{
					sent++;
					PQclear(r);
				}
			}
			else
			{
				const char *p[4] = {push_id, outcome == 1 ? "stub provider: 503 try later" : "stub provider: invalid device token",
				outcome == 1 ? "true" : "false", attempt};

				r = report(conn, "SELECT wallet.fail_push($1::bigint, $2, $3::boolean, $4::int)", 4, p);
				if (r == NULL)
					continue;
				if (strcmp(PQgetvalue(r, 0, 0), "dead") == 0)
					dead++;
				else
					retried++;
				PQclear(r);
			}
		}
		PQclear(res);
		if (rows == 0 && !stop_requested)
			wait_for_work(conn, poll_seconds);
	}

	printf("push_worker: stopped cleanly: %ld sent, %ld to retry, %ld dead\n", sent, retried, dead);
	PQfinish(conn);
	return 0;
}
