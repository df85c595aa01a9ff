"""What a web bundle folder holds, and where the page and the npm packages it copies are in this repository."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
PAGE = HERE / "page"  # index.html and the page's ES modules, copied as they are
NODE_MODULES = HERE / "node_modules"  # `npm ci --prefix zoo/web` (setup.sh --with-web): package(-lock).json
# bundle path -> file of the npm packages (single-threaded wasm: the relaxed-SIMD build and the compat fallback)
VENDOR = {
    "vendor/litertjs-core.js": "@litertjs/core/dist/index.js",
    "vendor/litertjs-wasm-utils.js": "@litertjs/wasm-utils/dist/index.js",
    "vendor/tokenizers.mjs": "@huggingface/tokenizers/dist/tokenizers.min.mjs",
    **{
        f"litert/litert_wasm{kind}_internal.{ext}": f"@litertjs/core/wasm/litert_wasm{kind}_internal.{ext}"
        for kind in ("", "_compat")
        for ext in ("js", "wasm")
    },
}
MANIFEST = "zoo-web.json"  # model, recipe, size, cache layout, start / stop ids, chat affixes
TOKENIZER = "tokenizer"  # tokenizer.json, tokenizer_config.json, chat_template.jinja
