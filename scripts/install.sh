#!/usr/bin/env bash
# Install edge-agent into ./.venv with a llama.cpp build that suits this device.
#
#   scripts/install.sh            the runtime
#   scripts/install.sh test       + the test tools and the training extra (torch, peft)
#
# llama-cpp-python compiles llama.cpp from source. A plain "native" build is not safe
# everywhere: in virtual machines the CPU can advertise AMX while the hypervisor does not
# enable it, and llama.cpp then dies with SIGILL on its first batched matmul (seen on this
# project's CI machines). So on x86-64 we turn on exactly the vector extensions
# /proc/cpuinfo reports, AMX excepted. CUDA on Jetson, Metal on Apple Silicon.
# EDGE_AGENT_CMAKE_ARGS overrides the choice. The wheel is cached per flag set, so a
# second install takes seconds, and a wheel built with other flags is never reused.
set -euo pipefail
cd "$(dirname "$0")/.."

extras="${1:-}"
llama_version="$(sed -n 's/^llama-cpp-python==//p' constraints.txt)"

x86_flags() {
    local flags="-DGGML_NATIVE=OFF" have
    have="$(grep -m1 '^flags' /proc/cpuinfo || true)"
    for pair in avx:AVX avx2:AVX2 fma:FMA f16c:F16C bmi2:BMI2 avx_vnni:AVX_VNNI \
        avx512f:AVX512 avx512vbmi:AVX512_VBMI avx512_vnni:AVX512_VNNI avx512_bf16:AVX512_BF16; do
        if grep -qw "${pair%%:*}" <<<"$have"; then
            flags="$flags -DGGML_${pair##*:}=ON"
        else
            flags="$flags -DGGML_${pair##*:}=OFF"
        fi
    done
    echo "$flags"
}

llama_cmake_args() {
    if [[ -n "${EDGE_AGENT_CMAKE_ARGS:-}" ]]; then echo "$EDGE_AGENT_CMAKE_ARGS"; return; fi
    case "$(uname -s)/$(uname -m)" in
        Linux/x86_64) x86_flags ;;
        Linux/aarch64)
            if [[ -f /etc/nv_tegra_release ]] && command -v nvcc >/dev/null; then
                echo "-DGGML_CUDA=on"
            else
                echo ""  # Raspberry Pi and other ARM boards: native NEON build
            fi ;;
        Darwin/arm64) echo "-DGGML_METAL=on" ;;
        *) echo "" ;;
    esac
}

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip

cmake_args="$(llama_cmake_args)"
tag="$(printf '%s|%s' "$llama_version" "$cmake_args" | sha256sum | cut -c1-12)"
wheel_dir="${XDG_CACHE_HOME:-$HOME/.cache}/edge-agent/wheels/$tag"
if ! compgen -G "$wheel_dir/llama_cpp_python-$llama_version-*.whl" >/dev/null; then
    echo "building llama-cpp-python $llama_version with CMAKE_ARGS='$cmake_args' (a few minutes)"
    CMAKE_ARGS="$cmake_args" .venv/bin/pip wheel --no-cache-dir --no-deps -q \
        -w "$wheel_dir" "llama-cpp-python==$llama_version"
fi

# Replace any llama-cpp-python already in the venv: it may be a build with other flags.
.venv/bin/pip install -q --no-deps --force-reinstall "$wheel_dir"/llama_cpp_python-"$llama_version"-*.whl

target="."
[[ -n "$extras" ]] && target=".[$extras]"
.venv/bin/pip install -q --find-links "$wheel_dir" -c constraints.txt -e "$target"
echo "edge-agent installed in .venv (llama.cpp flags: ${cmake_args:-default})"

# The integration tests' real Home Assistant, in its own virtualenv (cached): tests/homeassistant/
if [[ "$extras" == "test" ]]; then scripts/install_hass.sh; scripts/install_postgres.sh; fi
