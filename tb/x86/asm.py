"""Assemble x86-64 instructions with GNU `as` (binutils; a system requirement of the project).

`assemble(lines)` assembles all `lines` (AT&T syntax, one instruction each) in one `as --64`
run, each behind a label of its own, and returns the machine code of each line (split at the
labels' addresses from `nm`) and the whole `.text` image, so the caller can cut the 15-byte
window a fetch unit would see (the instruction and whatever follows it).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path


class AsmError(Exception):
    pass


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise AsmError(f"GNU binutils `{name}` not found (the README lists binutils as required)")
    return path


def assemble(lines: list[str]) -> tuple[list[bytes], bytes, list[int]]:
    """Returns (bytes of each line, the .text image, the offset of each line in it)."""
    src = [".text"] + [f"i{k}: {line}" for k, line in enumerate(lines)] + [f"i{len(lines)}:"]
    with tempfile.TemporaryDirectory(prefix="vtx-asm-") as tmp:
        s, o, b = Path(tmp, "x.s"), Path(tmp, "x.o"), Path(tmp, "x.bin")
        s.write_text("\n".join(src) + "\n")
        proc = subprocess.run([tool("as"), "--64", "-o", str(o), str(s)],
                              capture_output=True, text=True, check=False)
        if proc.returncode:
            raise AsmError(f"as failed:\n{proc.stderr}")
        nm = subprocess.run([tool("nm"), "-n", str(o)], capture_output=True, text=True,
                            check=True).stdout
        subprocess.run([tool("objcopy"), "-O", "binary", "-j", ".text", str(o), str(b)],
                       check=True)
        image = b.read_bytes()
    addr = {}
    for line in nm.splitlines():
        value, _, name = line.split()
        if name.startswith("i") and name[1:].isdigit():
            addr[int(name[1:])] = int(value, 16)
    offsets = [addr[k] for k in range(len(lines) + 1)]
    image = image.ljust(offsets[-1], b"\0")
    code = [image[offsets[k]:offsets[k + 1]] for k in range(len(lines))]
    return code, image, offsets[:-1]
