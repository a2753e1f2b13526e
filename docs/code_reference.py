#!/usr/bin/env python3
"""Reference implementation of the wallet marketing-code format (docs/code-format.md).

Standard library only: a point-of-sale app can port this to any language
that has BLAKE2b with key, salt and personalisation (for the key
derivation; a plain BLAKE2b is not enough) and HMAC-SHA-256.

INSTALLATION is the database's installation id (SELECT wallet.installation_id()),
or "legacy" for a key version made by wallet 0.1.0 (code_keys.installation_id NULL).

    python3 docs/code_reference.py [--text-0.1.0] ROOT_KEY_HEX INSTALLATION CAMPAIGN SERIAL VERSION [PREFIX] [MAC_BITS]
        prints the code's text form (with --text-0.1.0: the form 0.1.0 printed, one check symbol)
    python3 docs/code_reference.py --check ROOT_KEY_HEX INSTALLATION CODE CURRENT_PREFIX MAC_BITS
        prints ok / malformed / mistyped / forged (key versions are not checked here)
    python3 docs/code_reference.py --prove
        checks by enumeration that every code has its two check symbols (section 3.2)
"""
import hashlib
import hmac
import sys
import uuid

B32 = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CHECK = B32 + "*~$=U"    # values 0..36 of the check sum; 32..36 only in a 0.1.0 check symbol or (U) a prefix
CAMPAIGN_WIDTHS = (8, 16, 20, 32)
SERIAL_WIDTHS = (16, 24, 32, 38)


def code_key(root_key: bytes, installation, campaign: int, version: int) -> bytes:
    """The code key of (installation, campaign, version); installation = None for a legacy key version."""
    if installation is None:
        # 0.1.0: libsodium crypto_kdf_derive_from_key(32, subkey_id=campaign, ctx="WLCODE"+version(BE16), root_key)
        ctx = b"WLCODE" + version.to_bytes(2, "big")
        return hashlib.blake2b(b"", digest_size=32, key=root_key,
                               salt=campaign.to_bytes(8, "little") + bytes(8),
                               person=ctx + bytes(8)).digest()
    # bound: BLAKE2b-256(BE32(campaign) || BE16(version), key=root, salt=installation id, person="WLCODE-KEY-BOUND")
    return hashlib.blake2b(campaign.to_bytes(4, "big") + version.to_bytes(2, "big"), digest_size=32,
                           key=root_key, salt=installation, person=b"WLCODE-KEY-BOUND").digest()


def installation_id(text: str):
    """The 16 bytes of an installation id as SQL prints it (a uuid), or None for "legacy"."""
    return None if text == "legacy" else uuid.UUID(text).bytes


def fold(s: str) -> str:
    """How input reads a symbol: O as 0, I and L as 1."""
    return s.upper().replace("O", "0").replace("I", "1").replace("L", "1")


def mac_message(campaign, serial, version, prefix, mac_bits) -> bytes:
    p = fold(prefix).encode()
    return (bytes([1, mac_bits]) + p + bytes(8 - len(p)) + campaign.to_bytes(4, "big")
            + serial.to_bytes(8, "big") + version.to_bytes(2, "big"))


def mac(root_key, installation, campaign, serial, version, prefix, mac_bits) -> int:
    key = code_key(root_key, installation, campaign, version)
    digest = hmac.new(key, mac_message(campaign, serial, version, prefix, mac_bits), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") >> (64 - mac_bits)


def value(ch: str) -> int:
    """Check-sum value of a symbol as input reads it."""
    return CHECK.index(fold(ch))


def weighted_sum(symbols: str, right: int = 0) -> int:
    """Sum of weight * value mod 37; the last symbol of symbols is number right + 1 from the right."""
    n = len(symbols) + right
    return sum((1 + (n - i - 1) % 36) * value(c) for i, c in enumerate(symbols)) % 37


def header_length(tail: str):
    """Body length in symbols given by the last 4 body symbols, or None if the header is invalid."""
    if any(fold(c) not in B32 for c in tail):
        return None
    t = 0
    for c in tail:
        t = t << 5 | B32.index(fold(c))
    hdr = t & 63
    cw, sw, m_flag, v_flag = hdr & 3, hdr >> 2 & 3, hdr >> 4 & 1, hdr >> 5 & 1
    mac_bits = ((t >> 6) & 63) + 32 if m_flag else 40
    if mac_bits > 64 or (m_flag and mac_bits == 40):
        return None
    return (6 + 6 * m_flag + 10 * v_flag + mac_bits + CAMPAIGN_WIDTHS[cw] + SERIAL_WIDTHS[sw] + 4) // 5


def reads_as_0_1_0(s: str) -> bool:
    """Section 3.3 step 3: the header before the last symbol leaves a prefix of 0 to 8 symbols."""
    n = header_length(s[-5:-1])
    return n is not None and 0 <= len(s) - 1 - n <= 8


def check_pair(symbols: str) -> str:
    """The two check symbols after symbols (prefix and body): the smallest c1 that works (section 3.2)."""
    t = -weighted_sum(symbols, 2) % 37
    for c1 in range(32):
        c0 = (t - 2 * c1) % 37
        if c0 < 32 and not reads_as_0_1_0(symbols + B32[c1] + B32[c0]):
            return B32[c1] + B32[c0]
    raise AssertionError("no check pair")   # cannot happen: see prove()


def prove():
    """check_pair never fails: whether a candidate works depends only on the sum t it must make up,
    the last two body symbols and the length, so try every combination of those."""
    for t in range(37):
        for b2 in B32:
            for b1 in B32:
                for length in range(14, 41):   # prefix and body: 0 + 14 to 8 + 32 symbols
                    s = "0" * (length - 2) + b2 + b1
                    if not any((t - 2 * c1) % 37 < 32 and not reads_as_0_1_0(s + B32[c1] + B32[(t - 2 * c1) % 37])
                               for c1 in range(32)):
                        return "no check pair for t=%d %s%s length %d" % (t, b2, b1, length)
    return "every code has its check pair"


def width_class(x, widths):
    return next(k for k, w in enumerate(widths) if x < (1 << w))


def encode(root_key, installation, campaign, serial, version=1, prefix="", mac_bits=40, text_0_1_0=False) -> str:
    cw, sw = width_class(campaign, CAMPAIGN_WIDTHS), width_class(serial, SERIAL_WIDTHS)
    m_flag, v_flag = int(mac_bits != 40), int(version != 1)
    body, bits = 0, 0
    fields = [(campaign, CAMPAIGN_WIDTHS[cw]), (serial, SERIAL_WIDTHS[sw]),
              (mac(root_key, installation, campaign, serial, version, prefix, mac_bits), mac_bits)]
    if v_flag:
        fields.append((version, 10))
    if m_flag:
        fields.append((mac_bits - 32, 6))
    fields.append((cw | sw << 2 | m_flag << 4 | v_flag << 5, 6))
    for v, w in fields:
        body, bits = body << w | v, bits + w
    n = (bits + 4) // 5
    syms = "".join(B32[(body >> (5 * (n - 1 - k))) & 31] for k in range(n))
    if text_0_1_0:
        text = syms + CHECK[-weighted_sum(prefix.upper() + syms, 1) % 37]
    else:
        text = syms + check_pair(prefix.upper() + syms)
    groups = [text[i:i + 4] for i in range(0, len(text), 4)]
    return "-".join(([prefix.upper()] if prefix else []) + groups)


def decode(text):
    """Returns (status, fields) with status ok (structure only), malformed or mistyped."""
    s = "".join(c for c in text.upper() if c not in "- \t\r\n")
    if not 15 <= len(s) <= 42 or any(c not in "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ" for c in s[:-1]) \
            or fold(s[-1]) not in CHECK:
        return "malformed", None
    if weighted_sum(s):
        return "mistyped", None
    if reads_as_0_1_0(s):
        end = len(s) - 1              # one check symbol (0.1.0)
    else:
        end = len(s) - 2              # two check symbols
        if any(fold(c) not in B32 for c in s[-2:]):
            return "malformed", None
        if s[-2:] != check_pair(s[:-2]):
            return "mistyped", None
    tail = 0
    for c in s[end - 4:end]:
        if fold(c) not in B32:
            return "malformed", None
        tail = tail << 5 | B32.index(fold(c))
    hdr = tail & 63
    cw, sw, m_flag, v_flag = hdr & 3, hdr >> 2 & 3, hdr >> 4 & 1, hdr >> 5 & 1
    mac_bits = ((tail >> 6) & 63) + 32 if m_flag else 40
    if mac_bits > 64 or (m_flag and mac_bits == 40):
        return "malformed", None
    bits = 6 + 6 * m_flag + 10 * v_flag + mac_bits + CAMPAIGN_WIDTHS[cw] + SERIAL_WIDTHS[sw]
    n = (bits + 4) // 5
    plen = end - n
    if not 0 <= plen <= 8:
        return "malformed", None
    body = 0
    for c in s[plen:end]:
        if fold(c) not in B32:
            return "malformed", None
        body = body << 5 | B32.index(fold(c))

    def take(w):
        nonlocal body
        v, body = body & ((1 << w) - 1), body >> w
        return v

    take(6)
    if m_flag:
        take(6)
    version = take(10) if v_flag else 1
    code_mac = take(mac_bits)
    serial = take(SERIAL_WIDTHS[sw])
    campaign = take(CAMPAIGN_WIDTHS[cw])
    if body or (v_flag and version < 2) or width_class(campaign, CAMPAIGN_WIDTHS) != cw \
            or width_class(serial, SERIAL_WIDTHS) != sw:
        return "malformed", None
    return "ok", dict(prefix=s[:plen], campaign=campaign, serial=serial, version=version,
                      mac_bits=mac_bits, mac=code_mac)


if __name__ == "__main__":
    a = sys.argv[1:]
    if a == ["--prove"]:
        print(prove())
    elif a and a[0] == "--check":
        root, inst, code, prefix, mac_bits = bytes.fromhex(a[1]), installation_id(a[2]), a[3], a[4], int(a[5])
        status, f = decode(code)
        if status == "ok" and (f["mac_bits"] != mac_bits or fold(f["prefix"]) != fold(prefix)
                               or mac(root, inst, f["campaign"], f["serial"], f["version"], f["prefix"], mac_bits) != f["mac"]):
            status = "forged"
        print(status)
    else:
        old = a[:1] == ["--text-0.1.0"]
        a = a[1:] if old else a
        root, inst = bytes.fromhex(a[0]), installation_id(a[1])
        print(encode(root, inst, int(a[2]), int(a[3]), int(a[4]), a[5] if len(a) > 5 else "",
                     int(a[6]) if len(a) > 6 else 40, old))
