// pipelines.ts readSource: `#include "x.wgsl"` lines are replaced by the file (shared WGSL helpers).
import { expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { readSource } from "../../kernels/webgpu/pipelines.ts";

test("#include inlines the helper file once per line, in place, after `enable f16;`", () => {
  const raw = readFileSync(new URL("../../kernels/webgpu/f16_narrow.wgsl", import.meta.url), "utf8");
  expect(raw).toContain('#include "f16_scale.wgsl"');
  const code = readSource("f16_narrow.wgsl");
  expect(code).not.toMatch(/^#include/m);
  expect(code.match(/fn scale_exp\(/g)?.length).toBe(1);
  expect(code.indexOf("enable f16;")).toBeLessThan(code.indexOf("fn pow2("));
});

test("a missing include names the file", () => {
  expect(() => readSource("no_such_shader.wgsl")).toThrow(/no_such_shader\.wgsl/);
});
