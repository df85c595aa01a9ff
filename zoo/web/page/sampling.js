// Next-token choice from one logits row, as zoo/runtime/sampling.py: greedy when temperature is 0, else
// softmax(logits / temperature) cut to top_k, then to the top_p mass, drawn from numpy's default_rng(seed)
// stream (SeedSequence -> PCG64 -> Generator.choice), so a seed picks the same tokens as `python -m zoo.generate`.

const M32 = 0xffffffff;
const MASK64 = (1n << 64n) - 1n;
const MASK128 = (1n << 128n) - 1n;
const PCG_MULT = (2549297995355413924n << 64n) | 4865540595714422341n;

function mul32(a, b) {
  return Math.imul(a, b) >>> 0;
}

// numpy.random.SeedSequence(seed).generate_state(4, uint64): the PCG64 seed words
function seedWords(seed) {
  const entropy = [];
  for (let n = BigInt(seed); ; n >>= 32n) {
    entropy.push(Number(n & 0xffffffffn));
    if (n >> 32n === 0n) break;
  }
  let hashA = 0x43b0d7e5;
  const hashmix = (value) => {
    value = (value ^ hashA) >>> 0;
    hashA = mul32(hashA, 0x931e8875);
    value = mul32(value, hashA);
    return (value ^ (value >>> 16)) >>> 0;
  };
  const mix = (x, y) => {
    const r = (mul32(0xca01f9dd, x) - mul32(0x4973f715, y)) >>> 0;
    return (r ^ (r >>> 16)) >>> 0;
  };
  const pool = [0, 1, 2, 3].map((i) => hashmix(i < entropy.length ? entropy[i] : 0));
  for (let src = 0; src < 4; src++)
    for (let dst = 0; dst < 4; dst++) if (src !== dst) pool[dst] = mix(pool[dst], hashmix(pool[src]));
  for (let src = 4; src < entropy.length; src++)
    for (let dst = 0; dst < 4; dst++) pool[dst] = mix(pool[dst], hashmix(entropy[src]));
  let hashB = 0x8b51f9dd;
  const words = [];
  for (let i = 0; i < 8; i++) {
    let v = (pool[i % 4] ^ hashB) >>> 0;
    hashB = mul32(hashB, 0x58f38ded);
    v = mul32(v, hashB);
    words.push((v ^ (v >>> 16)) >>> 0);
  }
  return [0, 1, 2, 3].map((i) => (BigInt(words[2 * i + 1]) << 32n) | BigInt(words[2 * i]));
}

// numpy's PCG64 (XSL-RR 128/64) and Generator.random()
export class Pcg64 {
  constructor(seed) {
    const [s0, s1, i0, i1] = seedWords(seed);
    this.inc = ((((i0 << 64n) | i1) << 1n) | 1n) & MASK128;
    this.state = 0n;
    this.step();
    this.state = (this.state + ((s0 << 64n) | s1)) & MASK128;
    this.step();
  }
  step() {
    this.state = (this.state * PCG_MULT + this.inc) & MASK128;
  }
  next64() {
    this.step();
    const x = ((this.state >> 64n) ^ this.state) & MASK64;
    const rot = this.state >> 122n;
    return ((x >> rot) | (x << ((64n - rot) & 63n))) & MASK64;
  }
  random() {
    return Number(this.next64() >> 11n) * (1.0 / 9007199254740992.0);
  }
}

// numpy's pairwise summation (np.sum of a float64 array), so normalisations round as in Python
function pairwiseSum(a, start, n) {
  if (n < 8) {
    let s = 0;
    for (let i = 0; i < n; i++) s += a[start + i];
    return s;
  }
  if (n <= 128) {
    const r = a.slice(start, start + 8);
    let i = 8;
    for (; i < n - (n % 8); i += 8) for (let j = 0; j < 8; j++) r[j] += a[start + i + j];
    let s = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; i++) s += a[start + i];
    return s;
  }
  let half = Math.floor(n / 2);
  half -= half % 8;
  return pairwiseSum(a, start, half) + pairwiseSum(a, start + half, n - half);
}

function normalised(p) {
  const sum = pairwiseSum(p, 0, p.length);
  return p.map((v) => v / sum);
}

function cumsum(p) {
  const out = new Float64Array(p.length);
  let s = 0;
  for (let i = 0; i < p.length; i++) out[i] = s += p[i];
  return out;
}

// first index i with sorted[i] > value (side='right') or >= value (side='left')
function searchsorted(sorted, value, right) {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (right ? sorted[mid] <= value : sorted[mid] < value) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

export class Sampler {
  constructor({ temperature = 0, top_k = 0, top_p = 1, seed = 0 } = {}) {
    if (!(temperature >= 0)) throw new Error(`sampling.temperature must be >= 0, got ${temperature}`);
    if (!(top_k >= 0)) throw new Error(`sampling.top_k must be >= 0 (0: no cut), got ${top_k}`);
    if (!(top_p > 0 && top_p <= 1)) throw new Error(`sampling.top_p must be in (0, 1], got ${top_p}`);
    this.cfg = { temperature, top_k, top_p };
    this.rng = new Pcg64(seed);
  }

  choose(logits) {
    const { temperature, top_k, top_p } = this.cfg;
    if (temperature === 0) {
      let best = 0;
      for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
      return best;
    }
    const x = Float64Array.from(logits, (v) => v / temperature);
    let order = Array.from(x.keys()).sort((a, b) => x[b] - x[a]); // stable, as argsort(-x, kind="stable")
    if (top_k) order = order.slice(0, top_k);
    let p = normalised(Float64Array.from(order, (i) => Math.exp(x[i] - x[order[0]])));
    if (top_p < 1) {
      const keep = searchsorted(cumsum(p), top_p, false) + 1;
      order = order.slice(0, keep);
      p = normalised(p.slice(0, keep));
    }
    // Generator.choice(len(order), p=p): cdf normalised by its last value, one uniform draw, side='right'
    const cdf = cumsum(p);
    const last = cdf[cdf.length - 1];
    for (let i = 0; i < cdf.length; i++) cdf[i] /= last;
    return order[searchsorted(cdf, this.rng.random(), true)];
  }
}
