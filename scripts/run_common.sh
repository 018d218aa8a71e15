# What the run scripts share (sourced, not run): the project's virtual environment, and the
# PyTorch build for this machine.
#
# The project's .venv is created (and the project installed into it) when missing. PyTorch:
# LIGHTREC_TORCH, when set, is installed first (e.g. LIGHTREC_TORCH="torch==2.13.0"); else, on a
# machine without an NVIDIA GPU (nvidia-smi absent or failing), PyTorch's CPU build comes from
# its CPU wheel index (LIGHTREC_TORCH_CPU_INDEX), falling back at once to PyPI's default torch
# when that index cannot be reached; with a GPU, PyPI's default (CUDA) build.

LIGHTREC_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LIGHTREC_VENV=${LIGHTREC_VENV:-$LIGHTREC_ROOT/.venv}
LIGHTREC_TORCH_CPU_INDEX=${LIGHTREC_TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}

lightrec_has_nvidia_gpu() {
    command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1
}

# install_torch: the PyTorch build for this machine, before the project (whose plain "torch"
# requirement is then already met).
lightrec_install_torch() {
    local py="$LIGHTREC_VENV/bin/python"
    if [ -n "${LIGHTREC_TORCH:-}" ]; then
        # shellcheck disable=SC2086 # the spec may carry pip options
        "$py" -m pip install -q $LIGHTREC_TORCH || return 1
        return 0
    fi
    "$py" -c "import torch" 2>/dev/null && return 0
    lightrec_has_nvidia_gpu && return 0  # PyPI's default torch is the CUDA build
    if "$py" -c 'import sys, urllib.request
urllib.request.urlopen(sys.argv[1].rstrip("/") + "/torch/", timeout=5)' "$LIGHTREC_TORCH_CPU_INDEX" 2>/dev/null; then
        echo "no NVIDIA GPU: installing PyTorch's CPU build from $LIGHTREC_TORCH_CPU_INDEX (set LIGHTREC_TORCH to choose another)" >&2
        "$py" -m pip install -q --index-url "$LIGHTREC_TORCH_CPU_INDEX" --timeout 10 --retries 0 torch && return 0
    fi
    echo "no NVIDIA GPU, but PyTorch's CPU wheel index cannot be reached: installing the default torch from PyPI" >&2
}

# ensure_venv [extra]: create the venv and install the project (with an extra) if needed.
lightrec_ensure_venv() {
    local extra=${1:-} check="import lightrec"
    [ -n "$extra" ] && check="import lightrec, pytest"
    if [ ! -x "$LIGHTREC_VENV/bin/python" ]; then
        local py=${PYTHON:-python3}
        if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
            echo "error: lightrec needs Python 3.10 or newer ($py is too old or missing; set PYTHON=...)" >&2
            return 1
        fi
        echo "creating $LIGHTREC_VENV" >&2
        "$py" -m venv "$LIGHTREC_VENV" || return 1
    fi
    # the install is redone when pyproject.toml changed since (new dependencies): a stamp in
    # the venv holds "<extra>:<md5 of pyproject.toml>"; a dev install serves plain runs too
    local stamp="$LIGHTREC_VENV/.lightrec-install" want have
    want=$("$LIGHTREC_VENV/bin/python" -c 'import hashlib, sys
print(hashlib.md5(open(sys.argv[1], "rb").read()).hexdigest())' "$LIGHTREC_ROOT/pyproject.toml")
    have=$(cat "$stamp" 2>/dev/null || true)
    local current=0
    if [ -n "$extra" ]; then [ "$have" = "$extra:$want" ] && current=1
    else [ "${have#*:}" = "$want" ] && current=1
    fi
    if [ "$current" = 0 ] || ! "$LIGHTREC_VENV/bin/python" -c "$check" 2>/dev/null; then
        echo "installing lightrec${extra:+[$extra]} into $LIGHTREC_VENV" >&2
        "$LIGHTREC_VENV/bin/python" -m pip install -q --upgrade pip || return 1
        lightrec_install_torch || return 1
        "$LIGHTREC_VENV/bin/python" -m pip install -q -e "$LIGHTREC_ROOT${extra:+[$extra]}" || return 1
        # (a plain repair of a current dev install keeps the dev stamp)
        if [ -n "$extra" ] || [ "$current" = 0 ]; then echo "$extra:$want" > "$stamp"; fi
    fi
}
