"""`rtl.vmx.exit_write_back.ExitWriteBack` in Amaranth's simulator against its contract.

Random cycles (`VTX_XWB_CYCLES`, default 3000) of exits (a random subset of the fields written,
random values), holds, a taken write port and changing working-copy values, against a walk kept
here: a field is pending from the exit that writes it until it is copied; ``busy`` exactly while
one is; the walk visits the fields in the order of `EXIT_WRITTEN_FIELDS`, passes one that is not
pending in a cycle and offers a pending one, with its value (the exit's for an
exit-information field, the working copy's of that cycle for the others), whenever not held,
until the port is not taken; an exit restarts it from the first field and keeps what is still
pending; ``query_pending`` / ``query_held`` say whether the queried field is pending (and held
here). Directed: a second exit before the first's fields are copied.
"""

from __future__ import annotations

import os
import random

from amaranth.sim import Simulator

from rtl.arch.vmx import FIELD_BY_NAME
from rtl.vmx.exit_fields import EXIT_INFO_WRITTEN, EXIT_WRITTEN_FIELDS
from rtl.vmx.exit_write_back import ExitWriteBack
from rtl.vmx.layouts import member_name
from rtl.vmx.working_copy import PARALLEL_FIELDS

SEED = int(os.environ.get("VTX_SEED", "1"))
CYCLES = int(os.environ.get("VTX_XWB_CYCLES", "3000"))
SLOTS = [FIELD_BY_NAME[n].slot for n in EXIT_WRITTEN_FIELDS]
N = len(EXIT_WRITTEN_FIELDS)


def _drive(ctx, dut, step, current):
    """Set the inputs of one cycle: `step` has start, written, written_en, hold, taken, query."""
    for n in PARALLEL_FIELDS:
        ctx.set(dut.current[member_name(n)], current[n])
    ctx.set(dut.start, step["start"])
    ctx.set(dut.written_en, sum(1 << i for i in step["written_en"]))
    for n, v in step["written"].items():
        ctx.set(dut.written[member_name(n)], v)
    ctx.set(dut.hold, step["hold"])
    ctx.set(dut.taken, step["taken"])
    ctx.set(dut.query_field, SLOTS[step["query"]])


def _simulate(steps, currents):
    """Run `steps`; returns the errors against the walk kept here and the writes made."""
    dut = ExitWriteBack()
    errors, writes = [], []

    async def bench(ctx):
        pending, cnt, held = set(), 0, {n: 0 for n in EXIT_INFO_WRITTEN}
        for cycle, (step, current) in enumerate(zip(steps, currents, strict=True)):
            _drive(ctx, dut, step, current)
            if ctx.get(dut.busy) != bool(pending):
                errors.append(f"cycle {cycle}: busy {ctx.get(dut.busy)}, pending {pending}")
            q = step["query"]
            if ctx.get(dut.query_pending) != (q in pending):
                errors.append(f"cycle {cycle}: query_pending of {EXIT_WRITTEN_FIELDS[q]}")
            if ctx.get(dut.query_held) != (q in pending and q < len(EXIT_INFO_WRITTEN)):
                errors.append(f"cycle {cycle}: query_held of {EXIT_WRITTEN_FIELDS[q]}")
            here = cnt in pending
            valid = ctx.get(dut.wr_valid)
            if valid != (here and not step["hold"]):
                errors.append(f"cycle {cycle}: wr_valid {valid}, walk at {cnt}, {pending}")
            wrote = False
            if valid and here:
                name = EXIT_WRITTEN_FIELDS[cnt]
                value = held[name] if name in held else current[name]
                if ctx.get(dut.wr_field) != SLOTS[cnt] or ctx.get(dut.wr_data) != value:
                    errors.append(f"cycle {cycle}: offered slot {ctx.get(dut.wr_field)} = "
                                  f"{ctx.get(dut.wr_data):#x}, expected {name} = {value:#x}")
                if not step["taken"]:
                    wrote = True
                    writes.append((cycle, name, value))
                    pending.discard(cnt)
            if (not here or wrote) and cnt != N - 1:
                cnt += 1
            if step["start"]:
                cnt = 0
                pending |= set(step["written_en"])
                for i in step["written_en"]:
                    name = EXIT_WRITTEN_FIELDS[i]
                    if name in held:
                        held[name] = step["written"][name]
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return errors, writes


def _quiet(query=0):
    return {"start": 0, "written": {}, "written_en": [], "hold": 0, "taken": 0, "query": query}


def _exit(rng, enabled):
    step = _quiet()
    step.update(start=1, written_en=list(enabled),
                written={n: rng.getrandbits(FIELD_BY_NAME[n].bits)
                         for n in EXIT_WRITTEN_FIELDS})
    return step


def test_walks_against_the_contract():
    rng = random.Random(SEED)
    steps, currents = [], []
    current = {n: 0 for n in PARALLEL_FIELDS}
    for _ in range(CYCLES):
        for n in PARALLEL_FIELDS:
            if rng.random() < 0.1:
                current[n] = rng.getrandbits(FIELD_BY_NAME[n].bits)
        if rng.random() < 0.03:
            step = _exit(rng, [i for i in range(N) if rng.random() < 0.6])
        else:
            step = _quiet()
        step.update(hold=int(rng.random() < 0.2), taken=int(rng.random() < 0.2),
                    query=rng.randrange(N))
        steps.append(step)
        currents.append(dict(current))
    errors, writes = _simulate(steps, currents)
    assert not errors, errors[:5]
    assert len(writes) > CYCLES // 20


def test_second_exit_keeps_the_first_exits_pending_fields():
    """Two exits two cycles apart (the second writes only the reason and qualification): every
    field of the first is copied once, with the first exit's value unless the second wrote it."""
    rng = random.Random(SEED + 1)
    first = _exit(rng, range(N))
    second = _exit(rng, [0, 1])
    steps = [first, _quiet(), second] + [_quiet() for _ in range(2 * N)]
    current = {n: rng.getrandbits(FIELD_BY_NAME[n].bits) for n in PARALLEL_FIELDS}
    errors, writes = _simulate(steps, [current] * len(steps))
    assert not errors, errors[:5]
    final = {}
    for _, name, value in writes:
        final[name] = value
    for name in EXIT_INFO_WRITTEN:
        want = second["written"][name] if name in EXIT_WRITTEN_FIELDS[:2] else \
            first["written"][name]
        assert final[name] == want, name
    for name in PARALLEL_FIELDS:
        assert final[name] == current[name], name
    # The reason and the qualification were copied before the second exit (the qualification
    # in its cycle) and again after it; nothing else twice.
    names = [name for _, name, _ in writes]
    assert [names.count(n) for n in EXIT_WRITTEN_FIELDS[:2]] == [2, 2]
    assert all(names.count(n) == 1 for n in EXIT_WRITTEN_FIELDS[2:])
