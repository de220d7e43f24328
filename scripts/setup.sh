#!/usr/bin/env bash
# Set up everything bpfnb needs on a Debian 12 / Ubuntu machine, idempotently.
#
#   scripts/setup.sh          system packages, .venv, tracefs/bpffs mounts
#   scripts/setup.sh --lab    the same, then JupyterLab on notebooks/ (127.0.0.1, token auth)
#   scripts/setup.sh --test   the same, plus what only the tests need (Chromium)
#
# A second run checks and does nothing (well under a few seconds).
# Environment: PYTHON=/path/to/python3 picks the interpreter for .venv (>= 3.10);
#              PORT=8888 JupyterLab's first port to try; SKIP_APT=1 never calls apt-get;
#              BPFNB_USER=alice (as root) installs the Jupyter kernel "bpfnb (BPF
#              capabilities)": cells run as alice with CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN,
#              and tracefs is re-mounted gid=bpfnb,mode=0750 for it (BPFNB_TRACEFS=0: not).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
VENV="$ROOT/.venv"
LAB=0
TEST=0
for arg in "$@"; do
    case "$arg" in
        --lab) LAB=1 ;;
        --test) TEST=1 ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "setup: unknown argument: $arg" >&2; exit 2 ;;
    esac
done

say()  { printf 'setup: %s\n' "$*"; }
warn() { printf 'setup: WARNING: %s\n' "$*" >&2; }
die()  { printf 'setup: ERROR: %s\n' "$*" >&2; exit 1; }

# --- privileges -------------------------------------------------------------
# SUDO is "" as root, "sudo" (or "sudo -n" without a terminal) when sudo can
# be used, and unset (PRIV=0) when nothing privileged can be done.
PRIV=0
SUDO=""
if [ "$(id -u)" -eq 0 ]; then
    PRIV=1
elif command -v sudo >/dev/null 2>&1; then
    if sudo -n true 2>/dev/null; then
        PRIV=1; SUDO="sudo -n"
    elif [ -t 0 ]; then
        PRIV=1; SUDO="sudo"          # will ask for a password if needed
    fi
fi

# --- system packages ----------------------------------------------------------
APT_UPDATED=0
apt_wait() {
    # Another apt-get/dpkg (e.g. a background install) holds the lock: wait.
    local waited=0
    while pgrep -x apt-get >/dev/null 2>&1 || pgrep -x dpkg >/dev/null 2>&1 \
          || pgrep -x unattended-upgr >/dev/null 2>&1; do
        [ $waited -eq 0 ] && say "waiting for another apt-get/dpkg to finish..."
        waited=1
        sleep 5
    done
}
apt_get() {
    apt_wait
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 "$@"
}
apt_update_once() {
    if [ $APT_UPDATED -eq 0 ]; then
        say "apt-get update"
        apt_get update -qq || warn "apt-get update failed; trying to install anyway"
        APT_UPDATED=1
    fi
}
apt_has_candidate() {
    local c
    c=$(apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2}')
    [ -n "$c" ] && [ "$c" != "(none)" ]
}
pkg_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

# package:proof -- the package counts as present when dpkg says it is installed,
# or when the proof (a command, an absolute path, lib=SONAME known to ldconfig) exists.
REQUIRED="clang:clang libbpf1:lib=libbpf.so.1 libbpf-dev:/usr/include/bpf/bpf_helpers.h
          make:make iproute2:ip iputils-ping:ping gcc:gcc python3-venv: python3-dev:
          linux-libc-dev:/usr/include/linux/version.h"
# the browser test drives Debian's Chromium
if [ $TEST -eq 1 ]; then REQUIRED="$REQUIRED chromium:/usr/bin/chromium"; fi
# the fleet's SSH test runs its own sshd (loopback port, its own config and keys)
if [ $TEST -eq 1 ]; then REQUIRED="$REQUIRED openssh-server:/usr/sbin/sshd"; fi
have_proof() {
    case "$1" in
        "") return 1 ;;
        /*) [ -e "$1" ] ;;
        lib=*) { ldconfig -p || /sbin/ldconfig -p; } 2>/dev/null | grep -qF "${1#lib=} " ;;
        *) command -v "$1" >/dev/null 2>&1 ;;
    esac
}
missing=()
if command -v dpkg-query >/dev/null 2>&1; then
    for spec in $REQUIRED; do
        pkg=${spec%%:*}; proof=${spec#*:}
        pkg_installed "$pkg" && continue
        have_proof "$proof" && continue
        missing+=("$pkg")
    done
else
    for c in clang make ip gcc; do
        command -v "$c" >/dev/null 2>&1 || missing+=("$c")
    done
    [ ${#missing[@]} -eq 0 ] || warn "not a Debian/Ubuntu system: install ${missing[*]} yourself"
    missing=()
fi

# bpftool is optional (nothing in bpfnb needs it, it is handy for inspection).
# Debian 12: package bpftool.  Ubuntu: linux-tools-$(uname -r) (Ubuntu kernels only).
# When no package offers it, remember that, so later runs stay fast.
want_bpftool=0
BPFTOOL_MARK="$VENV/.no-bpftool"
if ! command -v bpftool >/dev/null 2>&1 && [ ! -e /usr/sbin/bpftool ] \
   && command -v apt-get >/dev/null 2>&1 && [ ! -e "$BPFTOOL_MARK" ]; then
    want_bpftool=1
fi

if [ ${#missing[@]} -gt 0 ] || [ $want_bpftool -eq 1 ]; then
    if [ "${SKIP_APT:-0}" = 1 ] || [ $PRIV -eq 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        [ ${#missing[@]} -gt 0 ] && warn "missing packages: ${missing[*]}
    not root and no usable sudo (or SKIP_APT=1): run as root
        apt-get update && apt-get install -y ${missing[*]} bpftool"
    else
        apt_update_once
        # Keep only what this release offers (e.g. Ubuntu 22.04 has no libbpf1).
        avail=()
        for pkg in ${missing[@]+"${missing[@]}"}; do
            if apt_has_candidate "$pkg"; then avail+=("$pkg")
            else warn "no apt package '$pkg' on this release; bpfnb needs it (libbpf1: Debian 12, Ubuntu >= 23.04)"
            fi
        done
        missing=(${avail[@]+"${avail[@]}"})
        if [ ${#missing[@]} -gt 0 ]; then
            say "installing: ${missing[*]}"
            # Packages with a service (openssh-server) must not start it: the tests run
            # their own sshd. policy-rc.d (exit 101) is Debian's way to say so; only ours
            # is removed afterwards.
            norc=0
            if [ ! -e /usr/sbin/policy-rc.d ]; then
                printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null \
                    && $SUDO chmod 755 /usr/sbin/policy-rc.d && norc=1
            fi
            rc=0
            apt_get install -y -qq --no-install-recommends "${missing[@]}" || rc=$?
            [ $norc -eq 1 ] && $SUDO rm -f /usr/sbin/policy-rc.d
            [ $rc -eq 0 ] || die "apt-get install ${missing[*]} failed"
        fi
        if [ $want_bpftool -eq 1 ]; then
            got=""
            for cand in bpftool "linux-tools-$(uname -r)"; do
                if apt_has_candidate "$cand"; then
                    say "installing $cand (bpftool)"
                    if apt_get install -y -qq --no-install-recommends "$cand"; then
                        got=$cand; break
                    fi
                fi
            done
            if [ -z "$got" ]; then
                warn "no package provides bpftool for this kernel; continuing without it (optional)"
                mkdir -p "$VENV" && touch "$BPFTOOL_MARK"
            fi
        fi
    fi
fi

# --- python and .venv ---------------------------------------------------------
py_ok() {  # $1 = interpreter; true if it runs and is >= 3.10
    "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' >/dev/null 2>&1
}
pick_python() {
    local c
    for c in ${PYTHON:-} python3 python3.13 python3.12 python3.11 python3.10 /usr/bin/python3; do
        command -v "$c" >/dev/null 2>&1 || continue
        if py_ok "$c"; then command -v "$c"; return 0; fi
    done
    return 1
}

make_venv() {
    local py err
    py=$(pick_python) || die "no python3 >= 3.10 found (set PYTHON=/path/to/python3)"
    say "creating .venv with $py ($("$py" -c 'import sys; print(sys.version.split()[0])'))"
    rm -rf "$VENV"
    if ! err=$("$py" -m venv "$VENV" 2>&1); then
        rm -rf "$VENV"
        if printf '%s' "$err" | grep -qiE 'ensurepip|python3.*-venv'; then
            local ver vpkg
            ver=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
            if [ $PRIV -eq 0 ] || ! command -v apt-get >/dev/null 2>&1; then
                die "'$py -m venv' needs ensurepip: as root run apt-get install python3-venv python$ver-venv"
            fi
            apt_update_once
            vpkg=python3-venv
            apt_has_candidate "python$ver-venv" && vpkg="python3-venv python$ver-venv"
            say "ensurepip is missing: installing $vpkg"
            # shellcheck disable=SC2086
            apt_get install -y -qq --no-install-recommends $vpkg || die "apt-get install $vpkg failed"
            "$py" -m venv "$VENV" || { rm -rf "$VENV"; die "'$py -m venv .venv' failed"; }
        else
            printf '%s\n' "$err" >&2
            die "'$py -m venv .venv' failed"
        fi
    fi
}

if [ -x "$VENV/bin/python" ] && py_ok "$VENV/bin/python" \
   && "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
    :   # existing venv works
else
    if [ -e "$VENV" ]; then
        [ -w "$VENV" ] && [ -w "$VENV/bin" ] 2>/dev/null \
            || die ".venv exists but its python does not run for $(id -un) and it is not writable:
    run as the user who made it (e.g. sudo make ...), or remove .venv"
        say ".venv exists but does not work (python gone, < 3.10, or no pip): re-creating it"
    fi
    mark=""; [ -e "$BPFTOOL_MARK" ] && mark=1
    make_venv
    if [ -n "$mark" ]; then touch "$BPFTOOL_MARK"; fi
fi

STAMP="$VENV/.stamp"
if [ ! -e "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ]; then
    say "pip install -e .[test] (into .venv)"
    "$VENV/bin/python" -m pip install -q --upgrade pip \
        || warn "could not upgrade pip; continuing with $("$VENV/bin/python" -m pip --version)"
    "$VENV/bin/python" -m pip install -q -e ".[test]" || die "pip install -e .[test] failed"
    touch "$STAMP"
fi

# --- the JupyterLab extension: %%bpf cells highlighted as C ---------------------------
# A wheel installs its built assets (bpfnb/labextension, from `make labextension`) into
# share/jupyter/labextensions; an editable install leaves data files out, so link them
# where JupyterLab and Notebook 7 look for prebuilt extensions.
LABEXT="$VENV/share/jupyter/labextensions/bpfnb-highlight"
if { [ -L "$LABEXT" ] || [ ! -e "$LABEXT" ]; } \
   && [ "$(readlink "$LABEXT" 2>/dev/null)" != "$ROOT/bpfnb/labextension" ]; then
    mkdir -p "${LABEXT%/*}" && ln -sfn "$ROOT/bpfnb/labextension" "$LABEXT" \
        || warn "could not link $LABEXT: %%bpf cells will be highlighted as Python"
fi

# --- tracefs and bpffs ----------------------------------------------------------
is_mounted() {  # $1 = mount point, $2 = fs type
    awk -v m="$1" -v t="$2" '$2 == m && $3 == t { f = 1 } END { exit !f }' /proc/mounts
}
ensure_mount() {  # $1 = fs type, $2 = mount point, $3 = what needs it
    local fstype=$1 mnt=$2 why=$3
    is_mounted "$mnt" "$fstype" && return 0
    local cmd="mount -t $fstype $fstype $mnt"
    if [ $PRIV -eq 1 ]; then
        # shellcheck disable=SC2086  # $cmd is a command line, split on purpose
        if $SUDO mkdir -p "$mnt" 2>/dev/null && $SUDO $cmd 2>/dev/null; then
            say "mounted $fstype at $mnt ($why)"
            return 0
        fi
        warn "could not mount $fstype at $mnt ($why).
    In a container, start it with --privileged (or mount $fstype on the host); otherwise run: $cmd"
    else
        warn "$fstype is not mounted at $mnt ($why). As root run: $cmd"
    fi
}
if [ "$(uname -s)" = Linux ]; then
    ensure_mount tracefs /sys/kernel/tracing "tracepoints need it"
    ensure_mount bpf /sys/fs/bpf "pinning maps needs it"
    [ -r /sys/kernel/btf/vmlinux ] \
        || warn "/sys/kernel/btf/vmlinux is missing: bpfnb needs a kernel built with CONFIG_DEBUG_INFO_BTF=y"
    if [ "$(id -u)" -ne 0 ]; then
        warn "not root: loading BPF programs needs root (or CAP_BPF + CAP_PERFMON). Try: sudo make lab,
    or sudo make lab BPFNB_USER=$(id -un) to run notebook cells as $(id -un) with only those capabilities"
    fi
fi

# --- the kernel that runs cells as an ordinary user ------------------------------------
if [ -n "${BPFNB_USER:-}" ]; then
    [ $PRIV -eq 1 ] || die "BPFNB_USER=$BPFNB_USER needs root: sudo make lab BPFNB_USER=$BPFNB_USER"
    id -u "$BPFNB_USER" >/dev/null 2>&1 || die "BPFNB_USER: no user '$BPFNB_USER' on this machine"
    [ "$(id -u "$BPFNB_USER")" -ne 0 ] || die "BPFNB_USER must be an ordinary user, not root"
    command -v setpriv >/dev/null 2>&1 || die "setpriv is missing: apt-get install util-linux"
    ks_args=(kernelspec --user "$BPFNB_USER" --prefix "$VENV")
    [ "${BPFNB_TRACEFS:-1}" = 0 ] && ks_args+=(--no-tracefs)
    $SUDO "$VENV/bin/python" -m bpfnb "${ks_args[@]}" | sed 's/^/setup: /' \
        || die "could not install the kernelspec for $BPFNB_USER"
    # the kernel runs .venv/bin/python as that user: it must be able to
    if ! $SUDO setpriv --reuid="$BPFNB_USER" --regid="$(id -g "$BPFNB_USER")" --clear-groups \
            "$VENV/bin/python" -c 'import bpfnb, ipykernel' >/dev/null 2>&1; then
        warn "$BPFNB_USER cannot run $VENV/bin/python or import bpfnb from $ROOT:
    make the checkout and .venv readable for that user (e.g. clone it into a directory they can read)"
    fi
fi

[ $LAB -eq 1 ] || say "ready ($VENV)"

# --- JupyterLab -------------------------------------------------------------------
# The first line it prints is the URL to open, token included, on the port it really
# got (the first free one from PORT up; Jupyter itself is told not to move). The token
# goes through the environment, not the command line (which `ps` shows to everyone).
# Jupyter logs warnings only, so the URL stays on screen; one Ctrl-C stops it.
if [ $LAB -eq 1 ]; then
    mkdir -p notebooks
    want=${PORT:-8888}
    port=$("$VENV/bin/python" - "$want" <<'PY'
import socket, sys
start = int(sys.argv[1])
for port in range(start, min(start + 100, 65536)):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Jupyter binds
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        print(port)
        break
PY
    ) || true
    [ -n "$port" ] || die "no free port in $want..$((want + 99)) on 127.0.0.1: set PORT=..."
    JUPYTER_TOKEN=$("$VENV/bin/python" -c 'import secrets; print(secrets.token_hex(24))')
    export JUPYTER_TOKEN
    url="http://127.0.0.1:$port/lab?token=$JUPYTER_TOKEN"
    moved=""; [ "$port" != "$want" ] && moved=" (port $want was taken)"
    printf '\nbpfnb lab: open %s%s\n' "$url" "$moved"
    printf '  start with notebooks/01-setup.ipynb; Ctrl-C here stops JupyterLab\n'
    [ -n "${BPFNB_USER:-}" ] \
        && printf "  pick the kernel 'bpfnb (BPF capabilities)' to run cells as %s\n" "$BPFNB_USER"
    printf '\n'
    args=(lab --no-browser --ServerApp.ip=127.0.0.1 --ServerApp.port="$port"
          --ServerApp.port_retries=0 --ServerApp.answer_yes=True
          --ServerApp.log_level=WARN --LabApp.log_level=WARN
          --ServerApp.root_dir="$ROOT/notebooks")
    [ "$(id -u)" -eq 0 ] && args+=(--allow-root)
    exec "$VENV/bin/jupyter" "${args[@]}"
fi
