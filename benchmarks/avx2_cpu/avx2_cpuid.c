/*
 * Run a process as if the CPU had AVX2 but no AVX-512, AVX-VNNI, AMX or bf16 (an AMD EPYC Zen 2/3,
 * most laptops), on a CPU that has them: an LD_PRELOAD library for benchmarks only.
 *
 * Every library that picks its kernels at run time (ONNX Runtime's MLAS, oneDNN, PyTorch's ATen,
 * NumPy, OpenBLAS) asks the CPUID instruction. Linux can make CPUID trap (arch_prctl ARCH_SET_CPUID,
 * on CPUs that list "cpuid_fault" in /proc/cpuinfo); this library turns that on when it is loaded,
 * answers each trapped CPUID itself with the real answer less the AVX-512 / AMX / VNNI / bf16 bits,
 * and steps over the instruction. ONNX Runtime has no switch of its own for this, which is why it
 * exists. The kernels chosen are then those of an AVX2 CPU; the core underneath is still this one
 * (its caches, clocks and memory), so the timings are "AVX2 kernels on this CPU", not another CPU's.
 *
 * Build and use: benchmarks/avx2_cpu/run_as_avx2.sh COMMAND... (it compiles this file once).
 * Other SIGSEGV handlers installed later (Python's faulthandler, PyTorch's DataLoader workers) are
 * chained behind this one through the sigaction wrapper below, so a real fault still reaches them.
 */
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <cpuid.h>
#include <dlfcn.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#ifndef ARCH_SET_CPUID
#define ARCH_SET_CPUID 0x1012
#endif

static struct sigaction chained; /* the handler a program installed for SIGSEGV after us */
static int (*real_sigaction)(int, const struct sigaction *, struct sigaction *);
static volatile long trapped;   /* CPUID instructions answered (for the self-check) */

static void mask(uint32_t leaf, uint32_t sub, uint32_t *a, uint32_t *b, uint32_t *c, uint32_t *d) {
    (void)d;
    if (leaf == 7 && sub == 0) {
        /* EBX: avx512f 16, dq 17, ifma 21, pf 26, er 27, cd 28, bw 30, vl 31 */
        *b &= ~((1u << 16) | (1u << 17) | (1u << 21) | (1u << 26) | (1u << 27) | (1u << 28) | (1u << 30) |
                (1u << 31));
        /* ECX: vbmi 1, vbmi2 6, vnni 11, bitalg 12, vpopcntdq 14 */
        *c &= ~((1u << 1) | (1u << 6) | (1u << 11) | (1u << 12) | (1u << 14));
        /* EDX: 4vnniw 2, 4fmaps 3, vp2intersect 8, amx-bf16 22, avx512-fp16 23, amx-tile 24, amx-int8 25 */
        *d &= ~((1u << 2) | (1u << 3) | (1u << 8) | (1u << 22) | (1u << 23) | (1u << 24) | (1u << 25));
    } else if (leaf == 7 && sub == 1) {
        /* EAX: avx-vnni 4, avx512-bf16 5, amx-fp16 21, avx-ifma 23; EDX: avx-vnni-int8 4, avx10 19 */
        *a &= ~((1u << 4) | (1u << 5) | (1u << 21) | (1u << 23));
        *d &= ~((1u << 4) | (1u << 19));
    } else if (leaf == 0xD && sub == 0) {
        /* XSAVE state components the OS could enable: drop opmask/ZMM (5-7) and AMX tiles (17-18) */
        *a &= ~((1u << 5) | (1u << 6) | (1u << 7) | (1u << 17) | (1u << 18));
    } else if (leaf == 0x1D || leaf == 0x1E || leaf == 0x24) {
        *a = *b = *c = *d = 0; /* AMX tile / TMUL and AVX10 description leaves */
    }
}

static void on_segv(int sig, siginfo_t *info, void *context) {
    ucontext_t *uc = (ucontext_t *)context;
    const unsigned char *ip = (const unsigned char *)uc->uc_mcontext.gregs[REG_RIP];
    if (ip[0] == 0x0f && ip[1] == 0xa2) {
        uint32_t leaf = (uint32_t)uc->uc_mcontext.gregs[REG_RAX];
        uint32_t sub = (uint32_t)uc->uc_mcontext.gregs[REG_RCX];
        uint32_t a, b, c, d;
        syscall(SYS_arch_prctl, ARCH_SET_CPUID, 1);
        __cpuid_count(leaf, sub, a, b, c, d);
        syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0);
        mask(leaf, sub, &a, &b, &c, &d);
        uc->uc_mcontext.gregs[REG_RAX] = a;
        uc->uc_mcontext.gregs[REG_RBX] = b;
        uc->uc_mcontext.gregs[REG_RCX] = c;
        uc->uc_mcontext.gregs[REG_RDX] = d;
        uc->uc_mcontext.gregs[REG_RIP] += 2;
        trapped++;
        return;
    }
    /* A real fault: hand it to the program's own handler, or die of it as the program would. */
    if (chained.sa_flags & SA_SIGINFO) {
        if (chained.sa_sigaction) {
            chained.sa_sigaction(sig, info, context);
            return;
        }
    } else if (chained.sa_handler != SIG_DFL && chained.sa_handler != SIG_IGN && chained.sa_handler) {
        chained.sa_handler(sig);
        return;
    }
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    real_sigaction(SIGSEGV, &dfl, NULL);
}

int sigaction(int sig, const struct sigaction *act, struct sigaction *old) {
    if (!real_sigaction) real_sigaction = dlsym(RTLD_NEXT, "sigaction");
    if (sig != SIGSEGV) return real_sigaction(sig, act, old);
    if (old) *old = chained;
    if (act) chained = *act;
    return 0;
}

sighandler_t signal(int sig, sighandler_t handler) {
    struct sigaction act, old;
    memset(&act, 0, sizeof act);
    act.sa_handler = handler;
    sigemptyset(&act.sa_mask);
    act.sa_flags = SA_RESTART;
    if (sigaction(sig, &act, &old) != 0) return SIG_ERR;
    return old.sa_handler;
}

__attribute__((constructor)) static void start(void) {
    real_sigaction = dlsym(RTLD_NEXT, "sigaction");
    memset(&chained, 0, sizeof chained);
    chained.sa_handler = SIG_DFL;
    struct sigaction act;
    memset(&act, 0, sizeof act);
    act.sa_sigaction = on_segv;
    act.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&act.sa_mask);
    real_sigaction(SIGSEGV, &act, NULL);
    if (syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0) != 0) {
        fprintf(stderr, "avx2_cpuid: this CPU or kernel cannot trap CPUID (no cpuid_fault): not an AVX2 run\n");
        _exit(3);
    }
    if (getenv("AVX2_CPUID_CHECK")) {
        uint32_t a, b, c, d;
        __cpuid_count(7, 0, a, b, c, d);
        fprintf(stderr, "avx2_cpuid: leaf 7 ebx=%08x avx2=%u avx512f=%u (trapped %ld)\n", b, (b >> 5) & 1,
                (b >> 16) & 1, trapped);
    }
}
