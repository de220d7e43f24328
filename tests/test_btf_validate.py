"""BTF(raw) validation: each fault the parser refuses, with the message a person sees.

The blobs are written with marshal() from Type objects, then bent where a Type cannot
say it (a name offset, a kind 0).  Valid shapes that look like faults (a struct
pointing to itself, const void, flexible arrays) must still parse.
"""

import struct

import pytest

from bpfnb.libbpf.btf import BTF, BTFError, Member, Type, marshal


def INT(tid, name="int", size=4, signed=True):
    return Type(tid, "int", name, size=size, encoding="signed" if signed else "",
                bits=size * 8, bit_offset=0, signed=signed)


def STRUCT(tid, name, size, members, kind="struct"):
    return Type(tid, kind, name, size=size, kind_flag=0,
                members=[Member(n, t, off, 0) for n, t, off in members])


def refused(types, match, base=None):
    with pytest.raises(BTFError, match=match) as ei:
        BTF(marshal(types, base=base), base=base)
    return str(ei.value)


def test_valid_shapes_that_look_like_faults_parse():
    b = BTF(marshal([
        INT(1),
        STRUCT(2, "node", 16, [("next", 3, 0), ("v", 1, 64)]),
        Type(3, "ptr", "", type_id=2),                       # struct node *next
        Type(4, "const", "", type_id=0),                     # const void
        Type(5, "array", "", type_id=1, index_type=1, nelems=0),
        STRUCT(6, "flex", 4, [("len", 1, 0), ("data", 5, 32)]),
        Type(7, "ptr", "", type_id=7),                       # a pointer to itself
        Type(8, "typedef", "node_t", type_id=2),
        STRUCT(9, "holder", 24, [("n", 8, 0), ("x", 1, 128)]),
        Type(10, "array", "", type_id=5, index_type=1, nelems=6),   # int[6][0]
    ]))
    assert b.c_decl(2) == "struct node {\n\tstruct node *next;\n\tint v;\n};"
    assert b.dtype(6).itemsize == 4 and b.size(4) == 0
    assert b.dtype(9).names == ("n", "x")
    assert b.c_name(7).endswith("*")
    assert b.dtype(10).itemsize == 0 and b.decode(10, b"") == [[]] * 6


def test_a_struct_holding_itself_is_a_loop():
    msg = refused([INT(1), Type(2, "array", "", type_id=3, index_type=1, nelems=2),
                   STRUCT(3, "s", 8, [("self", 2, 0)])], "reference loop")
    assert msg == ("BTF type #3 (struct s): reference loop, it contains itself by value "
                   "(#3 -> #3)")
    refused([STRUCT(1, "a", 4, [("b", 2, 0)]), STRUCT(2, "b", 4, [("a", 3, 0)]),
             Type(3, "typedef", "a_t", type_id=1)],
            r"BTF type #1 \(struct a\): reference loop.*#1 -> #2 -> #1")


def test_a_typedef_of_itself_is_a_loop():
    refused([Type(1, "typedef", "t", type_id=2), Type(2, "const", "", type_id=1)],
            r"BTF type #1 \(typedef t\): reference loop, it contains itself by value "
            r"\(#1 -> #2 -> #1\)")


def test_ids_out_of_range():
    refused([INT(1), Type(2, "ptr", "", type_id=9)],
            r"^BTF type #2 \(ptr\): refers to type #9, beyond the last type #2$")
    refused([INT(1), STRUCT(2, "s", 4, [("x", 7, 0)])],
            r"^BTF type #2 \(struct s\): member 'x' refers to type #7, beyond the last "
            r"type #2$")
    refused([INT(1), Type(2, "array", "", type_id=1, index_type=5, nelems=1)],
            r"^BTF type #2 \(array\): array element or index refers to type #5")


def test_kinds_of_what_is_referred_to():
    refused([INT(1), Type(2, "func", "f", type_id=1, linkage="global")],
            r"^BTF type #2 \(func f\): a FUNC's type #1 is a int, not a FUNC_PROTO$")
    refused([INT(1), Type(2, "datasec", ".bss", size=4, vars=[(1, 0, 4)])],
            r"^BTF type #2 \(datasec .bss\): entry 0 \(#1\) is a int, not a VAR or FUNC$")
    refused([Type(1, "fwd", "later", fwd_kind="struct"),
             STRUCT(2, "s", 8, [("x", 1, 0)])],
            r"^BTF type #2 \(struct s\): member 0 'x' has an incomplete type \(#1, fwd\)$")
    refused([Type(1, "array", "", type_id=0, index_type=0, nelems=4)],
            r"^BTF type #1 \(array\): array of an incomplete type \(#0, void\)$")


def test_members_inside_their_struct():
    refused([INT(1), STRUCT(2, "s", 4, [("a", 1, 0), ("b", 1, 32)])],
            r"^BTF type #2 \(struct s\): member 1 'b' ends at byte 8, past the 4 bytes of "
            r"its type$")
    refused([INT(1), STRUCT(2, "s", 8, [("a", 1, 3)])],
            r"member 0 'a' at bit offset 3 is not byte aligned")
    bf = Type(2, "struct", "s", size=4, kind_flag=1,
              members=[Member("p", 3, 0, 8)])
    refused([INT(1), bf, Type(3, "ptr", "", type_id=1)],
            r"member 0 'p' is a bitfield of a ptr")


def test_sizes_the_kernel_allows():
    refused([INT(1, size=3)], r"^BTF type #1 \(int int\): INT of 3 bytes \(1, 2, 4, 8 or 16\)$")
    refused([Type(1, "enum", "e", size=3, signed=False, values=[("A", 0)])],
            r"enum of 3 bytes")
    refused([INT(1), Type(2, "array", "", type_id=1, index_type=1, nelems=1 << 30)],
            r"^BTF type #2 \(array\): 4294967296 bytes, larger than 2 GiB$")
    sec = Type(3, "datasec", ".data", size=4, vars=[(2, 4, 4)])
    refused([INT(1), Type(2, "var", "v", type_id=1, linkage="global"), sec],
            r"^BTF type #3 \(datasec .data\): entry at offset 4 of 4 bytes ends past the "
            r"section's 4 bytes$")


def test_nesting_is_bounded():
    chain = [INT(1)] + [Type(i, "typedef", f"t{i}", type_id=i - 1) for i in range(2, 80)]
    refused(chain, r"nest")
    structs = [INT(1)] + [STRUCT(i, f"s{i}", 4, [("x", i - 1, 0)]) for i in range(2, 80)]
    refused(structs, r"^BTF type #\d+ \(struct s\d+\): types nest \d+ deep by value "
                     r"\(at most 64; the kernel allows 32\)$")
    ok = [INT(1)] + [STRUCT(i, f"s{i}", 4, [("x", i - 1, 0)]) for i in range(2, 40)]
    r = BTF(marshal(ok)).decode(39, struct.pack("<i", -5))     # 38 structs deep
    for _ in range(38):
        r = r.x
    assert r == -5


def _patched(raw, word_index, value):
    """``raw`` with the type section's word ``word_index`` set to ``value``."""
    hdr_len, = struct.unpack_from("<I", raw, 4)
    pos = hdr_len + 4 * word_index
    return raw[:pos] + struct.pack("<I", value) + raw[pos + 4:]


def test_names_and_kinds_in_raw_words():
    raw = marshal([INT(1), Type(2, "typedef", "u", type_id=1)])
    with pytest.raises(BTFError, match=r"^BTF type #2 \(typedef\): name offset 4096 is "
                                       r"outside the string section \(\d+ bytes\)$"):
        BTF(_patched(raw, 4, 4096))                       # typedef's name word
    with pytest.raises(BTFError, match=r"^BTF type #2 \(void u\): kind 0 "
                                       r"\(BTF_KIND_UNKN\) is not a type$"):
        BTF(_patched(raw, 5, 0))                          # its info word
    with pytest.raises(BTFError, match=r"unknown kind 31"):
        BTF(_patched(raw, 5, 31 << 24))


def test_split_btf_is_checked_against_its_base():
    base = BTF(marshal([INT(1), STRUCT(2, "s", 4, [("x", 1, 0)])]))
    ok = BTF(marshal([Type(3, "typedef", "s_t", type_id=2)], base=base), base=base)
    assert ok.size(3) == 4 and ok.c_name(3) == "s_t"
    refused([Type(3, "ptr", "", type_id=4)], r"^BTF type #3 \(ptr\): refers to type #4, "
                                             r"beyond the last type #3$", base=base)
    refused([STRUCT(3, "big", 4, [("s", 2, 0), ("y", 1, 32)])],
            r"member 1 'y' ends at byte 8", base=base)


def test_elf_with_a_broken_section_table():
    elf = bytearray(b"\x7fELF\x02\x01\x01" + bytes(57))
    struct.pack_into("<Q", elf, 0x28, 64)
    struct.pack_into("<HHH", elf, 0x3A, 64, 1000, 0)       # 1000 headers past the end
    with pytest.raises(BTFError, match="corrupt ELF object"):
        BTF.from_elf(bytes(elf))
    with pytest.raises(BTFError, match="not an ELF64 object"):
        BTF.from_elf(b"\x7fELF\x01")
