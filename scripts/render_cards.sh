#!/usr/bin/env bash
# Regenerate the data cards of the bundled blends in data_cards/ (see data_cards/README.md).
#   ./scripts/render_cards.sh            # uses .venv/bin/python; PYTHON=... to override
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
RUNS="${RUNS:-runs}"

# demo: every stage on the embedded defaults, offline, on a CPU.
"$PY" -m embedcurate curate blends/demo.yaml --out "$RUNS/demo"
train="$RUNS/demo/train"
if [[ ! -f "$train/README.md" || ! -f "$train/card.json" ]]; then
  echo "render_cards: $train holds no card; did every curate stage run?" >&2
  exit 1
fi
rm -rf data_cards/demo
mkdir -p data_cards/demo
cp "$train/README.md" "$train/card.json" data_cards/demo/
if [[ -d "$train/plots" ]]; then cp -r "$train/plots" data_cards/demo/; fi

# nv-embed-v2: needs the network and GPUs, so it cannot run here; its card is rendered from
# the blend alone and says so (no counts are made up).
rm -rf data_cards/nv-embed-v2
"$PY" -m embedcurate card data_cards/nv-embed-v2 --plan --blend blends/nv-embed-v2.yaml >/dev/null

echo "data cards written: data_cards/demo data_cards/nv-embed-v2"
