"""C declarations of types: c_name ("struct event", "int (*)(int)") and c_decl (bodies)."""

from __future__ import annotations


def _join_decl(base, inner):
    if not inner:
        return base
    if inner[0] == "[":
        return base + inner
    return base + " " + inner


class CDecl:
    """C text of a type, from the type model only (``type``, ``resolve``)."""

    def c_name(self, type_id) -> str:
        """Readable C type: "u32", "struct event", "char[16]", "int *"."""
        return self._decl(self._check_id(type_id), "")

    def _decl(self, tid, inner, depth=0):
        if depth > 64:
            return _join_decl("...", inner)
        t = self.type(tid)
        k = t.kind
        if k == "void":
            return _join_decl("void", inner)
        if k in ("int", "float", "typedef"):
            return _join_decl(t.name, inner)
        if k in ("struct", "union", "enum", "enum64", "fwd"):
            tag = "enum" if k == "enum64" else t.fwd_kind if k == "fwd" else k
            return _join_decl(f"{tag} {t.name}" if t.name else f"{tag} {{...}}", inner)
        if k == "ptr":
            return self._ptr_decl(t, inner, depth)
        if k == "array":
            return self._decl(t.type_id, f"{inner}[{t.nelems}]", depth + 1)
        if k in ("const", "volatile", "restrict"):
            tgt = self.type(t.type_id)
            if tgt.kind == "ptr":
                return self._ptr_decl(tgt, f"{k} {inner}".rstrip(), depth)
            return f"{k} " + self._decl(t.type_id, inner, depth + 1)
        if k in ("type_tag", "decl_tag"):
            return self._decl(t.type_id, inner, depth + 1)
        if k == "func_proto":
            ps = []
            for pname, ptid in t.params:
                if ptid == 0 and not pname:
                    ps.append("...")
                else:
                    ps.append(self._decl(ptid, pname, depth + 1))
            return self._decl(t.type_id, f"{inner}({', '.join(ps) or 'void'})", depth + 1)
        if k == "func":
            return self._decl(t.type_id, t.name + inner, depth + 1)
        if k == "var":
            return self._decl(t.type_id, inner, depth + 1)
        if k == "datasec":
            return _join_decl(f'SEC("{t.name}")', inner)
        return _join_decl(f"<{k}>", inner)

    def _ptr_decl(self, ptr, inner, depth):
        tgt = self.type(self._strip_quals(ptr.type_id)) if ptr.type_id else None
        if tgt is not None and tgt.kind in ("array", "func_proto"):
            return self._decl(ptr.type_id, f"(*{inner})", depth + 1)
        return self._decl(ptr.type_id, "*" + inner, depth + 1)


    # ------------------------------------------------------------------ C text
    def c_decl(self, type_id) -> str:
        """C definition of a struct/union/enum (for display), e.g.
        ``struct event {\\n\\tu32 pid;\\n\\tchar comm[16];\\n};``"""
        tid = self.resolve(type_id)
        t = self.type(tid)
        if t.kind not in ("struct", "union", "enum", "enum64"):
            return self.c_name(type_id)
        return self._c_body(tid, 0) + ";"

    def _c_body(self, tid, indent):
        t = self.type(tid)
        pad = "\t" * (indent + 1)
        head = self.c_name(tid) if t.name else ("enum" if t.kind == "enum64" else t.kind)
        lines = [head + " {"]
        if t.kind in ("enum", "enum64"):
            for nm, val in t.values:
                lines.append(f"{pad}{nm} = {val},")
        else:
            for m in t.members:
                rt = self.type(self._strip_quals(m.type_id))
                if not rt.name and rt.kind in ("struct", "union", "enum", "enum64"):
                    decl = self._c_body(rt.id, indent + 1) + (" " + m.name if m.name else "")
                else:
                    decl = self._decl(m.type_id, m.name)
                if m.bitfield_size:
                    decl += f": {m.bitfield_size}"
                lines.append(f"{pad}{decl};")
        lines.append("\t" * indent + "}")
        return "\n".join(lines)

