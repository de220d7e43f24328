"""The compile cache: a per-user directory only bpfnb writes, each entry checked before use.

Where
-----
``$BPFNB_CACHE``, else ``$XDG_CACHE_HOME/bpfnb``, else ``~/.cache/bpfnb``, where
``$XDG_CACHE_HOME`` and ``~`` count only when they belong to the effective user (under
``sudo -E`` they name the invoking user's home; then the effective user's own home from
the password database is used).

What it trusts
--------------
Only what it wrote. The root, each directory of a kind (``obj``, ``pch``, ``src``,
``kernel``) and each entry must be owned by the effective user and writable by nobody
else; bpfnb creates them at mode 0700 (``mkdir`` at 0700 is atomic and the umask can only
narrow it) and tightens a root of its own that others can read. A root or kind directory
that fails is refused with a :class:`CacheWarning` naming the path, its owner and mode
and the fix, and bpfnb compiles in a private temporary directory removed at exit.

An entry is a directory ``<kind>/<key>/`` made in a private staging directory and renamed
into place, so it appears whole or not at all and concurrent writers never mix their
files (the loser of a rename uses the winner's entry). Its ``manifest.json`` holds the
sha256 of every file and an HMAC-SHA256 of the whole manifest keyed by ``secret``, 32
random bytes in the root at mode 0600: a manifest is one this user's bpfnb wrote, and
a key that anyone can compute from a cell's text buys nothing. Every use re-hashes the
files (the ones over 1 MiB, vmlinux.h and the PCH, only when their inode, size, mtime or
ctime changed since this process hashed them: a write always moves ctime). An entry
that fails (a file changed, a manifest edited, a wrong owner or mode) is dropped with a
:class:`CacheWarning` (once per entry and process) and rebuilt. The checks run when
bpfnb opens an entry; clang and libbpf then read its files by path, inside directories
only this user (and root) can write.

A hit also checks the headers the source included itself (``record_deps`` /
``deps_valid``: size, mtime, then content), so editing one recompiles.
"""

from __future__ import annotations

import atexit
import errno
import hashlib
import hmac
import json
import os
import pwd
import secrets
import shutil
import stat
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Iterable

MANIFEST = "manifest.json"
SECRET = "secret"
_BIG = 1 << 20  # files re-hashed only when their stat identity changes
_hashed: dict = {}  # path -> (stat identity, sha256): large files hashed by this process
_secrets: dict = {}  # root -> (stat identity, key)
_warned: set = set()
_swept: set = set()  # (kind dir, pid): old staging directories removed
_private: dict = {}  # pid -> private Cache (a fork must not remove its parent's)


class CacheWarning(UserWarning):
    """The compile cache (or one entry of it) was not trusted and not used."""


class UnsafeCache(Exception):
    """A directory of the cache that others could have written."""

    def __init__(self, path, problem: str):
        super().__init__(f"{path} {problem}")
        self.path, self.problem = Path(path), problem


# --- where, and whose -------------------------------------------------------------

def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _owned(path: str) -> bool:
    try:
        return os.stat(path).st_uid == os.geteuid()
    except OSError:
        return False


def default_root() -> Path:
    """The cache root this process would use (see the module doc)."""
    env = os.environ.get("BPFNB_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg) and _owned(xdg):
        return Path(xdg) / "bpfnb"
    home = os.environ.get("HOME")
    if not (home and _owned(home)):
        try:
            home = pwd.getpwuid(os.geteuid()).pw_dir
        except KeyError:
            home = home or tempfile.gettempdir()
    return Path(home) / ".cache" / "bpfnb"


def _problem(st: os.stat_result) -> str | None:
    """Why a directory with this stat is not to be trusted, or None."""
    if not stat.S_ISDIR(st.st_mode):
        return "is not a directory"
    euid = os.geteuid()
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid != euid:
        return (f"is owned by {_user(st.st_uid)}, not by {_user(euid)} who runs bpfnb "
                f"(mode {mode:04o})")
    if mode & 0o022:
        who = " and ".join(w for w, bit in (("its group", 0o020), ("others", 0o002))
                           if mode & bit)
        return f"is writable by {who} (mode {mode:04o}, owner {_user(st.st_uid)})"
    return None


def _mkdir_private(path: Path) -> None:
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        return
    os.chmod(path, 0o700)  # a umask of 0o077+ could have narrowed it below 0700


def _check_dir(path: Path, create: bool) -> None:
    """Raise UnsafeCache unless ``path`` is a directory of ours that only we can write
    (never through a symlink). Creates it at 0700 when missing and ``create``."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        if not create:
            raise
        _mkdir_private(path)
        st = os.lstat(path)
    problem = "is a symbolic link" if stat.S_ISLNK(st.st_mode) else _problem(st)
    if problem:
        raise UnsafeCache(path, problem)
    if stat.S_IMODE(st.st_mode) & 0o077:  # ours, readable by others (an older bpfnb)
        os.chmod(path, 0o700)


# --- the cache --------------------------------------------------------------------

class Cache:
    """One cache root. ``private`` is a temporary one used instead of a refused root."""

    def __init__(self, root: Path, private: bool = False):
        self.root, self.private = Path(root), private

    def __repr__(self):
        return f"Cache({str(self.root)!r}{', private' if self.private else ''})"

    def check_root(self) -> None:
        """Create the root (parents at 0700, as XDG asks of ~/.cache) or check it; a
        root of ours that others may read is narrowed to 0700."""
        root = self.root
        if not root.exists():
            missing = []
            p = root
            while not p.exists() and p != p.parent:
                missing.append(p)
                p = p.parent
            for p in reversed(missing):
                _mkdir_private(p)
        st = os.stat(root)  # the root itself may be a symlink the user made
        problem = _problem(st)
        if problem:
            raise UnsafeCache(root, problem)
        if stat.S_IMODE(st.st_mode) & 0o077:
            os.chmod(root, 0o700)

    def kind_dir(self, kind: str) -> Path:
        path = self.root / kind
        _check_dir(path, create=True)
        return path

    def entry_path(self, kind: str, key: str) -> Path:
        return self.root / kind / key

    def secret(self) -> bytes:
        """The HMAC key of this root's manifests (created on first use)."""
        path = self.root / SECRET
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return self._new_secret(path)
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            ident = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns)
            memo = _secrets.get(str(path))
            if memo and memo[0] == ident:
                return memo[1]
            if st.st_uid != os.geteuid() or stat.S_IMODE(st.st_mode) & 0o077 \
                    or not stat.S_ISREG(st.st_mode):
                raise UnsafeCache(path, f"(the key of its manifests) has owner "
                                        f"{_user(st.st_uid)} and mode "
                                        f"{stat.S_IMODE(st.st_mode):04o}, not yours at 0600")
            key = f.read()
        if len(key) != 32:
            raise UnsafeCache(path, f"(the key of its manifests) holds {len(key)} bytes, "
                                    f"not 32")
        _secrets[str(path)] = (ident, key)
        return key

    def _new_secret(self, path: Path) -> bytes:
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-secret.")
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, secrets.token_bytes(32))
            os.close(fd)
            try:
                os.link(tmp, path)  # never replaces: a concurrent writer's key wins
            except FileExistsError:
                pass
        finally:
            os.unlink(tmp)
        return self.secret()

    def _mac(self, manifest: dict) -> str:
        body = json.dumps({k: v for k, v in manifest.items() if k != "mac"},
                          sort_keys=True).encode()
        return hmac.new(self.secret(), body, hashlib.sha256).hexdigest()

    # --- reading ------------------------------------------------------------------

    def open_entry(self, kind: str, key: str) -> dict | None:
        """The verified manifest of an entry (its ``meta`` what the writer stored), or
        None when there is none; an entry that fails a check is dropped (warned)."""
        self.kind_dir(kind)
        path = self.entry_path(kind, key)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        problem = "is a symbolic link" if stat.S_ISLNK(st.st_mode) else _problem(st)
        if problem is None:
            try:
                problem = self._verify(path, kind, key)
            except OSError as e:
                problem = f"cannot be read ({e.strerror or e})"
        if isinstance(problem, dict):
            return problem
        self.drop(kind, key, problem)
        return None

    def _verify(self, path: Path, kind: str, key: str):
        """-> the manifest, or why the entry is not trusted."""
        try:
            data = _read_own(path / MANIFEST)
        except FileNotFoundError:
            return "has no manifest"
        except _NotOurs as e:
            return f"has a manifest that {e}"
        try:
            manifest = json.loads(data)
            ok = (isinstance(manifest, dict) and manifest.get("kind") == kind
                  and manifest.get("key") == key and isinstance(manifest.get("files"), dict)
                  and hmac.compare_digest(str(manifest.get("mac", "")),
                                          self._mac(manifest)))
        except (ValueError, TypeError):
            ok = False
        if not ok:
            return "has a manifest bpfnb did not write (its HMAC does not match)"
        for name, digest in manifest["files"].items():
            try:
                actual = _file_digest(path / name)
            except FileNotFoundError:
                return f"lacks its file {name}"
            except _NotOurs as e:
                return f"has a file {name} that {e}"
            if actual != digest:
                return f"has a file {name} whose sha256 is not the one bpfnb stored"
        return manifest

    def drop(self, kind: str, key: str, why: str | None = None) -> None:
        """Remove an entry (renamed aside first, so no reader sees half of it); ``why``
        is said in a CacheWarning (once per entry and process)."""
        path = self.entry_path(kind, key)
        if why:
            _warn_once(("drop", str(path), why),
                       f"bpfnb compile cache: {path} {why}; it was not used and is being "
                       f"rebuilt.")
        aside = self.root / kind / f".dead-{key}-{secrets.token_hex(4)}"
        try:
            os.rename(path, aside)
        except OSError:
            return
        shutil.rmtree(aside, ignore_errors=True)

    # --- writing ------------------------------------------------------------------

    def stage(self, kind: str) -> Path:
        """A new private directory to write an entry's files into (see commit)."""
        kind_dir = self.kind_dir(kind)
        if (str(kind_dir), os.getpid()) not in _swept:
            _swept.add((str(kind_dir), os.getpid()))
            _sweep(kind_dir)
        path = Path(tempfile.mkdtemp(dir=kind_dir, prefix=".tmp-"))
        os.chmod(path, 0o700)
        return path

    def commit(self, staging: Path, kind: str, key: str, meta: dict | None = None) -> dict:
        """Seal ``staging`` (every regular file in it) as entry ``key`` and rename it
        into place; when another process got there first, its entry is used. Returns
        the manifest in place."""
        files = {}
        for p in sorted(staging.iterdir()):
            os.chmod(p, 0o600)
            files[p.name] = _file_digest(p, memo=False)
        manifest = {"kind": kind, "key": key, "files": files, "meta": meta or {}}
        manifest["mac"] = self._mac(manifest)
        _write_new(staging / MANIFEST, json.dumps(manifest).encode())
        target = self.entry_path(kind, key)
        try:
            for _ in range(3):
                try:
                    os.rename(staging, target)  # fails on an existing, non-empty entry
                    return manifest
                except OSError as e:
                    if not target.exists():
                        raise
                    if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                        raise
                theirs = self.open_entry(kind, key)  # a concurrent writer won
                if theirs is not None:
                    return theirs
            raise OSError(f"cannot put the cache entry {target} in place")
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def update_meta(self, kind: str, key: str, manifest: dict, meta: dict) -> None:
        """Rewrite an entry's manifest with new ``meta`` (same files)."""
        new = {**manifest, "meta": meta}
        new["mac"] = self._mac(new)
        path = self.entry_path(kind, key)
        tmp = path / f".tmp-{MANIFEST}.{secrets.token_hex(4)}"
        _write_new(tmp, json.dumps(new).encode())
        os.replace(tmp, path / MANIFEST)


def _sweep(kind_dir: Path) -> None:
    """Remove what killed processes left: staging directories and dropped entries
    untouched for an hour (a live compile touches its staging directory)."""
    limit = time.time() - 3600
    try:
        names = [n for n in os.listdir(kind_dir) if n.startswith((".tmp-", ".dead-"))]
    except OSError:
        return
    for name in names:
        path = kind_dir / name
        try:
            if os.lstat(path).st_mtime < limit:
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            pass


# --- files ------------------------------------------------------------------------

class _NotOurs(Exception):
    """A file of an entry that bpfnb did not write as it writes them."""


def _open_own(path: Path) -> int:
    """An fd of a regular file of ours that nobody else can write (no symlink)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise _NotOurs("is a symbolic link") from None
        raise
    st = os.fstat(fd)
    mode = stat.S_IMODE(st.st_mode)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or mode & 0o022:
        os.close(fd)
        raise _NotOurs(f"is owned by {_user(st.st_uid)} at mode {mode:04o}")
    return fd


def _read_own(path: Path) -> bytes:
    with os.fdopen(_open_own(path), "rb") as f:
        return f.read()


def _file_digest(path: Path, memo: bool = True) -> str:
    with os.fdopen(_open_own(path), "rb") as f:
        st = os.fstat(f.fileno())
        ident = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        known = _hashed.get(str(path)) if memo else None
        if known and known[0] == ident:
            return known[1]
        h = hashlib.sha256()
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
        digest = h.hexdigest()
    if st.st_size >= _BIG:
        _hashed[str(path)] = (ident, digest)
    return digest


def _write_new(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    os.fchmod(fd, 0o600)  # the umask may have narrowed it further
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def write_file(staging: Path, name: str, data: bytes | str) -> Path:
    """Write one file of an entry being staged."""
    path = staging / name
    _write_new(path, data.encode() if isinstance(data, str) else data)
    return path


# --- what a compile read --------------------------------------------------------

def file_sha(path) -> str | None:
    """sha256 of a file anywhere (None when it cannot be read)."""
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest() \
                if hasattr(hashlib, "file_digest") else hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None


def _parse_deps(text: str) -> list[str]:
    text = text.replace("\\\n", " ")
    _, _, deps = text.partition(": ")
    out, cur, i = [], [], 0
    while i < len(deps):
        c = deps[i]
        if c == "\\" and i + 1 < len(deps) and deps[i + 1] in " #\\":
            cur.append(deps[i + 1])
            i += 2
            continue
        if c.isspace():
            if cur:
                out.append("".join(cur))
                cur = []
        else:
            cur.append(c)
        i += 1
    if cur:
        out.append("".join(cur))
    return out


def record_deps(dep_file: Path, skip: Iterable[str], cache_root: Path) -> list:
    """[path, size, mtime, sha256] of the headers a compile read, but the cache's own
    (its entries are verified when used and named by what they hold)."""
    try:
        text = Path(dep_file).read_text()
    except OSError:
        return []
    skip = {os.path.realpath(s) for s in skip}
    inside = os.path.realpath(cache_root) + os.sep
    recs = []
    for d in dict.fromkeys(_parse_deps(text)):
        p = os.path.abspath(d)
        if os.path.realpath(p) in skip or os.path.realpath(p).startswith(inside):
            continue
        try:
            st = os.stat(p)
        except OSError:
            continue
        recs.append([p, st.st_size, st.st_mtime_ns, file_sha(p)])
    return recs


def deps_valid(recs: list) -> tuple[bool, bool]:
    """Whether the headers of record_deps are unchanged: size, then mtime, then content.
    -> (still valid, some mtime changed with the content unchanged)"""
    touched = False
    for rec in recs:
        p, size, mtime, sha = rec
        try:
            st = os.stat(p)
        except OSError:
            return False, False
        if st.st_size != size:
            return False, False
        if st.st_mtime_ns != mtime:
            if file_sha(p) != sha:
                return False, False
            rec[2], touched = st.st_mtime_ns, True
    return True, touched


# --- which cache ------------------------------------------------------------------

def _warn_once(memo_key, message: str) -> None:
    if memo_key in _warned:
        return
    _warned.add(memo_key)
    # point at the caller's line (a notebook cell), not at bpfnb's own frames
    package, level = os.path.dirname(os.path.abspath(__file__)) + os.sep, 2
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(package):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, CacheWarning, stacklevel=level)


def refuse(err: UnsafeCache) -> None:
    _warn_once(("refuse", str(err.path), err.problem),
               f"bpfnb compile cache refused: {err.path} {err.problem}, so another user "
               f"could have put programs there. Compiling in a private temporary "
               f"directory instead (removed when this process exits). To fix: "
               f"make it yours and private (chown {_user(os.geteuid())} {err.path}; "
               f"chmod 700 {err.path}), or set BPFNB_CACHE to a directory of your own.")


def private() -> Cache:
    """This process's temporary cache (0700, removed at exit)."""
    pid = os.getpid()
    if pid not in _private:
        root = Path(tempfile.mkdtemp(prefix="bpfnb-private-cache-"))
        os.chmod(root, 0o700)
        _private[pid] = Cache(root, private=True)
        atexit.register(_remove_private, pid)
    return _private[pid]


def _remove_private(pid: int) -> None:
    if os.getpid() == pid and pid in _private:
        shutil.rmtree(_private.pop(pid).root, ignore_errors=True)


def current() -> Cache:
    """The cache to use now: the default root when it is safe, else the private one
    (with a CacheWarning)."""
    c = Cache(default_root())
    try:
        c.check_root()
        return c
    except UnsafeCache as e:
        refuse(e)
    except OSError as e:
        _warn_once(("unusable", str(c.root)),
                   f"bpfnb compile cache: cannot use {c.root} ({e.strerror or e}); "
                   f"compiling in a private temporary directory instead. Set BPFNB_CACHE "
                   f"to a directory of your own.")
    return private()


def using(fn):
    """``fn(cache)`` on the current cache; when it meets an unsafe directory inside it,
    warn and do it again on the private cache."""
    c = current()
    try:
        return fn(c)
    except UnsafeCache as e:
        if c.private:
            raise
        refuse(e)
        return fn(private())
