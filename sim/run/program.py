"""The system loader of `vtx run`: a program file -> the RAM image and boot state of `rtl.soc.Soc`.

* `load_program(path)` reads a program: a ``.S``/``.s``/``.asm`` file is assembled and linked with
  GNU binutils (`assemble`), anything else is a flat binary loaded as is. Either way the image is
  placed at `PROGRAM_BASE` and a `Program` comes back (image, entry point, extent including
  ``.bss``, symbols, and a disassembly by address for ``vtx run --trace``).
* `boot_image(program)` is what the loader writes into RAM through the SoC's debug port:
  ``{qword index: value}`` with the identity-map page tables (`page_tables`) and the program.
* `boot_state(program)` is what the ``start`` pulse applies: ``init_rip``, ``init_rsp``,
  ``init_cr3``.
* `parse_dump(text)` checks a ``--dump ADDR:LEN`` range.

Every problem with the input raises `SystemImageError` with a message naming it (the assembler's
own message for a file that does not assemble); `vtx run` turns it into exit status 2.

The memory map and boot state are constants of `rtl.arch.system` (docs/system.md, "Boot state"
and "Memory map and ports"); nothing here repeats a number.

Assembly (`assemble`): ``as --64 -I <dir of the file>`` (GNU syntax; the file is not run through
the C preprocessor), then ``ld`` with the small linker script `LINKER_SCRIPT` (sections in the
order .text, .rodata, .data, .bss from `PROGRAM_BASE`; notes, comments and unwind tables
dropped), then ``objcopy -O binary``. The entry point is the symbol ``_start`` if the program
defines one (global or local), else the image base.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from rtl.arch.paging import PTE_P, PTE_PS, PTE_RW
from rtl.arch.system import (
    BOOT_PDPT,
    BOOT_PML4,
    BOOT_STACK_TOP,
    IDENTITY_MAP_BYTES,
    PROGRAM_BASE,
    RAM_BYTES,
)

__all__ = [
    "SystemImageError",
    "Program",
    "ASM_SUFFIXES",
    "LINKER_SCRIPT",
    "assemble",
    "load_program",
    "page_tables",
    "boot_image",
    "boot_state",
    "parse_dump",
    "parse_int",
]

#: Files with these suffixes are assembled; any other file is a flat binary.
ASM_SUFFIXES = (".S", ".s", ".asm")

#: `ld` script of `assemble`. ``__vtx_base`` is defined on the command line (--defsym) from
#: `PROGRAM_BASE`, so the address has one source. ``__vtx_end`` marks the end of ``.bss``: the
#: image must fit in RAM up to there (``.bss`` is not in the flat image, RAM starts zeroed).
LINKER_SCRIPT = """\
SECTIONS
{
  . = __vtx_base;
  .text : { *(.text.start) *(.text .text.*) }
  .rodata : { *(.rodata .rodata.*) }
  .data : { *(.data .data.*) }
  .bss : { *(.bss .bss.*) *(COMMON) }
  __vtx_end = .;
  /DISCARD/ : { *(.note .note.*) *(.comment) *(.eh_frame .eh_frame_hdr) }
}
"""

_PAGE_1G = 1 << 30
_QWORD = 8


class SystemImageError(ValueError):
    """The program or an option of the run is unusable (``vtx run`` exit status 2)."""


@dataclass
class Program:
    """A program ready to load: `image` goes at `base`, execution starts at `entry`."""

    image: bytes
    entry: int
    base: int = PROGRAM_BASE
    end: int = 0                # first byte after the program, .bss included (>= base + len)
    source: Path | None = None
    kind: str = "binary"        # "assembly" or "binary"
    symbols: dict[str, int] = field(default_factory=dict)
    #: address -> "bytes  disassembly" of each instruction objdump found (for --trace)
    disassembly: dict[int, str] = field(default_factory=dict)

    def __post_init__(self):
        self.end = max(self.end, self.base + len(self.image))


# ---------------------------------------------------------------------------------------------
# binutils


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise SystemImageError(
            f"GNU binutils `{name}` not found on PATH (the README lists binutils as a "
            "requirement: install binutils)")
    return path


def _run_tool(args: list[str], what: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(args, capture_output=True, text=True, check=False)
    except OSError as e:
        raise SystemImageError(f"{what}: cannot run {args[0]}: {e}") from None


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise SystemImageError(f"{path}: no such file")
    if not path.is_file():
        raise SystemImageError(f"{path}: not a regular file")
    if not os.access(path, os.R_OK):
        raise SystemImageError(f"{path}: not readable")


def _link(path: Path, tmp: Path) -> tuple[Path, bytes]:
    """Assemble and link `path` in `tmp`; returns (the ELF file, the flat image)."""
    obj, elf, flat, script = (tmp / "prog.o", tmp / "prog.elf", tmp / "prog.bin",
                              tmp / "link.ld")
    proc = _run_tool([_tool("as"), "--64", "-I", str(path.parent), "-o", str(obj), str(path)],
                     "as")
    if proc.returncode:
        message = (proc.stderr or proc.stdout).strip() or f"status {proc.returncode}"
        raise SystemImageError(f"{path}: does not assemble:\n{message}")
    script.write_text(LINKER_SCRIPT)
    proc = _run_tool([_tool("ld"), "-nostdlib", "--no-dynamic-linker", "-static",
                      f"--defsym=__vtx_base={PROGRAM_BASE:#x}", "-T", str(script),
                      "-o", str(elf), str(obj)], "ld")
    if proc.returncode:
        message = (proc.stderr or proc.stdout).strip() or f"status {proc.returncode}"
        raise SystemImageError(f"{path}: does not link:\n{message}")
    proc = _run_tool([_tool("objcopy"), "-O", "binary", str(elf), str(flat)], "objcopy")
    if proc.returncode:
        if "has no sections" in proc.stderr:
            raise SystemImageError(f"{path}: the program is empty (nothing to run)")
        # The tool names its files in the scratch directory: the user knows none of them.
        message = proc.stderr.strip().replace(f"{tmp}/", "")
        raise SystemImageError(f"{path}: objcopy failed:\n{message}")
    return elf, flat.read_bytes() if flat.exists() else b""


def _symbols(elf: Path) -> dict[str, int]:
    proc = _run_tool([_tool("nm"), "-n", str(elf)], "nm")
    symbols: dict[str, int] = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3:
            symbols.setdefault(parts[2], int(parts[0], 16))
    return symbols


_OBJDUMP_LINE = re.compile(r"^\s*([0-9a-f]+):\s+((?:[0-9a-f]{2} )+)\s*(.*)$")


def _disassemble(args: list[str]) -> dict[int, str]:
    """Address -> disassembly text (objdump AT&T syntax) of every instruction objdump lists.

    Best effort: it only decorates ``--trace`` lines, so a missing objdump gives an empty map.
    """
    if shutil.which("objdump") is None:
        return {}
    try:
        proc = subprocess.run(["objdump", "-d", "-w", *args], capture_output=True, text=True,
                              check=False)
    except OSError:
        return {}
    out: dict[int, str] = {}
    for line in proc.stdout.splitlines():
        match = _OBJDUMP_LINE.match(line)
        if match and match.group(3).strip():
            out[int(match.group(1), 16)] = " ".join(match.group(3).split())
    return out


def assemble(path: str | os.PathLike[str]) -> tuple[bytes, int]:
    """Assemble and link the ``.S`` file `path` at `PROGRAM_BASE`: returns (flat image, entry)."""
    program = _assemble_program(Path(path))
    return program.image, program.entry


def _assemble_program(path: Path, disassemble: bool = True) -> Program:
    _check_readable(path)
    with tempfile.TemporaryDirectory(prefix="vtx-run-asm-") as tmp:
        elf, image = _link(path, Path(tmp))
        symbols = _symbols(elf)
        disassembly = _disassemble([str(elf)]) if disassemble else {}
    entry = symbols.get("_start", PROGRAM_BASE)
    end = symbols.get("__vtx_end", PROGRAM_BASE + len(image))
    user_symbols = {k: v for k, v in symbols.items() if not k.startswith("__vtx_")}
    return Program(image=image, entry=entry, base=PROGRAM_BASE, end=end, source=path,
                   kind="assembly", symbols=user_symbols, disassembly=disassembly)


def _binary_program(path: Path, disassemble: bool = True) -> Program:
    _check_readable(path)
    try:
        image = path.read_bytes()
    except OSError as e:
        raise SystemImageError(f"{path}: cannot read: {e}") from None
    disassembly = {}
    if image and disassemble:
        disassembly = _disassemble(["-b", "binary", "-m", "i386:x86-64",
                                    f"--adjust-vma={PROGRAM_BASE:#x}", "-D", str(path)])
    return Program(image=image, entry=PROGRAM_BASE, base=PROGRAM_BASE, source=path,
                   kind="binary", disassembly=disassembly)


def load_program(path: str | os.PathLike[str], ram_bytes: int = RAM_BYTES, *,
                 disassemble: bool = True) -> Program:
    """Read `path` (assembly by suffix, see `ASM_SUFFIXES`, else a flat binary) and check that it
    fits in RAM of `ram_bytes` bytes (image and ``.bss``). `disassemble` fills
    `Program.disassembly` (an objdump run; ``vtx run`` asks for it only with ``--trace``)."""
    path = Path(path)
    if path.suffix in ASM_SUFFIXES:
        program = _assemble_program(path, disassemble)
    else:
        program = _binary_program(path, disassemble)
    if not program.image:
        raise SystemImageError(f"{path}: the program is empty (nothing to run)")
    check_fits(program, ram_bytes)
    if not program.base <= program.entry < program.end:
        raise SystemImageError(
            f"{path}: the entry point _start = {program.entry:#x} is outside the program "
            f"({program.base:#x}..{program.end - 1:#x})")
    return program


def check_fits(program: Program, ram_bytes: int = RAM_BYTES) -> None:
    """Raise `SystemImageError` unless the program (with its .bss) lies inside RAM."""
    name = program.source or "the program"
    if program.end > ram_bytes:
        raise SystemImageError(
            f"{name}: does not fit in RAM: it occupies {program.base:#x}..{program.end - 1:#x} "
            f"({program.end - program.base} bytes from {program.base:#x}), RAM ends at "
            f"{ram_bytes:#x} ({ram_bytes} bytes; --ram-bytes sets the size)")


# ---------------------------------------------------------------------------------------------
# RAM image and boot state


def page_tables() -> dict[int, int]:
    """The boot identity map as ``{qword index: value}``: PML4[0] -> the PDPT, whose four entries
    map 0 .. 4 GiB - 1 with 1 GiB pages (present, writable, supervisor). Accessed/dirty flags
    start clear; the walker sets them."""
    words = {BOOT_PML4 // _QWORD: BOOT_PDPT | PTE_P | PTE_RW}
    for i in range(IDENTITY_MAP_BYTES // _PAGE_1G):
        words[BOOT_PDPT // _QWORD + i] = (i * _PAGE_1G) | PTE_P | PTE_RW | PTE_PS
    return words


def _image_words(image: bytes, base: int) -> dict[int, int]:
    """`image` at byte address `base` as ``{qword index: value}`` (partial qwords zero-padded)."""
    if base % _QWORD:
        raise SystemImageError(f"the load address {base:#x} is not qword aligned")
    padded = image + b"\0" * (-len(image) % _QWORD)
    first = base // _QWORD
    return {first + i: int.from_bytes(padded[_QWORD * i:_QWORD * (i + 1)], "little")
            for i in range(len(padded) // _QWORD)}


def boot_image(program: Program | bytes, ram_bytes: int = RAM_BYTES) -> dict[int, int]:
    """Every qword the loader writes before ``start``: the page tables and the program image.

    `program` is a `Program` or a flat image (loaded at `PROGRAM_BASE`). Words not listed stay
    zero (RAM starts zeroed), so ``.bss`` needs no words. Raises `SystemImageError` if the image
    does not fit in RAM or overlaps the page tables.
    """
    if isinstance(program, (bytes, bytearray)):
        program = Program(image=bytes(program), entry=PROGRAM_BASE)
    check_fits(program, ram_bytes)
    tables = page_tables()
    words = _image_words(program.image, program.base)
    clash = sorted(set(tables) & set(words))
    if clash:
        raise SystemImageError(
            f"the program ({program.base:#x}..{program.end - 1:#x}) overlaps the boot page "
            f"tables at {clash[0] * _QWORD:#x}")
    return {**tables, **words}


def boot_state(program: Program) -> dict[str, int]:
    """Values of the SoC's ``init_*`` inputs for `program` (the rest of the boot state is
    fixed in the SoC: docs/system.md, "Boot state")."""
    return {"init_rip": program.entry, "init_rsp": BOOT_STACK_TOP, "init_cr3": BOOT_PML4}


# ---------------------------------------------------------------------------------------------
# Options


def parse_int(text: str, what: str) -> int:
    """An integer in Python syntax (``4096``, ``0x1000``, ``0b1``, ``1_000``), else an error."""
    try:
        return int(text.strip(), 0)
    except ValueError:
        raise SystemImageError(f"{what}: not an integer: {text!r}") from None


def parse_dump(text: str, ram_bytes: int = RAM_BYTES) -> tuple[int, int]:
    """``ADDR:LEN`` (byte address and length, decimal or 0x hex) -> (addr, length), checked to
    lie inside RAM."""
    addr_text, sep, len_text = text.partition(":")
    if not sep:
        raise SystemImageError(f"--dump {text!r}: expected ADDR:LEN (e.g. 0x100000:64)")
    addr = parse_int(addr_text, f"--dump {text!r}: ADDR")
    length = parse_int(len_text, f"--dump {text!r}: LEN")
    if addr < 0 or length <= 0:
        raise SystemImageError(f"--dump {text!r}: ADDR must be >= 0 and LEN > 0")
    if addr + length > ram_bytes:
        raise SystemImageError(
            f"--dump {text!r}: {addr:#x}..{addr + length - 1:#x} is outside RAM "
            f"(0x0..{ram_bytes - 1:#x}, {ram_bytes} bytes)")
    return addr, length
