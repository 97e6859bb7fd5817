// The C++ loop of `vtx run` on Verilator: one program on the SoC (sim/run/top.py, `soc_run`).
//
// sim/run/model.py builds this file with the Verilated SoC and runs it as a child process:
//
//   Vsoc_run < job        (the job on standard input, events and results on standard output)
//
// The job, one item a line (the Python side writes it, so errors here are its bugs: exit 2):
//   max_cycles N          cycles from the `start` edge before the run is stopped (the watchdog)
//   max_instructions N    stop at the edge where the N-th instruction retires (0: no limit)
//   trace 0|1             report every retired instruction
//   progress_ms N         a progress line every N ms of wall time (0: none)
//   waves PATH            write a VCD (the model must be built with --trace)
//   boot NAME HEX         init_rip / init_rsp / init_cr3
//   word INDEX HEX        a RAM qword written through the debug port before `start`
//   dump ADDR LEN         read LEN bytes from byte address ADDR after the run
//
// Standard output, one line an event (flushed at once for console bytes, VM exits and progress,
// at least every 100 ms otherwise, so the console shows as the program writes it):
//   C <byte hex> <cycle>                      a console byte
//   T <cycle> <rip hex> <len> <bytes hex>     a retired instruction (with trace 1)
//   E <cycle>                                 a VM entry
//   X <cycle> <reason>                        a VM exit (reason number)
//   F <cycle> <reason> <qualification hex>    a VM-entry failure (basic reason: bit 31 is implied)
//   P <cycle> <instructions> <vm exits> <seconds>   progress (cycles since start, wall seconds)
// then the results:
//   M <addr> <len> <hex>                      each dump
//   S <name> <hex>                            each state port (gpr and fault packed, as wide)
//   S cycle_limit 0|1, S instruction_limit 0|1 (which limit stopped the run, if one did),
//   S vm_entries N, S run_cycles N (from `start`), S run_seconds F (the loop)
//   END
// Exit status 0 with END; 2 for a malformed job; 3 when the SoC does not start or pause.
//
// The loop: one eval at clk=1 and one at clk=0 a cycle; after the rising edge the outputs are
// read as a cocotb ReadOnly phase would (the model's outputs only change on that edge). The
// common cycle costs two evals and a test of six one-bit outputs.

#include <chrono>
#include <cerrno>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "Vsoc_run.h"
#include "verilated.h"
#if VM_TRACE
#include "verilated_vcd_c.h"
#endif

double sc_time_stamp() { return 0; }

namespace {

// Picoseconds (the model's time precision) per half clock period: a 10 ns clock, as the
// cocotb testbenches use, so VCDs from both line up.
constexpr uint64_t HALF_PERIOD_PS = 5000;
// `running` must rise this many cycles after the `start` pulse at the latest.
constexpr int START_CYCLES = 8;
// `paused` must rise this many cycles after `pause` at the latest (an access takes 3).
constexpr int PAUSE_CYCLES = 16;
// Wall-clock checks (flush, progress) every this many cycles.
constexpr uint64_t CLOCK_CHECK_CYCLES = 1024;
constexpr double FLUSH_SECONDS = 0.1;

struct Job {
    uint64_t max_cycles = 0;
    uint64_t max_instructions = 0;
    bool trace = false;
    uint64_t progress_ms = 0;
    std::string waves;
    std::map<std::string, uint64_t> boot;
    std::vector<std::pair<uint64_t, uint64_t>> words;
    std::vector<std::pair<uint64_t, uint64_t>> dumps;
};

[[noreturn]] void fail(int status, const char* what, const std::string& detail) {
    std::fflush(stdout);
    std::fprintf(stderr, "%s: %s\n", what, detail.c_str());
    std::exit(status);
}

uint64_t number(const char* text, const std::string& line) {
    char* end = nullptr;
    errno = 0;
    uint64_t value = std::strtoull(text, &end, 0);
    if (end == text || *end || errno) fail(2, "bad job line", line);
    return value;
}

Job read_job(std::FILE* in) {
    Job job;
    char buf[4096];
    bool have_cycles = false;
    while (std::fgets(buf, sizeof buf, in)) {
        std::string line(buf);
        while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
        if (line.empty()) continue;
        std::vector<std::string> w;
        size_t pos = 0;
        while (pos < line.size()) {
            size_t next = line.find(' ', pos);
            if (next == std::string::npos) next = line.size();
            if (next > pos) w.push_back(line.substr(pos, next - pos));
            pos = next + 1;
        }
        const std::string& key = w[0];
        if (key == "waves" && line.size() > 6) {
            job.waves = line.substr(6);
        } else if (key == "max_cycles" && w.size() == 2) {
            job.max_cycles = number(w[1].c_str(), line);
            have_cycles = true;
        } else if (key == "max_instructions" && w.size() == 2) {
            job.max_instructions = number(w[1].c_str(), line);
        } else if (key == "trace" && w.size() == 2) {
            job.trace = number(w[1].c_str(), line) != 0;
        } else if (key == "progress_ms" && w.size() == 2) {
            job.progress_ms = number(w[1].c_str(), line);
        } else if (key == "boot" && w.size() == 3) {
            job.boot[w[1]] = number(w[2].c_str(), line);
        } else if (key == "word" && w.size() == 3) {
            job.words.emplace_back(number(w[1].c_str(), line), number(w[2].c_str(), line));
        } else if (key == "dump" && w.size() == 3) {
            job.dumps.emplace_back(number(w[1].c_str(), line), number(w[2].c_str(), line));
        } else {
            fail(2, "bad job line", line);
        }
    }
    if (!have_cycles) fail(2, "bad job", "no max_cycles line");
    for (const auto& kv : job.boot) {
        if (kv.first != "init_rip" && kv.first != "init_rsp" && kv.first != "init_cr3")
            fail(2, "bad job", "unknown boot input " + kv.first);
    }
    return job;
}

// Hex of a port, most significant digit first, without leading zeros ("0" for zero).
std::string hex(uint64_t value) {
    char buf[24];
    std::snprintf(buf, sizeof buf, "%" PRIx64, value);
    return buf;
}

template <std::size_t Words>
std::string hex(const VlWide<Words>& value) {
    std::string out;
    char buf[16];
    for (std::size_t i = Words; i-- > 0;) {
        std::snprintf(buf, sizeof buf, out.empty() ? "%x" : "%08x", (unsigned)value[i]);
        if (out.empty() && value[i] == 0 && i) continue;
        out += buf;
    }
    return out;
}

class Run {
  public:
    explicit Run(const Job& job) : job_(job) {
        context_ = std::make_unique<VerilatedContext>();
        context_->randReset(0);
#if VM_TRACE
        if (!job.waves.empty()) context_->traceEverOn(true);
#endif
        top_ = std::make_unique<Vsoc_run>(context_.get());
        if (!job.waves.empty()) {
#if VM_TRACE
            vcd_ = std::make_unique<VerilatedVcdC>();
            top_->trace(vcd_.get(), 99);
            vcd_->open(job.waves.c_str());
            if (!vcd_->isOpen()) fail(1, "cannot write the VCD", job.waves);
#else
            fail(2, "bad job", "waves asked of a model built without tracing");
#endif
        }
        std::setvbuf(stdout, nullptr, _IOFBF, 1 << 16);
        top_->clk = 0;
        top_->eval();
        dump();
        last_flush_ = start_ = std::chrono::steady_clock::now();
        last_progress_ = start_;
    }

    ~Run() {
#if VM_TRACE
        if (vcd_) vcd_->close();
#endif
        top_->final();
    }

    // One clock cycle: the rising edge (after which the outputs are read), the falling edge.
    void tick() {
        top_->clk = 1;
        top_->eval();
        time_ += HALF_PERIOD_PS;
        dump();
        top_->clk = 0;
        top_->eval();
        time_ += HALF_PERIOD_PS;
        dump();
    }

    void load() {
        for (const auto& [index, value] : job_.words) {
            if (!value) continue;          // RAM starts zeroed
            top_->dbg_addr = (uint32_t)index;
            top_->dbg_wdata = value;
            top_->dbg_we = 1;
            tick();
        }
        top_->dbg_we = 0;
        for (const auto& [name, value] : job_.boot) {
            if (name == "init_rip") top_->init_rip = value;
            if (name == "init_rsp") top_->init_rsp = value;
            if (name == "init_cr3") top_->init_cr3 = value;
        }
    }

    // Start the program and run until it stops, max_cycles pass or max_instructions retire;
    // events go to stdout.
    void run() {
        top_->start = 1;
        tick();                             // the SoC takes `start` at this edge
        top_->start = 0;
        uint64_t n = 0;
        for (int i = 0; !top_->running; ++i) {
            if (i == START_CYCLES || n == job_.max_cycles)
                fail(3, "the SoC did not start",
                     "`running` is still 0 " + std::to_string(START_CYCLES) +
                         " cycles after the `start` pulse");
            tick();
            ++n;
        }
        const bool trace = job_.trace;
        const uint64_t max_instructions = job_.max_instructions;
        const auto t0 = std::chrono::steady_clock::now();
        while (n < job_.max_cycles) {
            tick();
            ++n;
            if (top_->console_valid | top_->vm_entry | top_->vm_exit | top_->vm_entry_failure |
                (trace & top_->retired))
                events();
            if (!top_->running) {
                stopped_ = true;
                break;
            }
            // Checked at the edge that retires the N-th instruction: the state ports then hold
            // the state after it, before the next one can retire (one edge later at the
            // earliest) or store (several).
            if (max_instructions && top_->instructions >= max_instructions) {
                instruction_limit_ = true;
                break;
            }
            if ((n & (CLOCK_CHECK_CYCLES - 1)) == 0) clock_check(n);
        }
        run_seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
                           .count();
        cycles_run_ = n;
    }

    void results() {
        const bool cycle_limit = !stopped_ && !instruction_limit_;
        // Read the state now: the pause and the dump reads below take more cycles.
        std::vector<std::pair<const char*, std::string>> state = {
            {"rip", hex(top_->rip)},
            {"rflags", hex(top_->rflags)},
            {"cr0", hex(top_->cr0)},
            {"cr3", hex(top_->cr3)},
            {"cr4", hex(top_->cr4)},
            {"efer", hex(top_->efer)},
            {"vmx_mode", hex(top_->vmx_mode)},
            {"current_vmcs", hex(top_->current_vmcs)},
            {"stop", hex(top_->stop)},
            {"exit_code", hex(top_->exit_code)},
            {"cycles", hex(top_->cycles)},
            {"instructions", hex(top_->instructions)},
            {"running", hex(top_->running)},
            {"gpr", hex(top_->gpr)},
            {"fault", hex(top_->fault)},
        };
        if (!stopped_ && !job_.dumps.empty()) pause();
        for (const auto& [addr, length] : job_.dumps) dump_memory(addr, length);
        for (const auto& [name, value] : state) std::printf("S %s %s\n", name, value.c_str());
        std::printf("S cycle_limit %d\nS instruction_limit %d\nS vm_entries %" PRIu64
                    "\nS run_cycles %" PRIu64 "\nS run_seconds %.6f\nEND\n",
                    (int)cycle_limit, (int)instruction_limit_, vm_entries_, cycles_run_,
                    run_seconds_);
        std::fflush(stdout);
    }

  private:
    void dump() {
#if VM_TRACE
        if (vcd_) vcd_->dump(time_);
#endif
    }

    void events() {
        const uint64_t cycle = top_->cycles;
        if (top_->console_valid) {
            std::printf("C %02x %" PRIu64 "\n", (unsigned)top_->console_data, cycle);
            flush();
        }
        if (job_.trace && top_->retired) {
            const unsigned len = top_->retired_len;
            char bytes[2 * 16 + 1] = {0};
            for (unsigned i = 0; i < len && i < 15; ++i) {
                const unsigned byte = (top_->retired_bytes[i / 4] >> (8 * (i % 4))) & 0xff;
                std::snprintf(bytes + 2 * i, 3, "%02x", byte);
            }
            std::printf("T %" PRIu64 " %" PRIx64 " %u %s\n", cycle, (uint64_t)top_->retired_rip,
                        len, bytes);
        }
        if (top_->vm_entry) {
            ++vm_entries_;
            std::printf("E %" PRIu64 "\n", cycle);
        }
        if (top_->vm_exit) {
            ++vm_exits_;
            std::printf("X %" PRIu64 " %u\n", cycle, (unsigned)top_->vm_exit_reason);
            flush();
        }
        if (top_->vm_entry_failure) {
            std::printf("F %" PRIu64 " %u %" PRIx64 "\n", cycle, (unsigned)top_->vm_exit_reason,
                        (uint64_t)top_->vm_exit_qualification);
            flush();
        }
    }

    void flush() {
        std::fflush(stdout);
        last_flush_ = std::chrono::steady_clock::now();
    }

    void clock_check(uint64_t n) {
        const auto now = std::chrono::steady_clock::now();
        if (job_.progress_ms &&
            now - last_progress_ >= std::chrono::milliseconds(job_.progress_ms)) {
            last_progress_ = now;
            std::printf("P %" PRIu64 " %" PRIu64 " %" PRIu64 " %.3f\n", n,
                        (uint64_t)top_->instructions, vm_exits_,
                        std::chrono::duration<double>(now - start_).count());
            flush();
        } else if (now - last_flush_ >= std::chrono::duration<double>(FLUSH_SECONDS)) {
            flush();
        }
    }

    // Freeze the run (a cycle or instruction limit) so that the debug port owns the RAM.
    void pause() {
        top_->pause = 1;
        for (int i = 0; i < PAUSE_CYCLES; ++i) {
            tick();
            if (top_->paused) return;
        }
        fail(3, "the SoC did not pause", "`paused` is still 0 " +
                                             std::to_string(PAUSE_CYCLES) +
                                             " cycles after `pause`");
    }

    // The debug read port is registered: the address presented before an edge is read after it.
    void dump_memory(uint64_t addr, uint64_t length) {
        const uint64_t first = addr / 8, last = (addr + length - 1) / 8;
        std::string blob;
        top_->dbg_we = 0;
        for (uint64_t q = first; q <= last; ++q) {
            top_->dbg_addr = (uint32_t)q;
            tick();
            uint64_t value = top_->dbg_rdata;
            for (int b = 0; b < 8; ++b) blob.push_back((char)((value >> (8 * b)) & 0xff));
        }
        std::printf("M %" PRIu64 " %" PRIu64 " ", addr, length);
        const uint64_t skip = addr - first * 8;
        for (uint64_t i = 0; i < length; ++i)
            std::printf("%02x", (unsigned)(unsigned char)blob[skip + i]);
        std::printf("\n");
    }

    const Job& job_;
    std::unique_ptr<VerilatedContext> context_;
    std::unique_ptr<Vsoc_run> top_;
#if VM_TRACE
    std::unique_ptr<VerilatedVcdC> vcd_;
#endif
    uint64_t time_ = 0;
    uint64_t vm_entries_ = 0, vm_exits_ = 0, cycles_run_ = 0;
    bool stopped_ = false, instruction_limit_ = false;
    double run_seconds_ = 0;
    std::chrono::steady_clock::time_point start_, last_flush_, last_progress_;
};

}  // namespace

int main(int argc, char** argv) {
    if (argc != 1) fail(2, "usage", "Vsoc_run < job (see sim/run/model.cpp)");
    const Job job = read_job(stdin);
    Run run(job);
    run.load();
    run.run();
    run.results();
    return 0;
}
