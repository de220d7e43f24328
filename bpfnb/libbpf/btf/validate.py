"""Validation of a BTF type section at construction, vectorised with numpy.

What the kernel's BTF verifier refuses, checked before any Type is built: every type id
a type names is in range, every name offset inside the string section, members, array
elements and DATASEC entries of the right kinds and inside their containers, sizes the
kernel allows, and no type containing itself by value (through typedefs, qualifiers,
vars, arrays, struct and union members, DATASEC entries).  Pointers may loop, and so
may function prototypes (C text of them stops at a depth).  Nesting is bounded
(``MAX_DEPTH``), so nothing above can recurse without end.

The same pass computes every type's size and resolved id (modifiers skipped), which the
parser hands to the Type objects it builds.
"""

from __future__ import annotations

import numpy as np

from .types import (K_ARRAY, K_CONST, K_DATASEC, K_DECL_TAG, K_ENUM, K_ENUM64, K_FLOAT,
                    K_FUNC, K_FUNC_PROTO, K_INT, K_PTR, K_RESTRICT, K_STRUCT, K_TYPE_TAG,
                    K_TYPEDEF, K_UNION, K_UNKN, K_VAR, K_VOLATILE, KINDS, BTFError)

# by-value nesting the kernel accepts is at most 32 deep (MAX_RESOLVE_DEPTH); ours
# counts a little differently, hence the margin
MAX_DEPTH = 64
# the kernel allows types of up to 4 GiB; numpy dtypes (and any map value) stop at 2
_MAX_SIZE = (1 << 31) - 1


def _table(kinds):
    t = np.zeros(20, bool)
    t[list(kinds)] = True
    return t


# what a member, an array element or a sized var may be (after modifiers)
_COMPLETE = _table((K_INT, K_PTR, K_ARRAY, K_STRUCT, K_UNION, K_ENUM, K_ENUM64, K_FLOAT))


class Checked:
    """Per type id (base ids first, 0 is void): size (-1 where C has none), resolved
    id, kind of the resolved type, kind, INT encoding word (0 for other kinds), and
    by-value nesting depth."""

    __slots__ = ("size", "rid", "rkind", "kind", "int_enc", "depth")


class _Items:
    """The vlen items of local types ``sel`` (``cnt`` each, ``per`` words each, after
    the fixed part at ``o3``): ``pos`` of each item's first word; which type an item
    belongs to is worked out only for messages."""

    def __init__(self, o3, sel, cnt, per):
        self.sel, self.cnt = sel, cnt
        self.first = np.cumsum(cnt) - cnt
        self.pos = np.repeat(o3[sel] - per * self.first, cnt) + \
            per * np.arange(int(self.first[-1] + cnt[-1]) if len(cnt) else 0)

    def owner(self, j):
        """(local index of the type, index within it) of item ``j``."""
        g = int(np.searchsorted(self.first, j, side="right")) - 1
        return int(self.sel[g]), int(j - self.first[g])

    def per_item(self, values):
        """A per-type array spread over the items."""
        return np.repeat(values, self.cnt)


def _over(values, limit):
    """Does any of ``values`` reach ``limit``?  (A reduction: the fast path.)"""
    return len(values) and values.max() >= limit


def check(btf, wn, o) -> Checked:
    """Validate the local types of ``btf`` (word offsets ``o`` into ``wn``); raise
    BTFError naming the first bad type.  Returns the per-id tables."""
    base = btf.base._checked if btf.base is not None else None
    id0 = btf._id_base if btf.base is not None else 1
    n = len(o)
    total = id0 + n
    str_end = max(btf._str_end, 1)          # offset 0 is "" even in an empty table

    info = wn[o + 1]
    st = wn[o + 2].astype(np.int64)
    k8 = (info >> 24).astype(np.uint8) & 0x1F
    kind = k8.astype(np.int64)
    # the types of each kind, in id order (a radix sort of one byte per type)
    by_kind = np.argsort(k8, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(k8, minlength=20))])

    def of(*kinds):
        """Local indexes of the types of ``kinds`` (by kind, then in id order)."""
        return np.concatenate([by_kind[bounds[k]:bounds[k + 1]] for k in kinds])

    gkind = np.empty(total, np.int64)
    gkind[id0:] = kind
    if base is not None:
        gkind[:id0] = base.kind
    else:
        gkind[0] = K_UNKN

    def describe(tid):
        k = int(gkind[tid])
        off = int(wn[o[tid - id0]]) if tid >= id0 else 0
        name = btf._strings.get(off) if 0 < off < str_end else ""
        return f"BTF type #{tid} ({KINDS[k] if k else 'void'}{' ' + name if name else ''})"

    def fail(bad, what):
        """Raise for the first local type in ``bad`` (a mask, or local indexes);
        ``what(i)`` says what is wrong with local type i."""
        if bad.dtype == bool:
            if not bad.any():
                return
            bad = np.flatnonzero(bad)
        if len(bad):
            i = int(bad.min())
            raise BTFError(f"{describe(i + id0)}: {what(i)}")

    def fail_item(bad, items, what):
        """As fail(), for items: ``what(j, k)`` says what is wrong with item j, the
        k-th of its type."""
        if bad.any():
            j = int(np.flatnonzero(bad)[0])
            i, k = items.owner(j)
            raise BTFError(f"{describe(i + id0)}: {what(j, k)}")

    def outside(ref):
        return f"refers to type #{ref}, beyond the last type #{total - 1}"

    fail(of(K_UNKN), lambda i: "kind 0 (BTF_KIND_UNKN) is not a type")
    name = wn[o]
    if _over(name, str_end):
        fail(name >= str_end, lambda i: f"name offset {name[i]} is outside the string "
                                        f"section ({str_end} bytes)")
    refs = of(K_PTR, K_TYPEDEF, K_VOLATILE, K_CONST, K_RESTRICT, K_FUNC, K_FUNC_PROTO,
              K_VAR, K_DECL_TAG, K_TYPE_TAG)
    if _over(st[refs], total):
        fail(refs[st[refs] >= total], lambda i: outside(st[i]))

    # ---- members, enumerators, parameters, DATASEC entries
    vlen = (info & 0xFFFF).astype(np.int64)
    o3 = o + 3
    su, fp, ds = of(K_STRUCT, K_UNION), of(K_FUNC_PROTO), of(K_DATASEC)
    mi = _Items(o3, su, vlen[su], 3)
    pi = _Items(o3, fp, vlen[fp], 2)
    di = _Items(o3, ds, vlen[ds], 3)
    en, e64 = of(K_ENUM), of(K_ENUM64)
    for items in (mi, pi, _Items(o3, en, vlen[en], 2), _Items(o3, e64, vlen[e64], 3)):
        nm = wn[items.pos]
        if _over(nm, str_end):
            fail_item(nm >= str_end, items,
                      lambda j, k: f"item {k}: name offset {nm[j]} is outside the "
                                   f"string section ({str_end} bytes)")
    m_pos, d_pos = mi.pos, di.pos
    m_type = wn[m_pos + 1].astype(np.int64)
    p_type = wn[pi.pos + 1]
    d_type = wn[d_pos].astype(np.int64)
    def label(items, what, j, k):
        """"member 'pid'" (or "member #3" when unnamed) of item j, the k-th."""
        off = int(wn[items.pos[j]]) if what != "entry" else 0
        named = btf._strings.get(off) if 0 < off < str_end else ""
        return f"{what} {named!r}" if named else f"{what} #{k}"

    for items, ref, what in ((mi, m_type, "member"), (pi, p_type, "parameter"),
                             (di, d_type, "entry")):
        if _over(ref, total):
            fail_item(ref >= total, items,
                      lambda j, k: f"{label(items, what, j, k)} {outside(ref[j])}")

    # ---- kinds of what is referred to, sizes the kernel allows
    fn = of(K_FUNC)
    fail(fn[gkind[st[fn]] != K_FUNC_PROTO],
         lambda i: f"a FUNC's type #{st[i]} is a {KINDS[gkind[st[i]]]}, not a FUNC_PROTO")
    dsk = gkind[d_type]
    fail_item((dsk != K_VAR) & (dsk != K_FUNC), di,
              lambda j, k: f"entry {k} (#{d_type[j]}) is a {KINDS[dsk[j]]}, "
                        "not a VAR or FUNC")
    ints = of(K_INT)
    enc = wn[o3[ints]].astype(np.int64)
    i_bits, i_off, i_size = enc & 0xFF, (enc >> 16) & 0xFF, st[ints]
    fail(ints[~np.isin(i_size, (1, 2, 4, 8, 16))],
         lambda i: f"INT of {st[i]} bytes (1, 2, 4, 8 or 16)")
    fail(ints[(i_bits == 0) | (i_bits > 128) | (i_off + i_bits > i_size * 8)],
         lambda i: f"INT bits {wn[o3[i]] & 0xFF} at bit offset "
                   f"{(wn[o3[i]] >> 16) & 0xFF} do not fit its {st[i]} bytes")
    enums = np.concatenate([en, e64])
    fail(enums[~np.isin(st[enums], (1, 2, 4, 8))],
         lambda i: f"enum of {st[i]} bytes (1, 2, 4 or 8)")
    fl = of(K_FLOAT)
    fail(fl[~np.isin(st[fl], (2, 4, 8, 12, 16))],
         lambda i: f"float of {st[i]} bytes (2, 4, 8, 12 or 16)")
    a_at = of(K_ARRAY)
    a_elem = wn[o3[a_at]].astype(np.int64)
    a_index = wn[o3[a_at] + 1]
    a_nelems = wn[o3[a_at] + 2]
    fail(a_at[(a_elem >= total) | (a_index >= total)],
         lambda i: "array element or index " + outside(max(wn[o3[i]], wn[o3[i] + 1])))

    # ---- by-value references: chains (modifiers, vars, arrays: one target each)
    gsize = np.full(total, -1, np.int64)        # fwd, func, func_proto, decl_tag
    own = of(K_INT, K_ENUM, K_ENUM64, K_FLOAT, K_STRUCT, K_UNION, K_DATASEC)
    gsize[own + id0] = st[own]
    gsize[of(K_PTR) + id0] = 8
    grid = np.arange(total, dtype=np.int64)
    grkind = gkind.copy()
    if base is not None:
        gsize[:id0], grid[:id0], grkind[:id0] = base.size, base.rid, base.rkind
    else:
        gsize[0] = 0
    tgt = st.copy()
    tgt[a_at] = a_elem
    m_nodes = of(K_TYPEDEF, K_VOLATILE, K_CONST, K_RESTRICT, K_TYPE_TAG)
    m_term, _, _ = _follow(m_nodes, tgt, None, id0, total, describe)
    # a chain of split BTF may end on a base typedef or modifier: take what that resolves to
    grid[m_nodes + id0] = grid[m_term]
    grkind[m_nodes + id0] = grkind[m_term]
    fail(a_at[~_COMPLETE[grkind[a_elem]]],
         lambda i: f"array of an incomplete type (#{tgt[i]}, "
                   f"{KINDS[grkind[tgt[i]]] if grkind[tgt[i]] else 'void'})")
    mult = np.ones(n, np.float64)
    mult[a_at] = a_nelems
    c_nodes = np.concatenate([m_nodes, of(K_VAR), a_at])
    c_term, c_hop, c_mul = _follow(c_nodes, tgt, mult, id0, total, describe)
    t_size = gsize[c_term]
    c_size = np.where(t_size < 0, -1.0, c_mul * t_size)
    gsize[c_nodes + id0] = np.minimum(c_size, 1 << 40).astype(np.int64)
    if _over(gsize[id0:], _MAX_SIZE + 1):
        fail(gsize[id0:] > _MAX_SIZE, lambda i: f"{gsize[i + id0]} bytes, larger than "
                                                "2 GiB")

    # ---- structs, unions and DATASECs must not hold themselves by value, through
    # any chain; depth = the longest by-value path (what decoders recurse through)
    termof = grid.copy()
    termof[c_nodes + id0] = c_term
    hopof = np.zeros(total, np.int64)
    hopof[c_nodes + id0] = c_hop
    gdepth = np.zeros(total, np.int64)
    if base is not None:
        gdepth[:id0] = base.depth
    cont = np.zeros(total, bool)
    cont[np.concatenate([su, ds]) + id0] = True
    depth = np.zeros(n, np.int64)
    k_src, k_dst, k_hop = [], [], []
    for items, ref in ((mi, m_type), (di, d_type)):
        if not len(ref):
            continue
        hop = hopof[ref]
        # what chains add: the longest per type (the items of a type are adjacent)
        full = items.cnt > 0
        depth[items.sel[full]] = 1 + np.maximum.reduceat(hop, items.first[full])
        owner = items.per_item(items.sel)
        term = termof[ref]
        inner = cont[term]                      # by value into a struct or DATASEC
        k_src.append(owner[inner])
        k_dst.append(term[inner] - id0)
        k_hop.append(hop[inner])
        settled = ref < id0                     # the base's: its depth is known
        if settled.any():
            np.maximum.at(depth, owner[settled], 1 + gdepth[ref[settled]])
    k_src, k_dst, k_hop = (np.concatenate(x) if x else np.zeros(0, np.int64)
                           for x in (k_src, k_dst, k_hop))
    # Kahn's algorithm over those only: a few rounds over few edges
    outdeg = np.bincount(k_src, minlength=n)
    waiting = np.flatnonzero(outdeg)
    if len(waiting):
        finished = outdeg == 0
        w = (k_src, k_dst, k_hop)
        while len(w[0]):
            met = finished[w[1]]
            if not met.any():
                break
            f_src, f_dst, f_hop = (x[met] for x in w)
            w = tuple(x[~met] for x in w)
            np.maximum.at(depth, f_src, 1 + f_hop + depth[f_dst])
            np.subtract.at(outdeg, f_src, 1)
            finished[f_src[outdeg[f_src] == 0]] = True
        stuck = waiting[outdeg[waiting] > 0]
        if len(stuck):
            _fail_loop(int(stuck[0]), stuck, k_src, k_dst, id0, describe)
    gdepth[id0:] = depth
    gdepth[c_nodes + id0] = c_hop + gdepth[c_term]
    if _over(gdepth[id0:], MAX_DEPTH + 1):
        fail(gdepth[id0:] > MAX_DEPTH,
             lambda i: f"types nest {gdepth[i + id0]} deep by value (at most "
                       f"{MAX_DEPTH}; the kernel allows 32)")

    # ---- members inside their struct, of complete types, bitfields of integers
    gint = np.zeros(total, np.int64)
    if base is not None:
        gint[:id0] = base.int_enc
    gint[ints + id0] = enc
    m_off = wn[m_pos + 2].astype(np.int64)
    m_kflag = mi.per_item(info[su] >> 31).astype(bool)
    m_rkind = grkind[m_type]
    m_size = gsize[m_type]

    def member(j, k):
        nm = int(wn[m_pos[j]])
        nm = btf._strings.get(nm) if nm else ""
        return f"member {k}{' ' + repr(nm) if nm else ''}"

    if not _COMPLETE[m_rkind].all():
        fail_item(~_COMPLETE[m_rkind], mi,
                  lambda j, k: f"{member(j, k)} has an incomplete type (#{m_type[j]}, "
                            f"{KINDS[m_rkind[j]] if m_rkind[j] else 'void'})")
    # old-style bitfields: the bits and offset are in the INT member's type
    r_enc = gint[grid[m_type]]
    r_bits, r_off = r_enc & 0xFF, (r_enc >> 16) & 0xFF
    old_bf = ~m_kflag & (r_enc != 0) & ((r_bits != m_size * 8) | (r_off != 0))
    bsz = np.where(m_kflag, m_off >> 24, np.where(old_bf, r_bits, 0))
    boff = np.where(m_kflag, m_off & 0xFFFFFF, m_off + np.where(old_bf, r_off, 0))
    isbf = bsz > 0
    if isbf.any():
        fail_item(isbf & (m_rkind != K_INT) & (m_rkind != K_ENUM) & (m_rkind != K_ENUM64),
                  mi, lambda j, k: f"{member(j, k)} is a bitfield of a {KINDS[m_rkind[j]]}")
        fail_item(bsz > m_size * 8, mi,
                  lambda j, k: f"{member(j, k)}: bitfield of {bsz[j]} bits in a {m_size[j]}-byte "
                            "type")
    fail_item(~isbf & (boff & 7 != 0), mi,
              lambda j, k: f"{member(j, k)} at bit offset {boff[j]} is not byte aligned")
    end = boff + np.where(isbf, bsz, m_size * 8)
    m_end = mi.per_item(st[su] * 8)
    fail_item(end > m_end, mi,
              lambda j, k: f"{member(j, k)} ends at byte {(end[j] + 7) // 8}, past the "
                        f"{m_end[j] // 8} bytes of its type")

    # ---- DATASEC entries inside their section
    d_off = wn[d_pos + 1].astype(np.int64)
    d_sz = wn[d_pos + 2].astype(np.int64)
    d_secsize = di.per_item(st[ds])
    fail_item(d_off + d_sz > _MAX_SIZE, di,
              lambda j, k: f"entry at offset {d_off[j]} of {d_sz[j]} bytes ends past 2 GiB")
    fixed = d_secsize > 0                      # raw clang objects say 0 until libbpf
    fail_item(fixed & (d_off + d_sz > d_secsize), di,
              lambda j, k: f"entry at offset {d_off[j]} of {d_sz[j]} bytes ends past the "
                        f"section's {d_secsize[j]} bytes")
    d_vsize = gsize[d_type]
    fail_item(fixed & (d_vsize > d_sz), di,
              lambda j, k: f"entry #{d_type[j]} of {d_vsize[j]} bytes given only "
                        f"{d_sz[j]} bytes")

    c = Checked()
    c.size, c.rid, c.rkind, c.kind, c.int_enc, c.depth = \
        gsize, grid, grkind, gkind, gint, gdepth
    return c


def _follow(nodes, tgt, mult, id0, total, describe):
    """Follow chains (each local node in ``nodes`` stands on ``tgt``) to the first type
    that is not in ``nodes``, by pointer doubling: (that type, hops, product of
    ``mult`` along the way).  A loop or a chain longer than MAX_DEPTH raises."""
    pos = np.full(total, -1, np.int64)
    pos[nodes + id0] = np.arange(len(nodes))
    nx = tgt[nodes]
    hop = np.ones(len(nodes), np.int64)
    mul = mult[nodes] if mult is not None else None
    for _ in range(8):                        # 2**8 hops > MAX_DEPTH
        j = pos[nx]
        live = j >= 0
        if not live.any():
            break
        jc = np.where(live, j, 0)
        nx, hop = np.where(live, nx[jc], nx), np.where(live, hop + hop[jc], hop)
        if mul is not None:
            mul = np.where(live, np.minimum(mul * mul[jc], 2.0 ** 40), mul)
    else:
        live = pos[nx] >= 0
        if live.any():
            start = int(nodes[np.flatnonzero(live)[0]])
            _fail_loop(start, nodes, nodes, tgt[nodes] - id0, id0, describe)
    return nx, hop, mul


def _fail_loop(start, stuck, src, dst, id0, describe):
    """Raise for the loop ``start`` leads to (or for nesting too deep): from every type
    in ``stuck`` (local indexes) an edge ``src`` -> ``dst`` leads to another one."""
    succ = {}
    for s_, d_ in zip(src.tolist(), dst.tolist()):
        succ.setdefault(s_, []).append(d_)
    stuck_set = set(stuck.tolist())
    i = start
    path, seen = [], {}
    while i not in seen and i in succ and len(path) <= 2 * MAX_DEPTH:
        seen[i] = len(path)
        path.append(i)
        i = next((d for d in succ[i] if d in stuck_set), None)
        if i is None:
            break
    if i in seen:
        loop = path[seen[i]:] + [i]
        chain = " -> ".join(f"#{x + id0}" for x in loop)
        raise BTFError(f"{describe(loop[0] + id0)}: reference loop, it contains itself "
                       f"by value ({chain})")
    raise BTFError(f"{describe(start + id0)}: types nest more than {MAX_DEPTH} "
                   "deep by value (the kernel allows 32)")
