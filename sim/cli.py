"""The `vtx` command: one argparse program, one subcommand per module.

Adding a subcommand: write a module exposing ``add_parser(subparsers)``, which adds its parser
with ``subparsers.add_parser(NAME, help=...)`` and sets ``parser.set_defaults(func=RUN)``, where
``RUN(args) -> int`` returns the exit status; then list the module in `SUBCOMMANDS`.

A listed module that does not exist yet is skipped; one that exists but fails to import still
gets its subcommand, which then reports the import error (so `vtx lint` keeps working when
another subcommand is broken, and the broken one says why).
"""

from __future__ import annotations

import argparse
import importlib
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


#: Modules that provide subcommands, in the order of `vtx --help`.
SUBCOMMANDS: list[str] = [
    "sim.translate_cmd",  # vtx translate: run guest translations through the RTL (examples/*.json)
    "sim.lint",  # vtx lint: Verilator lint of the generated Verilog
    "sim.synth",  # vtx synth: FPGA build for the ULX3S (Yosys/nextpnr via YoWASP) + report
    "sim.run",  # vtx run: run an x86-64 program (.S or flat binary) on the system RTL
]


def _broken_subcommand(subparsers, module_name: str, error: BaseException) -> None:
    name = command_name(module_name)
    detail = "".join(traceback.format_exception_only(type(error), error)).strip()
    parser = subparsers.add_parser(name, help=f"(unavailable: {module_name} failed to import)",
                                   add_help=False)
    parser.add_argument("rest", nargs=argparse.REMAINDER)

    def run(_args: argparse.Namespace) -> int:
        print(f"vtx {name}: cannot load {module_name}: {detail}", file=sys.stderr)
        return 2

    parser.set_defaults(func=run)


def command_name(module_name: str) -> str:
    """The subcommand of a module of `SUBCOMMANDS` (``sim.translate_cmd`` -> ``translate``)."""
    return module_name.rsplit(".", 1)[-1].removesuffix("_cmd")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The `vtx` parser with every subcommand, or with subcommand `only` alone (its module is
    then the only one imported: `vtx run` does not pay for importing the others)."""
    parser = argparse.ArgumentParser(
        prog="vtx",
        description="VT-x in Amaranth HDL: simulation and checking tools.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in SUBCOMMANDS:
        if only is not None and command_name(module_name) != only:
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name == module_name:  # not written yet
                continue
            _broken_subcommand(subparsers, module_name, e)
            continue
        except Exception as e:  # report it, keep the other subcommands usable
            _broken_subcommand(subparsers, module_name, e)
            continue
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # `vtx NAME ...`: build the parser of that subcommand only (imports are most of the start-up
    # time of a short `vtx run`); anything else (`vtx --help`, a typo) gets the whole parser.
    names = {command_name(module_name) for module_name in SUBCOMMANDS}
    parser = build_parser(argv[0] if argv and argv[0] in names else None)
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
