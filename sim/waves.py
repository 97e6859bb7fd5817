"""Waveform helpers: read a VCD header and write a GTKWave save file beside it.

Amaranth flattens a component's signature into top-level ports joined with ``__`` (``req__valid``,
``req__payload``, ``mem_req__ready``, ...). `write_gtkw` groups the top-level ports by that first
path element so a dump opens in GTKWave with one group per interface, clock and reset first.

Only the VCD header is read (up to ``$enddefinitions``), so this is cheap even for large dumps.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from vcd.gtkw import GTKWSave

__all__ = ["VcdVar", "read_vcd_vars", "top_ports", "default_groups", "write_gtkw"]


@dataclass(frozen=True)
class VcdVar:
    """One variable declared in a VCD header."""

    scope: tuple[str, ...]  # e.g. ("TOP",) or ("TOP", "counter")
    name: str  # reference without bit range, e.g. "req__payload"
    width: int

    @property
    def path(self) -> str:
        """Dotted hierarchical name, as GTKWave (> 3.3.64) names it: ``TOP.req__payload``."""
        return ".".join((*self.scope, self.name))


def read_vcd_vars(vcd_path: str | Path) -> list[VcdVar]:
    """All variables declared in the header of `vcd_path`, in declaration order."""
    variables: list[VcdVar] = []
    scope: list[str] = []
    tokens: list[str] = []
    with open(vcd_path, encoding="utf-8", errors="replace") as f:
        for line in f:
            tokens.extend(line.split())
            # Process complete `$keyword ... $end` commands; keep a partial one for the next line.
            while "$end" in tokens:
                end = tokens.index("$end")
                command, tokens = tokens[:end], tokens[end + 1:]
                if not command:
                    continue
                keyword = command[0]
                if keyword == "$scope" and len(command) >= 3:
                    scope.append(command[2])
                elif keyword == "$upscope" and scope:
                    scope.pop()
                elif keyword == "$var" and len(command) >= 5:
                    # $var <type> <size> <id> <reference> [<bit range>] $end
                    variables.append(VcdVar(tuple(scope), command[4], int(command[2])))
                elif keyword == "$enddefinitions":
                    return variables
    return variables


#: Names of the scope that holds a Verilator model's ports (5.x: ``$rootio``; older: ``TOP``).
_PORT_SCOPES = ("$rootio", "TOP")


def top_ports(variables: Sequence[VcdVar], toplevel: str | None = None) -> list[VcdVar]:
    """The top-level ports, named by their path inside the design's top module if it has them.

    Verilator dumps the ports in a scope of their own (``$rootio`` or ``TOP``) and the design's
    signals in a scope named after the top module; the ports' names are taken from the former,
    their paths from the latter (``counter.count``), which is what a reader expects. For other
    simulators the variables of the outermost scope are used.
    """
    if not variables:
        return []
    depth = min(len(v.scope) for v in variables)
    scopes = list(dict.fromkeys(v.scope for v in variables))
    port_scope = next(
        (s for s in scopes if len(s) == depth and s[-1] in _PORT_SCOPES),
        next(s for s in scopes if len(s) == depth),
    )
    ports = [v for v in variables if v.scope == port_scope]
    # The design's top scope: named `toplevel`, else the sole other scope at (or right below)
    # the ports' level.
    if toplevel is not None:
        candidates = [s for s in scopes if s[-1] == toplevel]
    else:
        candidates = [
            s for s in scopes
            if s != port_scope and (len(s) == depth or s[:-1] == port_scope)
        ]
    if len(candidates) != 1:
        return ports
    design = {v.name: v for v in variables if v.scope == candidates[0]}
    return [design.get(p.name, p) for p in ports]


def default_groups(ports: Sequence[VcdVar]) -> dict[str, list[VcdVar]]:
    """Group ports by their first ``__``-separated path element; clock and reset go first."""
    groups: dict[str, list[VcdVar]] = {}
    clock_reset = [p for p in ports if p.name in ("clk", "rst")]
    if clock_reset:
        groups["clock/reset"] = sorted(clock_reset, key=lambda p: p.name)
    for port in ports:
        if port.name in ("clk", "rst"):
            continue
        prefix = port.name.split("__", 1)[0] if "__" in port.name else "(ports)"
        groups.setdefault(prefix, []).append(port)
    return groups


def write_gtkw(
    vcd_path: str | Path,
    gtkw_path: str | Path | None = None,
    groups: Mapping[str, Sequence[str]] | None = None,
    toplevel: str | None = None,
) -> Path:
    """Write a GTKWave save file for `vcd_path`, one trace group per interface.

    groups: optional ``{group name: [glob pattern, ...]}`` matched against the names of the
    top-level ports (``"req__*"``) or, for patterns containing a dot, against full dotted paths
    (``"TOP.translation_unit.walker.*"``, to pull internal signals in). Without it the ports are
    grouped by their ``__`` prefix (`default_groups`). Returns the path written (by default the
    VCD path with the suffix ``.gtkw``). `toplevel` names the design's top module scope.
    """
    vcd_path = Path(vcd_path)
    gtkw_path = Path(gtkw_path) if gtkw_path is not None else vcd_path.with_suffix(".gtkw")
    variables = read_vcd_vars(vcd_path)
    ports = top_ports(variables, toplevel)

    if groups is None:
        resolved = default_groups(ports)
    else:
        resolved = {}
        for group_name, patterns in groups.items():
            members: list[VcdVar] = []
            for pattern in patterns:
                pool = variables if "." in pattern else ports
                for var in pool:
                    key = var.path if "." in pattern else var.name
                    if fnmatch.fnmatchcase(key, pattern) and var not in members:
                        members.append(var)
            if members:
                resolved[group_name] = members

    gtkw_path.parent.mkdir(parents=True, exist_ok=True)
    with open(gtkw_path, "w", encoding="utf-8") as f:
        save = GTKWSave(f)
        save.comment(f"Generated by sim.waves.write_gtkw for {vcd_path.name}")
        save.dumpfile(str(vcd_path))
        save.savefile(str(gtkw_path))
        if ports:
            save.treeopen(".".join(ports[0].scope))
        save.signals_width(260)
        for group_name, members in resolved.items():
            with save.group(group_name):
                for var in members:
                    save.trace(var.path, datafmt="bin" if var.width == 1 else "hex")
    return gtkw_path
