/*
 * referral_gate.h: whether a merchant runs any referral program, for C
 * callers (referral_gate.c).
 */
#ifndef WALLET_REFERRAL_GATE_H
#define WALLET_REFERRAL_GATE_H

/* whether the merchant runs any referral program (cached per session) */
extern bool wallet_merchant_refers(int64 merchant_id);

#endif							/* WALLET_REFERRAL_GATE_H */
