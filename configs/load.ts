// Loading a run's configuration: YAML file (--config) + command-line overrides (--group.field v
// or --group.field=v), validated by the zod schema, then cross-field checks. Every error names
// where it came from (file:line:col or the flag), the dotted key, and what was expected; all
// errors are collected and reported together, before anything starts.
import { readFileSync } from "node:fs";
import yaml from "js-yaml";
import type { z } from "zod";
import { ConfigSchema, GROUPS, type Config, type Group } from "./schema.ts";
import { elementOf, groupShape, kindOf, suggest, tupleItems, unwrap } from "./introspect.ts";
import { crossFieldErrors, type Command } from "./checks.ts";

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(problems.length === 1 ? problems[0] : `${problems.length} configuration errors:\n  ${problems.join("\n  ")}`);
    this.name = "ConfigError";
  }
}

export interface SplitArgs {
  configPath: string | null;
  /** dotted key -> raw string, in command-line order (a later flag wins). */
  overrides: Array<{ key: string; raw: string }>;
  /** Flags that are not --config or --group.field (tool-specific, e.g. merge's --load-dir). */
  rest: string[];
}

/** Splits argv into --config, --group.field overrides and everything else. */
export function splitArgs(argv: string[]): SplitArgs {
  const out: SplitArgs = { configPath: null, overrides: [], rest: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const eq = a.indexOf("=");
    const flag = a.startsWith("--") ? (eq > 0 ? a.slice(2, eq) : a.slice(2)) : null;
    const isGroupKey = flag !== null && /^[a-z_]+\.[a-z0-9_]+$/.test(flag);
    if (flag === "config" || isGroupKey) {
      let raw: string;
      if (eq > 0) raw = a.slice(eq + 1);
      else if (i + 1 < argv.length) raw = argv[++i]!;
      else throw new ConfigError([`--${flag}: expected a value after the flag`]);
      if (flag === "config") out.configPath = raw;
      else out.overrides.push({ key: flag, raw });
    } else out.rest.push(a);
  }
  return out;
}

/** Converts a command-line string to the type the field expects, or explains why it can't. */
export function parseValue(field: z.ZodType, raw: string, where: string): unknown {
  const { nullable } = unwrap(field);
  if (nullable && /^(null|none|~)$/i.test(raw)) return null;
  switch (kindOf(field)) {
    case "number": {
      const v = raw.trim() === "" ? NaN : Number(raw);
      if (!Number.isFinite(v)) throw new ConfigError([`${where}: expected a number, got "${raw}"`]);
      return v;
    }
    case "boolean": {
      if (/^(true|yes|on|1)$/i.test(raw)) return true;
      if (/^(false|no|off|0)$/i.test(raw)) return false;
      throw new ConfigError([`${where}: expected a boolean (true/false), got "${raw}"`]);
    }
    case "array": {
      const el = elementOf(field)!;
      const parts = raw.trim() === "" ? [] : raw.split(",").map((p) => p.trim());
      return parts.map((p, i) => parseValue(el, p, `${where}[${i}]`));
    }
    case "tuple": {
      const items = tupleItems(field)!;
      const parts = raw.split(",").map((p) => p.trim());
      if (parts.length !== items.length) throw new ConfigError([`${where}: expected ${items.length} comma-separated values, got "${raw}"`]);
      return parts.map((p, i) => parseValue(items[i]!, p, `${where}[${i}]`));
    }
    case "record":
    case "object": {
      try {
        return yaml.load(raw);
      } catch (e) {
        throw new ConfigError([`${where}: expected a YAML/JSON mapping, got "${raw}" (${(e as Error).message.split("\n")[0]})`]);
      }
    }
    default:
      return raw; // string, enum: the schema checks the value
  }
}

/** 1-based line:col of a dotted key in YAML text, found by indentation; null if absent. */
export function locate(text: string, path: Array<string | number>): string | null {
  const lines = text.split("\n");
  let from = 0;
  let indent = -1;
  let found: string | null = null;
  for (const key of path) {
    if (typeof key !== "string") break;
    let hit = -1;
    for (let i = from; i < lines.length; i++) {
      const m = /^(\s*)([^\s#:][^:#]*?)\s*:(\s|$)/.exec(lines[i]!);
      if (!m) continue;
      const ind = m[1]!.length;
      if (ind <= indent) break; // left the parent mapping
      if (m[2]!.replace(/^["']|["']$/g, "") === key) {
        hit = i;
        indent = ind;
        found = `${i + 1}:${ind + 1}`;
        break;
      }
    }
    if (hit < 0) break;
    from = hit + 1;
  }
  return found;
}

function readYaml(path: string): { data: Record<string, unknown>; text: string } {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    throw new ConfigError([`${path}: cannot read the config file (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`]);
  }
  let data: unknown;
  try {
    data = yaml.load(text, { filename: path });
  } catch (e) {
    const err = e as { mark?: { line: number; column: number }; reason?: string; message: string };
    const at = err.mark ? `:${err.mark.line + 1}:${err.mark.column + 1}` : "";
    throw new ConfigError([`${path}${at}: YAML syntax error: ${err.reason ?? err.message.split("\n")[0]}`]);
  }
  if (data === undefined || data === null) return { data: {}, text };
  if (typeof data !== "object" || Array.isArray(data))
    throw new ConfigError([`${path}: expected a mapping of groups (${GROUPS.join(", ")}) at the top level`]);
  return { data: data as Record<string, unknown>, text };
}

/** What the field must be, as a person would write it: "must be > 0", "must be one of ...". */
function describe(issue: z.core.$ZodIssue): string {
  switch (issue.code) {
    case "invalid_type":
      return issue.expected === "int" ? "must be an integer" : `expected ${issue.expected}`;
    case "invalid_value":
      return `expected one of ${issue.values.map((v) => JSON.stringify(v)).join(", ")}`;
    case "too_small":
      if (issue.origin === "array" || issue.origin === "string") return `must have at least ${issue.minimum} ${issue.origin === "array" ? "items" : "characters"}`;
      return `must be ${issue.inclusive === false ? ">" : ">="} ${issue.minimum}`;
    case "too_big":
      if (issue.origin === "array" || issue.origin === "string") return `must have at most ${issue.maximum} ${issue.origin === "array" ? "items" : "characters"}`;
      return `must be ${issue.inclusive === false ? "<" : "<="} ${issue.maximum}`;
    case "invalid_format":
      return `must match ${issue.format === "regex" ? issue.message : issue.format}`;
    default:
      return issue.message;
  }
}

function valueAt(obj: unknown, path: PropertyKey[]): unknown {
  let v = obj;
  for (const k of path) v = v !== null && typeof v === "object" ? (v as Record<PropertyKey, unknown>)[k] : undefined;
  return v;
}

/**
 * The run's configuration from argv (--config FILE and --group.field overrides).
 * `command` selects the required fields and cross-field checks (train, infer, data).
 * Throws ConfigError listing every problem.
 */
export function loadConfig(argv: string[], command: Command = "train"): { config: Config; rest: string[] } {
  const args = splitArgs(argv);
  const file = args.configPath;
  const { data, text } = file ? readYaml(file) : { data: {}, text: "" };
  const problems: string[] = [];
  const fromCli = new Map<string, string>();

  for (const { key, raw } of args.overrides) {
    const [g, f] = key.split(".") as [string, string];
    const shape = (GROUPS as string[]).includes(g) ? groupShape(g as Group) : undefined;
    if (!shape || !(f in shape)) {
      const s = suggest(key);
      problems.push(`--${key}: unknown key ${key}${s ? `; did you mean ${s}?` : ""}`);
      continue;
    }
    try {
      const grp = (data[g] ??= {}) as Record<string, unknown>;
      if (typeof grp !== "object" || grp === null || Array.isArray(grp)) continue; // reported by the schema
      grp[f] = parseValue(shape[f]!, raw, `--${key}`);
      fromCli.set(key, raw);
    } catch (e) {
      if (e instanceof ConfigError) problems.push(...e.problems);
      else throw e;
    }
  }

  const where = (path: PropertyKey[]): string => {
    const dotted = path.map(String).join(".");
    if (fromCli.has(dotted)) return `--${dotted} ${fromCli.get(dotted)}`;
    const loc = file ? locate(text, path as string[]) : null;
    return file ? `${file}${loc ? `:${loc}` : ""}` : "config";
  };

  const parsed = ConfigSchema.safeParse(data);
  if (!parsed.success) {
    for (const issue of parsed.error.issues) {
      if (issue.code === "unrecognized_keys") {
        for (const k of issue.keys) {
          const path = [...issue.path, k];
          const dotted = path.map(String).join(".");
          const s = suggest(dotted);
          const top = issue.path.length === 0;
          problems.push(
            `${where(path)}: unknown ${top ? "group" : "key"} ${dotted}` +
              (s && !top ? `; did you mean ${s}?` : top ? `; expected one of ${GROUPS.join(", ")}` : ""),
          );
        }
      } else {
        const dotted = issue.path.map(String).join(".");
        const got = valueAt(data, issue.path);
        const d = describe(issue);
        problems.push(`${where(issue.path)}: ${dotted}${d.startsWith("must") ? " " : ": "}${d}, got ${JSON.stringify(got)}`);
      }
    }
    throw new ConfigError(problems);
  }
  if (problems.length > 0) throw new ConfigError(problems);
  const config = parsed.data;
  const cross = crossFieldErrors(config, command).map((p) => `${file ?? "config"}: ${p}`);
  if (cross.length > 0) throw new ConfigError(cross);
  return { config, rest: args.rest };
}
