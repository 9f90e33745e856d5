#!/usr/bin/env bash
# Builds the demo page's WebAssembly package into examples/web/pkg and copies the default model
# (models/pg-tiny-4L128.int8.ptz, trained by pgolf-rt train) and its tokenizer beside the page,
# with model.json (its file name, and whether it is the tiny demo model). Then serve the folder:
#   python3 -m http.server -b 127.0.0.1 -d examples/web 8000   # open http://127.0.0.1:8000/
# Needs: rustup target wasm32-unknown-unknown and wasm-bindgen-cli of the same version as the
# wasm-bindgen crate in Cargo.lock (scripts/browser-test.sh installs both).
# Env: PGOLF_ARTIFACT, PGOLF_TOKENIZER (e.g. ../shared/reference/baseline9L_int8_zlib.ptz);
# CARGO_TARGET_DIR (where the wasm is built and looked for; cargo metadata honours it).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
artifact="${PGOLF_ARTIFACT:-$root/models/pg-tiny-4L128.int8.ptz}"
tokenizer="${PGOLF_TOKENIZER:-$root/models/pg_sp1024_bpe.model}"

for f in "$artifact" "$tokenizer"; do
  [ -f "$f" ] || { echo "prepare.sh: missing $f (set PGOLF_ARTIFACT / PGOLF_TOKENIZER)" >&2; exit 1; }
done

echo "== wasm: cargo build --target wasm32-unknown-unknown --release (in bindings/wasm)"
(cd "$root/bindings/wasm" && cargo build --target wasm32-unknown-unknown --release)
target_dir="$(cd "$root" && cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
wasm="$target_dir/wasm32-unknown-unknown/release/pgolf_rt_wasm.wasm"
echo "== wasm-bindgen --target web -> examples/web/pkg"
wasm-bindgen --target web --out-dir "$here/pkg" "$wasm"
echo "   $(stat -c %s "$here/pkg/pgolf_rt_wasm_bg.wasm") bytes of wasm ($(stat -c %s "$wasm") before wasm-bindgen)"

# Copy only when the content changed, so repeated runs are cheap.
copy() { cmp -s "$1" "$2" || cp "$1" "$2"; }
copy "$artifact" "$here/model.ptz"
copy "$tokenizer" "$here/tokenizer.model"
# What the page says of its model: the artifact's file name, and whether it is the tiny demo.
demo=false
cmp -s "$artifact" "$root/models/pg-tiny-4L128.int8.ptz" && demo=true
python3 -c 'import json, sys; print(json.dumps({"name": sys.argv[1], "demo": sys.argv[2] == "true"}))' \
  "$(basename "$artifact")" "$demo" >"$here/model.json.tmp" && mv "$here/model.json.tmp" "$here/model.json"
echo "== model.ptz ($(stat -c %s "$here/model.ptz") bytes), model.json and tokenizer.model are in examples/web"
