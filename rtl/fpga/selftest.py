"""The board self-test: the translation unit, a page-table image in block RAM, and a sequencer
that runs a fixed list of translations and checks every answer.

Everything the test knows comes in as build-time parameters (`sim.synth` computes them with
the reference model): the memory image (`MemoryImage`), the translation context, the requests
with their expected answers (`Vector`) and the checksum the image must have once every request's
accessed/dirty writes have landed. The hardware only compares.

`SelfTest` (platform-independent, runs in the Amaranth simulator as is):

* `ImageMemory` serves the unit's memory port from a `Memory` holding HPAs ``[base, base +
  pages * 4 KiB)``, only the first `words_per_page` words of each page (the scenario keeps every
  table index below that). Reads answer two cycles after they are taken; a write (an A/D
  bit-set) is a read-modify-write of the word. Addresses outside the image read as 0 and
  writes to them are dropped, as the model's sparse memory would have them (the scenario
  checks that every non-zero word lies inside).
* The sequencer sends one request at a time (tag = its number), waits for the response,
  compares the fields the expected answer names (outcome-dependent, plus the tag and, where the
  vector asks for it, "TLB hit": ``mem_reads == 0``), waits for the unit to go idle (so every
  A/D write has reached memory), then goes on. After the last vector it reads the whole image
  back and compares its checksum (`image_checksum`) with the expected one: one more check.
* Results: `leds` 4:0 = checks passed (binary), 5 = heartbeat (about 1 Hz), 6 = FAIL, 7 = PASS;
  a line on `tx` (115200 8N1): ``VTX SELFTEST PASS 15/15`` or
  ``VTX SELFTEST FAIL 14/15 FIRST 5`` (the 1-based number of the first failing check, then
  ``TIMEOUT`` if a request got no answer), CR LF, repeated every `repeat_cycles`.

`SelfTestBoard` puts it on a board: the PLL clock domain and the LED and UART pins. (The bare
translation unit is measured in `rtl.fpga.harness.ShiftHarness`.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from amaranth import Cat, Const, Elaboratable, Module, Mux, Signal
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .. import arch
from ..translation import TranslationUnit
from ..translation.layouts import mem_request_layout, mem_response_layout
from .board import LED_COUNT, board_uart_divisor, drive_leds_and_tx, pll_sync_domain
from .uart import LinePrinter

_U64 = (1 << 64) - 1


def image_checksum(words: Sequence[int]) -> int:
    """The checksum the sequencer computes over the image, in index order:
    ``acc = rotate_left(acc, 1) ^ word`` over 64-bit words, from 0."""
    acc = 0
    for w in words:
        acc = (((acc << 1) | (acc >> 63)) & _U64) ^ w
    return acc


@dataclass(frozen=True)
class MemoryImage:
    """Memory contents at HPAs ``[base, base + pages * 4096)``, the first `words_per_page`
    words of each page; `words` maps HPA to value (absent = 0)."""
    base: int
    pages: int
    words_per_page: int
    words: Mapping[int, int] = field(default_factory=dict)

    def __post_init__(self):
        if self.pages & (self.pages - 1) or self.words_per_page & (self.words_per_page - 1):
            raise ValueError("pages and words_per_page must be powers of two")
        if not 1 <= self.words_per_page <= 512:
            raise ValueError("words_per_page must be 1..512")
        if self.base % (self.pages << 12):
            raise ValueError(f"base {self.base:#x} is not aligned to the image size")
        for addr, value in self.words.items():
            if value and self.index(addr) is None:
                raise ValueError(f"word {addr:#x} = {value:#x} lies outside the image")

    @property
    def depth(self) -> int:
        return self.pages * self.words_per_page

    def index(self, hpa: int) -> int | None:
        """Word index of `hpa` in the image, None when the image does not hold it."""
        page, offset = divmod(hpa - self.base, 4096)
        word = offset // 8
        if hpa < self.base or page >= self.pages or word >= self.words_per_page:
            return None
        return page * self.words_per_page + word

    def hpa(self, index: int) -> int:
        page, word = divmod(index, self.words_per_page)
        return self.base + page * 4096 + word * 8

    def contents(self, words: Mapping[int, int] | None = None) -> list[int]:
        """The image as a list in index order (from `words`, default this image's)."""
        words = self.words if words is None else words
        return [words.get(self.hpa(i), 0) for i in range(self.depth)]


#: The fields a vector may compare, in the observation layout's order.
EXPECT_FIELDS = ("outcome", "gla", "gpa", "hpa", "error_code", "qualification", "page_size",
                 "hit")


@dataclass(frozen=True)
class Vector:
    """One request and the answer expected: `expect` names the fields compared (a subset of
    `EXPECT_FIELDS`; ``hit`` = 1 requires the answer to come from the TLB)."""
    gla: int
    access: int
    cpl: int
    expect: Mapping[str, int]
    name: str = ""


def observation_layout(tag_width, maxphyaddr):
    return data.StructLayout({
        "tag": tag_width, "outcome": 3, "gla": 64, "gpa": maxphyaddr, "hpa": maxphyaddr,
        "error_code": 5, "qualification": 9, "page_size": 2, "hit": 1,
    })


def pack_expectation(layout, tag, expect):
    """(value, mask) over `layout` for a response with `tag` and the `expect` fields."""
    value = mask = 0
    items = dict(expect)
    unknown = set(items) - set(EXPECT_FIELDS)
    if unknown:
        raise ValueError(f"unknown expected fields {sorted(unknown)}")
    items["tag"] = tag
    for name, v in items.items():
        f = layout[name]
        width = f.width
        v = int(v)
        if not 0 <= v < (1 << width):
            raise ValueError(f"expected {name} = {v:#x} does not fit in {width} bits")
        value |= v << f.offset
        mask |= ((1 << width) - 1) << f.offset
    return value, mask


class ImageMemory(wiring.Component):
    """The unit's memory: reads in two cycles, A/D bit-sets by read-modify-write, plus a scan
    port (`scan_en`, `scan_addr` -> `scan_data` one cycle later) used while no request is
    in flight."""

    def __init__(self, image: MemoryImage, *, tag_width, maxphyaddr=arch.MAXPHYADDR):
        self.image = image
        self.maxphyaddr = maxphyaddr
        super().__init__({
            "mem_req": In(stream.Signature(mem_request_layout(tag_width, maxphyaddr))),
            "mem_resp": Out(stream.Signature(mem_response_layout(tag_width))),
            "scan_en": In(1),
            "scan_addr": In(range(image.depth)),
            "scan_data": Out(64),
            "idle": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        image = self.image
        M = self.maxphyaddr
        page_bits = ceil_log2(image.pages)
        word_bits = ceil_log2(image.words_per_page)
        index_width = page_bits + word_bits

        m.submodules.store = store = memory.Memory(shape=64, depth=image.depth,
                                                   init=image.contents())
        rd = store.read_port()
        wr = store.write_port()

        req = self.mem_req.payload
        top = 12 + page_bits
        in_image = Signal()
        index = Signal(max(1, index_width))
        base_hi = image.base >> top
        m.d.comb += [
            in_image.eq((req.addr[top:M] == base_hi) & (req.addr[3 + word_bits:12] == 0)),
            index.eq(Cat(req.addr[3:3 + word_bits], req.addr[12:top])),
        ]

        busy = Signal()
        p_tag = Signal.like(req.tag)
        p_write = Signal()
        p_data = Signal(64)
        p_in = Signal()
        p_index = Signal.like(index)
        m.d.comb += [
            self.mem_req.ready.eq(~busy & ~self.mem_resp.valid & ~self.scan_en),
            rd.addr.eq(Mux(self.scan_en, self.scan_addr, index)),
            rd.en.eq(1),
            self.scan_data.eq(rd.data),
            self.idle.eq(~busy & ~self.mem_resp.valid & ~self.mem_req.valid),
        ]
        with m.If(self.mem_req.valid & self.mem_req.ready):
            m.d.sync += [busy.eq(1), p_tag.eq(req.tag), p_write.eq(req.write),
                         p_data.eq(req.data), p_in.eq(in_image), p_index.eq(index)]
        with m.If(busy):
            m.d.sync += busy.eq(0)
            with m.If(p_write):
                m.d.comb += [wr.addr.eq(p_index), wr.data.eq(rd.data | p_data),
                             wr.en.eq(p_in)]
            with m.Else():
                m.d.sync += [self.mem_resp.valid.eq(1), self.mem_resp.payload.tag.eq(p_tag),
                             self.mem_resp.payload.data.eq(Mux(p_in, rd.data, 0))]
        with m.If(self.mem_resp.valid & self.mem_resp.ready):
            m.d.sync += self.mem_resp.valid.eq(0)
        return m


def _digits(n):
    return [ord(c) for c in str(n)]


class SelfTest(wiring.Component):
    """The self-test (see the module docstring).

    Parameters: `image` (`MemoryImage`), `context` (the unit's ``ctx`` fields: cr0, cr3, cr4,
    efer, eptp, ept_enable, vpid), `vectors` (`Vector`s, in order), `final_checksum`,
    `unit_params` (keyword arguments of `TranslationUnit`), `clock_hz`, `uart_divisor`
    (default: `clock_hz` / 115200), `repeat_cycles` (result line period; default one second,
    0 prints once), `heartbeat_cycles` (half period of LED 5; default half a second),
    `timeout_cycles` (per request).
    """

    def __init__(self, *, image: MemoryImage, context: Mapping[str, int],
                 vectors: Sequence[Vector], final_checksum: int, unit_params=None,
                 clock_hz=100e6, uart_divisor=None, repeat_cycles=None, heartbeat_cycles=None,
                 timeout_cycles=1 << 14):
        self.image = image
        self.context = dict(context)
        self.vectors = list(vectors)
        self.final_checksum = final_checksum
        self.unit_params = dict(unit_params or {})
        self.maxphyaddr = self.unit_params.get("maxphyaddr", arch.MAXPHYADDR)
        self.clock_hz = clock_hz
        self.uart_divisor = (uart_divisor if uart_divisor is not None
                             else board_uart_divisor(clock_hz))
        self.repeat_cycles = int(clock_hz) if repeat_cycles is None else repeat_cycles
        self.heartbeat_cycles = (max(1, int(clock_hz) // 2) if heartbeat_cycles is None
                                 else heartbeat_cycles)
        self.timeout_cycles = timeout_cycles
        #: Number of checks: one per vector, and the memory image.
        self.total = len(self.vectors) + 1
        if not 1 < self.total < 32:
            raise ValueError(f"{self.total} checks: the LEDs count at most 31")
        super().__init__({
            "leds": Out(LED_COUNT),
            "tx": Out(1, init=1),
            "done": Out(1),
            "ok": Out(1),
            "passed": Out(8),
            "first_failure": Out(8),      # 1-based check number, 0 while none failed
            "timed_out": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        n = len(self.vectors)
        m.submodules.unit = unit = TranslationUnit(**self.unit_params)
        M = unit.maxphyaddr
        m.submodules.memory = mem = ImageMemory(self.image, tag_width=unit.mem_tag_width,
                                                maxphyaddr=M)
        wiring.connect(m, unit.mem_req, mem.mem_req)
        wiring.connect(m, mem.mem_resp, unit.mem_resp)
        for name, value in self.context.items():
            m.d.comb += getattr(unit.ctx, name).eq(value)
        m.d.comb += unit.inval.valid.eq(0)

        # --- the vector ROM (registered) ------------------------------------------------------
        obs_layout = observation_layout(unit.tag_width, M)
        vi = Signal(range(n + 1))
        r_gla = Signal(64)
        r_access = Signal(2)
        r_cpl = Signal(2)
        r_exp = Signal(obs_layout.size)
        r_mask = Signal(obs_layout.size)
        with m.Switch(vi):
            for i, v in enumerate(self.vectors):
                value, mask = pack_expectation(obs_layout, i & ((1 << unit.tag_width) - 1),
                                               v.expect)
                with m.Case(i):
                    m.d.sync += [r_gla.eq(v.gla), r_access.eq(int(v.access)), r_cpl.eq(v.cpl),
                                 r_exp.eq(value), r_mask.eq(mask)]

        req = unit.req.payload
        m.d.comb += [req.tag.eq(vi), req.gla.eq(r_gla), req.access.eq(r_access),
                     req.cpl.eq(r_cpl)]

        # --- the observation of a response -------------------------------------------------------
        got = Signal(obs_layout)
        resp = unit.resp.payload
        with m.If(unit.resp.valid & unit.resp.ready):
            m.d.sync += [got.tag.eq(resp.tag), got.outcome.eq(resp.outcome),
                         got.gla.eq(resp.gla), got.gpa.eq(resp.gpa), got.hpa.eq(resp.hpa),
                         got.error_code.eq(resp.error_code),
                         got.qualification.eq(resp.qualification),
                         got.page_size.eq(resp.page_size), got.hit.eq(resp.mem_reads == 0)]
        # Two-stage compare: 16-bit chunks of the masked difference, then their OR.
        diff = (got.as_value() ^ r_exp) & r_mask
        chunks = Signal((len(diff) + 15) // 16)
        m.d.sync += chunks.eq(Cat(diff[i:i + 16].any() for i in range(0, len(diff), 16)))

        # --- results, in binary and decimal ---------------------------------------------------
        passed = Signal(5)
        passed_bcd = Signal(8)              # tens . ones
        check_bcd = Signal(8, init=1)       # 1-based number of the check being made
        first_bcd = Signal(8)
        failed = Signal()
        timed_out = Signal()

        def bcd_inc(x):
            return Mux(x[:4] == 9, Cat(Const(0, 4), (x[4:] + 1)[:4]),
                       Cat((x[:4] + 1)[:4], x[4:]))

        def record(ok):
            with m.If(ok):
                m.d.sync += [passed.eq(passed + 1), passed_bcd.eq(bcd_inc(passed_bcd))]
            with m.Elif(~failed):
                m.d.sync += [failed.eq(1), first_bcd.eq(check_bcd)]
            m.d.sync += check_bcd.eq(bcd_inc(check_bcd))

        # --- the memory scan -------------------------------------------------------------------
        depth = self.image.depth
        scan_addr = Signal(range(depth + 1))
        scan_valid = Signal()               # scan_data holds the word of the previous address
        acc = Signal(64)
        m.d.comb += mem.scan_addr.eq(scan_addr)

        # --- the sequencer ---------------------------------------------------------------------
        timer = Signal(range(self.timeout_cycles + 1))
        done = Signal()
        with m.FSM():
            with m.State("START"):
                with m.If(unit.idle):
                    m.next = "LOAD"
            with m.State("LOAD"):           # the ROM registers take vector `vi`
                m.next = "ISSUE"
            with m.State("ISSUE"):
                m.d.comb += unit.req.valid.eq(1)
                with m.If(unit.req.ready):
                    m.d.sync += timer.eq(0)
                    m.next = "WAIT"
            with m.State("WAIT"):
                m.d.comb += unit.resp.ready.eq(1)
                m.d.sync += timer.eq(timer + 1)
                with m.If(unit.resp.valid):
                    m.next = "DIFF"
                with m.Elif(timer == self.timeout_cycles):
                    m.d.sync += timed_out.eq(1)
                    record(0)
                    m.next = "DONE"
            with m.State("DIFF"):           # `chunks` takes the difference
                m.next = "CHECK"
            with m.State("CHECK"):
                record(chunks == 0)
                m.next = "DRAIN"
            with m.State("DRAIN"):          # A/D writes reach memory before the next request
                with m.If(unit.idle & mem.idle):
                    m.d.sync += vi.eq(vi + 1)
                    with m.If(vi == n - 1):
                        m.d.sync += [scan_addr.eq(0), scan_valid.eq(0), acc.eq(0)]
                        m.next = "SCAN"
                    with m.Else():
                        m.next = "LOAD"
            with m.State("SCAN"):
                m.d.comb += mem.scan_en.eq(1)
                with m.If(scan_valid):
                    m.d.sync += acc.eq(Cat(acc[63], acc[:63]) ^ mem.scan_data)
                m.d.sync += [scan_addr.eq(scan_addr + 1), scan_valid.eq(scan_addr < depth)]
                with m.If(scan_valid & (scan_addr == depth)):
                    m.next = "SCAN_CHECK"
            with m.State("SCAN_CHECK"):
                record(acc == self.final_checksum)
                m.next = "DONE"
            with m.State("DONE"):
                m.d.comb += done.eq(1)

        ok = Signal()
        m.d.comb += [
            ok.eq(done & ~failed & (passed == self.total)),
            self.done.eq(done), self.ok.eq(ok), self.passed.eq(passed),
            self.first_failure.eq(first_bcd[:4] + 10 * first_bcd[4:]),
            self.timed_out.eq(timed_out),
        ]

        # --- the result line -------------------------------------------------------------------
        def digit(x):
            return Const(ord("0"), 8) + x

        items = [(c, None) for c in b"VTX SELFTEST "]
        items += [(Mux(ok, p, f), None) for p, f in zip(b"PASS", b"FAIL", strict=True)]
        items += [(ord(" "), None), (digit(passed_bcd[4:]), passed_bcd[4:] != 0),
                  (digit(passed_bcd[:4]), None), (ord("/"), None)]
        items += [(c, None) for c in _digits(self.total)]
        items += [(c, ~ok) for c in b" FIRST "]
        items += [(digit(first_bcd[4:]), ~ok & (first_bcd[4:] != 0)),
                  (digit(first_bcd[:4]), ~ok)]
        items += [(c, timed_out) for c in b" TIMEOUT"]
        items += [(c, None) for c in b"\r\n"]
        m.submodules.printer = printer = LinePrinter(items, self.uart_divisor)
        m.d.comb += self.tx.eq(printer.tx)

        printed = Signal()
        period = Signal(range(max(2, self.repeat_cycles + 1)))
        with m.If(done & ~printer.busy):
            with m.If(~printed):
                m.d.comb += printer.start.eq(1)
                m.d.sync += [printed.eq(1), period.eq(0)]
            if self.repeat_cycles > 0:
                with m.Elif(period == self.repeat_cycles - 1):
                    m.d.sync += printed.eq(0)
                with m.Else():
                    m.d.sync += period.eq(period + 1)

        # --- LEDs ------------------------------------------------------------------------------
        beat = Signal()
        beat_timer = Signal(range(self.heartbeat_cycles))
        with m.If(beat_timer == self.heartbeat_cycles - 1):
            m.d.sync += [beat_timer.eq(0), beat.eq(~beat)]
        with m.Else():
            m.d.sync += beat_timer.eq(beat_timer + 1)
        m.d.comb += self.leds.eq(Cat(passed, beat, done & ~ok, ok))
        return m


# --- on a board ------------------------------------------------------------------------------


class SelfTestBoard(Elaboratable):
    """`SelfTest` on a board: PLL clock at `target_mhz`, LEDs, UART TX (FTDI)."""

    def __init__(self, target_mhz, **selftest_params):
        self.target_mhz = target_mhz
        self.selftest_params = selftest_params

    def elaborate(self, platform):
        m = Module()
        clock_hz = pll_sync_domain(m, platform, self.target_mhz)
        m.submodules.selftest = selftest = SelfTest(clock_hz=clock_hz, **self.selftest_params)
        drive_leds_and_tx(m, platform, selftest.leds, selftest.tx)
        return m
