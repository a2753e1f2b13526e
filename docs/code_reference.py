#!/usr/bin/env python3
"""Reference implementation of the wallet marketing-code format (docs/code-format.md).

Standard library only: a point-of-sale app can port this to any language
that has BLAKE2b with key, salt and personalisation (for the key
derivation; a plain BLAKE2b is not enough) and HMAC-SHA-256.

INSTALLATION is the database's installation id (SELECT wallet.installation_id()),
or "legacy" for a key version made by wallet 0.1.0 (code_keys.installation_id NULL).

    python3 docs/code_reference.py ROOT_KEY_HEX INSTALLATION CAMPAIGN SERIAL VERSION [PREFIX] [MAC_BITS]
        prints the code's text form
    python3 docs/code_reference.py --check ROOT_KEY_HEX INSTALLATION CODE CURRENT_PREFIX MAC_BITS
        prints ok / malformed / mistyped / forged (key versions are not checked here)
"""
import hashlib
import hmac
import sys
import uuid

B32 = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CHECK = B32 + "*~$=U"
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


def check_symbol(symbols: str) -> str:
    n = len(symbols) + 1
    total = sum((1 + (n - i - 1) % 36) * value(c) for i, c in enumerate(symbols))
    return CHECK[-total % 37]


def width_class(x, widths):
    return next(k for k, w in enumerate(widths) if x < (1 << w))


def encode(root_key, installation, campaign, serial, version=1, prefix="", mac_bits=40) -> str:
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
    text = syms + check_symbol(prefix.upper() + syms)
    groups = [text[i:i + 4] for i in range(0, len(text), 4)]
    return "-".join(([prefix.upper()] if prefix else []) + groups)


def decode(text):
    """Returns (status, fields) with status ok (structure only), malformed or mistyped."""
    s = "".join(c for c in text.upper() if c not in "- \t\r\n")
    if not 14 <= len(s) <= 41 or any(c not in "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ" for c in s[:-1]) \
            or fold(s[-1]) not in CHECK:
        return "malformed", None
    if sum((1 + (len(s) - i - 1) % 36) * value(c) for i, c in enumerate(s)) % 37:
        return "mistyped", None
    tail = 0
    for c in s[-5:-1]:
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
    plen = len(s) - 1 - n
    if not 0 <= plen <= 8:
        return "malformed", None
    body = 0
    for c in s[plen:-1]:
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
    if a and a[0] == "--check":
        root, inst, code, prefix, mac_bits = bytes.fromhex(a[1]), installation_id(a[2]), a[3], a[4], int(a[5])
        status, f = decode(code)
        if status == "ok" and (f["mac_bits"] != mac_bits or fold(f["prefix"]) != fold(prefix)
                               or mac(root, inst, f["campaign"], f["serial"], f["version"], f["prefix"], mac_bits) != f["mac"]):
            status = "forged"
        print(status)
    else:
        root, inst = bytes.fromhex(a[0]), installation_id(a[1])
        print(encode(root, inst, int(a[2]), int(a[3]), int(a[4]), a[5] if len(a) > 5 else "",
                     int(a[6]) if len(a) > 6 else 40))
