"""GTKWave translate filters generated from the RTL's own enums, and which trace gets which.

Verilator's VCD carries bit vectors only: the `amaranth.lib.enum.Enum` a signal was declared with
(exit reasons, VM-instruction errors, walker and core states, VMX operations, ...) is gone. GTKWave
can show names again through a *translate filter file* per enum: lines ``<value> <name>``, where
the value is written exactly as GTKWave prints the trace (hex, one digit per nibble of the trace's
width, zero-padded). This module

* collects the enums of the RTL (`rtl_enums`: every `amaranth.lib.enum.Enum` defined in a module of
  the `rtl` package; nothing is copied, the tables are read from the classes),
* finds which VCD variable carries which enum (`EnumDecoder`). The first source of truth is the
  generated Verilog: Amaranth 0.5 puts ``(* enum_base_type = "ExitReason" *)`` and one
  ``(* enum_value_<bits> = "NAME" *)`` per member on every wire whose shape is an enum (signals,
  struct fields of views, ports), and Amaranth names each Verilog module after its place in the
  hierarchy (``soc.core``), which is also its VCD scope. Signals declared as plain vectors (a
  top-level ``vm_exit_reason = Out(16)``) or a VCD without its Verilog fall back to `NAME_RULES`,
  glob patterns on the signal's path, applied only when the width matches the enum's,
* and writes one filter file per enum (`write_filter_files`), into the waves directory of the run
  (generated every time, never checked in).
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib
import pkgutil
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from vcd.gtkw import make_translation_filter

__all__ = [
    "EnumTable", "rtl_enums", "NAME_RULES", "VerilogEnum", "verilog_enums", "EnumDecoder",
    "write_filter_files", "filter_file_name", "verilog_ports", "REQUIRED_ENUMS", "widened",
    "field_tables",
]

#: Enums the waveforms must decode (issue 5, section 4); tests check each one has a filter.
#: ``rtl.soc.RunStop`` joins once the SoC exists (`rtl_enums` picks it up by itself).
REQUIRED_ENUMS = (
    "rtl.arch.vmx.ExitReason", "rtl.arch.vmx.VmInstructionError", "rtl.arch.vmx.VmxOp",
    "rtl.arch.vmx.VmxResult", "rtl.arch.vmx.VmxMode",
    "rtl.arch.paging.Access", "rtl.arch.paging.Outcome", "rtl.arch.paging.PageSize",
    "rtl.arch.paging.Invalidation",
    "rtl.translation.walker.WalkState",
    "rtl.core.core_layouts.CoreState", "rtl.core.core_layouts.StopKind",
    "rtl.core.core_layouts.NeedsUnit", "rtl.core.layouts.InsnClass",
)


@dataclass(frozen=True)
class EnumTable:
    """The members of one enum: what a filter file lists."""

    name: str  # class name, as Amaranth writes it into ``enum_base_type``
    width: int  # bits of the enum's shape
    members: tuple[tuple[int, str], ...]  # (value, member name), by value
    origin: str = ""  # ``module.ClassName`` of the Python enum, or where the table came from

    @classmethod
    def from_enum(cls, enum_cls) -> EnumTable:
        from amaranth.hdl import Shape

        shape = Shape.cast(enum_cls)
        members = tuple(sorted((int(m.value), m.name) for m in enum_cls))
        return cls(enum_cls.__name__, shape.width, members,
                   f"{enum_cls.__module__}.{enum_cls.__qualname__}")

    def filter_text(self) -> str:
        """The translate filter file: a comment naming the enum, then ``<hex> <NAME>`` lines."""
        translations = [(value & ((1 << self.width) - 1), name) for value, name in self.members]
        body = make_translation_filter(translations, datafmt="hex", size=self.width)
        return f"# {self.origin or self.name}: {self.width}-bit enum, values in hex\n{body}"

    def same_members(self, other: EnumTable) -> bool:
        return self.width == other.width and self.members == other.members


def _walk_rtl_modules(skipped: list[str]) -> Iterable[str]:
    import rtl

    yield "rtl"
    for info in pkgutil.walk_packages(rtl.__path__, "rtl.", onerror=skipped.append):
        yield info.name


def rtl_enums(modules: Iterable[str] | None = None) -> dict[str, EnumTable]:
    """Every `amaranth.lib.enum.Enum` (with a shape) defined in the RTL, by ``module.Class``.

    `modules` defaults to every module of the `rtl` package. A module that does not import (a
    block being written) is skipped; `rtl_enums.skipped` lists those of the last call.
    """
    from amaranth.lib import enum as aenum

    tables: dict[str, EnumTable] = {}
    skipped: list[str] = []
    for module_name in (modules if modules is not None else _walk_rtl_modules(skipped)):
        try:
            module = importlib.import_module(module_name)
        except Exception as e:  # noqa: BLE001 -- any import error: report, do not stop
            skipped.append(f"{module_name}: {type(e).__name__}: {e}")
            continue
        for obj in vars(module).values():
            if (isinstance(obj, aenum.EnumType) and obj.__module__ == module_name
                    and getattr(obj, "_amaranth_shape_", None) is not None and len(obj)):
                table = EnumTable.from_enum(obj)
                tables.setdefault(table.origin, table)
    rtl_enums.skipped = skipped
    return tables


rtl_enums.skipped = []


def widened(table: EnumTable, name: str, width: int,
            flags: Mapping[int, str] | None = None) -> EnumTable:
    """`table` as a `width`-bit field (the 32-bit VMCS exit-reason and VM-instruction-error
    fields hold these enums in their low bits); each of `flags` (mask -> prefix) adds the
    members with those bits set, named ``PREFIX NAME``."""
    members = list(table.members)
    for flag, prefix in (flags or {}).items():
        members += [(value | flag, f"{prefix} {label}") for value, label in table.members]
    return EnumTable(name, width, tuple(sorted(members)), f"{table.origin} ({width}-bit field)")


def field_tables(enums: Mapping[str, EnumTable]) -> dict[str, EnumTable]:
    """Derived tables for the VMCS fields that hold an enum in a wider field."""
    derived = {}
    reason = enums.get("rtl.arch.vmx.ExitReason")
    if reason is not None:
        from rtl.arch.vmx import EXIT_REASON_ENTRY_FAILURE

        # Bit 31 of the exit-reason field: VM-entry failure (SDM 24.9.1).
        derived["ExitReasonField"] = widened(reason, "ExitReasonField", 32,
                                             {EXIT_REASON_ENTRY_FAILURE: "ENTRY_FAILURE"})
    error = enums.get("rtl.arch.vmx.VmInstructionError")
    if error is not None:
        derived["VmInstructionErrorField"] = widened(error, "VmInstructionErrorField", 32)
    return derived

#: Fallback matching for signals whose Verilog wire carries no enum (plain vectors, or no Verilog
#: at hand): (glob on the signal's path below the design's top scope, enum class name). A rule
#: only applies when the signal is exactly as wide as the enum. Scopes are Amaranth submodule
#: names; the SoC's are those of `rtl.soc.Soc` (core, vmx, translation, ...), matched loosely.
NAME_RULES: tuple[tuple[str, str], ...] = (
    # VMX: top-level status ports and instruction-port fields
    ("*exit_reason", "ExitReason"),
    ("*exit_reason", "ExitReasonField"),
    ("*exit_reason.basic", "ExitReason"),
    ("*.reason", "ExitReason"),
    ("*instruction_error", "VmInstructionError"),
    ("*vm_instruction_error", "VmInstructionError"),
    ("*vm_instruction_error", "VmInstructionErrorField"),
    ("*result__payload.error", "VmInstructionError"),
    ("vmx_mode", "VmxMode"),
    ("*.vmx_mode", "VmxMode"),
    ("*vmx*.mode", "VmxMode"),
    ("*instr__payload.op", "VmxOp"),
    ("*vmx_op", "VmxOp"),
    ("*result__payload.kind", "VmxResult"),
    ("*vmx_result", "VmxResult"),
    # translation
    ("*.outcome", "Outcome"),
    ("*outcome", "Outcome"),
    ("*.page_size", "PageSize"),
    ("*page_size", "PageSize"),
    ("*inval*.kind", "Invalidation"),
    ("*inv.kind", "Invalidation"),
    ("*.access", "Access"),
    ("*mem_req__payload.kind", "Access"),
    ("*walker.w[0-9]_state", "WalkState"),
    ("*walker.w[0-9][0-9]_state", "WalkState"),
    ("*walker.*next_state", "WalkState"),
    # core
    ("core.state", "CoreState"),
    ("*.core.state", "CoreState"),
    ("core.fsm", "CoreState"),
    ("*.core.fsm", "CoreState"),
    ("core_state", "CoreState"),
    ("*exc*.kind", "StopKind"),
    ("*stop_kind", "StopKind"),
    ("*exc*.unit", "NeedsUnit"),
    ("*needs_unit", "NeedsUnit"),
    ("*insn.cls", "InsnClass"),
    ("*insn_class", "InsnClass"),
    # SoC
    ("stop", "RunStop"),
    ("*.stop", "RunStop"),
)


@dataclass(frozen=True)
class VerilogEnum:
    """An enum-typed wire of the generated Verilog."""

    module: tuple[str, ...]  # Amaranth's hierarchical module name, split: ("soc", "core")
    wire: str  # wire name without the escape: ``done__payload.outcome``
    table: EnumTable


_ATTR = re.compile(r'\(\*\s*(\w+)\s*=\s*"((?:[^"\\]|\\.)*)"\s*\*\)')
_DECL = re.compile(
    r"^\s*(?:input|output|inout|wire|reg)\b(?:\s+(?:wire|reg|signed))*\s*(?:\[[^\]]*\]\s*)?"
    r"(\\\S+|[A-Za-z_][\w$]*)"
)
_MODULE = re.compile(r"^\s*module\s+(\\\S+|[A-Za-z_][\w$]*)")


def _unescape(name: str) -> str:
    return name[1:] if name.startswith("\\") else name


def verilog_enums(paths: str | Path | Sequence[str | Path]) -> list[VerilogEnum]:
    """The enum-typed wires declared in Verilog written by Amaranth (via Yosys)."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    found: list[VerilogEnum] = []
    for path in paths:
        module: tuple[str, ...] = ()
        attrs: dict[str, str] = {}
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if "(*" in line:
                    attrs.update(_ATTR.findall(line))
                    if line.rstrip().endswith("*)"):
                        continue  # attributes stand on lines of their own before the item
                m = _MODULE.match(line)
                if m:
                    module = tuple(_unescape(m.group(1)).split("."))
                    attrs = {}
                    continue
                m = _DECL.match(line)
                if m and "enum_base_type" in attrs:
                    members = []
                    width = None
                    for key, value in attrs.items():
                        if key.startswith("enum_value_"):
                            bits = key[len("enum_value_"):]
                            width = len(bits)
                            members.append((int(bits, 2), value))
                    if width:
                        table = EnumTable(attrs["enum_base_type"], width, tuple(sorted(members)),
                                          "generated Verilog")
                        found.append(VerilogEnum(module, _unescape(m.group(1)), table))
                if line.strip():
                    attrs = {}
    return found


_PORT_DECL = re.compile(
    r"^\s*(?:input|output|inout)\b(?:\s+(?:wire|reg|signed))*\s*(?:\[[^\]]*\]\s*)?"
    r"(\\\S+|[A-Za-z_][\w$]*)"
)


def verilog_ports(paths: str | Path | Sequence[str | Path]) -> dict[tuple[str, ...], list[str]]:
    """The ports of each module of Amaranth-generated Verilog, by hierarchical module name."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    ports: dict[tuple[str, ...], list[str]] = {}
    for path in paths:
        module: tuple[str, ...] = ()
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                m = _MODULE.match(line)
                if m:
                    module = tuple(_unescape(m.group(1)).split("."))
                    ports.setdefault(module, [])
                    continue
                m = _PORT_DECL.match(line)
                if m and module:
                    ports[module].append(_unescape(m.group(1)))
    return ports


class EnumDecoder:
    """Which enum (if any) a VCD variable carries.

    verilog: the generated Verilog of the design (its ``enum_*`` attributes decide first).
    enums: the Python enums by ``module.Class`` (default: `rtl_enums()`); a Verilog table is
    replaced by the Python one of the same name and members, so filter files name their origin.
    rules: name patterns for the rest (default `NAME_RULES`).
    """

    def __init__(
        self,
        verilog: str | Path | Sequence[str | Path] | None = None,
        enums: Mapping[str, EnumTable] | None = None,
        rules: Sequence[tuple[str, str]] = NAME_RULES,
    ):
        self.enums = dict(rtl_enums() if enums is None else enums)
        self.enums.update(field_tables(self.enums))
        by_name: dict[str, list[EnumTable]] = {}
        for table in self.enums.values():
            by_name.setdefault(table.name, []).append(table)
        self._by_name = by_name
        self.rules = tuple(rules)
        self._wires: dict[tuple[tuple[str, ...], str], EnumTable] = {}
        for item in verilog_enums(verilog) if verilog else ():
            self._wires[(item.module, item.wire)] = self._canonical(item.table)

    def _canonical(self, table: EnumTable) -> EnumTable:
        for candidate in self._by_name.get(table.name, ()):
            if candidate.same_members(table):
                return candidate
        return table

    @property
    def has_verilog(self) -> bool:
        return bool(self._wires)

    def lookup(self, scope: Sequence[str], name: str, width: int,
               relpath: str | None = None) -> EnumTable | None:
        """The enum of variable `name` (`width` bits) in VCD scope `scope`, or None.

        relpath: the variable's dotted path below the design's top scope (what `NAME_RULES`
        match); default: the whole path.
        """
        if width < 2:
            return None  # GTKWave draws single bits as lines: no value to translate
        scope = tuple(scope)
        for start in range(len(scope)):
            table = self._wires.get((scope[start:], name))
            if table is not None:
                return table if table.width == width else None
        path = relpath if relpath is not None else ".".join((*scope, name))
        for pattern, enum_name in self.rules:
            if fnmatch.fnmatchcase(path, pattern):
                for table in self._by_name.get(enum_name, ()):
                    if table.width == width:
                        return table
        return None


def filter_file_name(table: EnumTable) -> str:
    """``ExitReason.txt``; enums of the same name but other members get a hash suffix."""
    return f"{table.name}.txt"


def write_filter_files(tables: Iterable[EnumTable], directory: str | Path) -> dict[EnumTable, Path]:
    """Write one translate filter file per table into `directory`; returns table -> path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written: dict[EnumTable, Path] = {}
    used: dict[str, EnumTable] = {}
    for table in tables:
        if table in written:
            continue
        name = filter_file_name(table)
        if name in used and not used[name].same_members(table):
            digest = hashlib.sha1(repr(table.members).encode()).hexdigest()[:8]
            name = f"{table.name}-{table.width}b-{digest}.txt"
        used.setdefault(name, table)
        path = directory / name
        text = table.filter_text()
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
        written[table] = path.resolve()
    return written
