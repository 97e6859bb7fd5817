"""GTKWave translate filters for instruction bytes and console characters.

`sim.waves.write_gtkw` attaches two more kinds of filter file besides the enum tables of
`sim.waves.gtkw_filters`:

* **instructions**: a 120-bit signal that holds an instruction's bytes (the SoC's
  ``retired_bytes`` port, byte 0 = the first byte in the low bits, as `rtl.core` packs its
  15-byte window; the core's fetch window ``core.window`` / ``core.decoder.window``) shows as the
  instruction in AT&T syntax (``mov $0x10,%eax``), as ``vtx run --trace`` prints it. The table
  depends on the run, so it is generated from the dump: the VCD is scanned once for the values
  those signals take (`vcd_vector_values`, a byte search over the memory-mapped file, about
  0.2 s for the demo's 90 MB), and all of them are disassembled in one ``objdump`` run
  (`disassemble`). x86 instructions delimit themselves, so the first instruction of the
  15 bytes is the one, whatever follows it in the window: ``retired_len`` is not needed.
  Near branches are shown relative to the instruction (``jne .-0x3``): the same bytes can
  retire at any RIP, and a filter maps a value to one text.
* **console**: the 8-bit ``console_data`` port shows as a character: printable ASCII as itself,
  space as ``' '`` (a filter label cannot be blank), others as C escapes (``\\n``, ``\\x00``).

A filter file is GTKWave's ``<value> <label>`` lines, the value as GTKWave prints the trace in
hex (zero-padded to the width's nibbles; GTKWave compares case-insensitively).
"""

from __future__ import annotations

import fnmatch
import mmap
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from rtl.core.layouts import MAX_INSN_BYTES

__all__ = [
    "INSN_BYTES", "INSN_WIDTH", "INSN_RULES", "CONSOLE_RULES", "filter_kind",
    "vcd_vector_values", "disassemble", "insn_filter_text", "console_label",
    "console_filter_text",
]

#: Bytes of an instruction window: the core's (the x86 maximum instruction length).
INSN_BYTES = MAX_INSN_BYTES
INSN_WIDTH = 8 * INSN_BYTES

#: Signals that hold instruction bytes: globs on the path below the design's top scope
#: (``retired_bytes`` at the top, ``core.retired_bytes`` inside), for `INSN_WIDTH`-bit signals.
INSN_RULES = ("retired_bytes", "*.retired_bytes", "core.window", "*.core.window",
              "*core.decoder.window", "*core.decoder.raw")

#: The console port's data byte, for 8-bit signals.
CONSOLE_RULES = ("console_data", "*.console_data")

#: Bytes per window in the blob given to objdump: the window, then NOPs. Whatever the bytes
#: after the first instruction decode as, an instruction starting inside the window (offset
#: <= 14) ends by offset 29 (15 bytes at most), and from there the one-byte NOPs bring the
#: linear sweep back to the next window's start.
_STRIDE = 48
_NOP = 0x90


def filter_kind(relpath: str, width: int) -> str | None:
    """``"insn"`` or ``"console"`` if the signal at `relpath` (below the design's top scope,
    `width` bits) gets one of these filters, else None."""
    if width == INSN_WIDTH and any(fnmatch.fnmatchcase(relpath, p) for p in INSN_RULES):
        return "insn"
    if width == 8 and any(fnmatch.fnmatchcase(relpath, p) for p in CONSOLE_RULES):
        return "console"
    return None


def vcd_vector_values(vcd_path: str | Path, idents: Iterable[str]) -> dict[str, set[int]]:
    """The distinct values (x/z-free) each vector variable (by VCD identifier) takes in the dump.

    A vector's value change is the line ``b<bits> <ident>``, so each occurrence of
    ``" <ident>\\n"`` after the header ends one (no other kind of line has a space before an
    identifier and a newline after it). Searching the memory-mapped file for those bytes costs
    a fraction of a second even for a 90 MB dump, where reading it line by line in Python would
    take several seconds.
    """
    values: dict[str, set[int]] = {}
    path = Path(vcd_path)
    if path.stat().st_size == 0:
        return {ident: set() for ident in idents}
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        body = mm.find(b"$enddefinitions")
        body = 0 if body < 0 else body
        for ident in dict.fromkeys(idents):
            found: set[bytes] = set()
            needle = b" " + ident.encode() + b"\n"
            pos = mm.find(needle, body)
            while pos >= 0:
                line = mm.rfind(b"\n", body, pos) + 1
                if mm[line:line + 1] in (b"b", b"B"):
                    found.add(mm[line + 1:pos])
                pos = mm.find(needle, pos + len(needle))
            values[ident] = {int(bits, 2) for bits in found
                             if bits and not bits.strip(b"01")}  # x/z bits: no number
    return values


_LINE = re.compile(r"^\s*([0-9a-f]+):\t(.*)$")
_BRANCH = re.compile(r"^((?:\S+ )*?(?:call|jmp|j[a-z]+|loop[a-z]*|xbegin)) 0x([0-9a-f]+)$")


def _tidy(text: str, address: int) -> str:
    """objdump's text of the instruction at `address` as a label: blanks collapsed, the
    ``# address`` comment of RIP-relative operands dropped (the address is the blob's, not the
    run's), a near branch's target written relative to the instruction (``.+0x1b``)."""
    text = " ".join(text.split("#", 1)[0].split())
    match = _BRANCH.match(text)
    if match:
        delta = (int(match.group(2), 16) - address + (1 << 63)) % (1 << 64) - (1 << 63)
        text = f"{match.group(1)} .{'-' if delta < 0 else '+'}{abs(delta):#x}"
    return text


def disassemble(windows: Sequence[bytes], objdump: str | None = None) -> list[str | None]:
    """The first instruction of each window (up to 15 bytes, byte 0 first) in AT&T syntax,
    from one ``objdump`` run over all of them; None where objdump listed nothing there.
    Raises OSError / subprocess.CalledProcessError if objdump cannot run."""
    if not windows:
        return []
    objdump = objdump or shutil.which("objdump") or "objdump"
    blob = bytearray()
    for window in windows:
        blob += window[:INSN_BYTES].ljust(_STRIDE, bytes([_NOP]))
    with tempfile.NamedTemporaryFile(prefix="vtx-insn-", suffix=".bin") as f:
        f.write(blob)
        f.flush()
        proc = subprocess.run(
            [objdump, "-D", "-z", "--no-show-raw-insn", "-b", "binary", "-m", "i386:x86-64",
             f.name], capture_output=True, text=True, check=True)
    listed: dict[int, str] = {}
    for line in proc.stdout.splitlines():
        match = _LINE.match(line)
        if match:
            listed[int(match.group(1), 16)] = match.group(2)
    texts: list[str | None] = []
    for i in range(len(windows)):
        text = listed.get(i * _STRIDE)
        texts.append(_tidy(text, i * _STRIDE) if text and text.strip() else None)
    return texts


def _hex(value: int, width: int) -> str:
    """The value as GTKWave prints a `width`-bit trace in hex."""
    return f"{value:0{-(-width // 4)}x}"


def insn_filter_text(values: Iterable[int], width: int = INSN_WIDTH,
                     objdump: str | None = None, origin: str = "") -> str:
    """The filter file for instruction windows taking `values` (byte 0 in the low bits)."""
    ordered = sorted(set(values))
    nbytes = width // 8
    texts = disassemble([v.to_bytes(nbytes, "little") for v in ordered], objdump)
    lines = [f"# instruction bytes{f' of {origin}' if origin else ''}: the first instruction "
             f"of each {nbytes}-byte value (byte 0 in the low bits), objdump AT&T syntax"]
    lines += [f"{_hex(v, width)} {t}" for v, t in zip(ordered, texts, strict=True) if t]
    return "\n".join(lines) + "\n"


_ESCAPES = {0x07: "\\a", 0x08: "\\b", 0x09: "\\t", 0x0A: "\\n", 0x0B: "\\v", 0x0C: "\\f",
            0x0D: "\\r", 0x20: "' '", 0x5C: "\\\\"}


def console_label(byte: int) -> str:
    """How a console byte reads: ``A``, ``' '``, ``\\n``, ``\\x7f``."""
    if byte in _ESCAPES:
        return _ESCAPES[byte]
    if 0x21 <= byte <= 0x7E:
        return chr(byte)
    return f"\\x{byte:02x}"


def console_filter_text() -> str:
    """The filter file for an 8-bit console data port: every byte value, as `console_label`."""
    lines = ["# console byte: printable ASCII as itself, space as ' ', others escaped"]
    lines += [f"{byte:02x} {console_label(byte)}" for byte in range(256)]
    return "\n".join(lines) + "\n"
