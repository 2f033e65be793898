// Chat templates: our segment renderings joined equal @huggingface/jinja's rendering of the same
// template in Jinja; labels are -100 exactly off the assistant turns.
import { describe, expect, test } from "bun:test";
import { Template } from "@huggingface/jinja";
import { IGNORE_INDEX, loadTokenizer, makeTemplate, type Message } from "../../data/index.ts";
import { makeSample } from "../../data/samples.ts";
import type { TemplateContext } from "../../data/templates.ts";

const CHATML = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}";
const LLAMA2 = "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}";
const DEFAULT = "{% for m in messages %}{{ m['role'] | capitalize }}: {{ m['content'] | trim }}{{ eos_token }}{% endfor %}";

const MSGS: Message[] = [
  { role: "system", content: "You are terse." },
  { role: "user", content: "What is 2+2? " },
  { role: "assistant", content: "4." },
  { role: "user", content: "And 3+3?" },
  { role: "assistant", content: " 6, of course." },
];
const ctx: TemplateContext = { bosToken: "<s>", eosToken: "</s>", tokenizerTemplate: null };
const joined = (name: string, c = ctx, m = MSGS) => makeTemplate(name, c)(m).map((s) => s.text).join("");

describe("chat templates", () => {
  test("chatml, llama2 and default render as their Jinja templates do", () => {
    const vars = { messages: MSGS, bos_token: "<s>", eos_token: "</s>" };
    expect(joined("chatml")).toBe(new Template(CHATML).render(vars));
    expect(joined("llama2")).toBe(new Template(LLAMA2).render(vars));
    expect(joined("default")).toBe(new Template(DEFAULT).render(vars));
    expect(() => makeTemplate("nope", ctx)).toThrow(/unknown template 'nope'/);
  });

  test("trained segments are exactly the assistant turns", () => {
    const segs = makeTemplate("chatml", ctx)(MSGS);
    expect(segs.filter((s) => s.train).map((s) => s.text)).toEqual(["4.<|im_end|>", " 6, of course.<|im_end|>"]);
  });

  test("the tokenizer's own Qwen3 Jinja template: same text as @huggingface/jinja, labels only on assistant content", () => {
    const tk = loadTokenizer("qwen3");
    const c = { bosToken: tk.bosToken, eosToken: tk.eosToken, tokenizerTemplate: tk.chatTemplate };
    const text = new Template(tk.chatTemplate!).render({ messages: MSGS, bos_token: "", eos_token: tk.eosToken, add_generation_prompt: false });
    expect(joined("tokenizer", c)).toBe(text);
    const spec = { dataType: "conversation" as const, keys: ["messages"], maxSeqLen: 512, vocabSize: 151936, tokenizer: tk, template: makeTemplate("tokenizer", c) };
    const s = makeSample({ where: "mem line 1", value: { messages: MSGS } }, spec);
    if ("bad" in s) throw new Error(s.bad);
    expect(Array.from(s.ids)).toEqual(tk.encode(text)); // segment-wise tokenization matches whole-text here
    const trained = Array.from(s.ids).filter((_, i) => s.labels[i] !== IGNORE_INDEX);
    expect(trained).toEqual([...tk.encode("4."), tk.eosId!, ...tk.encode("6, of course."), tk.eosId!]);
    for (let i = 0; i < s.ids.length; i++) if (s.labels[i] !== IGNORE_INDEX) expect(s.labels[i]).toBe(s.ids[i]);
  }, 30_000);
});
