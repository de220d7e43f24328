"""A recording's manifest.json and the facts it keeps of the machine: kernel BTF
checksum, libbpf and bpfnb versions, times in ISO-8601 UTC."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from pathlib import Path

VMLINUX_BTF = "/sys/kernel/btf/vmlinux"


def write_manifest(path: Path, manifest: dict, reserve: int = 0):
    """Into the bytes manifest.json already has when it fits (JSON allows trailing
    blanks): a rewrite on a full disk needs no new block; else a new file."""
    text = json.dumps(manifest, indent=1, default=str).encode()
    target = path / "manifest.json"
    try:
        old = target.stat().st_size
    except FileNotFoundError:
        old = 0
    if old and len(text) <= old:
        fd = os.open(target, os.O_WRONLY)
        try:
            os.write(fd, text + b" " * (old - len(text)))
            os.fsync(fd)
        finally:
            os.close(fd)
        return
    tmp = path / ".manifest.json.tmp"
    tmp.write_bytes(text + b"\n" + b" " * reserve)
    os.replace(tmp, target)


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


_btf_digest: list = []


def btf_sha256() -> str | None:
    """Of the running kernel's BTF (read once: it changes only with the kernel)."""
    if not _btf_digest:
        try:
            with open(VMLINUX_BTF, "rb") as f:
                _btf_digest.append(hashlib.sha256(f.read()).hexdigest())
        except OSError:
            _btf_digest.append(None)
    return _btf_digest[0]


def libbpf_version() -> str:
    from ..libbpf._lib import lib
    return (lib.libbpf_version_string() or b"").decode().lstrip("v")


def bpfnb_version() -> str | None:
    from importlib import metadata
    try:
        return metadata.version("bpfnb")
    except metadata.PackageNotFoundError:
        return None
