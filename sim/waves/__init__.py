"""Waveform helpers: read a VCD header, write a GTKWave save file beside it, open the last run.

Amaranth flattens a component's signature into top-level ports joined with ``__`` (``req__valid``,
``req__payload``, ``mem_req__ready``, ...). `write_gtkw` groups the top-level ports by that first
path element so a dump opens in GTKWave with one group per interface, clock and reset first; then
one (closed) group per block of the design, i.e. per VCD scope below the top (``core``, ``vmx``,
``vmx.cache``, ``translation.walker``, ...), holding the block's ports and its enum-typed signals.
Every trace that carries an enum is shown through a GTKWave translate filter generated from the
RTL's own enum (`sim.waves.gtkw_filters`), so exit reasons, VM-instruction errors, walker and core
states read as names.

The save file opens on the whole run (`fit_zoom`; the dump's time range is read from its header,
first timestamp and tail, `read_vcd_time_range`), in a 1400x800 window. Instruction bytes
(``retired_bytes``) read as instructions and the console's byte as a character
(`sim.waves.gtkw_insn`): those filters depend on the run, so the dump is searched once for the
values
of those few signals (a fraction of a second for the demo's 94 MB); everything else reads only
the VCD header.

Command line, `vtx waves` (``make waves`` runs ``open``; ``python -m sim.waves`` is the same)::

    vtx waves open [VCD]          # the last run's VCD in GTKWave (or print the paths)
    vtx waves gtkw VCD [--verilog V.v ...] [--toplevel NAME]
    vtx waves render VCD -o PNG [--signals GLOB ...] [--start T] [--end T]
    vtx waves screenshot GTKW -o PNG [--start T] [--end T]   # needs GTKWave + Xvfb
"""

from __future__ import annotations

import argparse
import fnmatch
import math
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vcd.gtkw import GTKWSave

__all__ = [
    "VcdVar", "read_vcd_vars", "sanitize_vcd_header", "design_scope", "top_ports",
    "default_groups", "Block", "block_groups", "read_vcd_time_range", "fit_zoom",
    "GTKW_WINDOW", "write_gtkw", "LAST_FILE", "LAST_ENV", "last_pointer", "record_last",
    "find_last_vcd", "open_waves", "GtkwTrace", "read_gtkw_traces", "read_filter_file",
    "read_vcd_values", "render_png", "screenshot", "main",
]

#: Name of the pointer file in ``<build>/waves/`` that names the VCD of the last run (one line:
#: its path, absolute or relative to the pointer's directory). `record_last` writes it.
LAST_FILE = "LAST"


@dataclass(frozen=True)
class VcdVar:
    """One variable declared in a VCD header."""

    scope: tuple[str, ...]  # e.g. ("TOP",) or ("TOP", "counter")
    name: str  # reference without bit range, e.g. "req__payload"
    width: int
    ident: str = field(default="", compare=False)  # the VCD identifier code
    bit_range: str = field(default="", compare=False)  # "[71:0]" as declared, or ""
    kind: str = field(default="wire", compare=False)  # the VCD var type: wire, reg, string...

    @property
    def path(self) -> str:
        """Dotted hierarchical name: ``TOP.req__payload`` (what patterns here match)."""
        return ".".join((*self.scope, self.name))

    @property
    def gtkwave_name(self) -> str:
        """The name GTKWave (3.3.118) gives the variable, which a save file must use: the bit
        range the VCD declares (else ``[width-1:0]`` for a vector) is appended
        (``unit.req__payload[71:0]``) and a name with a dot in it (Amaranth's struct fields) is
        escaped (``unit.\\req__payload.tag[7:0]``). Checked against GTKWave 3.3.118 on
        Verilator's and Amaranth's VCDs (tests/test_waves.py)."""
        name = self.name
        if "." in name and not name.startswith("\\"):  # Amaranth's own VCDs escape already
            name = "\\" + name
        bit_range = self.bit_range
        if not bit_range and self.width > 1 and self.kind not in ("string", "real"):
            bit_range = f"[{self.width - 1}:0]"  # GTKWave adds one where the VCD has none
        return ".".join((*self.scope, name + bit_range))


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
                    bit_range = command[5] if len(command) >= 6 else ""
                    variables.append(VcdVar(tuple(scope), command[4], int(command[2]),
                                            command[3], bit_range, command[1]))
                elif keyword == "$enddefinitions":
                    return variables
    return variables


#: Characters GTKWave (3.3.118) cannot take in a VCD variable name: Yosys's write_verilog declares
#: ``$auto$verilog_backend.cc:2355:dump_module$1`` in every module, and GTKWave stops loading the
#: whole dump at it ("$VAR parse error ... exiting").
_VAR_REF = re.compile(rb"(\$var\s+\S+\s+\d+\s+\S+\s+)(\S+)")


def sanitize_vcd_header(vcd_path: str | Path) -> int:
    """Make every variable name of `vcd_path` loadable by GTKWave, in place.

    Each bad character is replaced by one of the same length (``:`` -> ``_``), so only the
    header's bytes change and the value section is not copied, however large the dump. Returns
    the number of names changed.
    """
    changed = 0
    with open(vcd_path, "r+b") as f:
        header = _vcd_header(f)

        def fix(m: re.Match) -> bytes:
            nonlocal changed
            name = m.group(2)
            fixed = name.translate(bytes.maketrans(b":", b"_"))
            changed += fixed != name
            return m.group(1) + fixed

        end = header.find(b"$enddefinitions")
        head = header[:end if end >= 0 else len(header)]
        new_head = _VAR_REF.sub(fix, head)
        assert len(new_head) == len(head)
        if changed:
            f.seek(0)
            f.write(new_head)
    return changed


#: Names of the scope that holds a Verilator model's ports (5.x: ``$rootio``; older: ``TOP``).
_PORT_SCOPES = ("$rootio", "TOP")


def _port_scope(variables: Sequence[VcdVar]) -> tuple[str, ...]:
    depth = min(len(v.scope) for v in variables)
    scopes = list(dict.fromkeys(v.scope for v in variables))
    return next(
        (s for s in scopes if len(s) == depth and s[-1] in _PORT_SCOPES),
        next(s for s in scopes if len(s) == depth),
    )


def design_scope(variables: Sequence[VcdVar],
                 toplevel: str | None = None) -> tuple[str, ...] | None:
    """The scope of the design's top module: named `toplevel`, else the sole other scope at (or
    right below) the ports' level; None if that is ambiguous."""
    if not variables:
        return None
    port_scope = _port_scope(variables)
    scopes = list(dict.fromkeys(v.scope for v in variables))
    if toplevel is None and port_scope[-1] not in _PORT_SCOPES:
        return port_scope  # not Verilator: the outermost scope with variables is the design
    if toplevel is not None:
        candidates = [s for s in scopes if s[-1] == toplevel]
        # The shallowest one: a submodule could carry the top's name too.
        if candidates:
            depth = min(len(s) for s in candidates)
            candidates = [s for s in candidates if len(s) == depth]
    else:
        candidates = [
            s for s in scopes
            if s != port_scope and (len(s) == len(port_scope) or s[:-1] == port_scope)
        ]
    return candidates[0] if len(candidates) == 1 else None


def top_ports(variables: Sequence[VcdVar], toplevel: str | None = None) -> list[VcdVar]:
    """The top-level ports, named by their path inside the design's top module if it has them.

    Verilator dumps the ports in a scope of their own (``$rootio`` or ``TOP``) and the design's
    signals in a scope named after the top module; the ports' names are taken from the former,
    their paths from the latter (``counter.count``), which is what a reader expects. For other
    simulators the variables of the outermost scope are used.
    """
    if not variables:
        return []
    port_scope = _port_scope(variables)
    ports = [v for v in variables if v.scope == port_scope]
    design = design_scope(variables, toplevel)
    if design is None or design == port_scope:
        return ports
    inside = {v.name: v for v in variables if v.scope == design}
    return [inside.get(p.name, p) for p in ports]


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


@dataclass
class Block:
    """A trace group for one VCD scope of the design (a submodule) and its sub-blocks."""

    scope: tuple[str, ...]
    label: str
    traces: list[VcdVar] = field(default_factory=list)
    children: list[Block] = field(default_factory=list)

    def walk(self):
        yield self
        for child in self.children:
            yield from child.walk()


def _readable(var: VcdVar) -> bool:
    # Yosys temporaries ("$1", "$auto$...") and Amaranth's renamed copies ("fill_en$113").
    return "$" not in var.name


def _is_port_like(name: str) -> bool:
    """Without the Verilog: a flattened interface member (``done__valid``), not a struct field."""
    return "__" in name and "." not in name


def block_groups(
    variables: Sequence[VcdVar],
    design: tuple[str, ...],
    decoded: Mapping[VcdVar, object],
    block_ports: Mapping[tuple[str, ...], Sequence[str]] | None = None,
    top_port_names: Sequence[str] = (),
) -> list[Block]:
    """One `Block` per scope below `design` (nested as the hierarchy), plus one for the decoded
    internal signals of `design` itself (if any).

    A block lists the submodule's ports (from `block_ports`, ``{module path: [port names]}``
    read from the Verilog, else names that look like flattened interface members), each followed
    by its decoded struct fields, then the other decoded (enum-typed) signals of that scope.
    Clock and reset are left out (they are in the top group).
    """
    by_scope: dict[tuple[str, ...], list[VcdVar]] = {}
    for var in variables:
        by_scope.setdefault(var.scope, []).append(var)
    block_ports = block_ports or {}

    def named(v: VcdVar) -> bool:
        # Carries names: through a filter, or as text already (Amaranth's simulator writes
        # enum-typed signals as VCD strings).
        return v in decoded or v.kind == "string"

    def ports_of(scope: tuple[str, ...]) -> set[str] | None:
        for start in range(len(scope)):
            names = block_ports.get(scope[start:])
            if names is not None:
                return set(names)
        return None

    def traces_of(scope: tuple[str, ...]) -> list[VcdVar]:
        members = [v for v in by_scope.get(scope, ()) if _readable(v)]
        known = ports_of(scope)
        ports = [v for v in members
                 if (v.name in known if known is not None else _is_port_like(v.name))
                 and v.name not in ("clk", "rst")]
        port_names = {p.name for p in ports}
        chosen: list[VcdVar] = []
        for port in ports:
            chosen.append(port)
            chosen += [v for v in members
                       if named(v) and v.name.lstrip("\\").startswith(port.name + ".")]
        taken = set(chosen)
        chosen += [v for v in members
                   if named(v) and v not in taken
                   and v.name.lstrip("\\").split(".")[0] not in port_names]
        return chosen

    def build(scope: tuple[str, ...]) -> Block:
        block = Block(scope, scope[-1], traces_of(scope))
        for child in sorted({s[:len(scope) + 1] for s in by_scope
                             if len(s) > len(scope) and s[:len(scope)] == scope}):
            block.children.append(build(child))
        return block

    blocks: list[Block] = []
    # The top module's own enum-typed signals that are not ports (the FSMs of a one-block top).
    top_ports_set = set(top_port_names)
    internal = [v for v in by_scope.get(design, ())
                if named(v) and _readable(v)
                and v.name.lstrip("\\").split(".")[0] not in top_ports_set]
    if internal:
        blocks.append(Block(design, f"{design[-1]} (state)", internal))
    for child in sorted({s[:len(design) + 1] for s in by_scope
                         if len(s) > len(design) and s[:len(design)] == design}):
        blocks.append(build(child))
    return blocks


def _verilog_paths(verilog) -> list[Path]:
    if verilog is None:
        return []
    if isinstance(verilog, (str, Path)):
        verilog = [verilog]
    return [Path(v) for v in verilog if Path(v).is_file()]


# ---------------------------------------------------------------------------------------------
# The time range: a save file that opens on the whole run

#: The GTKWave window a save file asks for (``[size]``), and the width of its signal pane.
GTKW_WINDOW = (1400, 800)
GTKW_SIGNALS_WIDTH = 300
#: What the window's width leaves for the waves, assumed when choosing the zoom: GTKWave
#: 3.3.118 (GTK 3, Debian 12) under Xvfb gives 1400 - 300 (signals) - 304 (the signal search
#: tree, borders, scroll bar) = 796 pixels; the zoom is chosen for 650 so that a wider tree or
#: larger fonts (another theme) still leave the whole run on screen (it then fills ~80%).
GTKW_ASSUMED_WAVE_PIXELS = GTKW_WINDOW[0] - GTKW_SIGNALS_WIDTH - 450

_TIMESCALE = re.compile(rb"\$timescale\s+(1|10|100)\s*([munpf]?s)\s+\$end")


def _vcd_header(f) -> bytes:
    """The bytes of an open VCD up to and including ``$enddefinitions``."""
    header = b""
    while b"$enddefinitions" not in header:
        chunk = f.read(1 << 16)
        if not chunk:
            break
        header += chunk
    end = header.find(b"$enddefinitions")
    return header if end < 0 else header[:end + len(b"$enddefinitions")]


def _first_timestamp(f, start: int) -> int | None:
    """The first ``#<time>`` after offset `start` of an open VCD (right after the header in
    Verilator's and Amaranth's dumps; read on until one is complete, in case of a long
    ``$dumpvars`` first)."""
    f.seek(start)
    data = b"\n"
    while True:
        chunk = f.read(1 << 16)
        data += chunk
        # Whitespace after the digits: a timestamp cut at the end of the chunk is not taken.
        match = re.search(rb"\n#(\d+)\s", data if chunk else data + b"\n")
        if match:
            return int(match.group(1))
        if not chunk:
            return None


def _last_timestamp(f, size: int, start: int) -> int | None:
    """The last ``#<time>`` of an open VCD of `size` bytes whose body starts at `start`: read
    backwards from the end in growing blocks (one 64 KiB read for any normal dump)."""
    block = 1 << 16
    while True:
        offset = max(start, size - block)
        f.seek(offset)
        tail = f.read(size - offset)
        for match in reversed(list(re.finditer(rb"(?:^|\n)#(\d+)", tail))):
            if match.start() > 0 or offset == start:
                return int(match.group(1))
        if offset == start:
            return None
        block *= 4


def read_vcd_time_range(vcd_path: str | Path) -> tuple[int, int] | None:
    """(first, last) timestamp of the dump in GTKWave's time units (the VCD's, times the
    ``$timescale`` multiplier: GTKWave counts ``10 ns`` steps in ns), or None without any.

    Reads the header, the first timestamp after it and the tail of the file only: the demo's
    dump is 90 MB."""
    path = Path(vcd_path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        header = _vcd_header(f)
        scale = _TIMESCALE.search(header)
        multiplier = int(scale.group(1)) if scale else 1
        first = _first_timestamp(f, len(header))
        last = _last_timestamp(f, size, len(header))
    if first is None or last is None:
        return None
    return first * multiplier, last * multiplier


def fit_zoom(first: int, last: int, wave_pixels: int = GTKW_ASSUMED_WAVE_PIXELS) -> float:
    """The zoom (``*<zoom>`` line of a save file) at which `wave_pixels` show `first`..`last`.

    GTKWave (3.3.118: ``calczoom``, ``service_zoom_full``) draws 2**-zoom time units per 200
    pixels (``nspx = zoombase**-zoom / 200``, zoombase 2), so the whole run fits at
    ``-log2(span * 200 / pixels)``; like its Zoom Full, never above 0 (a run shorter than a
    pixel's worth is shown at the closest zoom)."""
    span = max(last - first, 1)
    return min(0.0, -math.log2(span * 200 / max(wave_pixels, 1)))


def write_gtkw(
    vcd_path: str | Path,
    gtkw_path: str | Path | None = None,
    groups: Mapping[str, Sequence[str]] | None = None,
    toplevel: str | None = None,
    *,
    verilog: str | Path | Sequence[str | Path] | None = None,
    filters: bool = True,
    blocks: bool = True,
    filter_dir: str | Path | None = None,
    decoder=None,
) -> Path:
    """Write a GTKWave save file for `vcd_path`, one trace group per interface and per block.

    groups: optional ``{group name: [glob pattern, ...]}`` matched against the names of the
    top-level ports (``"req__*"``) or, for patterns containing a dot, against full dotted paths
    (``"TOP.translation_unit.walker.*"``, to pull internal signals in). Without it the ports are
    grouped by their ``__`` prefix (`default_groups`). Returns the path written (by default the
    VCD path with the suffix ``.gtkw``). `toplevel` names the design's top module scope.

    verilog: the generated Verilog the model was built from; its enum attributes say which
    signals carry which enum (else `sim.waves.gtkw_filters.NAME_RULES` guess by name) and its module
    headers which signals are a block's ports. filters: attach translate filter files (written
    to `filter_dir`, default ``filters/`` beside the save file). blocks: add the per-block
    groups (closed when GTKWave opens the file). decoder: a ready `EnumDecoder` (for tests).

    With `filters`, instruction bytes (``retired_bytes``, the core's fetch window) and the
    console's byte also get filters (`sim.waves.gtkw_insn`, generated from the values in the dump).
    The file opens on the dump's whole time range (`fit_zoom`) in a `GTKW_WINDOW` window.
    """
    from . import gtkw_filters, gtkw_insn

    vcd_path = Path(vcd_path)
    gtkw_path = Path(gtkw_path) if gtkw_path is not None else vcd_path.with_suffix(".gtkw")
    sanitize_vcd_header(vcd_path)
    variables = read_vcd_vars(vcd_path)
    ports = top_ports(variables, toplevel)
    design = design_scope(variables, toplevel)
    verilog_files = _verilog_paths(verilog)

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

    # Which variable shows which enum.
    decoded: dict[VcdVar, gtkw_filters.EnumTable] = {}
    by_value: dict[VcdVar, str] = {}  # the variables of the instruction and console filters
    if filters:
        if decoder is None:
            decoder = gtkw_filters.EnumDecoder(verilog_files or None)
        port_scope = _port_scope(variables) if variables else None
        for var in variables:
            if design is not None and var.scope == port_scope != design:
                continue  # Verilator's port scope: the same signals are in the design scope
            rel = var.scope[len(design):] if design and var.scope[:len(design)] == design \
                else var.scope
            relpath = ".".join((*rel, var.name))
            table = decoder.lookup(var.scope, var.name, var.width, relpath)
            if table is not None:
                decoded[var] = table
            elif _readable(var) and (kind := gtkw_insn.filter_kind(relpath, var.width)):
                by_value[var] = kind
    filter_dir = Path(filter_dir) if filter_dir is not None else gtkw_path.parent / "filters"
    filter_paths = (gtkw_filters.write_filter_files(dict.fromkeys(decoded.values()), filter_dir)
                    if decoded else {})
    value_filters = _value_filters(vcd_path, by_value, filter_dir, gtkw_path.stem)

    block_list: list[Block] = []
    if blocks and design is not None:
        block_ports = gtkw_filters.verilog_ports(verilog_files) if verilog_files else None
        # The instruction windows are listed in their block like the enum-typed signals.
        block_list = block_groups(variables, design, {**decoded, **value_filters}, block_ports,
                                  [p.name for p in ports])

    # Decoded struct fields of a top-level port follow the port (``resp__payload.outcome``).
    fields_of: dict[str, list[VcdVar]] = {}
    if design is not None:
        for var in variables:
            if var.scope == design and var in decoded and "." in var.name and _readable(var):
                fields_of.setdefault(var.name.split(".")[0], []).append(var)

    def trace(save: GTKWSave, var: VcdVar) -> None:
        table = decoded.get(var)
        filter_file = filter_paths[table] if table is not None else value_filters.get(var)
        if filter_file is not None:
            save.trace(var.gtkwave_name, datafmt="hex", translate_filter_file=str(filter_file))
        else:
            save.trace(var.gtkwave_name, datafmt="bin" if var.width == 1 else "hex")

    def emit_block(save: GTKWSave, block: Block) -> None:
        if not any(b.traces for b in block.walk()):
            return
        with save.group(block.label, closed=True):
            for var in block.traces:
                trace(save, var)
            for child in block.children:
                emit_block(save, child)

    gtkw_path.parent.mkdir(parents=True, exist_ok=True)
    with open(gtkw_path, "w", encoding="utf-8") as f:
        save = GTKWSave(f)
        save.comment(f"Generated by sim.waves.write_gtkw for {vcd_path.name}")
        save.dumpfile(str(vcd_path))
        save.savefile(str(gtkw_path))
        # The whole run on screen: GTKWave's default (zoom 0 at time 0) shows a few
        # picoseconds of it.
        time_range = read_vcd_time_range(vcd_path)
        if time_range is not None:
            save.timestart(time_range[0])
        save.size(*GTKW_WINDOW)
        save.pos(-1, -1)
        if time_range is not None:
            save.zoom_markers(fit_zoom(*time_range))
        if ports:
            save.treeopen(".".join(ports[0].scope))
        save.signals_width(GTKW_SIGNALS_WIDTH)
        for group_name, members in resolved.items():
            with save.group(group_name):
                for var in members:
                    trace(save, var)
                    if var.scope == design:
                        for sub in fields_of.get(var.name, ()):
                            if sub not in members:
                                trace(save, sub)
        for block in block_list:
            emit_block(save, block)
    return gtkw_path


def _value_filters(vcd_path: Path, kinds: Mapping[VcdVar, str], directory: Path,
                   stem: str) -> dict[VcdVar, Path]:
    """Write the filter files of `sim.waves.gtkw_insn` the variables of `kinds` (variable ->
    ``"insn"`` / ``"console"``) need, into `directory`; returns variable -> filter file.

    The instruction table is the run's own (``<stem>.insn.txt``): every value those variables
    take in the dump, disassembled. Without a working objdump it is left out with a warning
    rather than failing the run that wrote the dump."""
    import warnings

    from . import gtkw_insn

    paths: dict[VcdVar, Path] = {}
    insn = [v for v, kind in kinds.items() if kind == "insn"]
    console = [v for v, kind in kinds.items() if kind == "console"]
    if insn:
        found = gtkw_insn.vcd_vector_values(vcd_path, [v.ident for v in insn])
        try:
            text = gtkw_insn.insn_filter_text(set().union(*found.values()),
                                              origin=vcd_path.name)
        except (OSError, subprocess.CalledProcessError) as e:
            warnings.warn(f"{vcd_path}: instruction bytes left undecoded, objdump failed: {e}",
                          stacklevel=3)
        else:
            paths.update(dict.fromkeys(insn, _write_text(directory / f"{stem}.insn.txt", text)))
    if console:
        path = _write_text(directory / "Console.txt", gtkw_insn.console_filter_text())
        paths.update(dict.fromkeys(console, path))
    return paths


def _write_text(path: Path, text: str) -> Path:
    """Write `text` to `path` unless it holds it already (a GTKWave session may have it open);
    returns the absolute path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
    return path.resolve()


# ---------------------------------------------------------------------------------------------
# The last run: `make waves`


#: Environment variable naming the pointer file instead of ``<build>/waves/LAST``: the test
#: suite points it into its temporary directory, so its runs never change what `make waves`
#: opens.
LAST_ENV = "VTX_WAVES_LAST"


def last_pointer(build_root: str | Path | None = None) -> Path:
    """The file naming the last run's VCD: ``<build_root>/waves/LAST`` for a `build_root` given,
    else ``$VTX_WAVES_LAST`` if set, else that of the default build root."""
    from sim.paths import resolve_build_root

    if build_root is None and os.environ.get(LAST_ENV):
        return Path(os.environ[LAST_ENV])
    return resolve_build_root(build_root) / "waves" / LAST_FILE


def record_last(vcd_path: str | Path, build_root: str | Path | None = None) -> Path:
    """Name `vcd_path` as the last run's waveform (`last_pointer`) for `make waves`."""
    pointer = last_pointer(build_root)
    pointer.parent.mkdir(parents=True, exist_ok=True)
    pointer.write_text(f"{Path(vcd_path).resolve()}\n")
    return pointer


def find_last_vcd(build_root: str | Path | None = None) -> tuple[Path | None, str]:
    """The VCD to open and how it was chosen: the one `last_pointer` names if it exists, else
    the newest ``*.vcd`` under ``<build>/waves/``."""
    from sim.paths import resolve_build_root

    waves_dir = resolve_build_root(build_root) / "waves"
    pointer = last_pointer(build_root)
    note = ""
    if pointer.is_file():
        text = pointer.read_text().strip()
        if text:
            named = Path(text)
            if not named.is_absolute():
                named = pointer.parent / named
            if named.is_file():
                return named, f"named by {pointer}"
            note = f"{pointer} names {named}, which does not exist; "
    candidates = list(waves_dir.rglob("*.vcd")) if waves_dir.is_dir() else []
    if not candidates:
        return None, note + f"no VCD under {waves_dir}"
    newest = max(candidates, key=lambda p: p.stat().st_mtime)
    return newest, note + f"the newest VCD under {waves_dir}"


def _viewer() -> str | None:
    """The GTKWave executable: ``$VTX_GTKWAVE`` if set (empty: none), else ``gtkwave`` on PATH."""
    name = os.environ.get("VTX_GTKWAVE", "gtkwave")
    if not name:
        return None
    return shutil.which(name)


def open_waves(vcd: str | Path | None = None, build_root: str | Path | None = None,
               out=None) -> int:
    """Open `vcd` (default: the last run's) with its .gtkw in GTKWave, or print where they are.

    Returns the exit status: 0 when the files were opened or printed (GTKWave is optional),
    1 when there is no waveform to open."""
    out = out if out is not None else sys.stdout
    if vcd is None:
        vcd, how = find_last_vcd(build_root)
        if vcd is None:
            print(f"make waves: {how}; run a simulation with waves first "
                  "(`make test WAVES=1`, or `vtx run --waves FILE.vcd`)", file=out)
            return 1
    else:
        vcd, how = Path(vcd), "given"
        if not vcd.is_file():
            print(f"make waves: {vcd}: no such file", file=out)
            return 1
    gtkw = vcd.with_suffix(".gtkw")
    if not gtkw.is_file():
        gtkw = write_gtkw(vcd, gtkw)
    print(f"waveform: {vcd} ({how})", file=out)
    print(f"save file: {gtkw}", file=out)
    viewer = _viewer()
    if viewer is None:
        print("gtkwave is not installed (it is optional): open the files above with a VCD "
              "viewer, e.g. `gtkwave " + str(gtkw) + "` once GTKWave is installed", file=out)
        return 0
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY")
                                                 or os.environ.get("WAYLAND_DISPLAY")):
        print(f"gtkwave is installed ({viewer}) but there is no display (DISPLAY is not set): "
              "open the files above on a machine with one", file=out)
        return 0
    out.flush()
    return subprocess.call([viewer, str(vcd), str(gtkw)])


# ---------------------------------------------------------------------------------------------
# A picture of a waveform (for the docs, where GTKWave is not at hand)


@dataclass(frozen=True)
class GtkwTrace:
    """One trace line of a .gtkw file: its signal path, data format and translate filter."""

    path: str
    datafmt: str
    filter_file: Path | None
    group: str


def read_gtkw_traces(gtkw_path: str | Path) -> list[GtkwTrace]:
    """The traces of a save file written by `write_gtkw`, with the filter file each one uses."""
    from vcd.gtkw import GTKWFlag

    translated, bin_, grp_begin, grp_end = (
        int(f.value) for f in (GTKWFlag.ftranslated, GTKWFlag.bin, GTKWFlag.grp_begin,
                               GTKWFlag.grp_end))
    traces: list[GtkwTrace] = []
    flags = 0
    filters: dict[int, Path] = {}
    current_filter: Path | None = None
    groups: list[str] = []
    for line in Path(gtkw_path).read_text().splitlines():
        if not line or line.startswith("[") or line.startswith("*"):
            continue
        if line.startswith("@"):
            flags = int(line[1:], 16)
            if not flags & translated:
                current_filter = None
        elif line.startswith("^") and not line.startswith("^>"):
            number, _, path = line[1:].partition(" ")
            filters[int(number)] = Path(path)
            current_filter = filters[int(number)]
        elif line.startswith("-"):
            if flags & grp_begin:
                groups.append(line[1:])
            elif flags & grp_end and groups:
                groups.pop()
        elif not line.startswith(("#", "+", "^>", "?")):
            fmt = "bin" if flags & bin_ else "hex"
            traces.append(GtkwTrace(line, fmt, current_filter if flags & translated
                                    else None, "/".join(groups)))
    return traces


def read_filter_file(path: str | Path) -> dict[str, str]:
    """A translate filter file as GTKWave reads it: value text (lower case) -> label."""
    table = {}
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        value, _, label = line.partition(" ")
        if label.strip():
            table[value.lower()] = label.strip()
    return table


def read_vcd_values(vcd_path: str | Path, paths: Sequence[str],
                    end: int | None = None) -> dict[str, list[tuple[int, int | None]]]:
    """Value changes ``[(time, value)]`` of the variables with the given dotted `paths` (value
    None for x/z), up to time `end`."""
    wanted = set(paths)
    by_id: dict[str, list[str]] = {}
    for var in read_vcd_vars(vcd_path):
        if var.path in wanted:
            by_id.setdefault(var.ident, []).append(var.path)
    changes: dict[str, list[tuple[int, int | None]]] = {p: [] for p in paths}
    time = 0
    in_header = True
    with open(vcd_path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if in_header:
                in_header = "$enddefinitions" not in line
                continue
            line = line.strip()
            if not line or line[0] == "$":
                continue  # $dumpvars / $end around the initial values
            head = line[0]
            if head == "#":
                time = int(line[1:])
                if end is not None and time > end:
                    break
                continue
            if head in "bB":
                bits, _, ident = line[1:].partition(" ")
                value = None if any(c in bits for c in "xXzZ") else int(bits, 2)
            elif head in "01xXzZ":
                bits, ident = head, line[1:]
                value = int(bits) if bits in "01" else None
            else:
                continue  # real values, strings: not drawn
            for path in by_id.get(ident, ()):
                changes[path].append((time, value))
    return changes


def render_png(
    vcd_path: str | Path,
    png_path: str | Path,
    gtkw_path: str | Path | None = None,
    signals: Sequence[str] = (),
    start: int = 0,
    end: int | None = None,
    title: str | None = None,
    time_unit: float = 1.0,
    time_label: str = "time",
) -> Path:
    """Draw the traces of `gtkw_path` (default: beside the VCD) matching the glob `signals` (all
    if empty) from `start` to `end`, values shown the way GTKWave would show them: through the
    translate filter file of the trace if it has one, else in hex. Needs matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vcd_path = Path(vcd_path)
    gtkw_path = Path(gtkw_path) if gtkw_path is not None else vcd_path.with_suffix(".gtkw")
    by_name = {v.gtkwave_name: v for v in read_vcd_vars(vcd_path)}
    # Each trace of the save file as the VCD variable it names (GTKWave's name -> dotted path).
    traces = [GtkwTrace(by_name[t.path].path, t.datafmt, t.filter_file, t.group)
              for t in read_gtkw_traces(gtkw_path) if t.path in by_name]
    widths = {v.path: v.width for v in by_name.values()}
    if signals:
        picked = []
        for pattern in signals:
            picked += [t for t in traces if fnmatch.fnmatchcase(t.path, pattern)
                       and t not in picked]
        traces = picked
    if not traces:
        raise ValueError(f"no trace of {gtkw_path} matches {list(signals)}")
    values = read_vcd_values(vcd_path, [t.path for t in traces], end)
    if end is None:
        end = max((c[-1][0] for c in values.values() if c), default=start + 1)
    tables = {t.filter_file: read_filter_file(t.filter_file) for t in traces if t.filter_file}

    def label(trace: GtkwTrace, value: int | None) -> str:
        if value is None:
            return "x"
        digits = max(1, -(-widths.get(trace.path, 4) // 4))
        text = f"{value:0{digits}x}"
        if trace.filter_file is not None:
            return tables[trace.filter_file].get(text, text)
        return text

    row_h = 0.42
    fig, ax = plt.subplots(figsize=(15, 0.9 + row_h * len(traces)), dpi=110)
    ax.set_xlim(start, end)
    ax.set_ylim(-0.5, len(traces) - 0.5)
    ax.invert_yaxis()
    names = []
    span = end - start
    for row, trace in enumerate(traces):
        names.append(trace.path.split(".", 1)[-1] + ("  [filter]" if trace.filter_file else ""))
        changes = values.get(trace.path, [])
        # Segments [t0, t1) with one value each, clipped to [start, end].
        segments = []
        current = None
        last_t = start
        for t, v in changes:
            if t <= start:
                current = v
                continue
            segments.append((last_t, min(t, end), current))
            last_t, current = t, v
            if t >= end:
                break
        if last_t < end:
            segments.append((last_t, end, current))
        y = row
        if widths.get(trace.path, 1) == 1:
            xs, ys = [], []
            for t0, t1, v in segments:
                level = y + 0.28 - 0.56 * (v or 0)
                xs += [t0, t1]
                ys += [level, level]
            ax.plot(xs, ys, color="#1a7f37", lw=1.2)
            continue
        for t0, t1, v in segments:
            text = label(trace, v)
            color = "#d0e8ff" if trace.filter_file else "#eeeeee"
            ax.fill_between([t0, t1], y - 0.3, y + 0.3, color=color, lw=0)
            ax.plot([t0, t1], [y - 0.3, y - 0.3], color="#555555", lw=0.6)
            ax.plot([t0, t1], [y + 0.3, y + 0.3], color="#555555", lw=0.6)
            ax.plot([t0, t0], [y - 0.3, y + 0.3], color="#555555", lw=0.6)
            if (t1 - t0) / span > 0.012:
                max_chars = max(1, int((t1 - t0) / span * 170))
                shown = text if len(text) <= max_chars else text[:max(1, max_chars - 1)] + "…"
                ax.text((t0 + t1) / 2, y, shown, ha="center", va="center", fontsize=7,
                        family="monospace", clip_on=True)
    ax.set_yticks(range(len(traces)))
    ax.set_yticklabels(names, fontsize=8, family="monospace")
    ticks = ax.get_xticks()
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{t / time_unit:g}" for t in ticks], fontsize=8)
    ax.set_xlim(start, end)
    ax.set_xlabel(time_label, fontsize=8)
    ax.grid(axis="x", color="#dddddd", lw=0.5)
    ax.set_axisbelow(True)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path)
    plt.close(fig)
    return png_path


def screenshot(gtkw_path: str | Path, png_path: str | Path, start: int | None = None,
               end: int | None = None, size: tuple[int, int] = (1500, 640),
               settle: float = 8.0) -> Path:
    """A real GTKWave screenshot of `gtkw_path` (zoomed to `start`..`end` in VCD time units):
    GTKWave on a virtual X display (``xvfb-run``), grabbed with ``xwd``, converted by netpbm
    (``xwdtopnm``, ``pnmtopng``). Debian: ``apt-get install gtkwave xvfb xauth x11-apps
    netpbm``. For the docs; nothing else needs it."""
    import tempfile

    for tool in ("xvfb-run", "gtkwave", "xwd", "xwdtopnm", "pnmtopng"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"screenshot needs {tool} on PATH")
    png_path = Path(png_path).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # Beside the original, so GTKWave's title shows the dump's path as for the original.
        gtkw_path = Path(gtkw_path).resolve()
        save = gtkw_path.with_name(f".{gtkw_path.stem}-screenshot.gtkw")
        kept = [line for line in gtkw_path.read_text().splitlines(keepends=True)
                if not line.startswith(("[size]", "[pos]"))]  # ours replace the file's
        save.write_text("".join(kept) + f"[size] {size[0]} {size[1]}\n[pos] 0 0\n")
        script = tmp / "zoom.tcl"
        script.write_text(f"gtkwave::setZoomRangeTimes {start} {end}\n"
                          if start is not None and end is not None else "")
        xwd = tmp / "shot.xwd"
        inner = (f"gtkwave -S {script} {save} >{tmp / 'gtkwave.log'} 2>&1 & "
                 f"sleep {settle}; xwd -root -silent >{xwd}; kill $!")
        try:
            subprocess.run(["xvfb-run", "-a", "-s", f"-screen 0 {size[0]}x{size[1]}x24",
                            "sh", "-c", inner], check=True, timeout=120)
        finally:
            save.unlink(missing_ok=True)
        pnm = subprocess.run(["xwdtopnm", str(xwd)], check=True, capture_output=True).stdout
        png = subprocess.run(["pnmtopng"], input=pnm, check=True, capture_output=True).stdout
    png_path.parent.mkdir(parents=True, exist_ok=True)
    png_path.write_bytes(png)
    return png_path


# ---------------------------------------------------------------------------------------------
# Command line


def configure(parser: argparse.ArgumentParser) -> None:
    """The actions of `vtx waves` (and ``python -m sim.waves``)."""
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    p_open = sub.add_parser("open", help="open the last run's waveform in GTKWave (make waves), "
                            "or print where it is")
    p_open.add_argument("vcd", nargs="?", type=Path)
    p_gtkw = sub.add_parser("gtkw", help="(re)write the .gtkw save file and filters of a VCD")
    p_gtkw.add_argument("vcd", type=Path)
    p_gtkw.add_argument("--verilog", type=Path, nargs="*", default=None)
    p_gtkw.add_argument("--toplevel")
    p_gtkw.add_argument("-o", "--output", type=Path)
    p_render = sub.add_parser("render", help="draw traces of a VCD + .gtkw into a PNG")
    p_render.add_argument("vcd", type=Path)
    p_render.add_argument("-o", "--output", type=Path, required=True)
    p_render.add_argument("--gtkw", type=Path)
    p_render.add_argument("--signals", nargs="*", default=[])
    p_render.add_argument("--start", type=int, default=0)
    p_render.add_argument("--end", type=int)
    p_render.add_argument("--title")
    p_render.add_argument("--time-unit", type=float, default=1.0)
    p_render.add_argument("--time-label", default="time")
    p_shot = sub.add_parser("screenshot", help="a real GTKWave screenshot (xvfb) into a PNG")
    p_shot.add_argument("gtkw", type=Path)
    p_shot.add_argument("-o", "--output", type=Path, required=True)
    p_shot.add_argument("--start", type=int)
    p_shot.add_argument("--end", type=int)
    p_shot.add_argument("--size", default="1500x640")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """`vtx waves`."""
    parser = subparsers.add_parser("waves", help="open, write or draw waveforms (GTKWave)",
                                   description=__doc__.split("\n")[0])
    configure(parser)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """One action; a missing or unreadable input is a usage error (exit 2), not a traceback."""
    for name in ("vcd", "gtkw"):
        path = getattr(args, name, None)
        if path is not None and not path.is_file():
            print(f"vtx waves {args.action}: error: {path}: no such file", file=sys.stderr)
            return 2
    try:
        if args.action == "open":
            return open_waves(args.vcd)
        if args.action == "gtkw":
            print(write_gtkw(args.vcd, args.output, toplevel=args.toplevel,
                             verilog=args.verilog))
            return 0
        if args.action == "screenshot":
            width, _, height = args.size.partition("x")
            print(screenshot(args.gtkw, args.output, args.start, args.end,
                             (int(width), int(height))))
            return 0
        print(render_png(args.vcd, args.output, args.gtkw, args.signals, args.start, args.end,
                         args.title, args.time_unit, args.time_label))
        return 0
    except (ValueError, RuntimeError) as e:
        print(f"vtx waves {args.action}: error: {e}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    from sim.cli import standalone_main
    return standalone_main("python -m sim.waves", __doc__.split("\n")[0], configure, run, argv,
                           raw_description=False)
