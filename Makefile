# wallet: PostgreSQL extension (PGXS build).
#
#   make test    install deps if missing, build with -Werror, run every test
#   make run     build and start the persistent demo cluster, run examples/demo.sql
#   make stop    stop the demo cluster
#   make && sudo make install    install into an existing server (pg_config on PATH)

EXTENSION = wallet
EXTVERSION = $(shell grep default_version $(EXTENSION).control | sed -e "s/default_version[[:space:]]*=[[:space:]]*'\([^']*\)'/\1/")

MODULE_big = wallet
OBJS = \
	src/wallet.o \
	src/keys.o \
	src/marketing_code.o \
	src/code_cache.o \
	src/code_hmac.o \
	src/codes.o \
	src/guard.o \
	src/redeem.o \
	src/redeem_direct.o \
	src/direct.o \
	src/points_ledger.o \
	src/ledger_ops.o \
	src/privileges.o \
	src/tiers.o \
	src/referral_gate.o \
	src/purchase.o \
	src/push_claim.o \
	src/push_decide.o \
	src/push_enqueue.o \
	src/push_write.o \
	src/time_zones.o

# The install script is assembled from one part per area so that each area's
# SQL lives beside nothing else; order matters (later parts use earlier ones:
# privileges.sql defines acts_for, which every later table's policy uses), and
# grants.sql is last: it makes every pinned function before it SECURITY
# DEFINER and grants.
SQL_PARTS = \
	sql/ext/core.sql \
	sql/ext/codes.sql \
	sql/ext/redeem.sql \
	sql/ext/ledger.sql \
	sql/ext/maintenance.sql \
	sql/ext/members.sql \
	sql/ext/privileges.sql \
	sql/ext/loyalty.sql \
	sql/ext/budgets.sql \
	sql/ext/purchases.sql \
	sql/ext/analytics.sql \
	sql/ext/referrals.sql \
	sql/ext/tiers.sql \
	sql/ext/push.sql \
	sql/ext/offers.sql \
	sql/ext/grants.sql

DATA_built = sql/$(EXTENSION)--$(EXTVERSION).sql
# Released versions are frozen, committed files; every later version is
# reached by the committed upgrade scripts (sql/wallet--A--B.sql).
DATA = sql/$(EXTENSION)--0.1.0.sql \
	sql/$(EXTENSION)--0.1.0--0.2.0.sql

# pg_regress scripts in sql/, expected output in expected/ (PGXS layout).
REGRESS = basics marketing_code points_ledger
# Isolation specs in specs/, expected output in expected/; run by installcheck
# against the running server (pg_isolation_regress), like REGRESS.
ISOLATION = code_cache_snapshot push_direct_ddl push_claim_rr push_rotate_rr code_forget_race member_forget_race push_forget_race push_forget_order push_enqueue_forget push_claim_token offer_first_purchase refund_forget member_forget_checkout campaign_cost_rr ledger_same_key ledger_capture_expiry code_reserve_undo code_rotate_generate budget_hold_expiry referral_order tier_upgrade_race code_redeem_direct code_same_key_rr

SHLIB_LINK += -lsodium
PG_CPPFLAGS += -DWALLET_VERSION='"$(EXTVERSION)"'
# PostgreSQL's own headers trip -Wunused-parameter (PG_FUNCTION_ARGS) and
# -Wmissing-field-initializers; everything else in -Wextra stays on.
PG_CFLAGS += -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers -Wno-sign-compare $(if $(WERROR),-Werror)

EXTRA_CLEAN = results regression.diffs regression.out output_iso

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs 2>/dev/null)
ifneq ($(PGXS),)
include $(PGXS)
else ifeq ($(filter test run stop,$(MAKECMDGOALS)),)
$(error pg_config not found: install postgresql-server-dev-15 (or run "make test", which installs it) or set PG_CONFIG)
endif

.DEFAULT_GOAL := all

sql/$(EXTENSION)--$(EXTVERSION).sql: $(SQL_PARTS) $(EXTENSION).control
	cat $(SQL_PARTS) > $@

.PHONY: test run stop deps
deps:
	@test/deps.sh
test:
	@test/run-tests.sh
run:
	@test/run-demo.sh
stop:
	@test/run-demo.sh stop
