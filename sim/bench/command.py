"""`vtx bench`: the benchmarks (``make bench``), results in ``build/bench/``.

* ``translation``: the translation unit's bench top in Verilator over workloads and
  configurations, and the simulation speed of Verilator against Amaranth's simulator
  (`sim.bench.translation`; ``translation.{md,json}`` and plots);
* ``vmx``: the VMX unit's instruction and VM entry/exit latencies (`sim.bench.vmx`;
  ``vmx.json``);
* ``system``: the SoC's IPC, VM round trip and `vtx run` speed (`sim.bench.system`;
  ``system.json``).

docs/bench.md explains every figure. Speed figures depend on the machine's load: compare ratios
measured in one run, never figures of different runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

BENCHES = ("translation", "vmx", "system")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("benches", nargs="*", metavar="BENCH",
                        help=f"which benchmarks ({', '.join(BENCHES)}; default: all, in that "
                             "order)")
    parser.add_argument("--quick", action="store_true",
                        help="translation: short runs (noisier figures)")
    parser.add_argument("--builds", type=int, default=2,
                        help="translation: Verilator builds at a time (default 2)")


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("bench", help="benchmarks (build/bench/): translation unit, "
                                   "VMX unit, system", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    configure(parser)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    unknown = [b for b in args.benches if b not in BENCHES]
    if unknown:
        print(f"vtx bench: error: unknown benchmark {unknown[0]!r} (choose from "
              f"{', '.join(BENCHES)})", file=sys.stderr)
        return 2
    if args.builds < 1:
        print("vtx bench: error: --builds must be at least 1", file=sys.stderr)
        return 2
    chosen = [b for b in BENCHES if b in args.benches] if args.benches else list(BENCHES)
    status = 0
    for bench in chosen:
        if bench == "translation":
            from sim.bench.translation import main as translation
            options = ["--builds", str(args.builds)] + (["--quick"] if args.quick else [])
            status = max(status, translation(options))
        elif bench == "vmx":
            from sim.bench import vmx
            vmx.run()
        else:
            from sim.bench import system
            system.run()
    return status


def main(argv: Sequence[str] | None = None) -> int:
    from sim.cli import standalone_main
    return standalone_main("python -m sim.bench", __doc__, configure, run, argv)
