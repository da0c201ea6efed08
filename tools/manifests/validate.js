#!/usr/bin/env node
// Validates rendered Kubernetes manifests (the output of `kubectl kustomize daemonset/`, and of
// deploy/csi/ and deploy/csi/examples/) offline:
//  1. every object against the OpenAPI schema of its apiVersion/kind (kubernetes-models: the
//     Kubernetes v1.33.0 schema; @kubernetes-models/prometheus-operator for the PodMonitor CRD);
//  2. every key of every object against the properties that schema declares, because the
//     Kubernetes schemas do not forbid unknown properties: a misspelled `mountPropogation` is valid
//     JSON-schema-wise, and `kubectl apply` (without --validate=strict) drops it with a warning at
//     most, so the volume silently loses its propagation.
//
// Usage:
//   node validate.js [--deps DIR] [--breakages CASES.yaml] [NAME=]RENDERED.yaml...
// Each RENDERED.yaml is one rendered set (one kustomization), checked on its own; NAME (default:
// the file's path) labels its report lines and is what a breakage case's `set` names.
// --deps names the directory whose node_modules holds the pinned packages (validate.sh passes its
// cache); it defaults to this script's directory. --breakages first requires every set to pass,
// then applies each case's JSON-patch to a copy of its set (`set`, default the first one) and
// requires the check to fail, naming the case's `expect` text in its report: a check that cannot
// fail proves nothing.
// Exit status: 0 all good, 1 a check failed, 2 usage or setup error.
'use strict';

const fs = require('fs');
const path = require('path');
const { createRequire } = require('module');

function usage(msg) {
  console.error(`validate.js: ${msg}`);
  console.error('usage: node validate.js [--deps DIR] [--breakages CASES.yaml] [NAME=]RENDERED.yaml...');
  process.exit(2);
}

const args = process.argv.slice(2);
let depsDir = __dirname;
let breakagesFile = null;
const sets = []; // {name, file}, in the order given
while (args.length) {
  const a = args.shift();
  if (a === '--deps') depsDir = args.shift() || usage('--deps needs a directory');
  else if (a === '--breakages') breakagesFile = args.shift() || usage('--breakages needs a file');
  else if (a.startsWith('-')) usage(`unknown option ${a}`);
  else {
    const eq = a.indexOf('=');
    const set = eq > 0 ? { name: a.slice(0, eq), file: a.slice(eq + 1) } : { name: a, file: a };
    if (sets.some((s) => s.name === set.name)) usage(`set ${set.name} given twice`);
    sets.push(set);
  }
}
if (!sets.length) usage('no rendered manifest file');

// Resolve the packages from --deps, not from wherever this script lies: the test keeps them in a
// cache directory keyed by the lock file, outside the source tree.
const depsRequire = createRequire(path.join(path.resolve(depsDir), 'package.json'));
const YAML = depsRequire('yaml');
const { Model } = depsRequire('@kubernetes-models/base');

// apiVersion -> the module directory holding one model per kind. Only GA group-versions that
// every supported cluster serves are listed: kubernetes-models also carries long-removed versions
// (extensions/v1beta1, apps/v1beta2...), which must fail here rather than at `kubectl apply`.
// A new kind in a listed group needs nothing; a new group needs a line here.
const MODELS = {
  v1: 'kubernetes-models/v1',
  'apps/v1': 'kubernetes-models/apps/v1',
  'batch/v1': 'kubernetes-models/batch/v1',
  'policy/v1': 'kubernetes-models/policy/v1',
  'rbac.authorization.k8s.io/v1': 'kubernetes-models/rbac.authorization.k8s.io/v1',
  'scheduling.k8s.io/v1': 'kubernetes-models/scheduling.k8s.io/v1',
  'storage.k8s.io/v1': 'kubernetes-models/storage.k8s.io/v1',
  'monitoring.coreos.com/v1': '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1',
};

function modelFor(apiVersion, kind) {
  const dir = MODELS[apiVersion];
  if (!dir) return { error: `apiVersion ${JSON.stringify(apiVersion)} is not one validate.js knows (MODELS)` };
  if (typeof kind !== 'string' || !/^[A-Z][A-Za-z0-9]*$/.test(kind)) {
    return { error: `kind ${JSON.stringify(kind)} is not a kind name` };
  }
  let mod;
  try {
    mod = depsRequire(`${dir}/${kind}`);
  } catch (e) {
    if (e.code === 'MODULE_NOT_FOUND') return { error: `no schema for kind ${kind} in ${apiVersion}` };
    throw e;
  }
  const cls = mod[kind];
  // The same directories hold sub-schemas (Container, VolumeMount...): only a model whose own
  // apiVersion and kind match is a top-level object.
  if (!cls || cls.kind !== kind || cls.apiVersion !== apiVersion) {
    return { error: `${kind} is not a top-level kind of ${apiVersion}` };
  }
  return { cls };
}

// The packages ship each schema precompiled into an ajv function (all errors collected), with no
// schema document left to read the property lists from. That function reads every property its
// schema declares, present or not (`void 0 === data.mountPropagation || ...`), and for a map
// (additionalProperties) every key it holds. So the object is handed to it behind a Proxy that
// records, per object, each property name read: afterwards that set is the schema's property list
// for that very object, whatever $ref, array item or map value led there.
function recordingProxy(value, reads) {
  if (value === null || typeof value !== 'object') return value;
  const note = (target, key) => {
    if (typeof key !== 'string' || Array.isArray(target)) return;
    if (!reads.has(target)) reads.set(target, new Set());
    reads.get(target).add(key);
  };
  return new Proxy(value, {
    get(target, key, receiver) {
      note(target, key);
      return recordingProxy(Reflect.get(target, key, receiver), reads);
    },
    has(target, key) {
      note(target, key);
      return Reflect.has(target, key);
    },
  });
}

// Edit distance, for a "did you mean" on a misspelled key.
function distance(a, b) {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length];
}
function hint(key, known) {
  const names = [...known].sort();
  const [best] = names
    .map((n) => [distance(key.toLowerCase(), n.toLowerCase()), n])
    .sort((x, y) => x[0] - y[0]);
  if (best && best[0] <= Math.max(2, Math.floor(key.length / 4))) return ` (did you mean "${best[1]}"?)`;
  return names.length <= 12 ? ` (known here: ${names.join(', ')})` : '';
}

const pointerToken = (key) => String(key).replace(/~/g, '~0').replace(/\//g, '~1');

// Every key of an object its schema looked at must be one the schema read. An object the schema
// read nothing of is free-form (type: object with no properties, e.g. a preserve-unknown-fields
// CRD field): it is counted and reported, not checked. Keys already reported are not descended.
function findUnknownFields(value, reads, pointer, out, stats) {
  if (Array.isArray(value)) {
    value.forEach((v, i) => findUnknownFields(v, reads, `${pointer}/${i}`, out, stats));
    return;
  }
  if (value === null || typeof value !== 'object') return;
  const known = reads.get(value);
  if (!known) {
    if (Object.keys(value).length) stats.freeForm.push(pointer || '/');
    return;
  }
  stats.objects++;
  for (const key of Object.keys(value)) {
    const at = `${pointer}/${pointerToken(key)}`;
    if (!known.has(key)) {
      out.push(`${at}: unknown field "${key}"${hint(key, known)}`);
    } else {
      findUnknownFields(value[key], reads, at, out, stats);
    }
  }
}

function describe(obj) {
  const m = (obj && obj.metadata) || {};
  const name = m.namespace ? `${m.namespace}/${m.name}` : m.name;
  return `${obj && obj.kind} ${name}`;
}

// Validates one object; returns { problems: [string], stats }.
function checkObject(obj) {
  const stats = { objects: 0, freeForm: [] };
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) {
    return { problems: ['/: not a mapping'], stats };
  }
  const { cls, error } = modelFor(obj.apiVersion, obj.kind);
  if (error) return { problems: [`/: ${error}`], stats };

  const problems = [];
  const reads = new WeakMap();
  try {
    // The model's validate() runs the compiled schema on `this`: the recording proxy here.
    cls.prototype.validate.call(recordingProxy(obj, reads));
  } catch (e) {
    if (!Array.isArray(e.errors)) throw e;
    for (const err of e.errors) {
      const extra = err.keyword === 'enum' ? ` (${err.params.allowedValues.join(', ')})` : '';
      problems.push(`${err.instancePath || '/'}: ${err.message}${extra}`);
    }
  }
  if (cls.prototype.validate === Model.prototype.validate) {
    // The base Model's validate() checks nothing: a model without its schema must not pass.
    problems.push('/: this model carries no validate function');
  }
  if (!reads.has(obj)) {
    // Every kind's schema reads apiVersion and kind: nothing read means the recording no longer
    // sees the schema at work (a package change), and the key walk below would check nothing.
    problems.push('/: the schema read no property: the unknown-field check cannot work');
  }
  findUnknownFields(obj, reads, '', problems, stats);
  return { problems, stats };
}

function parseRendered(text, what) {
  // YAML 1.1, as Kubernetes' own YAML decoder (go-yaml v2 under sigs.k8s.io/yaml) reads it: an
  // unquoted `yes` is a boolean there, and must be one here too.
  const docs = YAML.parseAllDocuments(text, { version: '1.1', uniqueKeys: true });
  const objects = [];
  for (const doc of docs) {
    if (doc.errors.length) throw new Error(`${what}: ${doc.errors.map((e) => e.message).join('; ')}`);
    const obj = doc.toJS();
    if (obj !== null) objects.push(obj);
  }
  return objects;
}

// Returns the report lines of every problem in `objects` (empty: all valid).
function checkAll(objects, { verbose }) {
  const report = [];
  if (!objects.length) report.push('no objects in the rendered output');
  for (const obj of objects) {
    const { problems, stats } = checkObject(obj);
    for (const p of problems) report.push(`${describe(obj)}: ${p}`);
    if (verbose) {
      const ff = stats.freeForm.length ? `; free-form, keys not checked: ${stats.freeForm.join(' ')}` : '';
      console.log(`  ${describe(obj)}: ${problems.length ? `${problems.length} problem(s)` : 'ok'}` +
        ` (${stats.objects} mappings checked for unknown fields${ff})`);
    }
  }
  return report;
}

// A minimal JSON-patch (RFC 6902: add, remove, replace, move) for the breakage cases.
function parsePointer(p) {
  if (typeof p !== 'string' || !p.startsWith('/')) throw new Error(`bad JSON pointer ${p}`);
  return p.slice(1).split('/').map((t) => t.replace(/~1/g, '/').replace(/~0/g, '~'));
}
function locate(doc, pointer) {
  const tokens = parsePointer(pointer);
  const last = tokens.pop();
  let parent = doc;
  for (const t of tokens) {
    if (parent === null || typeof parent !== 'object' || !(t in parent)) {
      throw new Error(`patch path ${pointer}: ${t} not found`);
    }
    parent = parent[t];
  }
  if (parent === null || typeof parent !== 'object') throw new Error(`patch path ${pointer}: no parent`);
  return { parent, key: Array.isArray(parent) && last === '-' ? parent.length : last };
}
function applyPatch(doc, ops) {
  for (const op of ops) {
    if (op.op === 'move') {
      const from = locate(doc, op.from);
      if (!(from.key in from.parent)) throw new Error(`patch from ${op.from}: not found`);
      const value = from.parent[from.key];
      if (Array.isArray(from.parent)) from.parent.splice(from.key, 1);
      else delete from.parent[from.key];
      applyPatch(doc, [{ op: 'add', path: op.path, value }]);
      continue;
    }
    const { parent, key } = locate(doc, op.path);
    if (op.op === 'add') {
      if (Array.isArray(parent)) parent.splice(Number(key), 0, op.value);
      else parent[key] = op.value;
    } else if (op.op === 'replace' || op.op === 'remove') {
      if (!(key in parent)) throw new Error(`patch path ${op.path}: not found (the manifests changed?)`);
      if (op.op === 'replace') parent[key] = op.value;
      else if (Array.isArray(parent)) parent.splice(Number(key), 1);
      else delete parent[key];
    } else {
      throw new Error(`patch op ${JSON.stringify(op.op)} not supported`);
    }
  }
}

function runBreakages(loaded, cases) {
  let passed = 0;
  let failed = 0;
  for (const c of cases) {
    const set = c.set === undefined ? loaded[0] : loaded.find((s) => s.name === c.set);
    if (!set) throw new Error(`case "${c.case}": no rendered set named ${JSON.stringify(c.set)}`);
    const copy = JSON.parse(JSON.stringify(set.objects));
    const target = copy.find((o) => o.kind === c.kind && (!c.name || o.metadata.name === c.name));
    if (!target) throw new Error(`case "${c.case}": no ${c.kind} in the rendered set ${set.name}`);
    try {
      applyPatch(target, c.patch);
    } catch (e) {
      throw new Error(`case "${c.case}": ${e.message}; update ${breakagesFile} to the manifests`);
    }
    const report = checkAll(copy, { verbose: false });
    const named = report.filter((line) => line.includes(c.expect));
    if (named.length) {
      passed++;
      console.log(`  ok   ${c.case} [${set.name}]: rejected as expected`);
      for (const line of named) console.log(`         ${line}`);
    } else {
      failed++;
      console.log(`  FAIL ${c.case} [${set.name}]: expected a report naming ${JSON.stringify(c.expect)}, got:`);
      for (const line of report.length ? report : ['(nothing: the broken copy passed)']) {
        console.log(`         ${line}`);
      }
    }
  }
  return { passed, failed };
}

function main() {
  const loaded = [];
  const report = [];
  for (const { name, file } of sets) {
    const objects = parseRendered(fs.readFileSync(file, 'utf8'), file);
    console.log(`validate.js: ${name}: ${objects.length} objects`);
    for (const line of checkAll(objects, { verbose: true })) report.push(`${name}: ${line}`);
    loaded.push({ name, objects });
  }
  if (report.length) {
    console.log(`FAILED: ${report.length} problem(s):`);
    for (const line of report) console.log(`  ${line}`);
  } else {
    console.log('all objects match their schemas; no unknown fields');
  }
  if (!breakagesFile) return report.length ? 1 : 0;

  const cases = YAML.parse(fs.readFileSync(breakagesFile, 'utf8'));
  if (!Array.isArray(cases) || !cases.length) throw new Error(`${breakagesFile}: no cases`);
  for (const c of cases) {
    if (!c.case || !c.kind || !Array.isArray(c.patch) || !c.expect) {
      throw new Error(`${breakagesFile}: each case needs case, kind, patch and expect: ${JSON.stringify(c)}`);
    }
  }
  console.log(`breakages from ${breakagesFile}: each must be rejected`);
  const { passed, failed } = runBreakages(loaded, cases);
  console.log(`breakages: ${passed} rejected as expected, ${failed} not`);
  return report.length || failed ? 1 : 0;
}

try {
  process.exitCode = main();
} catch (e) {
  console.error(`validate.js: ${e.message}`);
  process.exitCode = 2;
}
