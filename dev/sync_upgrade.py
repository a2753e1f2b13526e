#!/usr/bin/env python3
"""Keep sql/wallet--0.1.0--0.2.0.sql in step with the parts (sql/ext/*.sql).

The parts are the source of a fresh install; the upgrade script must end in
the same catalog (test/concurrency/upgrade.t and extension_schema.t prove
it).  This tool does the mechanical part of that:

  dev/sync_upgrade.py BASE                 list the functions, procedures and
                                           comments that differ from git rev BASE,
                                           and any other statement that differs
                                           (those need a hand-written section)
  dev/sync_upgrade.py BASE --write "-- == 10xx. what changed"
                                           append them as a new section before
                                           10z, as CREATE OR REPLACE
  dev/sync_upgrade.py --final              rewrite section 10z (shared objects,
                                           as the parts have them now) and
                                           section 9 (the body of grants.sql)

A changed signature is reported, not written: it needs a DROP by hand.
"""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
UPGRADE = ROOT / 'sql' / 'wallet--0.1.0--0.2.0.sql'
PARTS = ROOT / 'sql' / 'ext'


def split_statements(text):
    """Statements of a SQL file (with the comment lines just before each)."""
    out, i, n, start = [], 0, len(text), 0
    while i < n:
        c = text[i]
        if text.startswith('--', i):
            j = text.find('\n', i)
            i = n if j < 0 else j + 1
        elif text.startswith('/*', i):
            i = text.index('*/', i) + 2
        elif c == "'":
            i += 1
            while True:
                j = text.index("'", i)
                if text.startswith("''", j):
                    i = j + 2
                else:
                    i = j + 1
                    break
        elif c == '$':
            m = re.match(r'\$([A-Za-z_][A-Za-z_0-9]*)?\$', text[i:])
            if m:
                tag = m.group(0)
                i = text.index(tag, i + len(tag)) + len(tag)
            else:
                i += 1
        elif c == ';':
            out.append(text[start:i + 1])
            i += 1
            start = i
        else:
            i += 1
    return out


def code_of(stmt):
    """The statement without the comment lines and blank lines before it."""
    lines = stmt.split('\n')
    k = 0
    while k < len(lines) and (lines[k].strip() == '' or lines[k].lstrip().startswith('--')):
        k += 1
    return '\n'.join(lines[k:]).strip()


ROUTINE = re.compile(r'^CREATE (?:OR REPLACE )?(FUNCTION|PROCEDURE) ([\w.]+)\s*\(', re.S)
COMMENT = re.compile(r'^COMMENT ON (FUNCTION|PROCEDURE) ([\w.]+\([^)]*\)) IS ', re.S)


def arg_types(code):
    """The argument list of a CREATE FUNCTION, reduced to its types."""
    m = ROUTINE.match(code)
    i, depth = m.end(), 1
    j = i
    while depth:
        if code[j] == '(':
            depth += 1
        elif code[j] == ')':
            depth -= 1
        j += 1
    args = code[i:j - 1]
    parts, depth, cur = [], 0, ''
    for ch in args:
        if ch == ',' and depth == 0:
            parts.append(cur)
            cur = ''
            continue
        depth += ch == '('
        depth -= ch == ')'
        cur += ch
    if cur.strip():
        parts.append(cur)
    types = []
    for p in parts:
        p = re.split(r'\s+DEFAULT\s+|\s*=\s*', p.strip(), maxsplit=1, flags=re.I)[0]
        words = p.split()
        if words and words[0].upper() in ('IN', 'OUT', 'INOUT', 'VARIADIC'):
            if words[0].upper() == 'OUT':
                continue
            words = words[1:]
        # name type...: drop the name when a type follows
        if len(words) > 1 and not words[0].startswith('"') and '(' not in words[0] and words[0].lower() not in (
                'double', 'character', 'timestamp', 'time', 'bit'):
            words = words[1:]
        types.append(' '.join(words))
    return ','.join(types)


def key_of(code):
    m = ROUTINE.match(code)
    if m:
        return ('routine', m.group(2) + '(' + arg_types(code) + ')')
    m = COMMENT.match(code)
    if m:
        return ('comment', m.group(2).replace(' ', ''))
    return ('other', code)


def statements(text):
    d, order = {}, []
    for s in split_statements(text):
        c = code_of(s)
        if not c:
            continue
        k = key_of(c)
        if k not in d:
            order.append(k)
        d[k] = c
    return d, order


def parts_text(rev=None):
    names = sorted(p.name for p in PARTS.glob('*.sql'))
    if rev is None:
        return {n: (PARTS / n).read_text() for n in names}
    out = {}
    ls = subprocess.run(['git', '-C', str(ROOT), 'ls-tree', '--name-only', rev, 'sql/ext/'],
                        capture_output=True, text=True, check=True).stdout.split()
    for path in ls:
        out[Path(path).name] = subprocess.run(['git', '-C', str(ROOT), 'show', f'{rev}:{path}'],
                                              capture_output=True, text=True, check=True).stdout
    return out


def all_statements(texts):
    d, order = {}, []
    for n in sorted(texts):
        if n == 'grants.sql':
            continue
        sd, so = statements(texts[n])
        for k in so:
            if k not in d:
                order.append(k)
            d[k] = sd[k]
    return d, order


def or_replace(code):
    return re.sub(r'^CREATE (FUNCTION|PROCEDURE)', r'CREATE OR REPLACE \1', code)


def diff(base):
    old, _ = all_statements(parts_text(base))
    new, order = all_statements(parts_text())
    changed, other = [], []
    for k in order:
        if old.get(k) != new[k]:
            (other if k[0] == 'other' else changed).append(k)
    gone = [k for k in old if k not in new]
    return new, changed, other, gone


def write_before_10z(section):
    text = UPGRADE.read_text()
    mark = '-- == 10z.'
    i = text.index(mark)
    UPGRADE.write_text(text[:i] + section + '\n' + text[i:])


def final():
    new, _ = all_statements(parts_text())
    text = UPGRADE.read_text()
    i = text.index('-- == 10z.')
    j = text.index('-- == 9. privileges')
    head_end = text.index('\n\n', i) + 2
    body = text[head_end:j]
    out = []
    for s in split_statements(body):
        c = code_of(s)
        k = key_of(c)
        if k[0] == 'other' and c.startswith('CREATE OR REPLACE VIEW'):
            name = re.match(r'CREATE OR REPLACE VIEW ([\w.]+)', c).group(1)
            k = next(kk for kk in new if kk[0] == 'other' and re.match(r'CREATE (OR REPLACE )?VIEW ' + re.escape(name) + r'\b', kk[1]))
            out.append(new[k].replace('CREATE VIEW', 'CREATE OR REPLACE VIEW', 1))
            continue
        if k[0] == 'other' and c.startswith('COMMENT ON'):
            target = c.split(' IS ', 1)[0]
            k = next(kk for kk in new if kk[0] == 'other' and kk[1].startswith(target + ' IS '))
        if k not in new:
            sys.exit(f'10z: {k} is not in the parts')
        out.append(or_replace(new[k]))
    grants = (PARTS / 'grants.sql').read_text().split('\n')
    # section 9 is grants.sql without its four-line banner
    s9_head = text[j:].split('\n')[:3]
    section9 = '\n'.join(s9_head) + '\n' + '\n'.join(grants[4:])
    joined = ''
    for c in out:
        joined += ('\n' if c.startswith('COMMENT ON') else '\n\n') + c if joined else c
    text = text[:head_end] + joined + '\n\n' + section9
    UPGRADE.write_text(text)


def main():
    a = sys.argv[1:]
    if a == ['--final']:
        final()
        return
    if not a:
        sys.exit(__doc__)
    base = a[0]
    new, changed, other, gone = diff(base)
    for k in changed:
        print('CHANGED', k[0], k[1])
    for k in other:
        print('OTHER (by hand):', k[1].split('\n')[0][:150])
    for k in gone:
        print('GONE (by hand):', k[0], k[1].split('\n')[0][:150])
    if len(a) == 3 and a[1] == '--write':
        # what section 10z re-creates (--final) needs no section of its own
        text = UPGRADE.read_text()
        z = text[text.index('-- == 10z.'):text.index('-- == 9. privileges')]
        in_z = {key_of(code_of(st)) for st in split_statements(z)}
        section = a[2]
        for k in changed:
            if k in in_z or (k[0] == 'routine' and k[1].replace('wallet.', 'wallet.', 1) in
                             {kk[1] for kk in in_z if kk[0] == 'routine'}):
                continue
            c = or_replace(new[k])
            section += ('\n' if c.startswith('COMMENT ON') else '\n\n') + c
        write_before_10z(section + '\n')


if __name__ == '__main__':
    main()
