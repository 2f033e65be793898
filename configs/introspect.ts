// Reading the zod schema as data: which keys a group has, and what type a field expects. Used to
// parse command-line overrides by the field's type and to suggest the closest valid key.
import type { z } from "zod";
import { ConfigSchema, type Group } from "./schema.ts";

type Def = { type: string; innerType?: z.ZodType; element?: z.ZodType; items?: z.ZodType[]; entries?: Record<string, string>; shape?: Record<string, z.ZodType> };
const def = (s: z.ZodType): Def => (s as unknown as { _zod: { def: Def } })._zod.def;

/** Peels default/optional/nullable wrappers; returns the base schema and whether null is allowed. */
export function unwrap(s: z.ZodType): { base: z.ZodType; nullable: boolean } {
  let nullable = false;
  for (;;) {
    const d = def(s);
    if (d.type === "nullable") nullable = true;
    if ((d.type === "default" || d.type === "optional" || d.type === "nullable" || d.type === "prefault") && d.innerType) s = d.innerType;
    else return { base: s, nullable };
  }
}

export function groupShape(group: Group): Record<string, z.ZodType> {
  const base = unwrap(ConfigSchema.shape[group] as unknown as z.ZodType).base;
  return (base as unknown as { shape: Record<string, z.ZodType> }).shape;
}

/** The base kind of a field: number, string, boolean, enum, array, tuple, record, ... */
export function kindOf(s: z.ZodType): string {
  return def(unwrap(s).base).type;
}

export function elementOf(s: z.ZodType): z.ZodType | undefined {
  const d = def(unwrap(s).base);
  return d.element;
}

export function tupleItems(s: z.ZodType): z.ZodType[] | undefined {
  return def(unwrap(s).base).items;
}

/** Every valid dotted key, e.g. "train.global_batch_size". */
export function allKeys(): string[] {
  const out: string[] = [];
  for (const g of Object.keys(ConfigSchema.shape) as Group[]) for (const k of Object.keys(groupShape(g))) out.push(`${g}.${k}`);
  return out;
}

/** Edit distance (insert, delete, substitute, adjacent swap), for "did you mean". */
export function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0]![j] = j;
  for (let i = 1; i <= a.length; i++)
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, d[i - 2]![j - 2]! + 1);
      d[i]![j] = v;
    }
  return d[a.length]![b.length]!;
}

/** The closest valid key to a mistyped dotted key, if any is close enough to be a likely typo. */
export function suggest(dotted: string): string | undefined {
  let best: string | undefined;
  let bestD = Infinity;
  for (const k of allKeys()) {
    const dist = editDistance(dotted, k);
    if (dist < bestD) [best, bestD] = [k, dist];
  }
  // A typo keeps most of the name: allow about a third of it to differ.
  return best !== undefined && bestD <= Math.max(2, Math.floor(dotted.length / 3)) ? best : undefined;
}
