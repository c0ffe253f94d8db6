#!/usr/bin/env bash
# Run COMMAND... with the kernels an AVX2-only CPU gets: every library sees a CPUID without AVX-512,
# AVX-VNNI, AMX or bf16 (avx2_cpuid.c, needs "cpuid_fault" in /proc/cpuinfo), glibc's own routines
# are kept to AVX2, and digit_detectron's bf16 is off. Benchmarks only: the core underneath is still
# this CPU's. Usage: benchmarks/avx2_cpu/run_as_avx2.sh python benchmarks/vs_yolo.py ...
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
lib="${AVX2_CPUID_LIB:-${TMPDIR:-/tmp}/avx2_cpuid.so}"
if [[ ! -f "$lib" || "$here/avx2_cpuid.c" -nt "$lib" ]]; then
    cc -O2 -shared -fPIC -o "$lib" "$here/avx2_cpuid.c" -ldl
fi
if ! grep -qw cpuid_fault /proc/cpuinfo; then
    echo "run_as_avx2.sh: this CPU cannot trap CPUID (no cpuid_fault in /proc/cpuinfo)" >&2
    exit 3
fi
export LD_PRELOAD="$lib${LD_PRELOAD:+:$LD_PRELOAD}"
export GLIBC_TUNABLES="glibc.cpu.hwcaps=-AVX512F,-AVX512DQ,-AVX512BW,-AVX512VL,-AVX512CD${GLIBC_TUNABLES:+:$GLIBC_TUNABLES}"
export DIGITS_BF16=off
exec "$@"
