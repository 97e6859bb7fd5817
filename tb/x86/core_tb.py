"""Run x86-64 programs on `rtl.core.core.Core` (Amaranth simulator) and on Unicorn.

* `assemble_program(src)`: a whole AT&T source (labels, data) assembled with GNU `as` into the
  flat `.text` image, to be loaded at `CODE_BASE`; the offset of the label `hlt_here` (the final
  HLT) is returned too.
* `Program`: image + initial registers/RFLAGS + initial data memory.
* `run_core(programs)`: all programs through ONE elaboration of the core (the core's `load`
  input restarts it), with a Python memory model on the memory port that answers after a random
  delay (0-3 cycles before accepting, 0-4 before responding), faults on unmapped addresses with
  a #PF error code, and a watchdog (cycles per program, and every request answered).
* `run_unicorn(program)`: the same program in Unicorn until the final HLT.

Both return a `Result`: the 16 GPRs, RIP, RFLAGS, the stop (`"hlt"`, or a fault tuple) and the
contents of every mapped region.
"""

from __future__ import annotations

import random
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from rtl.arch.paging import PFEC_I, PFEC_W, Access, Outcome
from rtl.arch.vmx import RFLAGS_FIXED1
from rtl.core.core_layouts import StopKind, SysAction, SysKind
from rtl.core.layouts import InsnClass

from .asm import AsmError, tool
from .unicorn_ref import REG_NAMES

CODE_BASE = 0x100000
CODE_SIZE = 0x2000
DATA_BASE = 0x200000
DATA_SIZE = 0x2000
STACK_BASE = 0x300000
STACK_SIZE = 0x1000
REGIONS = ((CODE_BASE, CODE_SIZE), (DATA_BASE, DATA_SIZE), (STACK_BASE, STACK_SIZE))

PERIOD = 1e-6
#: Watchdog: simulated cycles per program (programs run a few hundred instructions at most, at
#: about 20 cycles each with the model's delays).
WATCHDOG_CYCLES = 20000


def assemble_program(src: str) -> tuple[bytes, int]:
    """Assemble `src` (must define `hlt_here:` on its final HLT); returns (image, hlt offset)."""
    with tempfile.TemporaryDirectory(prefix="vtx-prog-") as tmp:
        s, o, b = Path(tmp, "p.s"), Path(tmp, "p.o"), Path(tmp, "p.bin")
        s.write_text(".text\n" + src + "\n")
        proc = subprocess.run([tool("as"), "--64", "-o", str(o), str(s)],
                              capture_output=True, text=True, check=False)
        if proc.returncode:
            raise AsmError(f"as failed:\n{proc.stderr}\n--- source ---\n{src}")
        nm = subprocess.run([tool("nm"), str(o)], capture_output=True, text=True,
                            check=True).stdout
        subprocess.run([tool("objcopy"), "-O", "binary", "-j", ".text", str(o), str(b)],
                       check=True)
        image = b.read_bytes()
    syms = {line.split()[-1]: int(line.split()[0], 16) for line in nm.splitlines()
            if len(line.split()) == 3}
    assert len(image) <= CODE_SIZE, "program too large"
    return image, syms["hlt_here"]


def assemble_programs(sources: list[tuple[str, str]], symbols: bool = False) -> list[tuple]:
    """Many position-independent programs in one `as` run (one process instead of three per
    program). `sources` holds (source, name of its HLT label); labels must be unique across all
    sources. Returns (image, HLT offset) of each, and with `symbols` a third item: {label:
    offset} of every label inside the program."""
    parts = [f".balign 16\n__start{k}:\n{src}\n" for k, (src, _) in enumerate(sources)]
    with tempfile.TemporaryDirectory(prefix="vtx-progs-") as tmp:
        s, o, b = Path(tmp, "p.s"), Path(tmp, "p.o"), Path(tmp, "p.bin")
        s.write_text(".text\n" + "".join(parts) + f".balign 16\n__start{len(sources)}:\n")
        proc = subprocess.run([tool("as"), "--64", "-o", str(o), str(s)],
                              capture_output=True, text=True, check=False)
        if proc.returncode:
            raise AsmError(f"as failed:\n{proc.stderr}")
        nm = subprocess.run([tool("nm"), str(o)], capture_output=True, text=True,
                            check=True).stdout
        subprocess.run([tool("objcopy"), "-O", "binary", "-j", ".text", str(o), str(b)],
                       check=True)
        image = b.read_bytes()
    syms = {line.split()[-1]: int(line.split()[0], 16) for line in nm.splitlines()
            if len(line.split()) == 3}
    image = image.ljust(syms[f"__start{len(sources)}"], b"\0")
    out = []
    for k, (_, hlt_label) in enumerate(sources):
        start, end = syms[f"__start{k}"], syms[f"__start{k + 1}"]
        assert end - start <= CODE_SIZE, "program too large"
        item = (image[start:end], syms[hlt_label] - start)
        if symbols:
            item += ({n: v - start for n, v in syms.items() if start <= v < end},)
        out.append(item)
    return out


@dataclass
class Program:
    image: bytes
    hlt_offset: int
    regs: dict[str, int]
    rflags: int = RFLAGS_FIXED1
    data: bytes = b""               # initial DATA region (zero-padded)
    stack: bytes = b""              # initial STACK region
    name: str = ""
    source: str = ""
    #: (vector, offset) when the program must stop with that fault at that instruction (its
    #: HLT is never reached); None when it ends at its HLT.
    fault: tuple[int, int] | None = None


@dataclass
class Result:
    regs: dict[str, int]
    rip: int
    rflags: int
    stop: object                    # "hlt" or ("fault", vector, error_code, rip) / ("unit", ...)
    memory: dict[int, bytes] = field(default_factory=dict)
    retired: int = 0


class Memory:
    """Sparse byte memory of the mapped `REGIONS`."""

    def __init__(self, prog: Program):
        self.regions = {}
        for base, size in REGIONS:
            self.regions[base] = bytearray(size)
        self._put(CODE_BASE, prog.image)
        self._put(DATA_BASE, prog.data)
        self._put(STACK_BASE, prog.stack)
        # Pages fetched from since the core's last `fetch_flush`: a write to one is answered
        # with `code` = 1 (the memory port's contract for self-modifying code).
        self.code_pages = set()

    def _put(self, addr, data):
        self.regions[addr][:len(data)] = data

    def _find(self, addr):
        for base, buf in self.regions.items():
            if base <= addr < base + len(buf):
                return buf, addr - base
        return None, None

    def access(self, addr, kind, mask, data):
        """One qword access of the port; returns (outcome, data, error_code, code)."""
        assert addr % 8 == 0 and mask, f"bad request addr={addr:#x} mask={mask:#x}"
        buf, off = self._find(addr)
        if buf is None:
            ec = (PFEC_W if kind == Access.WRITE else 0) | (PFEC_I if kind == Access.FETCH
                                                            else 0)
            return Outcome.PAGE_FAULT, 0, ec, 0
        if kind == Access.WRITE:
            for k in range(8):
                if mask >> k & 1:
                    buf[off + k] = data >> (8 * k) & 0xFF
            return Outcome.OK, 0, 0, int(addr >> 12 in self.code_pages)
        if kind == Access.FETCH:
            self.code_pages.add(addr >> 12)
        return Outcome.OK, int.from_bytes(buf[off:off + 8], "little"), 0, 0

    def snapshot(self):
        return {base: bytes(buf) for base, buf in self.regions.items()}


def run_core(programs: list[Program], seed: int = 1, dut=None) -> list[Result]:
    """Run every program on one Core elaboration; returns one `Result` each."""
    from amaranth.sim import Simulator

    from rtl.core.core import Core

    dut = dut or Core()
    rng = random.Random(seed)
    results = []

    async def answer_sys(ctx):
        """No system behind the core: HLT halts, a fault stops, anything else is unsupported
        (the core then stops with "needs unit X")."""
        p = ctx.get(dut.sys_req.payload)
        if p.kind == SysKind.FAULT:
            action = SysAction.STOP
        elif p.kind == SysKind.INSN and p.cls == InsnClass.HLT.value:
            action = SysAction.HALT
        else:
            action = SysAction.UNSUPPORTED
        ctx.set(dut.sys_req.ready, 1)
        await ctx.tick()
        ctx.set(dut.sys_req.ready, 0)
        ctx.set(dut.sys_resp.payload.action, action)
        ctx.set(dut.sys_resp.valid, 1)
        await ctx.tick()
        ctx.set(dut.sys_resp.valid, 0)

    current = {"mem": None}

    async def snoop(ctx):
        """The core's `fetch_flush` empties the memory's code pages."""
        while True:
            if ctx.get(dut.fetch_flush) and current["mem"] is not None:
                current["mem"].code_pages.clear()
            await ctx.tick()

    async def bench(ctx):
        req, resp = dut.mem_req, dut.mem_resp
        for prog in programs:
            mem = current["mem"] = Memory(prog)
            ctx.set(dut.init_rip, CODE_BASE)
            ctx.set(dut.init_rflags, prog.rflags)
            for i, name in enumerate(REG_NAMES):
                ctx.set(dut.init_gpr[i], prog.regs.get(name, 0))
            ctx.set(dut.load, 1)
            await ctx.tick()
            ctx.set(dut.load, 0)
            while not ctx.get(dut.idle):
                if ctx.get(dut.sys_req.valid):
                    await answer_sys(ctx)
                    continue
                if not ctx.get(req.valid):
                    await ctx.tick().until(req.valid | dut.sys_req.valid | dut.idle)
                    continue
                for _ in range(rng.choice((0, 0, 0, 1, 3))):
                    await ctx.tick()
                    assert ctx.get(req.valid), "request withdrawn before it was accepted"
                p = ctx.get(req.payload)
                addr, kind, mask, data = p.addr, p.kind, p.mask, p.data
                ctx.set(req.ready, 1)
                await ctx.tick()
                ctx.set(req.ready, 0)
                outcome, rdata, ec, code = mem.access(addr, kind, mask, data)
                for _ in range(rng.choice((0, 0, 0, 1, 4))):
                    await ctx.tick()
                ctx.set(resp.payload, {"data": rdata, "outcome": outcome, "error_code": ec,
                                       "code": code})
                ctx.set(resp.valid, 1)
                # The core waits for every response with ready high (watchdog: one cycle).
                assert ctx.get(resp.ready), "core not ready for its response"
                await ctx.tick()
                ctx.set(resp.valid, 0)
            exc = ctx.get(dut.exception)
            if ctx.get(dut.halted):
                stop = "hlt"
            elif exc.valid and exc.kind == StopKind.FAULT:
                stop = ("fault", exc.vector, exc.error_code, exc.rip, exc.addr)
            elif exc.valid:
                stop = ("unit", exc.unit, exc.rip)
            else:
                stop = ("idle",)
            results.append(Result(
                regs={name: ctx.get(dut.gpr[i]) for i, name in enumerate(REG_NAMES)},
                rip=ctx.get(dut.rip), rflags=ctx.get(dut.rflags), stop=stop,
                memory=mem.snapshot(), retired=ctx.get(dut.retired_count)))

    sim = Simulator(dut)
    sim.add_clock(PERIOD)
    sim.add_testbench(bench)
    sim.add_testbench(snoop, background=True)
    # Watchdog: each program must finish within WATCHDOG_CYCLES (a hung core or a request never
    # made would otherwise run forever), counted from the end of the program before it.
    steps = 0                                   # two steps (edges) per cycle
    finished = 0
    while sim.advance() and steps < 2 * WATCHDOG_CYCLES:
        steps += 1
        if len(results) != finished:
            finished, steps = len(results), 0
    assert len(results) == len(programs), \
        f"watchdog: program {len(results)} ({programs[len(results)].name}) did not finish " \
        f"within {WATCHDOG_CYCLES} cycles"
    return results


def run_unicorn(prog: Program, max_insns: int = 100000) -> Result:
    """Run `prog` in Unicorn from CODE_BASE up to its final HLT (not executed), or, for a
    program with `fault`, up to the instruction that faults (Unicorn reports UD2 as an invalid
    instruction and a non-canonical access as unmapped memory, both at the instruction; the
    vector is the program's, the SDM's for the fault it was built to raise)."""
    from unicorn import UC_ARCH_X86, UC_MODE_64, Uc, UcError
    from unicorn import x86_const as x

    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    mem = Memory(prog)
    for base, buf in mem.regions.items():
        uc.mem_map(base, len(buf))
        uc.mem_write(base, bytes(buf))
    ids = {name: getattr(x, f"UC_X86_REG_{name.upper()}") for name in REG_NAMES}
    for name in REG_NAMES:
        uc.reg_write(ids[name], prog.regs.get(name, 0))
    uc.reg_write(x.UC_X86_REG_RFLAGS, prog.rflags | RFLAGS_FIXED1)
    hlt = CODE_BASE + prog.hlt_offset
    try:
        uc.emu_start(CODE_BASE, hlt, count=max_insns)
        error = None
    except UcError as e:
        error = e
    rip = uc.reg_read(x.UC_X86_REG_RIP)
    if prog.fault is None:
        assert error is None, f"{prog.name}: Unicorn stopped at {rip:#x}: {error}"
        assert rip == hlt, f"{prog.name}: Unicorn stopped at {rip:#x}, not at HLT {hlt:#x}"
        stop, rip = "hlt", hlt + 1      # the core retires HLT: RIP is after it
    else:
        vector, offset = prog.fault
        assert error is not None and rip == CODE_BASE + offset, \
            f"{prog.name}: Unicorn stopped at {rip:#x} ({error}), not at the fault " \
            f"{CODE_BASE + offset:#x}"
        stop = ("fault", vector, rip)
    return Result(regs={name: uc.reg_read(ids[name]) for name in REG_NAMES},
                  rip=rip, rflags=uc.reg_read(x.UC_X86_REG_RFLAGS), stop=stop,
                  memory={base: bytes(uc.mem_read(base, len(buf)))
                          for base, buf in mem.regions.items()})
