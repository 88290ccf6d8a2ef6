#!/usr/bin/env bash
# Creates .cache/peer-venv with SAEDashboard 0.8.0 for the side-by-side harvest benchmark.
# Never a dependency of ours: it lives in its own venv and only benchmarks/peer/run_saedashboard.py runs in it.
#
# Order matters (see /work/shared/reference/peer-benchmark.md): the local CPU torch goes in first, and a
# constraints file keeps it there, because decode-clt -> torchaudio would otherwise pull an older CUDA torch.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
VENV="${PEER_VENV:-$ROOT/.cache/peer-venv}"
PYTHON="${PYTHON:-python3}"

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import sae_dashboard, sae_lens, transformer_lens" 2>/dev/null; then
  echo "peer venv ready: $VENV"
  exit 0
fi

"$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
CONSTRAINTS="$VENV/constraints.txt"
echo "torch==2.13.0" > "$CONSTRAINTS"

"${PIP[@]}" torch==2.13.0
"${PIP[@]}" --no-deps sae-dashboard==0.8.0 decode-clt==0.0.1
# Their requirements by name, minus torch (kept) and torchvision/torchaudio (what drags a CUDA torch in;
# SAEDashboard's feature-centric runner never touches them). The versions are the set that ran here.
"${PIP[@]}" -c "$CONSTRAINTS" \
  "sae-lens==6.54.12" "transformer-lens==2.17.0" "transformers==4.56.2" "numpy==1.26.4" "pyarrow<20" \
  "dataclasses-json>=0.6.4,<0.7.0" "datasets>=3.0.0,<4.0.0" "eindex-callum>=0.1.0,<0.2.0" "einops>=0.7.0" \
  "hf-transfer>=0.1.9,<0.2.0" "jaxtyping>=0.2.28,<0.3.0" "matplotlib>=3.8.4,<4.0.0" "rich>=13.7.1,<14.0.0" \
  "safetensors>=0.4.3,<0.5.0" "typer>=0.12.3,<0.13.0" \
  nnsight wandb tqdm zstandard h5py requests

"$VENV/bin/python" -c "import torch, sae_dashboard, sae_lens, transformer_lens, transformers; \
print('peer venv ready:', 'torch', torch.__version__, 'sae-lens', sae_lens.__version__, \
'transformers', transformers.__version__)"
