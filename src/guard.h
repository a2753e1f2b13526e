/*
 * guard.h: the brute-force guard's counters of failed code checks, kept in
 * shared memory so that they survive the caller's rollback.
 */
#ifndef WALLET_GUARD_H
#define WALLET_GUARD_H

/* Defines wallet.guard_max_entries and asks for the shared memory (from _PG_init). */
extern void wallet_guard_init(void);

#endif							/* WALLET_GUARD_H */
