// Verilator harness of the translation benchmark top (sim/bench/top.py).
//
//   build/bench/obj_c8/Vtranslation_bench kind=1 count=4000 warmup=1000 latency=20 seed=1 \
//       region_shift=30 stride_shift=21 hit_shift=3 max_cycles=100000000
//
// Sets the configuration ports, raises `start` and clocks the model in a tight loop
// until `done` (or max_cycles), then prints one JSON line: every counter of the bench, the
// cycles simulated (warm-up included), and the wall and CPU time of the clock loop alone.

#include <chrono>
#include <cinttypes>
#include <ctime>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "Vtranslation_bench.h"
#include "verilated.h"

double sc_time_stamp() { return 0; }

namespace {

struct Config {
    uint64_t kind = 1, count = 1000, warmup = 0, latency = 20, seed = 1;
    uint64_t region_shift = 26, stride_shift = 21, hit_shift = 3;
    uint64_t max_cycles = 200000000;
};

bool parse(Config& cfg, const char* arg) {
    const char* eq = std::strchr(arg, '=');
    if (!eq) return false;
    std::string key(arg, eq - arg);
    char* end = nullptr;
    uint64_t value = std::strtoull(eq + 1, &end, 0);
    if (end == eq + 1 || *end) return false;
    struct { const char* name; uint64_t* field; } fields[] = {
        {"kind", &cfg.kind}, {"count", &cfg.count}, {"warmup", &cfg.warmup},
        {"latency", &cfg.latency}, {"seed", &cfg.seed}, {"region_shift", &cfg.region_shift},
        {"stride_shift", &cfg.stride_shift}, {"hit_shift", &cfg.hit_shift},
        {"max_cycles", &cfg.max_cycles},
    };
    for (auto& f : fields) {
        if (key == f.name) {
            *f.field = value;
            return true;
        }
    }
    return false;
}

}  // namespace

int main(int argc, char** argv) {
    Config cfg;
    for (int i = 1; i < argc; ++i) {
        if (!parse(cfg, argv[i])) {
            std::fprintf(stderr, "bad argument '%s' (expected key=value)\n", argv[i]);
            return 2;
        }
    }

    auto context = std::make_unique<VerilatedContext>();
    context->randReset(0);
    auto top = std::make_unique<Vtranslation_bench>(context.get());

    top->kind = cfg.kind;
    top->count = cfg.count;
    top->warmup = cfg.warmup;
    top->latency = cfg.latency;
    top->seed = cfg.seed;
    top->region_shift = cfg.region_shift;
    top->stride_shift = cfg.stride_shift;
    top->hit_shift = cfg.hit_shift;
    // The bench has no reset (its registers start from their initial values): one eval at
    // clk = 0 settles the model, then every loop iteration is one rising edge.
    top->start = 1;
    top->clk = 0;
    top->eval();

    uint64_t cycles = 0;
    const uint64_t limit = cfg.max_cycles;
    std::clock_t c0 = std::clock();
    auto t0 = std::chrono::steady_clock::now();
    while (!top->done && cycles < limit) {
        top->clk = 1;
        top->eval();
        top->clk = 0;
        top->eval();
        ++cycles;
    }
    auto t1 = std::chrono::steady_clock::now();
    std::clock_t c1 = std::clock();
    double wall = std::chrono::duration<double>(t1 - t0).count();
    double cpu = double(c1 - c0) / CLOCKS_PER_SEC;

    std::printf(
        "{\"done\": %d, \"overflow\": %d, \"sim_cycles\": %" PRIu64
        ", \"wall_seconds\": %.6f, \"cpu_seconds\": %.6f",
        (int)top->done, (int)top->overflow, cycles, wall, cpu);
#define COUNTER(name) std::printf(", \"" #name "\": %" PRIu64, (uint64_t)top->name)
    COUNTER(cycles);
    COUNTER(responses);
    COUNTER(ok);
    COUNTER(bad);
    COUNTER(lat_sum);
    COUNTER(lat_max);
    COUNTER(port_busy);
    COUNTER(port_reads);
    COUNTER(port_writes);
    COUNTER(resp_reads);
    COUNTER(requests);
    COUNTER(tlb_hits);
    COUNTER(walks);
    COUNTER(mem_reads);
    COUNTER(mem_writes);
    COUNTER(busy_cycles);
#undef COUNTER
    std::printf("}\n");
    top->final();
    return top->done ? 0 : 3;
}
