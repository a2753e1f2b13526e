/*
 * guard.h: the brute-force guard's counters of failed code checks, kept in
 * shared memory so that they survive the caller's rollback.
 */
#ifndef WALLET_GUARD_H
#define WALLET_GUARD_H

/* Defines wallet.guard_max_entries and asks for the shared memory (from _PG_init). */
extern void wallet_guard_init(void);

/* wallet_internal.code_guard_attempt, also called directly by redeem.c */
extern Datum code_guard_attempt(PG_FUNCTION_ARGS);

#endif							/* WALLET_GUARD_H */
