// The generate loop over a WebModel, step for step zoo/runtime/generate.py's `stream`: prefill writes every
// prompt token but the last (chunks of the prefill signatures), decode of the last prompt token gives the first
// logits, then one decode per new token up to a stop token (not yielded) or maxNewTokens.
import { WebModel } from "./model.js";
import { Sampler } from "./sampling.js";

export class Stats {
  promptTokens = 0;
  newTokens = 0;
  prefillSeconds = 0; // prompt in, first logits out (includes decode of the last prompt token)
  decodeSeconds = 0; // decode steps after the first token, sampling included
  decodeSteps = 0;
  stop = "";

  get prefillTps() {
    return this.prefillSeconds ? this.promptTokens / this.prefillSeconds : 0;
  }
  get decodeTps() {
    return this.decodeSeconds ? this.decodeSteps / this.decodeSeconds : 0;
  }
  line() {
    return `prefill ${this.promptTokens} tokens at ${this.prefillTps.toFixed(0)} tok/s, decode ${this.newTokens} ` +
      `tokens at ${this.decodeTps.toFixed(1)} tok/s (stop: ${this.stop})`;
  }
}

export function checkPrompt(ids, maxNewTokens, model) {
  if (!ids.length) throw new Error("empty prompt");
  if (maxNewTokens < 1) throw new Error(`max_new_tokens must be >= 1, got ${maxNewTokens}`);
  const bad = ids.findIndex((t) => !(t >= 0 && t < model.vocabSize));
  if (bad >= 0)
    throw new Error(`token id ${ids[bad]} at prompt position ${bad} is outside the vocabulary [0, ${model.vocabSize})`);
  if (ids.length + maxNewTokens > model.kvMax)
    throw new Error(`prompt of ${ids.length} tokens + max_new_tokens=${maxNewTokens} = ${ids.length + maxNewTokens} ` +
      `exceeds kv_cache_max=${model.kvMax}: shorten the prompt or lower max_new_tokens`);
}

const now = () => performance.now() / 1000;

// New token ids as they are chosen; `stats` is filled in. The cache starts empty.
export async function* stream(model, ids, maxNewTokens, sampling = {}, stopIds = [], stats = new Stats()) {
  checkPrompt(ids, maxNewTokens, model);
  stats.promptTokens = ids.length;
  const sampler = new Sampler(sampling);
  const stops = new Set(stopIds);
  const vocab = model.vocabSize;
  model.reset();
  let start = now();
  let pos = 0;
  for (const [signature, n] of model.prefillPlan(0, ids.length - 1)) {
    await model.step(signature, ids.slice(pos, pos + n), pos, false);
    pos += n;
  }
  let token = sampler.choose(WebModel.row(await model.step("decode", [ids.at(-1)], pos), vocab));
  stats.prefillSeconds = now() - start;
  for (let i = 0; i < maxNewTokens; i++) {
    if (stops.has(token)) {
      stats.stop = "stop_token";
      return;
    }
    stats.newTokens += 1;
    yield token;
    if (i === maxNewTokens - 1) break;
    pos += 1;
    start = now();
    token = sampler.choose(WebModel.row(await model.step("decode", [token], pos), vocab));
    stats.decodeSeconds += now() - start;
    stats.decodeSteps += 1;
  }
  stats.stop = "max_new_tokens";
}
