/*
 * wallet.h: what every wallet source file shares.
 *
 * SQLSTATEs of the project's own class "WL" are all in errcodes.h.
 */
#ifndef WALLET_H
#define WALLET_H

#include "postgres.h"

#include "errcodes.h"

#ifndef WALLET_VERSION
#error "WALLET_VERSION must be defined by the build (see Makefile)"
#endif

#endif							/* WALLET_H */
