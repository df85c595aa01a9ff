// The page: loads the bundle (manifest, tokenizer, LiteRT.js, the flatbuffer), streams answers with their speeds,
// and exposes `window.zoo` (the same loop, token ids and logits) to the browser tests.
import { stream, Stats } from "./generate.js";
import { WebModel, loadRuntime } from "./model.js";
import { TextStream, encodePrompt, loadTokenizer } from "./text.js";

const $ = (id) => document.getElementById(id);
const nextFrame = () => new Promise((resolve) => setTimeout(resolve, 0));

async function load() {
  const manifest = await (await fetch("./zoo-web.json")).json();
  $("model").textContent = `${manifest.model} · ${manifest.quant} · ${(manifest.size_bytes / 1e6).toFixed(1)} MB ` +
    `· kv ${manifest.kv_cache_max} · loading…`;
  const [tokenizer, liteRt] = await Promise.all([loadTokenizer("./tokenizer"), loadRuntime("./litert/")]);
  const bytes = new Uint8Array(await (await fetch(`./${manifest.file}`)).arrayBuffer());
  const started = performance.now();
  const model = await WebModel.load(liteRt, bytes, manifest.kv_layout);
  const loadSeconds = (performance.now() - started) / 1000;
  $("model").textContent = `${manifest.model} · ${manifest.quant} · ${(manifest.size_bytes / 1e6).toFixed(1)} MB ` +
    `· kv ${manifest.kv_cache_max} · LiteRT.js wasm, 1 thread · loaded in ${loadSeconds.toFixed(1)} s`;
  return { manifest, tokenizer, model, liteRt, loadSeconds };
}

// Text in, streamed text out (to `onText`), with the loop's ids and stats
async function generate(zoo, prompt, { maxNewTokens, sampling, onText } = {}) {
  const { manifest, tokenizer, model } = zoo;
  const ids = encodePrompt(tokenizer, prompt, manifest.chat);
  const stats = new Stats();
  const text = new TextStream(tokenizer);
  for await (const token of stream(model, ids, maxNewTokens ?? manifest.max_new_tokens, sampling, manifest.stop_ids,
    stats)) {
    const fresh = text.push(token);
    if (fresh && onText) onText(fresh);
    await nextFrame(); // let the page paint the token (outside the timed steps)
  }
  return { promptIds: ids, ids: text.ids, text: text.text(), stats };
}

function base64(floats) {
  const bytes = new Uint8Array(floats.buffer, floats.byteOffset, floats.byteLength);
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

// Teacher-forced logits as the Python test computes them: each prefill chunk's logits output, then decode of the
// last prompt token and of each forced token (float32 bytes, base64)
async function forcedLogits({ model }, promptIds, forcedIds) {
  model.reset();
  const prefill = [];
  let pos = 0;
  for (const [signature, n] of model.prefillPlan(0, promptIds.length - 1)) {
    prefill.push({ signature, logits: base64(await model.step(signature, promptIds.slice(pos, pos + n), pos)) });
    pos += n;
  }
  const decode = [];
  for (const token of [promptIds.at(-1), ...forcedIds]) {
    decode.push(base64(await model.step("decode", [token], pos)));
    pos += 1;
  }
  return { prefill, decode };
}

function heapBytes(liteRt) {
  return liteRt.liteRtWasm.HEAPU8.length;
}

async function main() {
  let zoo;
  try {
    zoo = await load();
  } catch (err) {
    $("status").textContent = `could not load the bundle: ${err.message ?? err}`;
    $("status").className = "error";
    throw err;
  }
  window.zoo = {
    manifest: zoo.manifest,
    loadSeconds: zoo.loadSeconds,
    encode: (text) => encodePrompt(zoo.tokenizer, text, zoo.manifest.chat),
    generate: async (prompt, options = {}) => {
      const { stats, ...rest } = await generate(zoo, prompt, options);
      return { ...rest, prefillTps: stats.prefillTps, decodeTps: stats.decodeTps, stop: stats.stop, line: stats.line() };
    },
    forcedLogits: (promptIds, forcedIds) => forcedLogits(zoo, promptIds, forcedIds),
    heapBytes: () => heapBytes(zoo.liteRt),
  };
  $("go").disabled = false;
  $("status").textContent = "ready";
  $("form").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("go").disabled = true;
    $("answer").textContent = "";
    $("stats").textContent = "";
    $("status").textContent = "generating…";
    try {
      const sampling = { temperature: Number($("temperature").value), top_p: Number($("top_p").value),
        seed: Number($("seed").value) };
      const result = await generate(zoo, $("prompt").value, { maxNewTokens: Number($("max").value), sampling,
        onText: (s) => { $("answer").textContent += s; } });
      window.zoo.last = { prefillTps: result.stats.prefillTps, decodeTps: result.stats.decodeTps,
        line: result.stats.line() };
      $("stats").textContent = `prefill ${result.stats.promptTokens} tokens: ${result.stats.prefillTps.toFixed(0)} ` +
        `tok/s · decode ${result.stats.newTokens} tokens: ${result.stats.decodeTps.toFixed(1)} tok/s ` +
        `(stop: ${result.stats.stop})`;
      $("status").textContent = "done";
    } catch (err) {
      $("status").textContent = String(err.message ?? err);
      $("status").className = "error";
    } finally {
      $("go").disabled = false;
    }
  });
}

window.zooReady = main();
