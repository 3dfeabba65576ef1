#!/usr/bin/env python3
"""File-level import graph of Freshet's src/: cycles and layering.

`make test` runs it; it fails while any file imports another that imports it
back (directly or around a loop), or a module imports one above it.

usage: python3 scripts/check-imports.py SRC_DIR [--strict] [--tests] [--edges] [--matrix]

  SRC_DIR    the crate's src directory (src)
  --strict   also count a mod.rs's edges to its own submodules ("facade"
             edges: `pub use child::X`, `child::f()` dispatch). Without it
             those edges are left out of the cycle search, which is the
             convention the issue's list of cycles follows; with it, every
             mod.rs <-> child cycle shows up too.
  --tests    include code under #[cfg(test)] (test modules, test-only files)
  --edges    print every resolved edge
  --matrix   print the module-level edge counts

Exit status: 0 when there is no file cycle and no against-direction edge.

What counts as an edge
  * comments, string and char literals are blanked out first;
  * every `use` tree is expanded (groups, `self`, `as`, globs, multi-line,
    `use` inside fn bodies), and every inline path in code is read:
    `crate::a::b`, `super::x`, `self::y`, `child::z` (a module declared in the
    file), `alias::w` (a name a `use` bound to something in the crate);
  * `super`/`self` resolve against the module the text is in: a `mod.rs` is
    its directory's module, inline `mod x { ... }` blocks are tracked;
  * a path resolves to the file that DEFINES the item: `pub use` re-exports,
    and private `use` bindings that child modules reach as `super::Name`,
    are followed to the defining file.  A path naming a module
    (`use crate::catalog::storage;`) is an edge to that module's file.
  * edges inside one file are dropped; method calls (`engine.run()`) are
    invisible to this (they need no import).

Intended direction (module level), higher may import lower, never upward:
    main/lib > server > sql > pg_catalog > plan > db > catalog > connectors > stream > state > error
i.e. server -> sql -> pg_catalog -> plan -> db -> catalog -> stream -> state, with
connectors -> stream (stream never imports connectors) and catalog still
allowed to use connectors (a relation holds its reader and sink writer).
On top of that, judged on the path AS WRITTEN (so a re-export at the
`stream` facade is fine): nothing outside `stream` and `plan` names
`stream::ops::*` (plan builds the operators).
"""
import os
import re
import sys
from collections import defaultdict

RANK = {
    'main': 100, 'lib': 100,
    'server': 60,
    'sql': 50,
    'pg_catalog': 45,
    'plan': 40,
    'db': 30,
    'catalog': 20,
    'connectors': 15,
    'stream': 10,
    'state': 5,
    'error': 0,
    'duration': 0,
    'hash': 0,
}
# (written module prefix, modules allowed to name it, why)
INTERNAL = [
    ('stream::ops', {'stream', 'plan'}, 'stream operators are internal to stream (plan builds them)'),
]

# ---------------------------------------------------------------- lexing


def _blank(s):
    return re.sub(r'[^\n]', ' ', s)


def strip_code(text):
    """Blank out comments, string literals and char literals; keep offsets and newlines."""
    out = []
    i, n = 0, len(text)

    def ident_before(k):
        return k > 0 and (text[k - 1].isalnum() or text[k - 1] == '_')

    while i < n:
        c = text[i]
        nxt = text[i + 1] if i + 1 < n else ''
        if c == '/' and nxt == '/':
            j = text.find('\n', i)
            j = n if j < 0 else j
            out.append(' ' * (j - i))
            i = j
        elif c == '/' and nxt == '*':
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith('/*', j):
                    depth, j = depth + 1, j + 2
                elif text.startswith('*/', j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(_blank(text[i:j]))
            i = j
        elif c in 'rb' and not ident_before(i) and re.match(r'(?:br|r)#*"', text[i:i + 64]):
            m = re.match(r'(?:br|r)(#*)"', text[i:])
            end = text.find('"' + m.group(1), i + m.end())
            end = n if end < 0 else end + 1 + len(m.group(1))
            out.append(_blank(text[i:end]))
            i = end
        elif c == '"' or (c == 'b' and nxt == '"' and not ident_before(i)):
            j = i + (2 if c == 'b' else 1)
            while j < n and text[j] != '"':
                j += 2 if text[j] == '\\' else 1
            j += 1
            out.append(_blank(text[i:j]))
            i = j
        elif c == "'" or (c == 'b' and nxt == "'" and not ident_before(i)):
            k = i + (1 if c == 'b' else 0)
            m = re.match(r"'(?:\\(?:x[0-9a-fA-F]{2}|u\{[0-9a-fA-F]+\}|.)|[^\\'\n])'", text[k:])
            if m:
                out.append(' ' * (k - i + m.end()))
                i = k + m.end()
            else:                      # a lifetime
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return ''.join(out)


def line_of(text, pos):
    return text.count('\n', 0, pos) + 1


def match_brace(text, open_pos):
    depth = 0
    for j in range(open_pos, len(text)):
        if text[j] == '{':
            depth += 1
        elif text[j] == '}':
            depth -= 1
            if depth == 0:
                return j
    return len(text)


def expand_use(raw):
    """'a::{b, c::{d as e, self}, *}' -> [(['a','b'],'b'), (['a','c','d'],'e'), (['a','c'],'c'), (['a'],'*')]"""
    s = re.sub(r'\s+as\s+', '@', raw)
    s = re.sub(r'\s+', '', s)
    res = []

    def split_top(t):
        parts, depth, cur = [], 0, ''
        for ch in t:
            depth += (ch == '{') - (ch == '}')
            if ch == ',' and depth == 0:
                parts.append(cur)
                cur = ''
            else:
                cur += ch
        return parts + ([cur] if cur else [])

    def rec(prefix, t):
        for p in split_top(t):
            if not p:
                continue
            k = p.find('{')
            if k >= 0:
                head = [x for x in p[:k].split('::') if x]
                rec(prefix + head, p[k + 1:p.rfind('}')])
                continue
            segs = [x for x in p.split('::') if x]
            alias = None
            if segs and '@' in segs[-1]:
                segs[-1], alias = segs[-1].split('@', 1)
            if segs and segs[-1] == '*':
                res.append((prefix + segs[:-1], '*'))
                continue
            if segs and segs[-1] == 'self':
                segs = segs[:-1]
            full = prefix + segs
            res.append((full, alias or (full[-1] if full else None)))
    rec([], s)
    return res


# ---------------------------------------------------------------- crate model

class Module:
    def __init__(self, path, file, body_range, is_test=False):
        self.path = path            # tuple of segments, ('catalog', 'feed'); ('<main>',) for main.rs
        self.file = file            # file name relative to src
        self.range = body_range     # (start, end) in the file's text
        self.children = {}          # name -> module path
        self.items = set()          # names defined in this module
        self.uses = {}              # bound name -> absolute path (or None: external)
        self.globs = []
        self.is_test = is_test


ITEM_RE = re.compile(
    r'(?m)^[ \t]*(?:pub(?:\([^)]*\))?\s+)?(?:(?:const|async|unsafe|extern\s+"C"|default)\s+)*'
    r'(fn|struct|enum|trait|const|static|type|union|mod|macro_rules!)\s+([A-Za-z_][A-Za-z0-9_]*)')
USE_RE = re.compile(r'(?m)^[ \t]*(pub(?:\([^)]*\))?\s+)?use\s+([^;]+);')
PATH_RE = re.compile(r'(?<![A-Za-z0-9_:.])([A-Za-z_][A-Za-z0-9_]*(?:::[A-Za-z_][A-Za-z0-9_]*)+)')
MOD_DECL_RE = re.compile(r'(?m)^[ \t]*(?:pub(?:\([^)]*\))?\s+)?mod\s+([A-Za-z_][A-Za-z0-9_]*)\s*;')
INLINE_MOD_RE = re.compile(r'(?m)^[ \t]*(?:pub(?:\([^)]*\))?\s+)?mod\s+([A-Za-z_][A-Za-z0-9_]*)\s*\{')
CFG_TEST_RE = re.compile(r'#\[cfg\((?:all\()?test\b[^\]]*\]\s*$')


class Crate:
    def __init__(self, src):
        self.src = os.path.abspath(src)
        self.files = {}
        for root, _, names in os.walk(self.src):
            for nm in sorted(names):
                if nm.endswith('.rs'):
                    full = os.path.join(root, nm)
                    rel = os.path.relpath(full, self.src).replace(os.sep, '/')
                    with open(full, encoding='utf-8') as f:
                        raw = f.read()
                    self.files[rel] = (raw, strip_code(raw))
        self.mods = {}
        self._build()

    @staticmethod
    def file_module_path(rel):
        if rel == 'main.rs':
            return ('<main>',)
        parts = rel[:-3].split('/')
        if parts == ['lib']:
            return ()
        if parts[-1] == 'mod':
            parts = parts[:-1]
        return tuple(parts)

    def _build(self):
        for rel, (_, text) in self.files.items():
            p = self.file_module_path(rel)
            self.mods[p] = Module(p, rel, (0, len(text)))
        # file modules declared under #[cfg(test)] (and their descendants)
        test_files = set()
        for p, m in list(self.mods.items()):
            text = self.files[m.file][1]
            for d in MOD_DECL_RE.finditer(text):
                if CFG_TEST_RE.search(text[max(0, d.start() - 200):d.start()]):
                    test_files.add(p + (d.group(1),) if p != ('<main>',) else (d.group(1),))
        for p, m in self.mods.items():
            if any(p[:len(t)] == t for t in test_files):
                m.is_test = True
        # inline modules, outermost first
        for p, m in sorted(list(self.mods.items()), key=lambda kv: len(kv[0])):
            if m.range[0] != 0:
                continue
            text = self.files[m.file][1]
            spans = []
            for mm in INLINE_MOD_RE.finditer(text):
                start = mm.end() - 1
                spans.append((mm.start(), start, match_brace(text, start), mm.group(1)))
            for decl, start, end, name in spans:
                parent = self.innermost(m.file, decl)
                cp = parent.path + (name,)
                is_test = bool(CFG_TEST_RE.search(text[max(0, decl - 200):decl])) or parent.is_test
                self.mods[cp] = Module(cp, m.file, (start, end), is_test)
                parent.children[name] = cp
        # file children
        for p in list(self.mods):
            if p and p != ('<main>',) and self.mods[p].range[0] == 0 and p[:-1] in self.mods:
                self.mods[p[:-1]].children.setdefault(p[-1], p)
        for m in self.mods.values():
            text = self.files[m.file][1]
            for im in ITEM_RE.finditer(text):
                if self.innermost(m.file, im.start()) is m:
                    m.items.add(im.group(2))

    def innermost(self, file, pos):
        best = None
        for m in self.mods.values():
            if m.file == file and m.range[0] <= pos <= m.range[1]:
                if best is None or (m.range[1] - m.range[0]) < (best.range[1] - best.range[0]):
                    best = m
        return best

    def absolutize(self, mod, segs):
        """A path as written in `mod` -> absolute crate path (list), or None if outside the crate."""
        if not segs:
            return None
        first = segs[0]
        if first == 'crate':
            return list(segs[1:])
        if first == 'freshet' and mod.path == ('<main>',):
            return list(segs[1:])
        if first in ('self', 'super'):
            base = list(mod.path)
            i = 0
            while i < len(segs) and segs[i] in ('self', 'super'):
                if segs[i] == 'super':
                    base = base[:-1]
                i += 1
            return base + list(segs[i:])
        if first in mod.children:
            return list(mod.children[first]) + list(segs[1:])
        if first in mod.uses and mod.uses[first] is not None:
            return list(mod.uses[first]) + list(segs[1:])
        return None

    def locate(self, abspath, depth=0):
        """Absolute path -> (defining Module, symbol or None for the module itself)."""
        if abspath is None or depth > 25:
            return None
        cur, i = (), 0
        while i < len(abspath) and (cur + (abspath[i],)) in self.mods:
            cur, i = cur + (abspath[i],), i + 1
        m = self.mods.get(cur)
        if m is None:
            return None
        if i == len(abspath):
            return (m, None)
        sym = abspath[i]
        if sym in m.items:
            return (m, sym)
        if sym in m.uses:
            tgt = m.uses[sym]
            return None if tgt is None else self.locate(list(tgt) + list(abspath[i + 1:]), depth + 1)
        for g in m.globs:
            r = self.locate(list(g) + [sym] + list(abspath[i + 1:]), depth + 1)
            if r is not None and r[1] is not None:
                return r
        return (m, sym)


def top_module(path):
    if path == ('<main>',):
        return 'main'
    return path[0] if path else 'lib'


def collect_edges(src):
    c = Crate(src)
    decls = []
    for m in c.mods.values():
        text = c.files[m.file][1]
        for um in USE_RE.finditer(text):
            if c.innermost(m.file, um.start()) is not m:
                continue
            for segs, name in expand_use(um.group(2)):
                decls.append((m, segs, name, line_of(text, um.start())))
    for _ in range(4):            # bindings may build on bindings
        for m, segs, name, _ln in decls:
            ab = c.absolutize(m, segs)
            if name == '*':
                if ab is not None and ab not in m.globs:
                    m.globs.append(ab)
            elif name and name != 'self':
                m.uses[name] = ab
    edges = []

    def add(m, ab, ln, kind):
        r = c.locate(ab)
        if r is None:
            return
        dm, sym = r
        if dm.file == m.file:
            return
        written = list(ab[:-1]) if sym is not None and ab and ab[-1] == sym else list(ab)
        # the module part of the path as written: drop a trailing item (and Type::Variant)
        wmod = []
        cur = ()
        for s in ab:
            if (cur + (s,)) in c.mods:
                cur = cur + (s,)
                wmod.append(s)
            else:
                break
        edges.append(dict(
            src=m.file, dst=dm.file, line=ln, sym=sym or '(module)',
            src_mod='::'.join(m.path), dst_mod='::'.join(dm.path), written='::'.join(wmod),
            written_full='::'.join(ab), test=m.is_test, kind=kind,
            text=c.files[m.file][0].splitlines()[ln - 1].strip(),
            src_top=top_module(m.path), dst_top=top_module(dm.path)))

    for m, segs, name, ln in decls:
        add(m, c.absolutize(m, segs), ln, 'use')
    for m in c.mods.values():
        text = c.files[m.file][1]
        use_spans = [(um.start(), um.end()) for um in USE_RE.finditer(text)]
        for pm in PATH_RE.finditer(text):
            pos = pm.start()
            if any(a <= pos < b for a, b in use_spans) or c.innermost(m.file, pos) is not m:
                continue
            if re.search(r'pub\s*\(\s*in\s+$', text[max(0, pos - 12):pos]):
                continue
            ab = c.absolutize(m, pm.group(1).split('::'))
            if ab is not None:
                add(m, ab, line_of(text, pos), 'path')
    return c, edges


# ---------------------------------------------------------------- analysis

def is_facade(e):
    """An edge from a mod.rs to a file below its own directory."""
    s = e['src']
    if not s.endswith('/mod.rs'):
        return False
    return e['dst'].startswith(s[:-len('mod.rs')])


def sccs(nodes, adj):
    index, low, onstack, stack, out = {}, {}, set(), [], []
    counter = [0]
    sys.setrecursionlimit(10000)

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        onstack.add(v)
        for w in sorted(adj.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in onstack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                onstack.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(sorted(comp))
    for v in sorted(nodes):
        if v not in index:
            strong(v)
    return sorted(c for c in out if len(c) > 1)


def violation(e):
    """None, or (kind, why) for an edge against the intended direction."""
    s, d = e['src_top'], e['dst_top']
    for prefix, allowed, why in INTERNAL:
        w = e['written']
        if (w == prefix or w.startswith(prefix + '::')) and s not in allowed:
            return ('internal', why)
    if s == d:
        return None
    rs, rd = RANK.get(s), RANK.get(d)
    if rs is None or rd is None:
        return None
    if s == 'stream' and d == 'connectors':
        return ('upward', 'stream must never import connectors')
    if s == 'catalog' and d == 'sql':
        return ('upward', 'catalog must not import sql')
    if rd >= rs:
        return ('upward', '%s imports %s' % (s, d))
    return None


def dedup(edges):
    seen, out = set(), []
    for e in sorted(edges, key=lambda e: (e['src'], e['line'], e['dst'], e['sym'])):
        k = (e['src'], e['line'], e['dst'], e['sym'])
        if k not in seen:
            seen.add(k)
            out.append(e)
    return out


def main():
    args = [a for a in sys.argv[1:] if not a.startswith('--')]
    flags = {a for a in sys.argv[1:] if a.startswith('--')}
    if not args:
        print(__doc__)
        sys.exit(2)
    crate, edges = collect_edges(args[0])
    live = dedup([e for e in edges if '--tests' in flags or not e['test']])
    strict = '--strict' in flags
    graph_edges = [e for e in live if strict or not is_facade(e)]

    adj = defaultdict(set)
    for e in graph_edges:
        adj[e['src']].add(e['dst'])
    comps = sccs(set(crate.files), adj)
    scope = ('strict: mod.rs -> own submodule edges counted' if strict
             else "mod.rs -> own submodule edges left out; --strict counts them")
    print('=' * 100)
    print('1. FILE-LEVEL IMPORT CYCLES (%s%s)' % (scope, '; incl. tests' if '--tests' in flags else ''))
    print('=' * 100)
    if not comps:
        print('none')
    for k, comp in enumerate(comps, 1):
        cs = set(comp)
        print('\n[%d] %s' % (k, '  '.join('src/' + f for f in comp)))
        for e in graph_edges:
            if e['src'] in cs and e['dst'] in cs:
                print('    src/%s:%d -> src/%s  %s   | %s' % (e['src'], e['line'], e['dst'], e['sym'], e['text'][:100]))
    if not strict:
        adj2 = defaultdict(set)
        for e in live:
            adj2[e['src']].add(e['dst'])
        extra = [c for c in sccs(set(crate.files), adj2) if c not in comps]
        if extra:
            print('\n(--strict would report %d component(s) joined by mod.rs -> submodule edges:)' % len(extra))
            for x in extra:
                print('    ' + '  '.join(x))

    # module-level cycles
    madj = defaultdict(set)
    for e in live:
        if e['src_top'] != e['dst_top']:
            madj[e['src_top']].add(e['dst_top'])
    mcomps = sccs(set(madj) | {d for v in madj.values() for d in v}, madj)
    print('\n' + '=' * 100)
    print('2. MODULE-LEVEL CYCLES (top-level modules)')
    print('=' * 100)
    print('none' if not mcomps else '\n'.join('  ' + ' <-> '.join(c) for c in mcomps))

    print('\n' + '=' * 100)
    print('3. EDGES AGAINST THE DIRECTION  (server > sql > pg_catalog > plan > db > catalog > connectors > stream > state > error)')
    print('=' * 100)
    bad = defaultdict(list)
    for e in live:
        v = violation(e)
        if v:
            bad[(v[0], e['src_top'], e['dst_top'])].append((e, v[1]))
    if not bad:
        print('none')
    for (kind, s, d), lst in sorted(bad.items()):
        print('\n[%s] %s -> %s  (%d): %s' % (kind, s, d, len(lst), lst[0][1]))
        for e, _why in lst:
            print('    src/%s:%d  %s  [defined in src/%s]   | %s' % (
                e['src'], e['line'], e['written_full'], e['dst'], e['text'][:90]))
    if '--tests' not in flags:
        tb = dedup([e for e in edges if e['test'] and violation(e)])
        if tb:
            print('\n(test-only code, not counted above; --tests counts it:)')
            for e in tb:
                print('    src/%s:%d  %s' % (e['src'], e['line'], e['written_full']))

    if '--matrix' in flags:
        cnt = defaultdict(int)
        for e in live:
            if e['src_top'] != e['dst_top']:
                cnt[(e['src_top'], e['dst_top'])] += 1
        print('\nMODULE EDGES (distinct use sites)')
        for (s, d), n in sorted(cnt.items()):
            print('  %-10s -> %-10s %4d %s' % (s, d, n, '' if RANK.get(d, 0) < RANK.get(s, 0) else '  <-- upward'))
    if '--edges' in flags:
        print('\nALL EDGES')
        for e in dedup(edges):
            print('  %s%s:%d -> %s  %s  (%s)' % ('[test] ' if e['test'] else '', e['src'], e['line'], e['dst'],
                                                 e['written_full'], e['kind']))
    n_bad = sum(len(v) for v in bad.values())
    print('\nsummary: %d files, %d edges, %d file cycles, %d module cycles, %d against-direction edges' % (
        len(crate.files), len(live), len(comps), len(mcomps), n_bad))
    sys.exit(1 if comps or n_bad else 0)


if __name__ == '__main__':
    main()
