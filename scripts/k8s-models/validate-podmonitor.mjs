// Validate PodMonitor objects against the prometheus-operator CRD schema as
// @kubernetes-models/prometheus-operator compiles it (types, patterns,
// required fields), and reject unknown fields the way `kubectl apply`'s strict
// field validation does: the compiled schema lets them through, so keys are
// checked against the package's TypeScript declarations of the same types.
//
//   node validate-podmonitor.mjs MODELS_DIR OBJECTS.json
//
// MODELS_DIR is where scripts/install-test-deps.sh ran `npm ci` for
// package.json beside this file; OBJECTS.json is a JSON array of PodMonitors.
// Prints one line per object, `ok: ...` or `error: ...`; exits 0 unless it
// cannot run at all.

import { readFileSync, existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { pathToFileURL } from "node:url";

const [modelsDir, objectsFile] = process.argv.slice(2);
if (!modelsDir || !objectsFile) {
  console.error("usage: node validate-podmonitor.mjs MODELS_DIR OBJECTS.json");
  process.exit(2);
}
const modules = join(modelsDir, "node_modules");
const pkg = join(modules, "@kubernetes-models/prometheus-operator");
const version = JSON.parse(readFileSync(join(pkg, "package.json"), "utf8")).version;
const { PodMonitor } = await import(pathToFileURL(join(pkg, "monitoring.coreos.com/v1/PodMonitor.js")).href);

// === the TypeScript declarations: which keys each type allows ===

const files = new Map();

function declarations(file) {
  if (files.has(file)) return files.get(file);
  const text = readFileSync(file, "utf8");
  const imports = new Map();
  for (const m of text.matchAll(/^import \{ ([^}]+) \} from "([^"]+)";$/gm)) {
    const target = m[2].startsWith(".")
      ? join(dirname(file), m[2].replace(/\.js$/, ".d.ts"))
      : join(modules, m[2] + ".d.ts");
    for (const name of m[1].split(",").map((s) => s.trim())) imports.set(name, target);
  }
  const aliases = new Map();
  for (const m of text.matchAll(/^export type \{ (\w+) as (\w+)/gm)) aliases.set(m[2], m[1]);
  const interfaces = new Map();
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const head = lines[i].match(/^export interface (\w+)(?: extends ([^{]+))? \{$/);
    if (!head) continue;
    const props = new Map();
    for (i++; i < lines.length && lines[i] !== "}"; i++) {
      const prop = lines[i].match(/^ {4}"([^"]+)"\??: (.*)$/);
      if (prop) props.set(prop[1], prop[2]);
    }
    const bases = head[2] ? head[2].split(",").map((s) => s.trim()) : [];
    interfaces.set(head[1], { props, bases });
  }
  const decl = { file, imports, aliases, interfaces };
  files.set(file, decl);
  return decl;
}

// The allowed keys of type `name` as seen from `file`: key -> [type text, file].
function keysOf(name, file) {
  if (name === "TypeMeta") {
    return new Map([
      ["apiVersion", ["string", file]],
      ["kind", ["string", file]],
    ]);
  }
  const decl = declarations(file);
  const local = decl.interfaces.get(decl.aliases.get(name) ?? name);
  if (local) {
    const keys = new Map();
    for (const base of local.bases) for (const [k, v] of keysOf(base, file)) keys.set(k, v);
    for (const [k, v] of local.props) keys.set(k, [v, file]);
    return keys;
  }
  const target = decl.imports.get(name);
  if (!target || !existsSync(target)) throw new Error(`cannot find the declaration of ${name} (from ${file})`);
  return keysOf(name, target);
}

function unknownFields(value, type, file, path, out) {
  if (Array.isArray(value)) {
    value.forEach((item, i) => unknownFields(item, type, file, `${path}[${i}]`, out));
    return;
  }
  if (value === null || typeof value !== "object") return;
  const keys = keysOf(type, file);
  for (const [key, child] of Object.entries(value)) {
    const decl = keys.get(key);
    if (!decl) {
      out.push(`${path}.${key}: unknown field`);
      continue;
    }
    const [text, where] = decl;
    // Inline object types are maps ({ [key: string]: string }): any key.
    const ref = text.startsWith("{") ? null : text.match(/\bI[A-Z]\w*/);
    if (ref) unknownFields(child, ref[0], where, `${path}.${key}`, out);
  }
}

// === each object ===

const root = join(pkg, "monitoring.coreos.com/v1/PodMonitor.d.ts");
const objects = JSON.parse(readFileSync(objectsFile, "utf8"));
for (const object of objects) {
  const name = `PodMonitor/${object?.metadata?.name ?? "?"}`;
  const problems = [];
  try {
    new PodMonitor(object).validate();
  } catch (e) {
    problems.push(e.message);
  }
  try {
    unknownFields(object, "IPodMonitor", root, "", problems);
  } catch (e) {
    problems.push(e.message);
  }
  if (problems.length) {
    console.log(`error: ${name}: ${problems.join("; ")}`);
  } else {
    console.log(
      `ok: ${name}: prometheus-operator CRD schema (@kubernetes-models/prometheus-operator ${version}), unknown fields rejected`,
    );
  }
}
