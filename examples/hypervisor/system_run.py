"""Run an example program on the system RTL with `vtx run --json` (sim/run/), for the tests.

`run(program)` returns the parsed JSON object (`exit`, `regs`, `vm_exits`, `console`, ...).
A `.S` file is passed as is (vtx run assembles it; the examples `.include` files next to them,
so it must assemble with `-I` the program's directory); `prebuilt=True` assembles and links it
here (examples/hypervisor/emulate.py `build`, at PROGRAM_BASE) and passes the flat binary.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def exit_code(exit_: dict) -> int | None:
    """The exit-port value of a `vtx run` exit object (whatever its key is called)."""
    for key in ("code", "exit_code", "value"):
        if key in exit_:
            return exit_[key]
    return None


def run(program: Path | str, *, prebuilt: bool = False, max_cycles: int = 50_000_000,
        timeout: float = 1800) -> dict:
    program = Path(program).resolve()
    with tempfile.TemporaryDirectory(prefix="vtx-sysrun-") as tmp:
        target = program
        if prebuilt:
            sys.path.insert(0, str(Path(__file__).parent))
            from emulate import build
            image, _ = build(program)
            target = Path(tmp, program.stem + ".bin")
            target.write_bytes(image)
        cmd = [sys.executable, "-m", "sim.cli", "run", "--json", "--max-cycles", str(max_cycles),
               str(target)]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                              check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    # The JSON object is printed at the end (the console may precede it).
    start = next((i for i in range(len(lines)) if lines[i].startswith("{")
                  and _parses("\n".join(lines[i:]))), None)
    if start is None:
        raise RuntimeError(f"`{' '.join(cmd)}` gave no JSON object (exit {proc.returncode}):\n"
                           f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads("\n".join(lines[start:]))


def _parses(text: str) -> bool:
    try:
        json.loads(text)
        return True
    except ValueError:
        return False
