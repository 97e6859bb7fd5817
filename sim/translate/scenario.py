"""Input and output of `vtx translate SCENARIO.json` (docs/translation-contract.md).

`parse_scenario` checks the input and raises `ScenarioError` with a message that starts with the
path of the offending field (``requests[3].access: unknown access type 'exec' ...``); the CLI
prints it and exits with status 2 without simulating anything. `format_output_lines` produces the
output lines. `scenario_to_json` / `dump_scenario` go the other way (examples, random scenarios).

Input rules enforced here (the spec's list, made precise):

* numbers are JSON integers (not booleans or floats, not negative) or ``"0x"`` hex strings;
  every number must fit in 64 bits;
* required fields: ``ept`` (true/false), ``guest`` with ``cr0``, ``cr3``, ``cr4``, ``efer``,
  ``memory`` (may be empty), ``requests`` (may be empty) with ``gla``, ``access``, ``cpl`` each;
  ``eptp`` when ``ept`` is true (ignored, not even parsed, when ``ept`` is false);
  unknown fields are errors (typos must not pass silently), except a top-level ``comment``;
* ``eptp`` (with EPT) must pass `rtl.arch.eptp_problem` (4-level walk, memory type 0 or 6,
  bits 11:7 and 63:MAXPHYADDR clear);
* ``guest.cr0``/``cr4``/``efer`` must fit in 32 bits (the width of the design's context);
  ``guest.cr3`` must be below 2^MAXPHYADDR; CR0.PG=1 needs CR0.PE=1, CR4.PAE=1 and EFER.LME=1
  (only IA-32e paging is supported);
* ``memory``: [address, value] pairs, addresses 8-byte aligned, below 2^MAXPHYADDR, no address
  twice; values below 2^64;
* ``requests[i].access`` is ``read``, ``write`` or ``fetch``; ``cpl`` is 0..3; ``gla`` below 2^64,
  and below 2^32 when guest paging is off (CR0.PG=0). A non-canonical GLA with paging on is valid
  input (its outcome is ``general_protection``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from rtl.arch import (
    ACCESS_NAMES,
    CR0_PE,
    CR0_PG,
    CR4_PAE,
    EFER_LME,
    MAXPHYADDR,
    eptp_problem,
)
from tb.model.translation import Context, Memory, Request, Result, TranslationModel, hex_str

__all__ = [
    "ScenarioError",
    "Scenario",
    "parse_number",
    "parse_scenario",
    "load_scenario",
    "scenario_to_json",
    "dump_scenario",
    "run_reference",
    "format_output_lines",
]

_U64_LIMIT = 1 << 64
_HEX = re.compile(r"0x[0-9a-fA-F]+\Z")
_ACCESS_BY_NAME = {name: access for access, name in ACCESS_NAMES.items()}


class ScenarioError(ValueError):
    """Bad `vtx translate` input; the message names the field."""


@dataclass
class Scenario:
    """A checked scenario: the context, the initial memory words and the requests."""
    context: Context
    memory: dict[int, int] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)

    def make_memory(self) -> Memory:
        return Memory(self.memory)

    def model(self) -> TranslationModel:
        return TranslationModel(self.make_memory(), self.context, self.requests)


def parse_number(value, where: str, *, limit: int = _U64_LIMIT) -> int:
    """A JSON integer or a ``"0x"`` hex string, 0 <= n < `limit` (default 2^64)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ScenarioError(f'{where}: expected an integer or a "0x" hex string, '
                            f"got {json.dumps(value)}")
    if isinstance(value, str):
        if not _HEX.match(value):
            raise ScenarioError(f'{where}: {json.dumps(value)} is not a "0x" hex string')
        n = int(value, 16)
    else:
        n = value
        if n < 0:
            raise ScenarioError(f"{where}: negative number {n}")
    if n >= limit:
        if limit == _U64_LIMIT:
            raise ScenarioError(f"{where}: {n:#x} does not fit in 64 bits")
        raise ScenarioError(f"{where}: {n:#x} does not fit in {limit.bit_length() - 1} bits")
    return n


def _object(value, where: str, required: Iterable[str], optional: Iterable[str] = ()) -> dict:
    if not isinstance(value, dict):
        raise ScenarioError(f"{where or 'scenario'}: expected a JSON object")
    required, optional = list(required), list(optional)
    prefix = f"{where}." if where else ""
    for key in value:
        if key not in required and key not in optional:
            expected = ", ".join(required + optional)
            raise ScenarioError(f"{prefix}{key}: unknown field (expected {expected})")
    for key in required:
        if key not in value:
            raise ScenarioError(f"{prefix}{key}: required field is missing")
    return value


def _address(value, where: str, maxphyaddr: int, what: str = "address") -> int:
    n = parse_number(value, where)
    if n >= 1 << maxphyaddr:
        raise ScenarioError(f"{where}: {what} {n:#x} is out of range (MAXPHYADDR = {maxphyaddr}, "
                            f"so it must be below {1 << maxphyaddr:#x})")
    return n


def _no_duplicate_keys(pairs):
    d = {}
    for key, value in pairs:
        if key in d:
            raise ScenarioError(f"{key}: duplicate key in a JSON object")
        d[key] = value
    return d


def parse_scenario(source, *, maxphyaddr: int = MAXPHYADDR) -> Scenario:
    """Check a scenario (JSON text, bytes, or the already-decoded object); return a `Scenario`."""
    if isinstance(source, (str, bytes, bytearray)):
        try:
            doc = json.loads(source, object_pairs_hook=_no_duplicate_keys,
                             parse_constant=_reject_constant)
        except json.JSONDecodeError as e:
            raise ScenarioError(f"invalid JSON: {e.msg} at line {e.lineno} column {e.colno}") \
                from None
    else:
        doc = source

    top = _object(doc, "", ("ept", "guest", "memory", "requests"), ("eptp", "comment"))
    if not isinstance(top["ept"], bool):
        raise ScenarioError(f"ept: expected true or false, got {json.dumps(top['ept'])}")
    ept = top["ept"]
    eptp = 0
    if ept:
        if "eptp" not in top:
            raise ScenarioError('eptp: required field is missing (needed when "ept" is true)')
        eptp = parse_number(top["eptp"], "eptp")
        problem = eptp_problem(eptp, maxphyaddr)
        if problem is not None:
            raise ScenarioError(f"eptp: {problem}")

    guest = _object(top["guest"], "guest", ("cr0", "cr3", "cr4", "efer"))
    regs = {}
    for name in ("cr0", "cr4", "efer"):
        n = parse_number(guest[name], f"guest.{name}")
        if n >> 32:
            raise ScenarioError(f"guest.{name}: {n:#x} has bits above bit 31 set (reserved; the "
                                f"design's {name} is 32 bits wide)")
        regs[name] = n
    regs["cr3"] = _address(guest["cr3"], "guest.cr3", maxphyaddr)
    paging = bool(regs["cr0"] & CR0_PG)
    if paging:
        if not regs["cr0"] & CR0_PE:
            raise ScenarioError("guest.cr0: PG=1 needs PE=1")
        if not regs["cr4"] & CR4_PAE:
            raise ScenarioError("guest.cr4: unsupported paging mode: CR0.PG=1 needs CR4.PAE=1 "
                                "(only IA-32e 4-level paging is supported)")
        if not regs["efer"] & EFER_LME:
            raise ScenarioError("guest.efer: unsupported paging mode: CR0.PG=1 needs EFER.LME=1 "
                                "(only IA-32e 4-level paging is supported)")
    context = Context(cr0=regs["cr0"], cr3=regs["cr3"], cr4=regs["cr4"], efer=regs["efer"],
                      eptp=eptp, ept_enable=ept, maxphyaddr=maxphyaddr)

    if not isinstance(top["memory"], list):
        raise ScenarioError("memory: expected a list of [address, value] pairs")
    memory: dict[int, int] = {}
    first_seen: dict[int, int] = {}
    for i, pair in enumerate(top["memory"]):
        where = f"memory[{i}]"
        if not isinstance(pair, list) or len(pair) != 2:
            raise ScenarioError(f"{where}: expected an [address, value] pair")
        addr = _address(pair[0], f"{where}[0]", maxphyaddr)
        if addr & 7:
            raise ScenarioError(f"{where}[0]: address {addr:#x} is not 8-byte aligned")
        if addr in first_seen:
            raise ScenarioError(f"{where}[0]: address {addr:#x} appears twice "
                                f"(also memory[{first_seen[addr]}])")
        first_seen[addr] = i
        memory[addr] = parse_number(pair[1], f"{where}[1]")

    if not isinstance(top["requests"], list):
        raise ScenarioError("requests: expected a list of request objects")
    requests = []
    for i, req in enumerate(top["requests"]):
        where = f"requests[{i}]"
        req = _object(req, where, ("gla", "access", "cpl"))
        gla = parse_number(req["gla"], f"{where}.gla")
        if not paging and gla >> 32:
            raise ScenarioError(f"{where}.gla: {gla:#x} is out of range: with guest paging off "
                                f"(CR0.PG=0) the GLA must be below 2^32")
        name = req["access"]
        if not isinstance(name, str) or name not in _ACCESS_BY_NAME:
            shown = f"'{name}'" if isinstance(name, str) else json.dumps(name)
            raise ScenarioError(f"{where}.access: unknown access type {shown} "
                                f"(expected read, write or fetch)")
        cpl = parse_number(req["cpl"], f"{where}.cpl")
        if cpl > 3:
            raise ScenarioError(f"{where}.cpl: {cpl} is not a privilege level (expected 0 to 3)")
        requests.append(Request(gla, _ACCESS_BY_NAME[name], cpl))

    return Scenario(context, memory, requests)


def _reject_constant(name):
    raise ScenarioError(f"invalid JSON: {name} is not a number")


def load_scenario(path, *, maxphyaddr: int = MAXPHYADDR) -> Scenario:
    """Read and check a scenario file (an unreadable file is a `ScenarioError` too)."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ScenarioError(f"{path}: cannot read: {e}") from None
    return parse_scenario(text, maxphyaddr=maxphyaddr)


def scenario_to_json(context: Context, memory, requests: Iterable[Request]) -> dict:
    """The input-format object of a scenario (hex strings; memory sorted, zero words omitted)."""
    words = memory.items() if isinstance(memory, (Memory, Mapping)) else memory
    doc: dict = {"ept": bool(context.ept_enable)}
    if context.ept_enable:
        doc["eptp"] = hex_str(context.eptp)
    doc["guest"] = {"cr0": hex_str(context.cr0), "cr3": hex_str(context.cr3),
                    "cr4": hex_str(context.cr4), "efer": hex_str(context.efer)}
    doc["memory"] = [[hex_str(a), hex_str(v)] for a, v in sorted(words) if v]
    doc["requests"] = [{"gla": hex_str(r.gla), "access": ACCESS_NAMES[r.access], "cpl": r.cpl}
                       for r in requests]
    return doc


def dump_scenario(doc: dict) -> str:
    """Scenario text with one memory word and one request per line."""
    lines = ["{"]
    keys = list(doc)
    for n, key in enumerate(keys):
        comma = "," if n + 1 < len(keys) else ""
        value = doc[key]
        if key in ("memory", "requests") and value:
            lines.append(f"  {json.dumps(key)}: [")
            for i, item in enumerate(value):
                lines.append(f"    {json.dumps(item)}{',' if i + 1 < len(value) else ''}")
            lines.append(f"  ]{comma}")
        else:
            lines.append(f"  {json.dumps(key)}: {json.dumps(value)}{comma}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def run_reference(scenario: Scenario) -> tuple[list[Result], list[tuple[int, int]]]:
    """Run the reference model over a scenario: (results, memory_after)."""
    model = scenario.model()
    results = model.run()
    return results, model.memory_after()


def format_output_lines(results: Iterable[Result], memory_after, cycles=None) -> list[str]:
    """The output lines: one JSON object per request in order, then ``{"memory_after": ...}``.

    `memory_after` is a mapping or (addr, value) pairs of every word that changed; it is printed
    sorted by address. `cycles`, when given, is a sequence of per-request cycle counts (shown on
    ``ok`` lines only, as the spec's example does).
    """
    lines = []
    for i, result in enumerate(results):
        c = None if cycles is None else cycles[i]
        lines.append(json.dumps(result.to_json(i, c)))
    words = memory_after.items() if isinstance(memory_after, Mapping) else memory_after
    lines.append(json.dumps({"memory_after": [[hex_str(a), hex_str(v)]
                                              for a, v in sorted(words)]}))
    return lines
