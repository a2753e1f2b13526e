/*
 * errcodes.h: every SQLSTATE of the project's own class "WL", in one place.
 *
 * Codes are allocated by area: WL0xx general, WL1xx marketing codes (WL15x
 * redemption), WL2xx points ledger.  Each macro is ERRCODE_WL_ followed by
 * the code's name in capitals; README.md's error table lists the same codes
 * under the same names, and the SQL parts raise them by their literal
 * ('WL101'); test/checks/sqlstates_documented.t holds the three together.
 * A code once released is never reused for another meaning.
 *
 * Besides these, the extension raises standard SQLSTATEs by one rule: a NULL
 * required argument is 22004 (null_value_not_allowed), a blank or oversized
 * text argument 22023 (invalid_parameter_value), an id naming no object the
 * WL code of that object (unknown_campaign, unknown_account, ...).
 */
#ifndef WALLET_ERRCODES_H
#define WALLET_ERRCODES_H

#include "utils/elog.h"

/* general */
#define ERRCODE_WL_ROOT_KEY_NOT_LOADED		MAKE_SQLSTATE('W','L','0','0','1')
#define ERRCODE_WL_IDEMPOTENCY_KEY_REUSED	MAKE_SQLSTATE('W','L','0','0','2')

/* marketing codes: campaigns and keys */
#define ERRCODE_WL_UNKNOWN_CAMPAIGN			MAKE_SQLSTATE('W','L','1','0','1')
#define ERRCODE_WL_UNKNOWN_MERCHANT			MAKE_SQLSTATE('W','L','1','0','2')
#define ERRCODE_WL_UNKNOWN_KEY_VERSION		MAKE_SQLSTATE('W','L','1','0','3')
#define ERRCODE_WL_RETIRE_CURRENT_KEY		MAKE_SQLSTATE('W','L','1','0','4')
#define ERRCODE_WL_KEY_VERSIONS_EXHAUSTED	MAKE_SQLSTATE('W','L','1','0','5')
#define ERRCODE_WL_SERIALS_EXHAUSTED		MAKE_SQLSTATE('W','L','1','0','6')
#define ERRCODE_WL_CAMPAIGN_FIELD_FIXED		MAKE_SQLSTATE('W','L','1','0','7')
#define ERRCODE_WL_CURRENT_KEY_RETIRED		MAKE_SQLSTATE('W','L','1','0','8')
#define ERRCODE_WL_SERIAL_SEQUENCE_MISSING	MAKE_SQLSTATE('W','L','1','0','9')
#define ERRCODE_WL_CAMPAIGN_IDS_EXHAUSTED	MAKE_SQLSTATE('W','L','1','1','0')
#define ERRCODE_WL_INSTALLATION_ID_FIXED	MAKE_SQLSTATE('W','L','1','2','0')
#define ERRCODE_WL_KEY_BINDING_FIXED		MAKE_SQLSTATE('W','L','1','2','1')
#define ERRCODE_WL_CAMPAIGN_NOT_DELETABLE	MAKE_SQLSTATE('W','L','1','2','2')
#define ERRCODE_WL_CAMPAIGN_ID_REUSED		MAKE_SQLSTATE('W','L','1','2','3')

/* marketing codes: redemption */
#define ERRCODE_WL_UNKNOWN_REDEMPTION		MAKE_SQLSTATE('W','L','1','5','0')
#define ERRCODE_WL_REDEMPTION_ALREADY_UNDONE MAKE_SQLSTATE('W','L','1','5','1')
#define ERRCODE_WL_UNKNOWN_RESERVATION		MAKE_SQLSTATE('W','L','1','5','2')
#define ERRCODE_WL_RESERVATION_CONVERTED	MAKE_SQLSTATE('W','L','1','5','3')

/* points ledger (WL215 reason_required was retired in 0.2.0: see README) */
#define ERRCODE_WL_UNKNOWN_ACCOUNT			MAKE_SQLSTATE('W','L','2','0','1')
#define ERRCODE_WL_PROGRAM_CLOSED			MAKE_SQLSTATE('W','L','2','0','2')
#define ERRCODE_WL_INSUFFICIENT_POINTS		MAKE_SQLSTATE('W','L','2','0','3')
#define ERRCODE_WL_INVALID_AMOUNT			MAKE_SQLSTATE('W','L','2','0','4')
#define ERRCODE_WL_AMOUNT_OUT_OF_RANGE		MAKE_SQLSTATE('W','L','2','0','5')
#define ERRCODE_WL_UNKNOWN_HOLD				MAKE_SQLSTATE('W','L','2','0','6')
#define ERRCODE_WL_HOLD_NOT_OPEN			MAKE_SQLSTATE('W','L','2','0','7')
#define ERRCODE_WL_HOLD_EXPIRED				MAKE_SQLSTATE('W','L','2','0','8')
#define ERRCODE_WL_CAPTURE_EXCEEDS_HOLD		MAKE_SQLSTATE('W','L','2','0','9')
#define ERRCODE_WL_ENTRY_ALREADY_REVERSED	MAKE_SQLSTATE('W','L','2','1','0')
#define ERRCODE_WL_ENTRY_NOT_REVERSIBLE		MAKE_SQLSTATE('W','L','2','1','1')
#define ERRCODE_WL_UNKNOWN_ENTRY			MAKE_SQLSTATE('W','L','2','1','2')
#define ERRCODE_WL_JOURNAL_APPEND_ONLY		MAKE_SQLSTATE('W','L','2','1','3')
#define ERRCODE_WL_UNKNOWN_PROGRAM			MAKE_SQLSTATE('W','L','2','1','4')
/* campaign budgets (issue 11) */
#define ERRCODE_WL_BUDGET_NOT_SET			MAKE_SQLSTATE('W','L','6','0','1')
#define ERRCODE_WL_BUDGET_BELOW_COMMITTED	MAKE_SQLSTATE('W','L','6','0','2')
#define ERRCODE_WL_UNKNOWN_BUDGET_HOLD		MAKE_SQLSTATE('W','L','6','0','3')
#define ERRCODE_WL_BUDGET_HOLD_CLOSED		MAKE_SQLSTATE('W','L','6','0','4')
#define ERRCODE_WL_BUDGET_FIELD_FIXED		MAKE_SQLSTATE('W','L','6','0','5')
#define ERRCODE_WL_UNKNOWN_OFFER			MAKE_SQLSTATE('W','L','6','0','6')
#define ERRCODE_WL_UNKNOWN_OFFER_QUOTE		MAKE_SQLSTATE('W','L','6','0','7')
#define ERRCODE_WL_OFFER_QUOTE_UNUSABLE		MAKE_SQLSTATE('W','L','6','0','8')
#define ERRCODE_WL_OFFER_BUDGET_UNIT		MAKE_SQLSTATE('W','L','6','0','9')
#define ERRCODE_WL_AUDIT_APPEND_ONLY		MAKE_SQLSTATE('W','L','4','0','1')
#define ERRCODE_WL_UNKNOWN_PURCHASE			MAKE_SQLSTATE('W','L','5','0','0')
#define ERRCODE_WL_REFUND_EXCEEDS_PURCHASE	MAKE_SQLSTATE('W','L','5','0','1')
#define ERRCODE_WL_UNKNOWN_EARNING_RULE		MAKE_SQLSTATE('W','L','5','0','2')

/* campaign audience and analytics */
#define ERRCODE_WL_CAMPAIGN_HOLDOUT_FIXED	MAKE_SQLSTATE('W','L','6','4','0')

/* referrals and sharing (issue 11) */
#define ERRCODE_WL_NO_REFERRAL_PROGRAM		MAKE_SQLSTATE('W','L','6','7','0')
#define ERRCODE_WL_NO_SHARE_REWARD			MAKE_SQLSTATE('W','L','6','7','1')

/* tiers (issue 10) */
#define ERRCODE_WL_UNKNOWN_TIER				MAKE_SQLSTATE('W','L','5','4','0')
#define ERRCODE_WL_TIER_EXISTS				MAKE_SQLSTATE('W','L','5','4','1')
#define ERRCODE_WL_TIER_THRESHOLDS_OUT_OF_ORDER MAKE_SQLSTATE('W','L','5','4','2')
#define ERRCODE_WL_TIER_IN_USE				MAKE_SQLSTATE('W','L','5','4','3')

/* push queue (issue 12) */
#define ERRCODE_WL_UNKNOWN_PUSH				MAKE_SQLSTATE('W','L','7','0','1')
#define ERRCODE_WL_PUSH_NOT_SENDING			MAKE_SQLSTATE('W','L','7','0','2')
#define ERRCODE_WL_PUSH_NOT_DEAD			MAKE_SQLSTATE('W','L','7','0','3')
#define ERRCODE_WL_PUSH_NOT_SENT			MAKE_SQLSTATE('W','L','7','0','4')

#endif							/* WALLET_ERRCODES_H */
