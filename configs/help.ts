// `--help` text shared by the commands that take a configuration: every --group.field with its
// type and default, read from the schema (so it cannot drift from what is accepted).
import yaml from "js-yaml";
import { ConfigSchema, GROUPS, type Config, type Group } from "./schema.ts";
import { groupShape, kindOf, unwrap } from "./introspect.ts";

const DEFAULTS = ConfigSchema.parse({}) as unknown as Record<Group, Record<string, unknown>>;

/** One line per field: `  --train.lr NUMBER  (default 5e-05)`, grouped. `groups`: which groups to list. */
export function fieldsHelp(groups: readonly Group[] = GROUPS): string {
  const out: string[] = [];
  for (const g of groups) {
    out.push(`  ${g}:`);
    for (const [f, s] of Object.entries(groupShape(g))) {
      const { base, nullable } = unwrap(s);
      const d = (base as unknown as { _zod: { def: { entries?: Record<string, string> } } })._zod.def;
      const kind = kindOf(s);
      const type = kind === "enum" && d.entries ? Object.values(d.entries).join("|") : kind.toUpperCase();
      out.push(`    --${g}.${f} ${type}${nullable ? "|null" : ""}  (default ${JSON.stringify(DEFAULTS[g][f])})`);
    }
  }
  return out.join("\n");
}

/** The resolved configuration as YAML (defaults filled in), for --print-config. */
export function configYaml(c: Config): string {
  return yaml.dump(c, { lineWidth: 120, noRefs: true });
}
