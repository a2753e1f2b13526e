/*
 * wallet.h: what every wallet source file shares.
 *
 * SQLSTATEs of the project's own class "WL" are allocated by area:
 *   WL0xx  general (keys, configuration)
 *   WL1xx  marketing codes
 *   WL2xx  points ledger
 * Each area declares its codes in its own header; README.md lists them all.
 */
#ifndef WALLET_H
#define WALLET_H

#include "postgres.h"

#ifndef WALLET_VERSION
#error "WALLET_VERSION must be defined by the build (see Makefile)"
#endif

#endif							/* WALLET_H */
