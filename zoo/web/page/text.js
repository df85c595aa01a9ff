// Text in and out of the page: the bundle's tokenizer.json read by @huggingface/tokenizers, the chat template as
// the bundle's rendered (prefix, suffix) around one user turn, and text streamed as zoo's Generator streams it.
import { Tokenizer } from "@huggingface/tokenizers";

export async function loadTokenizer(dir) {
  const read = async (name) => {
    const response = await fetch(`${dir}/${name}`);
    if (!response.ok) throw new Error(`${dir}/${name}: HTTP ${response.status}`);
    return response.json();
  };
  return new Tokenizer(await read("tokenizer.json"), await read("tokenizer_config.json"));
}

// Token ids of one user turn: the chat template's rendering (zoo.runtime.tokenizer.encode_prompt), no extra specials
export function encodePrompt(tokenizer, text, chat) {
  const rendered = chat ? chat.prefix + text + chat.suffix : text;
  return tokenizer.encode(rendered, { add_special_tokens: !chat }).ids;
}

// The text of the tokens so far, handed out as it grows; an incomplete UTF-8 sequence waits for its next byte
export class TextStream {
  constructor(tokenizer) {
    this.tokenizer = tokenizer;
    this.ids = [];
    this.printed = "";
  }
  push(token) {
    this.ids.push(token);
    const text = this.text();
    if (text.endsWith("\ufffd")) return "";
    const fresh = text.slice(this.printed.length);
    this.printed = text;
    return fresh;
  }
  text() {
    return this.tokenizer.decode(this.ids, { skip_special_tokens: true });
  }
}
