#!/bin/sh
# CMake flags for llama.cpp, by target architecture (Docker's TARGETARCH names).
# One file read by the Dockerfile's builder stage and by `make setup`, so the
# host's tests and benchmarks run the same kernels the image ships.
#
# amd64: Lambda's x86_64 hosts guarantee AVX2, not AVX-512. GGML_NATIVE would
#        compile for the build machine and can die with "Illegal instruction"
#        on Lambda, so the baseline is fixed: AVX2 + FMA + F16C + BMI2.
# arm64: Lambda's Graviton2 (Neoverse N1) is Armv8.2-A with dot product and FP16.
set -eu
common="-DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_CURL=OFF"
case "${1:-amd64}" in
  amd64|x86_64)
    echo "$common -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=OFF" ;;
  arm64|aarch64)
    echo "$common -DGGML_CPU_ARM_ARCH=armv8.2-a+dotprod+fp16" ;;
  *)
    echo "cmake-args.sh: unsupported architecture '$1' (expected amd64 or arm64)" >&2
    exit 2 ;;
esac
