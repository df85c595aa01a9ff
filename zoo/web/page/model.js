// A zoo flatbuffer's `prefill_{T}` and `decode` signatures run by LiteRT.js (wasm, CPU), one KV cache carried
// from each step's outputs to the next step's inputs: the page's twin of zoo/runtime/model.py's LiteModel.
import { Tensor, loadLiteRt } from "@litertjs/core";

const MASK_VALUE = -1e9; // zoo.architectures.layers.MASK_VALUE

export async function loadRuntime(wasmDir) {
  return loadLiteRt(wasmDir); // single-threaded: threads need COOP/COEP and were not faster on 2 cores
}

export class WebModel {
  // `liteRt` from loadRuntime; `bytes` the flatbuffer; `layout` "btnh" or "transposed" (the bundle's manifest)
  constructor(liteRt, compiled, layout) {
    this.liteRt = liteRt;
    this.compiled = compiled;
    const sigs = compiled.signatures;
    if (!sigs.decode) throw new Error(`the flatbuffer has no 'decode' signature (has ${Object.keys(sigs)})`);
    this.prefillLens = Object.keys(sigs)
      .filter((n) => n.startsWith("prefill_"))
      .map((n) => Number(n.slice("prefill_".length)))
      .sort((a, b) => a - b);
    this.sigs = {};
    for (const name of ["decode", ...this.prefillLens.map((t) => `prefill_${t}`)]) {
      const inputs = Object.fromEntries(sigs[name].getInputDetails().map((d) => [d.name, Array.from(d.shape)]));
      const outputs = Object.fromEntries(sigs[name].getOutputDetails().map((d) => [d.name, Array.from(d.shape)]));
      this.sigs[name] = { name, length: inputs.tokens[1], inputs, logitsShape: outputs.logits ?? null };
    }
    const decode = this.sigs.decode.inputs;
    this.cacheNames = Object.keys(decode).filter((n) => n.startsWith("kv_cache_")).sort();
    this.cacheShapes = Object.fromEntries(this.cacheNames.map((n) => [n, decode[n]]));
    this.kvMax = decode.kv_cache_k_0[layout === "btnh" ? 1 : 2]; // btnh K [1, S, G, H]; transposed K [1, G, S, H]
    this.vocabSize = this.sigs.decode.logitsShape.at(-1);
    this.cache = null;
    this.reset();
  }

  static async load(liteRt, bytes, layout) {
    return new WebModel(liteRt, await liteRt.loadAndCompile(bytes, { accelerator: "wasm" }), layout);
  }

  // an empty cache: zero tensors of decode's cache shapes
  reset() {
    this.dropCache();
    this.cache = Object.fromEntries(this.cacheNames.map((n) => {
      const shape = this.cacheShapes[n];
      return [n, new Tensor(new Float32Array(shape.reduce((a, b) => a * b, 1)), shape)];
    }));
  }

  dropCache() {
    for (const t of Object.values(this.cache ?? {})) t.delete();
    this.cache = null;
  }

  // (signature, real tokens) chunks that write `count` tokens from `start`: LiteModel.prefill_plan's rule
  prefillPlan(start, count) {
    const plan = [];
    let pos = start;
    let left = count;
    const lens = this.prefillLens;
    while (left) {
      const fits = lens.filter((t) => left <= t && pos + t <= this.kvMax);
      const full = lens.filter((t) => t <= left);
      let step;
      if (full.length && full.at(-1) === lens.at(-1)) step = [`prefill_${full.at(-1)}`, full.at(-1)];
      else if (fits.length) step = [`prefill_${fits[0]}`, left];
      else if (full.length) step = [`prefill_${full.at(-1)}`, full.at(-1)];
      else step = ["decode", 1];
      plan.push(step);
      pos += step[1];
      left -= step[1];
    }
    return plan;
  }

  // One signature on `tokens` at positions start.. (padded to its length). The caches it returns become the
  // model's cache. Returns the logits (Float32Array of the logits output) or null when `wantLogits` is false.
  async step(signature, tokens, start, wantLogits = true) {
    const sig = this.sigs[signature];
    const n = tokens.length;
    const t = sig.length;
    if (!(n > 0 && n <= t) || start + t > this.kvMax)
      throw new Error(`${signature}: ${n} tokens at position ${start} do not fit (T=${t}, kv_cache_max=${this.kvMax})`);
    const padded = new Int32Array(t);
    padded.set(tokens);
    const made = {
      tokens: new Tensor(padded, [1, t]),
      input_pos: new Tensor(Int32Array.from({ length: t }, (_, i) => start + i), [t]),
    };
    if (sig.inputs.mask) {
      const shape = sig.inputs.mask;
      const [rows, slots] = shape.slice(-2);
      const mask = new Float32Array(rows * slots);
      for (let i = 0; i < rows; i++)
        for (let s = 0; s < slots; s++) mask[i * slots + s] = s - i <= start ? 0 : MASK_VALUE;
      made.mask = new Tensor(mask, shape);
    }
    let outputs;
    try {
      outputs = await this.compiled.run(signature, { ...made, ...this.cache });
    } finally {
      for (const tensor of Object.values(made)) tensor.delete();
    }
    for (const name of this.cacheNames) {
      this.cache[name].delete();
      this.cache[name] = outputs[name];
    }
    const logits = outputs.logits && wantLogits ? outputs.logits.toTypedArray() : null;
    outputs.logits?.delete();
    return logits;
  }

  // the logits row of position `row` (default: the last) of a step's logits output
  static row(logits, vocab, row = -1) {
    const rows = logits.length / vocab;
    const r = row < 0 ? rows + row : row;
    return logits.subarray(r * vocab, (r + 1) * vocab);
  }
}
