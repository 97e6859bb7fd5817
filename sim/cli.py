"""The `vtx` command: one argparse program, one subcommand per job of `sim`.

Adding a subcommand: write a module exposing ``add_parser(subparsers)``, which adds its parser
with ``subparsers.add_parser(NAME, help=...)`` and sets ``parser.set_defaults(func=RUN)``, where
``RUN(args) -> int`` returns the exit status; then list it in `SUBCOMMANDS`.

A module that fails to import still gets its subcommand, which then reports the import error
(so `vtx lint` keeps working when another subcommand is broken, and the broken one says why).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from collections.abc import Sequence


class UsageError(Exception):
    """Bad options or input: the subcommand prints one message and exits with status 2."""


class RunError(Exception):
    """The build or the simulation failed: exit status 1."""


def int_option(text: str) -> int:
    """An integer option value, decimal or 0x hex (argparse `type`)."""
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def standalone_main(prog: str, description: str, configure, run,
                    argv: Sequence[str] | None = None, *, raw_description: bool = True) -> int:
    """The ``python -m sim.X`` entry of a subcommand: the parser `configure(parser)` fills,
    under the name `prog`, then `run(args)`'s exit status."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description,
        formatter_class=(argparse.RawDescriptionHelpFormatter if raw_description
                         else argparse.HelpFormatter))
    configure(parser)
    return run(parser.parse_args(argv))


#: Subcommand -> the module that provides it, in the order of `vtx --help`.
SUBCOMMANDS: dict[str, str] = {
    "run": "sim.run",               # run an x86-64 program (.S or flat binary) on the system RTL
    "translate": "sim.translate",   # run guest translations through the RTL (examples/*.json)
    "waves": "sim.waves",           # open / write / draw waveforms (make waves)
    "lint": "sim.lint",             # Verilator lint of the generated Verilog (make lint)
    "synth": "sim.synth",           # FPGA build for the ULX3S + report (make synth)
    "bench": "sim.bench.command",   # the benchmarks (make bench)
    "formal": "sim.formal",         # formal proofs, covers, mutation checks (make formal)
}


def _broken_subcommand(subparsers, name: str, module_name: str, error: BaseException) -> None:
    detail = "".join(traceback.format_exception_only(type(error), error)).strip()
    parser = subparsers.add_parser(name, help=f"(unavailable: {module_name} failed to import)",
                                   add_help=False)
    parser.add_argument("rest", nargs=argparse.REMAINDER)

    def run(_args: argparse.Namespace) -> int:
        print(f"vtx {name}: cannot load {module_name}: {detail}", file=sys.stderr)
        return 2

    parser.set_defaults(func=run)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The `vtx` parser with every subcommand, or with subcommand `only` alone (its module is
    then the only one imported: `vtx run` does not pay for importing the others)."""
    parser = argparse.ArgumentParser(
        prog="vtx",
        description="VT-x in Amaranth HDL: simulation and checking tools.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in SUBCOMMANDS.items():
        if only is not None and name != only:
            continue
        try:
            module = importlib.import_module(module_name)
        except Exception as e:  # report it, keep the other subcommands usable
            _broken_subcommand(subparsers, name, module_name, e)
            continue
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # `vtx NAME ...`: build the parser of that subcommand only (imports are most of the start-up
    # time of a short `vtx run`); anything else (`vtx --help`, a typo) gets the whole parser.
    parser = build_parser(argv[0] if argv and argv[0] in SUBCOMMANDS else None)
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:     # no subcommand: a usage error
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:         # `vtx ... | head`: the reader has what it wanted
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (no flush error at exit)
        return 0


if __name__ == "__main__":
    sys.exit(main())
