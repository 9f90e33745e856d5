// The kernel table of cuda-emu: build.rs generates one entry per `__global__` function of
// cuda/*.cu (each file compiled in its own namespace), and runtime.cpp looks launches up in it.
#pragma once

#include <cstddef>
#include <utility>

namespace pgolf_emu {

struct Kernel {
    const char* name;
    size_t nargs;
    const size_t* sizes;  // sizeof each parameter, checked against what the caller passes
    void (*call)(void** args);
};
extern const Kernel KERNELS[];
extern const size_t NUM_KERNELS;

template <class... A>
constexpr size_t nargs_of(void (*)(A...)) {
    return sizeof...(A);
}

template <class... A>
const size_t* sizes_of(void (*)(A...)) {
    static const size_t sizes[] = {sizeof(A)..., 0};
    return sizes;
}

template <class... A, size_t... I>
void call_unpacked(void (*k)(A...), void** args, std::index_sequence<I...>) {
    k(*static_cast<A*>(args[I])...);
}

// `void**` (a pointer to each argument's value, as cuLaunchKernel takes them) -> a typed call.
template <auto K>
void call(void** args) {
    call_unpacked(K, args, std::make_index_sequence<nargs_of(K)>{});
}

}  // namespace pgolf_emu
