import type { Command } from "commander";
import { ShardlineError } from "../../shared/errors.js";
import { MANIFEST_API_VERSION, MANIFEST_KIND } from "../../shared/manifest/index.js";
import { manifestJsonSchemaText } from "../../shared/manifest/json-schema.js";
import type { CliIo } from "../output.js";

/** A node of the manifest's JSON Schema, as much of it as explain reads. */
interface SchemaNode {
  description?: string;
  type?: string | string[];
  properties?: Record<string, SchemaNode>;
  items?: SchemaNode;
  additionalProperties?: SchemaNode | boolean;
  anyOf?: SchemaNode[];
  oneOf?: SchemaNode[];
  enum?: unknown[];
  const?: unknown;
  default?: unknown;
  minimum?: number;
  maximum?: number;
  minItems?: number;
  maxItems?: number;
  pattern?: string;
  required?: string[];
}

/**
 * Registers `shardline explain ShardedJob[.FIELD...]`: a manifest field's type, what it means,
 * its default and what is allowed, and its own fields, as kubectl explain shows them. Read from
 * the JSON Schema made from the very schema the controller validates manifests with, so it says
 * what the controller accepts.
 */
export function registerExplain(program: Command, io: CliIo): void {
  program
    .command("explain")
    .summary("describe a field of the ShardedJob manifest")
    .description(
      "Describe a field of the ShardedJob manifest: its type, what it means, its default, what is allowed, and its fields. The path starts with ShardedJob, e.g. ShardedJob.spec.retries.backoffSeconds; a list's items are reached through the list's name (ShardedJob.spec.rollout.steps.wave).",
    )
    .argument("<FIELD>", "ShardedJob, or a path into it: ShardedJob.spec, ShardedJob.spec.placement.selector, ...")
    .option("--recursive", "list every field below, indented, without descriptions")
    .action((path: string, options: { recursive?: boolean }) => {
      io.stdout(explain(path, options.recursive === true));
    });
}

/** What explain prints for `path`. Throws ShardlineError (invalid-argument) naming the first unknown part. */
export function explain(path: string, recursive = false): string {
  const root = JSON.parse(manifestJsonSchemaText()) as SchemaNode;
  const [kind, ...fields] = path.split(".");
  if (kind?.toLowerCase() !== MANIFEST_KIND.toLowerCase() && kind?.toLowerCase() !== "shardedjobs") {
    throw ShardlineError.invalid("FIELD", path, `a path starting with ${MANIFEST_KIND}, e.g. ${MANIFEST_KIND}.spec.schedule`);
  }
  let node = root;
  const walked = [MANIFEST_KIND];
  for (const field of fields) {
    const children = fieldsOf(node);
    const next = children[field];
    if (next === undefined) {
      const known = Object.keys(children);
      throw ShardlineError.invalid(
        "FIELD",
        path,
        known.length === 0 ? `${walked.join(".")} has no fields below it` : `a field of ${walked.join(".")}: ${known.join(", ")}`,
      );
    }
    node = next;
    walked.push(field);
  }
  const lines = [`KIND:     ${MANIFEST_KIND}`, `VERSION:  ${MANIFEST_API_VERSION}`, ""];
  if (fields.length > 0) lines.push(`FIELD: ${fields.at(-1)} <${typeOf(node)}>`, "");
  lines.push("DESCRIPTION:", ...indented(node.description ?? "(no description)", 4));
  const facts = factsOf(node);
  if (facts.length > 0) lines.push("", ...facts.map((fact) => `    ${fact}`));
  const children = fieldsOf(node);
  if (Object.keys(children).length > 0) {
    lines.push("", "FIELDS:");
    if (recursive) lines.push(...tree(node, 1));
    else {
      const required = new Set(structural(node).required ?? []);
      for (const [name, child] of Object.entries(children)) {
        const facts = factsOf(child);
        lines.push(`  ${name}\t<${typeOf(child)}>${required.has(name) ? " -required-" : ""}${facts.length === 0 ? "" : `  (${facts.join("; ")})`}`);
        lines.push(...indented(child.description ?? "", 4), "");
      }
      if (lines.at(-1) === "") lines.pop();
    }
  }
  return `${lines.join("\n")}\n`;
}

/** The node that holds a field's structure: itself, or the object among its anyOf/oneOf choices. */
function structural(node: SchemaNode): SchemaNode {
  if (node.properties !== undefined || node.items !== undefined) return node;
  const choice = [...(node.anyOf ?? []), ...(node.oneOf ?? [])].find((c) => c.properties !== undefined || c.items !== undefined);
  return choice ?? node;
}

/** A field's own fields: an object's properties, or those of a list's items. */
function fieldsOf(node: SchemaNode): Record<string, SchemaNode> {
  const shape = structural(node);
  if (shape.properties !== undefined) return shape.properties;
  if (shape.items !== undefined) return fieldsOf(shape.items);
  return {};
}

function typeOf(node: SchemaNode): string {
  const shape = structural(node);
  if (shape.type === "array") return `[]${shape.items === undefined ? "" : typeOf(shape.items)}`;
  if (shape.type === "object" && shape.properties === undefined && typeof shape.additionalProperties === "object") return `map[string]${typeOf(shape.additionalProperties)}`;
  if (typeof shape.type === "string") return shape.type;
  const choices = [...(node.anyOf ?? []), ...(node.oneOf ?? [])].map(typeOf);
  return [...new Set(choices)].join(" | ") || "any";
}

/** Default, allowed values and bounds, one per line. */
function factsOf(node: SchemaNode): string[] {
  const facts: string[] = [];
  if (node.default !== undefined && !(typeof node.default === "object" && node.default !== null && Object.keys(node.default).length === 0)) {
    facts.push(`Default: ${JSON.stringify(node.default)}`);
  }
  const values = [...(node.enum ?? []), ...(node.anyOf ?? []).flatMap((c) => c.enum ?? [])];
  if (values.length > 0) facts.push(`Allowed: ${values.map((v) => JSON.stringify(v)).join(", ")}`);
  const patterns = [node.pattern, ...(node.anyOf ?? []).map((c) => c.pattern)].filter((p): p is string => p !== undefined);
  for (const pattern of patterns) facts.push(`Pattern: ${pattern}`);
  if (node.minimum !== undefined || node.maximum !== undefined) facts.push(`Range: ${node.minimum ?? "-∞"} to ${node.maximum ?? "∞"}`);
  if (node.minItems !== undefined || node.maxItems !== undefined) facts.push(`Items: ${node.minItems ?? 0} to ${node.maxItems ?? "any number"}`);
  return facts;
}

function tree(node: SchemaNode, depth: number): string[] {
  return Object.entries(fieldsOf(node)).flatMap(([name, child]) => [`${"  ".repeat(depth)}${name}\t<${typeOf(child)}>`, ...tree(child, depth + 1)]);
}

/** Text wrapped at 80 columns, each line indented by `by`. */
function indented(text: string, by: number): string[] {
  const lines: string[] = [];
  let line = "";
  for (const word of text.split(/\s+/).filter((w) => w !== "")) {
    if (line !== "" && by + line.length + 1 + word.length > 80) {
      lines.push(`${" ".repeat(by)}${line}`);
      line = word;
    } else line = line === "" ? word : `${line} ${word}`;
  }
  if (line !== "") lines.push(`${" ".repeat(by)}${line}`);
  return lines;
}
