"""``python -m bpfnb doctor`` (what this machine allows), ``python -m bpfnb vmlinux``
(path of the running kernel's cached vmlinux.h)."""

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bpfnb", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("doctor", help="check privileges, kernel, toolchain and which BPF "
                                  "program types load and attach here")
    sub.add_parser("vmlinux", help="print the path of the cached vmlinux.h, generating "
                                   "it from the kernel's BTF if needed")
    args = parser.parse_args(argv)
    if args.command == "doctor":
        from . import doctor
        return doctor.main()
    from . import build
    try:
        print(build.vmlinux_h())
    except OSError as e:
        print(f"bpfnb: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
