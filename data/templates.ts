// Chat templates: a conversation -> text segments, each marked trained (assistant turn) or not.
// Segments are tokenized one by one and concatenated, so labels are -100 exactly on the tokens
// of untrained segments (as VeOmni's ChatTemplate.encode_messages does per message).
//   default : "<Role>: <content stripped><eos>" per message (VeOmni's DefaultTemplate); a whole
//             assistant message is trained.
//   chatml  : "<|im_start|>role\ncontent<|im_end|>\n"; trained: assistant content + <|im_end|>.
//   llama2  : "<s>[INST] <<SYS>>..<</SYS>>\n\nuser [/INST] assistant </s>"; trained: " assistant </s>".
//   qwen2_vl: VeOmni's Qwen2VLChatTemplate: "<|im_start|>role\ncontent.strip()<|im_end|>\n" per
//             message after a default system message ("You are a helpful assistant.", added when
//             the conversation has none); trained: assistant content + "<|im_end|>\n".
//   tokenizer (or any string containing "{{" / "{%"): the tokenizer's own Jinja chat_template
//             (tokenizer_config.json) rendered with @huggingface/jinja; trained: each assistant
//             message's content as it appears in the rendering, plus the EOS token right after it.
import { Template } from "@huggingface/jinja";

export interface Message { role: string; content: string }
export interface Segment { text: string; train: boolean }

export interface TemplateContext {
  bosToken: string | null;
  eosToken: string | null;
  /** tokenizer_config.json chat_template, for `tokenizer`. */
  tokenizerTemplate: string | null;
}

export const BUILTIN_TEMPLATES = ["default", "chatml", "llama2", "qwen2_vl", "tokenizer"] as const;

/** ShareGPT roles (VeOmni's sharegpt4v preprocessors: {from, value}). */
const SHAREGPT_ROLES: Record<string, string> = { human: "user", gpt: "assistant", system: "system", user: "user", assistant: "assistant" };

/** Parses a row's `messages` value ({role, content}, or ShareGPT's {from, value}); returns an
 *  error string on a wrong shape. */
export function parseMessages(v: unknown): Message[] | string {
  if (!Array.isArray(v)) return `expected an array of {role, content}, got ${typeof v}`;
  const out: Message[] = [];
  for (let i = 0; i < v.length; i++) {
    const m = v[i];
    if (m && typeof m === "object" && typeof m.from === "string" && typeof m.value === "string" && SHAREGPT_ROLES[m.from]) {
      out.push({ role: SHAREGPT_ROLES[m.from], content: m.value });
      continue;
    }
    if (!m || typeof m !== "object" || typeof m.role !== "string" || typeof m.content !== "string")
      return `message ${i}: expected {role: string, content: string} or {from: human|gpt|system, value: string}, got ${JSON.stringify(m)?.slice(0, 80)}`;
    out.push({ role: m.role, content: m.content });
  }
  if (!out.some((m) => m.role === "assistant")) return "conversation has no assistant message (nothing to train on)";
  return out;
}

/** A template name (or inline Jinja) -> a renderer; unknown names fail here, at start. */
export function makeTemplate(name: string, ctx: TemplateContext): (msgs: Message[]) => Segment[] {
  const eos = ctx.eosToken ?? "";
  switch (name) {
    case "default":
      return (msgs) => msgs.map((m) => ({
        text: m.role.charAt(0).toUpperCase() + m.role.slice(1) + ": " + m.content.trim() + eos,
        train: m.role === "assistant",
      }));
    case "chatml":
      return (msgs) => msgs.flatMap((m) => m.role === "assistant"
        ? [{ text: "<|im_start|>assistant\n", train: false }, { text: m.content + "<|im_end|>", train: true }, { text: "\n", train: false }]
        : [{ text: `<|im_start|>${m.role}\n${m.content}<|im_end|>\n`, train: false }]);
    case "llama2":
      return (msgs) => llama2(msgs, ctx.bosToken ?? "", eos);
    case "qwen2_vl":
      return (msgs) => (msgs[0]?.role === "system" ? msgs : [{ role: "system", content: "You are a helpful assistant." }, ...msgs]).flatMap((m) => {
        const head = { text: `<|im_start|>${m.role}\n`, train: false };
        const content = m.content.trim();
        if (!content) return [head];
        return [head, { text: content + "<|im_end|>\n", train: m.role === "assistant" }];
      });
    case "tokenizer":
      if (!ctx.tokenizerTemplate) throw new Error("data.chat_template: 'tokenizer' but tokenizer_config.json has no chat_template");
      return jinja(ctx.tokenizerTemplate, ctx);
    default:
      if (name.includes("{{") || name.includes("{%")) return jinja(name, ctx);
      throw new Error(`data.chat_template: unknown template '${name}'; expected one of ${BUILTIN_TEMPLATES.join(", ")} or an inline Jinja template`);
  }
}

function llama2(msgs: Message[], bos: string, eos: string): Segment[] {
  let sys: string | null = null;
  let rest = msgs;
  if (msgs[0]?.role === "system") { sys = msgs[0].content; rest = msgs.slice(1); }
  const out: Segment[] = [];
  rest.forEach((m, i) => {
    if ((m.role === "user") !== (i % 2 === 0)) throw new Error("llama2 template: roles must alternate user/assistant/user/...");
    const content = i === 0 && sys !== null ? `<<SYS>>\n${sys}\n<</SYS>>\n\n${m.content}` : m.content;
    if (m.role === "user") out.push({ text: `${bos}[INST] ${content.trim()} [/INST]`, train: false });
    else out.push({ text: ` ${content.trim()} ${eos}`, train: true });
  });
  return out;
}

function jinja(src: string, ctx: TemplateContext): (msgs: Message[]) => Segment[] {
  const tpl = new Template(src);
  const eos = ctx.eosToken ?? "";
  return (msgs) => {
    const text = tpl.render({ messages: msgs, bos_token: ctx.bosToken ?? "", eos_token: eos, add_generation_prompt: false });
    // walk the messages in order through the rendering; each assistant content (after any
    // reasoning block the template strips) becomes a trained span.
    const out: Segment[] = [];
    let cursor = 0, emitted = 0;
    for (const m of msgs) {
      // templates often strip the content (and reasoning before "</think>"): try it as is, then trimmed
      const raw = m.role === "assistant" ? m.content.split("</think>").pop()! : m.content;
      let content = raw, at = text.indexOf(raw, cursor);
      if (at < 0) { content = raw.trim(); at = content ? text.indexOf(content, cursor) : -1; }
      if (content === "") continue;
      if (at < 0) {
        if (m.role === "assistant") throw new Error(`chat template does not contain assistant message verbatim: ${JSON.stringify(content.slice(0, 60))}`);
        continue;
      }
      let end = at + content.length;
      if (m.role === "assistant") {
        if (eos && text.startsWith(eos, end)) end += eos.length;
        if (at > emitted) out.push({ text: text.slice(emitted, at), train: false });
        out.push({ text: text.slice(at, end), train: true });
        emitted = end;
      }
      cursor = end;
    }
    if (emitted < text.length) out.push({ text: text.slice(emitted), train: false });
    return out;
  };
}
