"""Generate the example scenarios in examples/ from tb/pagetables.py.

    .venv/bin/python examples/make_examples.py        # rewrites examples/*.json

tests/test_model.py checks that the files are what this script generates and that the reference
model gives the outcomes noted in each file's comment.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

from rtl.arch import EPT_R, EPT_W, PAGE_2M, PAGE_4K, Access  # noqa: E402
from sim.translate.scenario import dump_scenario, scenario_to_json  # noqa: E402
from tb.model.translation import Request  # noqa: E402
from tb.pagetables import PageTableBuilder  # noqa: E402

#: Expected outcome of every request of each example (checked by tests/test_model.py).
EXPECTED = {
    "guest_2m_pages.json": ["ok"] * 6,
    "ept_violation_write.json": ["ok", "ept_violation"],
    "ept_misconfig.json": ["ept_misconfig"],
}


def guest_2m_pages() -> dict:
    """Four 2 MiB guest pages, mapped by 2 MiB EPT pages, EPT A/D on; every request succeeds."""
    b = PageTableBuilder()
    gla, gpa, hpa = 0x7F00_0000_0000, 0x4000_0000, 0x2_0000_0000
    for i in range(4):
        b.map_page(gla + i * PAGE_2M, gpa + i * PAGE_2M, hpa + i * PAGE_2M, PAGE_2M)
    requests = [
        Request(gla + 0x1234, Access.READ, 0),
        Request(gla + PAGE_2M + 0x10_0008, Access.WRITE, 3),
        Request(gla + 2 * PAGE_2M + 0xABC0, Access.FETCH, 0),
        Request(gla + 0x1234, Access.READ, 3),
        Request(gla + 3 * PAGE_2M + PAGE_2M - 8, Access.WRITE, 0),
        Request(gla + PAGE_2M + 0x10_0008, Access.READ, 0),
    ]
    doc = scenario_to_json(b.context(ept_ad=True), b.memory, requests)
    return {"comment": "A guest on 2 MiB pages under 2 MiB EPT pages with EPT A/D on; all ok. "
                       "memory_after shows the guest A/D and EPT A/D flags set.", **doc}


def ept_violation_write() -> dict:
    """A 4 KiB page that EPT maps read-only: a read succeeds, a write is an EPT violation."""
    b = PageTableBuilder()
    gla, gpa, hpa = 0x5555_0000_3000, 0x8000_1000, 0x3_0000_5000
    b.map_page(gla, gpa, hpa, PAGE_4K, perms=EPT_R)
    requests = [Request(gla + 0x80, Access.READ, 0), Request(gla + 0x80, Access.WRITE, 0)]
    doc = scenario_to_json(b.context(), b.memory, requests)
    return {"comment": "EPT maps the data page read-only. Request 1 (a write) is an EPT violation "
                       "with qualification 0x18a = write (bit 1) | readable (bit 3) | GLA valid "
                       "(bit 7) | final translation (bit 8), gpa 0x80001080. It writes nothing; "
                       "request 0 set the guest accessed flags.", **doc}


def ept_misconfig() -> dict:
    """The EPT leaf of the data page is write-only (bits 2:0 = 010): a misconfiguration."""
    b = PageTableBuilder()
    gla, gpa, hpa = 0x1000_0020_0000, 0x4020_0000, 0x5_0020_0000
    b.map_page(gla, gpa, hpa, PAGE_4K, perms=EPT_W)
    requests = [Request(gla + 0x10, Access.READ, 0)]
    doc = scenario_to_json(b.context(), b.memory, requests)
    return {"comment": "The EPT PTE of the data page is write-only (bits 2:0 = 010): "
                       "ept_misconfig at gpa 0x40200010.", **doc}


def build() -> dict[str, dict]:
    return {
        "guest_2m_pages.json": guest_2m_pages(),
        "ept_violation_write.json": ept_violation_write(),
        "ept_misconfig.json": ept_misconfig(),
    }


def main() -> None:
    for name, doc in build().items():
        (HERE / name).write_text(dump_scenario(doc))
        print(f"wrote examples/{name}")


if __name__ == "__main__":
    main()
