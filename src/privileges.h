/*
 * privileges.h: merchant isolation for C functions (privileges.c).
 */
#ifndef WALLET_PRIVILEGES_H
#define WALLET_PRIVILEGES_H

/* whether the campaign exists and the calling role acts for its merchant */
extern bool wallet_sees_campaign(int64 campaign_id);

#endif							/* WALLET_PRIVILEGES_H */
