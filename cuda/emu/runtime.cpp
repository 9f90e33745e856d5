// The cuda-emu scheduler: runs one kernel launch on the host, block by block, each CUDA thread
// of a block as a fiber (see cuda_emu.h for what is and is not modelled).
//
// Entry point for the Rust side (runtime/src/backend/cuda/emu.rs):
//   int pgolf_emu_launch(const char* name, const unsigned grid[3], const unsigned block[3],
//                        void** args, const size_t* arg_sizes, size_t nargs,
//                        char* err, size_t err_len);
// `args` holds a pointer to each argument's value, as cuLaunchKernel takes them; `arg_sizes`
// their sizes, checked against the kernel's parameter list. Returns 0, or 1 with a message in
// `err`. Launches are serialised by a mutex (the scheduler's state is global).

#include "cuda_emu.h"
#include "registry.h"

#include <ucontext.h>

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

uint3 threadIdx;
uint3 blockIdx;
dim3 blockDim;
dim3 gridDim;

// Fiber switches. On x86-64 a hand-written switch saves the six callee-saved registers and the
// stack pointer (~10 ns); glibc's swapcontext also saves the signal mask with a system call on
// every switch, which made emulated kernels with a million threads take minutes. Elsewhere (or
// with -DPGOLF_EMU_UCONTEXT) ucontext is used.
#if defined(__x86_64__) && !defined(PGOLF_EMU_UCONTEXT)
#define PGOLF_EMU_ASM_SWITCH 1
extern "C" void pgolf_emu_switch(void** save_sp, void* load_sp);
asm(R"(
    .text
    .globl pgolf_emu_switch
    .type pgolf_emu_switch, @function
pgolf_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size pgolf_emu_switch, .-pgolf_emu_switch
    .section .note.GNU-stack,"",@progbits
    .text
)");
#endif

namespace pgolf_emu {
namespace {

enum class State { Ready, AtBlock, AtWarp, Done };

struct Fiber {
#ifdef PGOLF_EMU_ASM_SWITCH
    void* sp = nullptr;
#else
    ucontext_t ctx;
#endif
    std::vector<char> stack;
    State state = State::Ready;
};

// Big enough for the kernels' per-thread arrays (attention keeps 2 x 128 floats).
constexpr size_t kStack = 64 * 1024;

#ifdef PGOLF_EMU_ASM_SWITCH
void* g_sched_sp = nullptr;
#else
ucontext_t g_sched;
#endif
std::vector<Fiber> g_fibers;
std::vector<uint64_t> g_slots;  // one exchange slot per thread of the block
int g_cur = 0;
int g_threads = 0;
const std::function<void()>* g_body = nullptr;

void set_thread_index(int t) {
    threadIdx.x = (unsigned)t % blockDim.x;
    threadIdx.y = (unsigned)t / blockDim.x % blockDim.y;
    threadIdx.z = (unsigned)t / (blockDim.x * blockDim.y);
}

// From the running fiber back to the scheduler.
void to_scheduler() {
    Fiber& f = g_fibers[g_cur];
#ifdef PGOLF_EMU_ASM_SWITCH
    pgolf_emu_switch(&f.sp, g_sched_sp);
#else
    swapcontext(&f.ctx, &g_sched);
#endif
}

// From the scheduler into fiber `t`.
void resume(int t) {
    g_cur = t;
    set_thread_index(t);
#ifdef PGOLF_EMU_ASM_SWITCH
    pgolf_emu_switch(&g_sched_sp, g_fibers[t].sp);
#else
    swapcontext(&g_sched, &g_fibers[t].ctx);
#endif
}

[[noreturn]] void fiber_main() {
    (*g_body)();
    g_fibers[g_cur].state = State::Done;
    to_scheduler();
    std::abort();  // a finished fiber is never resumed
}

// A fresh fiber on `f`'s stack that starts in fiber_main.
void start_fiber(Fiber& f) {
#ifdef PGOLF_EMU_ASM_SWITCH
    // pgolf_emu_switch pops six registers and returns: the return address slot sits 16-byte
    // aligned, so fiber_main starts with the stack alignment of a normal call.
    uintptr_t top = (uintptr_t)(f.stack.data() + f.stack.size()) & ~(uintptr_t)15;
    void** ret_slot = (void**)(top - 16);
    ret_slot[1] = nullptr;
    ret_slot[0] = (void*)&fiber_main;
    void** sp = ret_slot - 6;
    for (int i = 0; i < 6; i++) sp[i] = nullptr;
    f.sp = sp;
#else
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = f.stack.data();
    f.ctx.uc_stack.ss_size = f.stack.size();
    f.ctx.uc_link = nullptr;
    makecontext(&f.ctx, (void (*)())fiber_main, 0);
#endif
    f.state = State::Ready;
}

void park(State s) {
    g_fibers[g_cur].state = s;
    to_scheduler();
}

bool live(int t) { return g_fibers[t].state != State::Done; }

// Runs the current block to its end; false with `err` set on a barrier no GPU could pass.
bool run_block(std::string& err) {
    for (int t = 0; t < g_threads; t++) start_fiber(g_fibers[t]);
    for (;;) {
        for (int t = 0; t < g_threads; t++)
            if (g_fibers[t].state == State::Ready) resume(t);
        // Every live fiber now waits at a barrier (or all are done).
        bool any_live = false, released = false;
        for (int w0 = 0; w0 < g_threads; w0 += 32) {
            const int w1 = w0 + 32 < g_threads ? w0 + 32 : g_threads;
            bool has_live = false, all_warp = true;
            for (int t = w0; t < w1; t++) {
                if (!live(t)) continue;
                has_live = true;
                all_warp &= g_fibers[t].state == State::AtWarp;
            }
            any_live |= has_live;
            if (has_live && all_warp) {
                for (int t = w0; t < w1; t++)
                    if (live(t)) g_fibers[t].state = State::Ready;
                released = true;
            }
        }
        if (!any_live) return true;
        if (released) continue;
        bool all_block = true;
        for (int t = 0; t < g_threads; t++)
            if (live(t)) all_block &= g_fibers[t].state == State::AtBlock;
        if (!all_block) {
            char buf[200];
            std::snprintf(buf, sizeof buf,
                          "block (%u,%u,%u): threads wait at different barriers (a warp "
                          "shuffle or __syncwarp while other lanes of that warp are at "
                          "__syncthreads or done): a GPU would hang or be undefined here",
                          blockIdx.x, blockIdx.y, blockIdx.z);
            err = buf;
            return false;
        }
        for (int t = 0; t < g_threads; t++)
            if (live(t)) g_fibers[t].state = State::Ready;
    }
}

std::mutex g_lock;

}  // namespace

void syncthreads() { park(State::AtBlock); }
void syncwarp() { park(State::AtWarp); }
int lane() { return g_cur % 32; }
int warp_width() {
    const int w0 = g_cur - g_cur % 32;
    return g_threads - w0 < 32 ? g_threads - w0 : 32;
}

uint64_t exchange(uint64_t v, int src_lane) {
    const int w0 = g_cur - g_cur % 32;
    g_slots[g_cur] = v;
    park(State::AtWarp);  // every lane has published
    const int src = w0 + src_lane;
    uint64_t r = (src_lane >= 0 && src_lane < warp_width() && live(src)) ? g_slots[src] : v;
    park(State::AtWarp);  // every lane has read before any publishes again
    return r;
}

// Runs `body` over the whole grid. Called with the lock held.
bool run_grid(const unsigned grid[3], const unsigned block[3], const std::function<void()>& body,
              std::string& err) {
    const unsigned long long threads = (unsigned long long)block[0] * block[1] * block[2];
    if (threads == 0 || threads > 1024 || grid[0] == 0 || grid[1] == 0 || grid[2] == 0) {
        err = "invalid launch configuration (CUDA_ERROR_INVALID_VALUE): grid (" +
              std::to_string(grid[0]) + "," + std::to_string(grid[1]) + "," +
              std::to_string(grid[2]) + "), block (" + std::to_string(block[0]) + "," +
              std::to_string(block[1]) + "," + std::to_string(block[2]) + ")";
        return false;
    }
    if (grid[1] > 65535 || grid[2] > 65535) {
        err = "gridDim.y and gridDim.z must be at most 65535";
        return false;
    }
    g_threads = (int)threads;
    if ((int)g_fibers.size() < g_threads) g_fibers.resize(g_threads);
    for (auto& f : g_fibers)
        if (f.stack.size() != kStack) f.stack.resize(kStack);
    g_slots.assign(g_threads, 0);
    g_body = &body;
    blockDim = {block[0], block[1], block[2]};
    gridDim = {grid[0], grid[1], grid[2]};
    for (unsigned z = 0; z < grid[2]; z++)
        for (unsigned y = 0; y < grid[1]; y++)
            for (unsigned x = 0; x < grid[0]; x++) {
                blockIdx = {x, y, z};
                if (!run_block(err)) return false;
            }
    return true;
}

}  // namespace pgolf_emu

extern "C" int pgolf_emu_launch(const char* name, const unsigned grid[3], const unsigned block[3],
                                void** args, const size_t* arg_sizes, size_t nargs, char* err,
                                size_t err_len) {
    using namespace pgolf_emu;
    std::string msg;
    const Kernel* k = nullptr;
    for (size_t i = 0; i < NUM_KERNELS; i++)
        if (std::strcmp(KERNELS[i].name, name) == 0) k = &KERNELS[i];
    if (!k) {
        msg = std::string("no kernel named ") + name + " in cuda/*.cu";
    } else if (k->nargs != nargs) {
        msg = std::string(name) + " takes " + std::to_string(k->nargs) + " arguments, " +
              std::to_string(nargs) + " given";
    } else {
        for (size_t i = 0; i < nargs && msg.empty(); i++)
            if (k->sizes[i] != arg_sizes[i])
                msg = std::string(name) + ": argument " + std::to_string(i) + " is " +
                      std::to_string(k->sizes[i]) + " bytes in the kernel, " +
                      std::to_string(arg_sizes[i]) + " given";
    }
    if (msg.empty()) {
        std::lock_guard<std::mutex> guard(g_lock);
        const std::function<void()> body = [k, args] { k->call(args); };
        if (!run_grid(grid, block, body, msg)) msg = std::string(name) + ": " + msg;
    }
    if (msg.empty()) return 0;
    std::snprintf(err, err_len, "%s", msg.c_str());
    return 1;
}

extern "C" int pgolf_emu_has_kernel(const char* name) {
    using namespace pgolf_emu;
    for (size_t i = 0; i < NUM_KERNELS; i++)
        if (std::strcmp(KERNELS[i].name, name) == 0) return 1;
    return 0;
}
