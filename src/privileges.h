/*
 * privileges.h: merchant isolation for C functions (privileges.c).
 */
#ifndef WALLET_PRIVILEGES_H
#define WALLET_PRIVILEGES_H

/* owner of schema wallet: the role that created the extension */
extern Oid	wallet_owner(void);

/* whether the calling role acts for the merchant (wallet.acts_for) */
extern bool wallet_acts_for_merchant(int64 merchant_id);

/* the one merchant the calling role acts for; 0: none, several or all */
extern int64 wallet_caller_sole_merchant(void);

/* whether the calling role acts for every merchant (superuser, owner) */
extern bool wallet_caller_sees_all(void);

#endif							/* WALLET_PRIVILEGES_H */
