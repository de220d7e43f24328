"""bpfnb.cache: the compile cache trusts only what it wrote (owner, mode, digests, HMAC)."""

import hashlib
import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
from pathlib import Path

import pytest

import bpfnb
from bpfnb import build, cache
from bpfnb.cache import CacheWarning

ROOT = Path(__file__).resolve().parent.parent
PROGS = ROOT / "tests" / "progs"
OPENS = (PROGS / "tally_opens.bpf.c").read_text()
CLOSES = (PROGS / "tally_closes.bpf.c").read_text()
CFLAGS = ["-I", str(PROGS)]
NOBODY = 65534
N = 37  # openat calls the tests cause

pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root"),
              pytest.mark.filterwarnings("error::bpfnb.cache.CacheWarning")]


@pytest.fixture
def cache_root(tmp_path, monkeypatch):
    """A fresh cache root of this test's own (BPFNB_CACHE)."""
    root = tmp_path / "cache"
    monkeypatch.setenv("BPFNB_CACHE", str(root))
    return root


def entry_of(path: Path) -> Path:
    return path.parent


def opens_counted(obj) -> int:
    """Cause N openat calls in this thread; return what the program counted."""
    path = os.devnull
    for _ in range(N):
        os.close(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
    tally = obj.maps.tallies.lookup(threading.get_native_id())
    return 0 if tally is None else int(tally["calls"])


def load_opens():
    return bpfnb.load(OPENS, cflags=CFLAGS, rodata={"target_tid": threading.get_native_id()})


def private_root() -> Path:
    return cache.private().root


def test_the_default_root_is_the_effective_users(tmp_path, monkeypatch):
    monkeypatch.delenv("BPFNB_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache.default_root() == tmp_path / "bpfnb"
    # sudo -E: HOME and XDG_CACHE_HOME still name the invoking user's
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, NOBODY, NOBODY)
    monkeypatch.setenv("XDG_CACHE_HOME", str(theirs))
    monkeypatch.setenv("HOME", str(theirs))
    assert cache.default_root() == Path(pwd.getpwuid(os.geteuid()).pw_dir) / ".cache/bpfnb"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache.default_root() == tmp_path / ".cache/bpfnb"


# --- refused caches -------------------------------------------------------------------

def test_cache_owned_by_another_user_is_refused_and_the_cell_still_runs(cache_root,
                                                                          no_leaks):
    cache_root.mkdir(mode=0o700)
    os.chown(cache_root, NOBODY, NOBODY)
    with pytest.warns(CacheWarning, match=rf"{cache_root} is owned by nobody, not by "
                                          rf"root .*chown root .*BPFNB_CACHE"):
        obj = load_opens()
    try:
        assert opens_counted(obj) == N
    finally:
        obj.destroy()
    assert list(cache_root.iterdir()) == []  # nothing written there
    res = build.build(OPENS, CFLAGS)
    assert res.cached and res.path.is_relative_to(private_root())
    assert stat.S_IMODE(private_root().stat().st_mode) == 0o700


@pytest.mark.parametrize("mode, who", [(0o777, "its group and others"), (0o722, "its group and others"),
                                       (0o702, "others"), (0o770, "its group")])
def test_cache_others_can_write_is_refused(cache_root, mode, who):
    cache_root.mkdir()
    os.chmod(cache_root, mode)
    with pytest.warns(CacheWarning, match=rf"{cache_root} is writable by {who} "
                                          rf"\(mode {mode:04o}"):
        res = build.build(OPENS, CFLAGS)
    assert res.path.is_relative_to(private_root()) and res.path.exists()
    assert list(cache_root.iterdir()) == []


def test_the_magic_refuses_a_cache_others_can_write(cache_root, no_leaks):
    # the case: a cache directory another user can write, root runs %%bpf
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    from bpfnb.registry import registry
    cache_root.mkdir()
    os.chmod(cache_root, 0o1777)  # like /tmp: sticky does not stop new files
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "bpfnb")
    cell = (f"%%bpf opens --cflags '-I {PROGS}' --set target_tid="
            f"{threading.get_native_id()}\n{OPENS}")
    try:
        with pytest.warns(CacheWarning, match=rf"refused: {cache_root} is writable by its "
                                              rf"group and others \(mode 1777"):
            with capture_output() as cap:
                result = ip.run_cell(cell)
        assert result.success, cap.stdout + cap.stderr
        assert opens_counted(ip.user_ns["opens"]) == N
    finally:
        registry.stop_all()
        ip.run_line_magic("unload_ext", "bpfnb")
    assert list(cache_root.iterdir()) == []


@pytest.mark.parametrize("tamper", ["chown", "chmod", "symlink"])
def test_a_directory_inside_the_cache_others_can_write_refuses_it(cache_root, tmp_path,
                                                                  tamper):
    build.build(OPENS, CFLAGS)
    obj_dir = cache_root / "obj"
    if tamper == "chown":
        os.chown(obj_dir, NOBODY, NOBODY)
        expected = "is owned by nobody"
    elif tamper == "chmod":
        os.chmod(obj_dir, 0o730)
        expected = r"is writable by its group \(mode 0730"
    else:
        elsewhere = tmp_path / "elsewhere"
        obj_dir.rename(elsewhere)
        obj_dir.symlink_to(elsewhere)
        expected = "is a symbolic link"
    with pytest.warns(CacheWarning, match=rf"{obj_dir} {expected}"):
        res = build.build(OPENS + "// another cell\n", CFLAGS)
    assert res.path.is_relative_to(private_root())


def test_an_entry_of_another_owner_is_dropped_and_rebuilt(cache_root):
    first = build.build(OPENS, CFLAGS)
    os.chown(entry_of(first.path), NOBODY, NOBODY)
    with pytest.warns(CacheWarning, match=rf"{entry_of(first.path)} is owned by nobody"):
        again = build.build(OPENS, CFLAGS)
    assert not again.cached and again.path == first.path
    assert entry_of(again.path).stat().st_uid == 0


def test_a_root_of_ours_others_can_read_is_narrowed(cache_root):
    cache_root.mkdir(mode=0o755)
    os.chmod(cache_root, 0o755)
    build.build(OPENS, CFLAGS)
    assert stat.S_IMODE(cache_root.stat().st_mode) == 0o700


# --- tampered entries -----------------------------------------------------------------

@pytest.mark.parametrize("how", ["bytes flipped", "another program"])
def test_a_tampered_object_is_recompiled_and_the_right_program_runs(cache_root, how,
                                                                    no_leaks):
    path = build.build(OPENS, CFLAGS).path
    data = bytearray(path.read_bytes())
    if how == "bytes flipped":
        data[len(data) // 2] ^= 0xFF
    else:  # a valid program counting close(2), as one who could write the cache would
        data = build.build(CLOSES, CFLAGS).path.read_bytes()
    path.write_bytes(bytes(data))  # same file: owner and mode unchanged
    with pytest.warns(CacheWarning, match=rf"{path.name} whose sha256 is not the one"):
        obj = load_opens()
    try:
        assert [p.name for p in obj.progs] == ["count_openat"]
        assert opens_counted(obj) == N
    finally:
        obj.destroy()
    assert build.build(OPENS, CFLAGS).cached  # the rebuilt entry is trusted again


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("field", ["warnings", "digest", "garbage"])
def test_a_tampered_manifest_is_detected(cache_root, field):
    first = build.build(OPENS, CFLAGS)
    good = sha256(first.path)
    manifest_path = entry_of(first.path) / cache.MANIFEST
    manifest = json.loads(manifest_path.read_text())
    if field == "warnings":  # what a hit reports (and its header deps) come from here
        manifest["meta"]["warnings"] = "all good"
    elif field == "digest":  # another program, with its sha256 written in as well
        imposter = build.build(CLOSES, CFLAGS).path
        first.path.write_bytes(imposter.read_bytes())
        manifest["files"][first.path.name] = sha256(imposter)
    manifest_path.write_text("{not json" if field == "garbage" else json.dumps(manifest))
    with pytest.warns(CacheWarning, match=r"manifest bpfnb did not write"):
        again = build.build(OPENS, CFLAGS)
    assert not again.cached and again.warnings == first.warnings
    assert sha256(again.path) == good  # clang's output again, not the imposter


def test_a_tampered_vmlinux_h_is_regenerated(cache_root):
    build.build(OPENS, CFLAGS)
    vmlinux = build.vmlinux_h()
    good = sha256(vmlinux)
    with vmlinux.open("a") as f:
        f.write("#define bpf_get_current_pid_tgid() 0\n")
    with pytest.warns(CacheWarning, match=r"vmlinux\.h whose sha256"):
        res = build.build(OPENS + "// after the header was changed\n", CFLAGS)
    assert sha256(build.vmlinux_h()) == good and res.used_pch


def test_a_missing_manifest_drops_the_entry(cache_root):
    first = build.build(OPENS, CFLAGS)
    (entry_of(first.path) / cache.MANIFEST).unlink()
    with pytest.warns(CacheWarning, match="has no manifest"):
        assert not build.build(OPENS, CFLAGS).cached


def test_a_touched_header_keeps_the_entry_trusted(cache_root, tmp_path):
    # a header's mtime moving with its content unchanged rewrites the manifest (new
    # mtime, new HMAC): later hits neither rehash the header nor distrust the entry
    shutil.copy(PROGS / "tally.h", tmp_path)
    header, flags = tmp_path / "tally.h", ["-I", str(tmp_path)]
    first = build.build(OPENS, flags)
    st = header.stat()
    os.utime(header, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert build.build(OPENS, flags).cached
    deps = json.loads((entry_of(first.path) / cache.MANIFEST).read_text())["meta"]["deps"]
    assert [d[2] for d in deps if d[0] == str(header)] == [st.st_mtime_ns + 10**9]
    assert build.build(OPENS, flags).cached
    header.write_text(header.read_text().replace("64", "32"))
    assert not build.build(OPENS, flags).cached


def test_every_file_and_directory_is_private(cache_root):
    old = os.umask(0)  # the most permissive umask must not widen anything
    try:
        build.build(OPENS, CFLAGS)
    finally:
        os.umask(old)
    for dirpath, dirnames, filenames in os.walk(cache_root):
        assert stat.S_IMODE(os.stat(dirpath).st_mode) == 0o700, dirpath
        for name in filenames:
            assert stat.S_IMODE(os.stat(os.path.join(dirpath, name)).st_mode) == 0o600, name
        assert not [n for n in dirnames + filenames if n.startswith((".tmp-", ".dead-"))]


def test_what_a_killed_compile_left_is_swept(cache_root):
    build.build(OPENS, CFLAGS)
    obj_dir = cache_root / "obj"
    old, fresh = obj_dir / ".tmp-killed", obj_dir / ".tmp-running"
    for d in (old, fresh):
        d.mkdir()
        (d / "half.o").write_bytes(b"\x7fELF")
    os.utime(old, (1, 1))
    subprocess.run([sys.executable, "-c", "from bpfnb import build; import sys; "
                    f"build.build(sys.argv[1], {CFLAGS!r})", OPENS + "// new\n"],
                   env=base_env(BPFNB_CACHE=str(cache_root)), check=True, timeout=300)
    assert not old.exists() and fresh.exists()


# --- other users, other processes -------------------------------------------------------

def run_python(code: str, env: dict, as_nobody: bool = False, umask: int = 0o022):
    cmd = [sys.executable, "-c", code]
    if as_nobody:
        cmd = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *cmd]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=lambda: os.umask(umask))


COMPILE = textwrap.dedent(f"""
    import sys, warnings
    from bpfnb import build, cache
    warnings.simplefilter("error", cache.CacheWarning)
    res = build.build(open({str(PROGS / 'tally_opens.bpf.c')!r}).read(),
                      ["-I", {str(PROGS)!r}])
    print(res.path, res.cached)
""")


def base_env(**extra) -> dict:
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), **extra}
    if "BPFNB_CLANG" in os.environ:
        env["BPFNB_CLANG"] = os.environ["BPFNB_CLANG"]
    return env


@pytest.mark.skipif(not shutil.which("setpriv"), reason="needs setpriv (util-linux)")
def test_an_unprivileged_user_gets_its_own_private_cache():
    home = Path(tempfile.mkdtemp(prefix="bpfnb-home-"))
    try:
        os.chown(home, NOBODY, NOBODY)
        os.chmod(home, 0o755)
        env = base_env(HOME=str(home))
        outs = []
        for _ in range(2):
            p = run_python(COMPILE, env, as_nobody=True, umask=0)
            out, err = p.communicate(timeout=300)
            assert p.returncode == 0, err
            outs.append(out.split())
        root = home / ".cache" / "bpfnb"
        assert Path(outs[0][0]).is_relative_to(root) and outs[0][1] == "False"
        assert outs[1] == [outs[0][0], "True"]
        for d in (home / ".cache", root, root / "obj"):
            st = d.stat()
            assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (NOBODY, 0o700), d
        st = Path(outs[0][0]).stat()
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (NOBODY, 0o600)
    finally:
        shutil.rmtree(home)


def test_the_private_cache_of_a_refused_root_is_removed_at_exit(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    p = run_python(COMPILE.replace('simplefilter("error"', 'simplefilter("ignore"') +
                   "print(cache.private().root)\n", base_env(BPFNB_CACHE=str(shared)))
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    obj_path, _, private = out.split()
    assert obj_path.startswith(private + "/") and not os.path.exists(private)
    assert list(shared.iterdir()) == []


def test_two_processes_compiling_one_cell_both_succeed(cache_root, no_leaks):
    env = base_env(BPFNB_CACHE=str(cache_root))  # empty: they race for every entry
    procs = [run_python(COMPILE, env) for _ in range(2)]
    results = [p.communicate(timeout=300) + (p.returncode,) for p in procs]
    for out, err, rc in results:
        assert rc == 0, err
    paths = {out.split()[0] for out, _, _ in results}
    assert len(paths) == 1
    res = build.build(OPENS, CFLAGS)  # warns (and fails the test) if any entry is bad
    assert res.cached and str(res.path) in paths
    obj = load_opens()
    try:
        assert opens_counted(obj) == N
    finally:
        obj.destroy()
    leftovers = [p for p in cache_root.rglob("*") if p.name.startswith((".tmp-", ".dead-"))]
    assert leftovers == []
