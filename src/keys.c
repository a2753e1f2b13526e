/*
 * keys.c: the root key (loaded once at server start, pgsodium style) and the
 * per-backend cache of HMAC states keyed with derived per-campaign code keys.
 */
#include "wallet.h"

#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>
#include <errno.h>

#include "miscadmin.h"
#include "storage/ipc.h"
#include "utils/guc.h"

#include "keys.h"

/* Settings (PGC_POSTMASTER: the key is read once, before any backend exists). */
static char *root_key_file = NULL;
static char *root_key_command = NULL;

/*
 * The root key in sodium_malloc memory (guard pages, mlock), kept
 * PROT_NONE except for the moment a code key is derived from it.  NULL when
 * no key is configured or wallet was not preloaded.
 */
static unsigned char *root_key = NULL;

/* Whether wallet was loaded by shared_preload_libraries (inherited by fork). */
static bool preloaded = false;

#define KEY_HINT "Put wallet in shared_preload_libraries and set wallet.root_key_file (a file holding 64 hex characters, readable by the server's user only) or wallet.root_key_command (a command printing them) in postgresql.conf, then restart the server."

/* Decodes exactly 64 hex characters (surrounding white space allowed) into key. */
static bool
parse_hex_key(const char *buf, size_t len, unsigned char *key)
{
	const char *hex_end;
	size_t		bin_len;
	size_t		i = 0,
				j;

	while (i < len && (buf[i] == ' ' || buf[i] == '\t' || buf[i] == '\n' || buf[i] == '\r'))
		i++;
	if (sodium_hex2bin(key, WALLET_ROOT_KEY_BYTES, buf + i, len - i, NULL, &bin_len, &hex_end) != 0
		|| bin_len != WALLET_ROOT_KEY_BYTES)
		return false;
	for (j = hex_end - buf; j < len; j++)
		if (!(buf[j] == ' ' || buf[j] == '\t' || buf[j] == '\n' || buf[j] == '\r'))
			return false;
	return true;
}

/* Reads the key file into buf; the file must be private to the server's user. */
static size_t
read_key_file(const char *path, char *buf, size_t bufsize)
{
	struct stat st;
	int			fd;
	ssize_t		n;
	size_t		total = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		ereport(FATAL,
				(errcode_for_file_access(),
				 errmsg("could not open root key file \"%s\": %m", path),
				 errhint(KEY_HINT)));
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
	{
		close(fd);
		ereport(FATAL,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("root key file \"%s\" is not a regular file", path),
				 errhint(KEY_HINT)));
	}
	/* Like the server's SSL key: a key others can read is no secret. */
	if (st.st_mode & (S_IRWXG | S_IRWXO))
	{
		close(fd);
		ereport(FATAL,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("root key file \"%s\" has group or world access", path),
				 errdetail("The file must be readable by the server's user only."),
				 errhint("Run chmod 600 on the file.")));
	}
	while (total < bufsize && (n = read(fd, buf + total, bufsize - total)) > 0)
		total += n;
	close(fd);
	return total;
}

/* Runs the key command and reads what it prints into buf. */
static size_t
read_key_command(const char *command, char *buf, size_t bufsize)
{
	FILE	   *fh;
	size_t		total = 0,
				n;
	int			rc;

	fflush(NULL);
	fh = popen(command, "r");
	if (fh == NULL)
		ereport(FATAL,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("could not run wallet.root_key_command: %m"),
				 errhint(KEY_HINT)));
	while (total < bufsize && (n = fread(buf + total, 1, bufsize - total, fh)) > 0)
		total += n;
	/* drain the rest so that the command does not die of SIGPIPE */
	{
		char		sink[256];

		while (fread(sink, 1, sizeof(sink), fh) > 0)
			total = bufsize;	/* too long: rejected below */
		sodium_memzero(sink, sizeof(sink));
	}
	rc = pclose(fh);
	if (rc != 0)
	{
		sodium_memzero(buf, bufsize);
		ereport(FATAL,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("wallet.root_key_command failed with status %d", rc),
				 errdetail("The command must print 64 hex characters and exit with status 0."),
				 errhint(KEY_HINT)));
	}
	return total;
}

/* Postmaster only: reads the configured key into guarded memory. */
static void
load_root_key(void)
{
	char		buf[256];
	size_t		len;
	bool		have_file = root_key_file != NULL && root_key_file[0] != '\0';
	bool		have_cmd = root_key_command != NULL && root_key_command[0] != '\0';

	if (!have_file && !have_cmd)
		return;					/* functions needing the key will raise WL001 */
	if (have_file && have_cmd)
		ereport(FATAL,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("wallet.root_key_file and wallet.root_key_command are both set"),
				 errdetail("The root key must come from exactly one source."),
				 errhint("Set only one of them.")));

	len = have_file ? read_key_file(root_key_file, buf, sizeof(buf))
		: read_key_command(root_key_command, buf, sizeof(buf));

	root_key = sodium_malloc(WALLET_ROOT_KEY_BYTES);
	if (root_key == NULL)
		ereport(FATAL,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not allocate locked memory for the root key")));
	if (len >= sizeof(buf) || !parse_hex_key(buf, len, root_key))
	{
		sodium_memzero(buf, sizeof(buf));
		sodium_free(root_key);
		root_key = NULL;
		/* never echo what was read: it might be (most of) the key */
		ereport(FATAL,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("the root key from %s is not 64 hex characters",
						have_file ? "wallet.root_key_file" : "wallet.root_key_command"),
				 errdetail("The key must be 32 bytes written as 64 hexadecimal characters, optionally followed by a newline."),
				 errhint(KEY_HINT)));
	}
	sodium_memzero(buf, sizeof(buf));
	sodium_mprotect_noaccess(root_key);
	ereport(LOG,
			(errmsg("wallet: root key loaded from %s",
					have_file ? "wallet.root_key_file" : "wallet.root_key_command")));
}

void
wallet_keys_init(void)
{
	/* PGC_POSTMASTER settings may only be defined while preloading. */
	if (!process_shared_preload_libraries_in_progress)
		return;

	DefineCustomStringVariable("wallet.root_key_file",
							   "File holding the 32-byte root key as 64 hex characters.",
							   "Read once at server start; the file must be readable by the server's user only. Mutually exclusive with wallet.root_key_command.",
							   &root_key_file, NULL, PGC_POSTMASTER,
							   GUC_SUPERUSER_ONLY, NULL, NULL, NULL);
	DefineCustomStringVariable("wallet.root_key_command",
							   "Shell command printing the 32-byte root key as 64 hex characters.",
							   "Run once at server start (e.g. to fetch the key from a key manager). Mutually exclusive with wallet.root_key_file.",
							   &root_key_command, NULL, PGC_POSTMASTER,
							   GUC_SUPERUSER_ONLY, NULL, NULL, NULL);
	preloaded = true;
	load_root_key();
}

bool
wallet_root_key_loaded(void)
{
	return root_key != NULL;
}

void
wallet_require_root_key(void)
{
	if (root_key == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_WL_ROOT_KEY_NOT_LOADED),
				 errmsg("wallet root key is not loaded"),
				 errdetail(preloaded
						   ? "The server was started without wallet.root_key_file or wallet.root_key_command, so marketing codes can be neither made nor checked."
						   : "wallet is not in shared_preload_libraries, so no root key was loaded at server start and marketing codes can be neither made nor checked."),
				 errhint(KEY_HINT)));
}

/*
 * Legacy (0.1.0) derivation, unbound: crypto_kdf_derive_from_key, i.e.
 * BLAKE2b-256 keyed with the root key, salt = subkey id (the campaign id,
 * little-endian 64-bit) and personalisation = the 8-byte context "WLCODE" +
 * key version (big-endian 16-bit).  The same in every database of the
 * server: kept only so that codes issued before the upgrade keep validating.
 *
 * Bound derivation (every key version made by 0.2.0): BLAKE2b-256 keyed with
 * the root key over BE32(campaign id) || BE16(key version), with salt = the
 * database's 16-byte installation id and personalisation = the 16 bytes
 * "WLCODE-KEY-BOUND".  See docs/code-format.md.
 */
void
code_key_derive(uint32 campaign_id, uint16 key_version, const uint8 *installation_id,
				unsigned char *out)
{
	int			rc;

	wallet_require_root_key();
	sodium_mprotect_readonly(root_key);
	if (installation_id == NULL)
	{
		char		ctx[crypto_kdf_CONTEXTBYTES] = {'W', 'L', 'C', 'O', 'D', 'E', 0, 0};

		ctx[6] = (char) (key_version >> 8);
		ctx[7] = (char) (key_version & 0xff);
		rc = crypto_kdf_derive_from_key(out, 32, (uint64_t) campaign_id, ctx, root_key);
	}
	else
	{
		static const unsigned char personal[crypto_generichash_blake2b_PERSONALBYTES] = "WLCODE-KEY-BOUND";
		unsigned char msg[6];

		msg[0] = (unsigned char) (campaign_id >> 24);
		msg[1] = (unsigned char) (campaign_id >> 16);
		msg[2] = (unsigned char) (campaign_id >> 8);
		msg[3] = (unsigned char) campaign_id;
		msg[4] = (unsigned char) (key_version >> 8);
		msg[5] = (unsigned char) key_version;
		rc = crypto_generichash_blake2b_salt_personal(out, 32, msg, sizeof(msg),
													  root_key, WALLET_ROOT_KEY_BYTES,
													  installation_id, personal);
	}
	sodium_mprotect_noaccess(root_key);
	if (rc != 0)
		elog(ERROR, "code key derivation failed");
}

/*
 * Per-backend cache of keyed HMAC states: open addressing over a fixed table
 * in one sodium_malloc block (locked, guarded), wiped when it fills up.  A
 * state is as good as the key, so it gets the same care.
 */
#define KEY_CACHE_SLOTS 256		/* power of two */

typedef struct KeySlot
{
	uint32		campaign_id;
	uint16		key_version;	/* 0 = empty slot (versions start at 1) */
	bool		bound;			/* bound derivation (else legacy) */
	uint8		installation_id[WALLET_INSTALLATION_ID_BYTES];	/* when bound */
	crypto_auth_hmacsha256_state state;
} KeySlot;

static KeySlot *key_cache = NULL;
static int	key_cache_used = 0;

static void
key_cache_free(int code, Datum arg)
{
	if (key_cache != NULL)
		sodium_free(key_cache);	/* zeroes the block before unmapping */
	key_cache = NULL;
}

/* Whether slot holds the key of (campaign_id, key_version, installation_id). */
static bool
key_slot_matches(const KeySlot *slot, uint32 campaign_id, uint16 key_version,
				 const uint8 *installation_id)
{
	if (slot->campaign_id != campaign_id || slot->key_version != key_version)
		return false;
	if (installation_id == NULL)
		return !slot->bound;
	return slot->bound &&
		memcmp(slot->installation_id, installation_id, WALLET_INSTALLATION_ID_BYTES) == 0;
}

const crypto_auth_hmacsha256_state *
code_key_state(uint32 campaign_id, uint16 key_version, const uint8 *installation_id)
{
	uint32		h;
	KeySlot    *slot;
	unsigned char key[32];

	if (key_cache == NULL)
	{
		wallet_require_root_key();
		key_cache = sodium_malloc(sizeof(KeySlot) * KEY_CACHE_SLOTS);
		if (key_cache == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("could not allocate locked memory for the code key cache")));
		sodium_memzero(key_cache, sizeof(KeySlot) * KEY_CACHE_SLOTS);
		on_proc_exit(key_cache_free, (Datum) 0);
	}

	/* versions of both derivations share a probe run: the match tells them apart */
	h = (campaign_id * 2654435761u) ^ (key_version * 40503u);
	for (;;)
	{
		slot = &key_cache[h & (KEY_CACHE_SLOTS - 1)];
		if (slot->key_version == 0)
			break;
		if (key_slot_matches(slot, campaign_id, key_version, installation_id))
			return &slot->state;
		h++;
	}

	/* miss: keep the table at most half full so that probes stay short */
	if (key_cache_used >= KEY_CACHE_SLOTS / 2)
	{
		sodium_memzero(key_cache, sizeof(KeySlot) * KEY_CACHE_SLOTS);
		key_cache_used = 0;
		return code_key_state(campaign_id, key_version, installation_id);
	}
	code_key_derive(campaign_id, key_version, installation_id, key);
	crypto_auth_hmacsha256_init(&slot->state, key, sizeof(key));
	sodium_memzero(key, sizeof(key));
	slot->campaign_id = campaign_id;
	slot->key_version = key_version;
	slot->bound = installation_id != NULL;
	if (installation_id != NULL)
		memcpy(slot->installation_id, installation_id, WALLET_INSTALLATION_ID_BYTES);
	key_cache_used++;
	return &slot->state;
}
