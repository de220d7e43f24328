"""``python -m bpfnb doctor`` (what this machine allows), ``python -m bpfnb vmlinux``
(path of the running kernel's cached vmlinux.h), ``python -m bpfnb kernelspec --user U``
(install the "bpfnb (BPF capabilities)" Jupyter kernel; ``--remove`` takes it away)."""

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bpfnb", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("doctor", help="check privileges, kernel, toolchain and which BPF "
                                  "program types load and attach here")
    sub.add_parser("vmlinux", help="print the path of the cached vmlinux.h, generating "
                                   "it from the kernel's BTF if needed")
    ks = sub.add_parser("kernelspec", help="install (or --remove) the Jupyter kernel that "
                                           "runs as an ordinary user with BPF capabilities")
    ks.add_argument("--user", help="the user the kernel runs as (not root)")
    ks.add_argument("--remove", action="store_true", help="remove the kernelspec and give "
                                                          "tracefs back to root alone")
    ks.add_argument("--prefix", help="install under PREFIX/share/jupyter/kernels "
                                     "(default: this Python's prefix)")
    ks.add_argument("--caps", default="bpf,perfmon,net_admin",
                    help="ambient capabilities (default: bpf,perfmon,net_admin)")
    ks.add_argument("--no-tracefs", action="store_true",
                    help="leave tracefs alone (tracepoint/ programs then need root; "
                         "tp_btf/ and raw_tp/ work)")
    args = parser.parse_args(argv)
    if args.command == "doctor":
        from . import doctor
        return doctor.main()
    if args.command == "kernelspec":
        return _kernelspec(args, ks)
    from . import build
    try:
        print(build.vmlinux_h())
    except OSError as e:
        print(f"bpfnb: {e}", file=sys.stderr)
        return 1
    return 0


def _kernelspec(args, parser) -> int:
    from . import kernelspec
    try:
        if args.remove:
            found = kernelspec.remove(args.prefix, tracefs=not args.no_tracefs)
            print(f"removed {kernelspec.NAME}" if found else f"no {kernelspec.NAME} installed")
            return 0
        if not args.user:
            parser.error("--user USER is required (or --remove)")
        path = kernelspec.install(args.user, args.caps.split(","), args.prefix,
                                  tracefs=not args.no_tracefs)
    except (kernelspec.KernelSpecError, OSError) as e:
        print(f"bpfnb: {e}", file=sys.stderr)
        return 1
    print(f"installed {kernelspec.DISPLAY_NAME!r} ({kernelspec.NAME}) for user "
          f"{args.user} in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
