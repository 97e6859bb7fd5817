"""Formal harnesses of the translation path (SymbiYosys + yosys-smtbmc + z3, see docs/formal.md).

Nothing under `rtl/` imports this package: the harnesses wrap the RTL classes from outside, add
`Assert`/`Assume`/`Cover` statements and shadow registers of their own, and are converted to
RTLIL by `sim/formal/` only for the proofs.

Helpers shared by the harnesses:

- `internal_signals(module)`: the signals an elaborated `Module` assigns, by name, so a harness
  can observe (never change) a block's internal registers, e.g. the cache's key registers, and a
  mutation can override a combinational signal with a later assignment.
- `FormalTop`: base class of the harness tops. It owns a reset-less `sync` domain (every
  register starts from its `init` value; no free reset input can restart the design in the
  middle of a trace) whose clock is a port of the top (`ports()`): with an undriven clock Yosys
  would find every flip-flop never clocked and turn it into a constant, and every assertion
  would then hold vacuously.
- `past(m, value, name)`: `value` delayed by one cycle (init 0).
"""

from __future__ import annotations

import warnings

from amaranth import ClockDomain, Elaboratable, Module, Signal
from amaranth.hdl._ast import SignalSet
from amaranth.hdl._dsl import _LateBoundStatement

with warnings.catch_warnings():
    # `amaranth.asserts` is the 0.5 home of these (deprecated in favour of amaranth.hdl in 0.6).
    warnings.simplefilter("ignore", DeprecationWarning)
    from amaranth.asserts import AnyConst, AnySeq, Initial  # noqa: F401
from amaranth.hdl import Assert, Assume, Cover  # noqa: F401

__all__ = ["AnyConst", "AnySeq", "Initial", "Assert", "Assume", "Cover",
           "internal_signals", "internal_signal", "FormalTop", "past"]


def _lhs(stmt, out):
    """Add the signals `stmt` assigns to `out`, looking into the late-bound statements FSMs
    leave (their state signal exists only once the module's control stack is flushed)."""
    if isinstance(stmt, _LateBoundStatement):
        stmt = stmt.resolve()
    if hasattr(stmt, "cases"):
        for _patterns, stmts, _loc in stmt.cases:
            for s in stmts:
                _lhs(s, out)
    elif hasattr(stmt, "_lhs_signals"):
        out |= stmt._lhs_signals()


def internal_signals(module, domain=None):
    """{name: [Signal, ...]} of every signal an elaborated `Module` assigns (optionally only in
    `domain`, e.g. "sync" for registers), in the order found. For a module with FSMs, flush its
    control stack first (`tb.formal.vmx.module_signals`)."""
    found = {}
    for dom, stmts in module._statements.items():
        if domain is not None and dom != domain:
            continue
        sigs = SignalSet()
        for stmt in stmts:
            _lhs(stmt, sigs)
        for sig in sigs:
            lst = found.setdefault(sig.name, [])
            if not any(s is sig for s in lst):
                lst.append(sig)
    return found


def internal_signal(module, name, domain=None, exclude=()):
    """The one signal called `name` that `module` assigns (in `domain`), other than `exclude`."""
    cands = [s for s in internal_signals(module, domain).get(name, [])
             if not any(s is e for e in exclude)]
    if len(cands) != 1:
        raise LookupError(f"expected one internal signal {name!r}, found {len(cands)}")
    return cands[0]


class FormalTop(Elaboratable):
    def __init__(self):
        self.domain = ClockDomain("sync", reset_less=True)

    def ports(self):
        """The ports to give `rtlil.convert`: the clock (everything else is internal)."""
        return [self.domain.clk]

    def formal_module(self):
        m = Module()
        m.domains.sync = self.domain
        return m


def past(m, value, name=None, init=0):
    """`value` one cycle ago (`init` in the first cycle)."""
    reg = Signal(value.shape(), name=name, init=init)
    m.d.sync += reg.eq(value)
    return reg
