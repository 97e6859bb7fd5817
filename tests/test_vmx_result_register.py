"""`rtl.vmx.result_register.ResultRegister` in Amaranth's simulator against its contract.

Random cycles (`VTX_RR_CYCLES`, default 2000): a load of a random answer (any kind, a precheck's
"proceed" sometimes, a VMREAD's value from the memory data sometimes) whenever the register is
free, a random ``ready``, the memory data changing between loads. Each cycle the offered result
is compared with the last answer loaded: its fields, the flags of `rtl.arch.vmx.result_flags`
(none for "proceed"), the value shaped from the memory data; an answer is offered from the cycle
after its load until the cycle it is taken, and ``free`` says whether a load would lose one.
"""

from __future__ import annotations

import enum
import os
import random

from amaranth.sim import Simulator

from rtl.arch.vmx import VmInstructionError, VmxResult, result_flags
from rtl.vmx.result_register import ResultRegister

SEED = int(os.environ.get("VTX_SEED", "1"))
CYCLES = int(os.environ.get("VTX_RR_CYCLES", "2000"))
_U32 = (1 << 32) - 1


def _plain(x):
    """An enum member or an int as an int."""
    return int(x.value) if isinstance(x, enum.Enum) else int(x)


def _random_answer(rng):
    return {"kind": rng.choice(list(VmxResult)), "proceed": int(rng.random() < 0.15),
            "error": rng.choice(list(VmInstructionError)), "exit_reason": rng.getrandbits(32),
            "qualification": rng.getrandbits(64), "value": rng.getrandbits(64),
            "eptp": rng.getrandbits(64)}


def _expected(answer, memory):
    """The result an answer gives with `memory` = (from_memory, high, long, data) or None."""
    flags = None if answer["proceed"] else result_flags(answer["kind"])
    value = answer["value"]
    if memory is not None:
        high, long, data = memory
        value = data >> 32 if high else data if long else data & _U32
    return {**{k: answer[k] for k in ("kind", "proceed", "error", "exit_reason",
                                      "qualification", "eptp")},
            "value": value, "flags_valid": int(flags is not None), "flags": flags or 0}


def test_random_answers():
    rng = random.Random(SEED)
    dut = ResultRegister()
    stats = {"taken": 0, "from_memory": 0, "held": 0}

    async def bench(ctx):
        held = None         # (answer, memory flags) offered now, or None
        data = rng.getrandbits(64)
        for cycle in range(CYCLES):
            ctx.set(dut.memory_data, data)
            ready = int(rng.random() < 0.6)
            ctx.set(dut.result.ready, ready)
            valid = ctx.get(dut.result.valid)
            assert valid == (held is not None), f"cycle {cycle}: valid {valid}"
            free = ctx.get(dut.free)
            assert free == int(held is None or ready), f"cycle {cycle}: free {free}"
            if held is not None:
                answer, memory = held
                want = _expected(answer, None if memory is None else (*memory, data))
                got = ctx.get(dut.result.payload)
                for k, v in want.items():
                    assert _plain(got[k]) == _plain(v), f"cycle {cycle}: {k} = {got[k]}, " \
                                                        f"expected {v}"
                stats["held"] += 1
                if ready:
                    stats["taken"] += 1
                    held = None
            load = free and rng.random() < 0.7
            ctx.set(dut.load, int(load))
            if load:
                answer = _random_answer(rng)
                for k, v in answer.items():
                    ctx.set(dut.answer[k], v)
                memory = None
                if rng.random() < 0.3:
                    memory = (rng.getrandbits(1), rng.getrandbits(1))
                    stats["from_memory"] += 1
                ctx.set(dut.from_memory, int(memory is not None))
                ctx.set(dut.value_high, memory[0] if memory else rng.getrandbits(1))
                ctx.set(dut.value_long, memory[1] if memory else rng.getrandbits(1))
                held = (answer, memory)
            elif rng.random() < 0.5 and held is None:
                data = rng.getrandbits(64)      # the memory's data moves only between answers
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert stats["taken"] > CYCLES // 4 and stats["from_memory"] > CYCLES // 20, stats
    assert stats["held"] > stats["taken"]       # some answers waited for `ready`
