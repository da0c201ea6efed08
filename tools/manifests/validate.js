#!/usr/bin/env node
// Validates rendered Kubernetes manifests (the output of `kubectl kustomize daemonset/`, and of
// deploy/csi/ and deploy/csi/examples/) offline:
//  1. every object against the OpenAPI schema of its apiVersion/kind (kubernetes-models: the
//     Kubernetes v1.33.0 schema; @kubernetes-models/prometheus-operator for the PodMonitor CRD);
//     the snapshot CRDs' kinds (VolumeSnapshotClass, VolumeSnapshot), which no pinned package
//     models, against small schemas written here from external-snapshotter's CRDs (crdSchemas);
//  2. every key of every object against the properties that schema declares, because the
//     Kubernetes schemas do not forbid unknown properties: a misspelled `mountPropogation` is valid
//     JSON-schema-wise, and `kubectl apply` (without --validate=strict) drops it with a warning at
//     most, so the volume silently loses its propagation;
//  3. the references between objects that no schema states (checkReferences): the driver a
//     VolumeSnapshotClass or StorageClass names, the apiGroup of a PVC's data source.
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

// CRD kinds that no pinned package ships a model for: the snapshot API of
// kubernetes-csi/external-snapshotter (its client/config/crd, v8), which clusters install
// themselves. Each schema is written here from that CRD's openAPIV3Schema, for what a manifest
// sets: types, required fields, enums, and every property it declares, so the unknown-field walk
// below checks these kinds as it does the others. `status` is left free-form (the controllers
// write it). The schema language is the little that these need (checkSchema):
//   type: 'object' | 'string'; required: [names]; enum: [values]; minLength: n;
//   properties: {name: schema}; additionalProperties: schema (a map's values);
//   model: a kubernetes-models class whose own schema checks the value (ObjectMeta);
//   exactlyOneOf: [names] (the CRD's x-kubernetes-validations rule of that meaning);
//   freeForm: true (an object not looked into).
const SNAPSHOT_GROUP = 'snapshot.storage.k8s.io';
function crdSchemas() {
  const { ObjectMeta } = depsRequire('@kubernetes-models/apimachinery/apis/meta/v1/ObjectMeta');
  const typeMeta = { apiVersion: { type: 'string' }, kind: { type: 'string' }, metadata: { model: ObjectMeta } };
  return {
    [`${SNAPSHOT_GROUP}/v1`]: {
      VolumeSnapshotClass: {
        type: 'object',
        required: ['driver', 'deletionPolicy'],
        properties: {
          ...typeMeta,
          driver: { type: 'string', minLength: 1 },
          deletionPolicy: { type: 'string', enum: ['Delete', 'Retain'] },
          parameters: { type: 'object', additionalProperties: { type: 'string' } },
        },
      },
      VolumeSnapshot: {
        type: 'object',
        required: ['spec'],
        properties: {
          ...typeMeta,
          spec: {
            type: 'object',
            required: ['source'],
            properties: {
              source: {
                type: 'object',
                exactlyOneOf: ['persistentVolumeClaimName', 'volumeSnapshotContentName'],
                properties: {
                  persistentVolumeClaimName: { type: 'string', minLength: 1 },
                  volumeSnapshotContentName: { type: 'string', minLength: 1 },
                },
              },
              volumeSnapshotClassName: { type: 'string', minLength: 1 },
            },
          },
          status: { freeForm: true },
        },
      },
    },
  };
}
let crds = null;

// Checks `data` against a hand-written schema (above), pushing ajv-shaped errors. Like the
// compiled schemas, it reads every property its schema declares, present or not, and every key
// of a map, so that the recording proxy learns the property lists.
function checkSchema(schema, data, at, errors) {
  const err = (keyword, message, params = {}) => errors.push({ instancePath: at, keyword, message, params });
  if (schema.freeForm) return;
  if (schema.model) {
    try {
      schema.model.prototype.validate.call(data);
    } catch (e) {
      if (!Array.isArray(e.errors)) throw e;
      for (const x of e.errors) errors.push({ ...x, instancePath: at + (x.instancePath || '') });
    }
    return;
  }
  if (schema.type === 'string') {
    if (typeof data !== 'string') return err('type', 'must be string');
    if (schema.minLength && data.length < schema.minLength) {
      err('minLength', `must NOT have fewer than ${schema.minLength} characters`);
    }
  } else if (schema.type === 'object') {
    if (data === null || typeof data !== 'object' || Array.isArray(data)) return err('type', 'must be object');
    for (const name of schema.required || []) {
      if (data[name] === undefined) err('required', `must have required property ${name}`);
    }
    if (schema.exactlyOneOf) {
      const set = schema.exactlyOneOf.filter((name) => data[name] !== undefined);
      if (set.length !== 1) err('exactlyOneOf', `must set exactly one of ${schema.exactlyOneOf.join(', ')}`);
    }
    for (const [name, sub] of Object.entries(schema.properties || {})) {
      const value = data[name];
      if (value !== undefined) checkSchema(sub, value, `${at}/${pointerToken(name)}`, errors);
    }
    if (schema.additionalProperties) {
      for (const key of Object.keys(data)) {
        checkSchema(schema.additionalProperties, data[key], `${at}/${pointerToken(key)}`, errors);
      }
    }
  }
  if (schema.enum && !schema.enum.includes(data)) {
    err('enum', 'must be equal to one of the allowed values', { allowedValues: schema.enum });
  }
}

// A model-like class for a hand-written schema: validate() on `this` (the recording proxy), throwing
// as the packages' models do.
function crdModel(apiVersion, kind, schema) {
  class CrdModel {
    validate() {
      const errors = [];
      checkSchema(schema, this, '', errors);
      if (errors.length) throw Object.assign(new Error(`${kind} is invalid`), { errors });
    }
  }
  return Object.assign(CrdModel, { apiVersion, kind });
}

function modelFor(apiVersion, kind) {
  crds = crds || crdSchemas();
  const dir = MODELS[apiVersion];
  if (!dir && !crds[apiVersion]) {
    return { error: `apiVersion ${JSON.stringify(apiVersion)} is not one validate.js knows (MODELS, crdSchemas)` };
  }
  if (typeof kind !== 'string' || !/^[A-Z][A-Za-z0-9]*$/.test(kind)) {
    return { error: `kind ${JSON.stringify(kind)} is not a kind name` };
  }
  if (!dir) {
    const schema = crds[apiVersion][kind];
    if (!schema) return { error: `no schema for kind ${kind} in ${apiVersion}` };
    return { cls: crdModel(apiVersion, kind, schema) };
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

// What the schemas cannot say, because it is about another object: the references that the API
// server takes as given and that only fail later, at provisioning time, as a PVC pending for ever.
//  - A VolumeSnapshotClass's driver and a StorageClass's provisioner name a CSIDriver of the
//    rendered sets, when they render one (`context.csiDrivers`, gathered from every set given: the
//    examples name the driver that deploy/csi installs).
//  - A PVC's dataSource and dataSourceRef: a VolumeSnapshot is in snapshot.storage.k8s.io, a
//    PersistentVolumeClaim in the core group (apiGroup absent or ""), and snapshot.storage.k8s.io
//    holds no other kind a volume can be made from. Other groups (volume populators) pass.
function checkReferences(obj, context) {
  const problems = [];
  if (!obj || typeof obj !== 'object') return problems;
  const drivers = context.csiDrivers || [];
  const driverRef = (at, name) => {
    if (drivers.length && !drivers.includes(name)) {
      problems.push(`${at}: ${JSON.stringify(name)} names no CSIDriver of the rendered sets (${drivers.join(', ')})`);
    }
  };
  if (obj.apiVersion === `${SNAPSHOT_GROUP}/v1` && obj.kind === 'VolumeSnapshotClass') driverRef('/driver', obj.driver);
  if (obj.apiVersion === 'storage.k8s.io/v1' && obj.kind === 'StorageClass') driverRef('/provisioner', obj.provisioner);
  if (obj.apiVersion === 'v1' && obj.kind === 'PersistentVolumeClaim') {
    for (const field of ['dataSource', 'dataSourceRef']) {
      const ref = obj.spec && obj.spec[field];
      if (!ref || typeof ref !== 'object') continue;
      const group = ref.apiGroup === undefined ? '' : ref.apiGroup;
      const at = `/spec/${field}`;
      if (ref.kind === 'VolumeSnapshot' && group !== SNAPSHOT_GROUP) {
        problems.push(`${at}/apiGroup: a VolumeSnapshot is in apiGroup ${SNAPSHOT_GROUP},` +
          ` not ${JSON.stringify(group)}`);
      } else if (ref.kind === 'PersistentVolumeClaim' && group !== '') {
        problems.push(`${at}/apiGroup: a PersistentVolumeClaim is in the core group (no apiGroup),` +
          ` not ${JSON.stringify(group)}`);
      } else if (group === SNAPSHOT_GROUP && ref.kind !== 'VolumeSnapshot') {
        problems.push(`${at}/kind: ${JSON.stringify(ref.kind)} is no kind to make a volume from` +
          ` in ${SNAPSHOT_GROUP} (VolumeSnapshot)`);
      }
    }
  }
  return problems;
}

// The names of the CSIDrivers among `objects`.
function csiDriversOf(objects) {
  return objects
    .filter((o) => o && o.apiVersion === 'storage.k8s.io/v1' && o.kind === 'CSIDriver' && o.metadata)
    .map((o) => o.metadata.name);
}

// Returns the report lines of every problem in `objects` (empty: all valid).
function checkAll(objects, { verbose, context }) {
  const report = [];
  if (!objects.length) report.push('no objects in the rendered output');
  for (const obj of objects) {
    const { problems, stats } = checkObject(obj);
    problems.push(...checkReferences(obj, context));
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

function runBreakages(loaded, cases, context) {
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
    const report = checkAll(copy, { verbose: false, context });
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
  const loaded = sets.map(({ name, file }) => ({ name, objects: parseRendered(fs.readFileSync(file, 'utf8'), file) }));
  const context = { csiDrivers: loaded.flatMap((set) => csiDriversOf(set.objects)) };
  const report = [];
  for (const { name, objects } of loaded) {
    console.log(`validate.js: ${name}: ${objects.length} objects`);
    for (const line of checkAll(objects, { verbose: true, context })) report.push(`${name}: ${line}`);
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
  const { passed, failed } = runBreakages(loaded, cases, context);
  console.log(`breakages: ${passed} rejected as expected, ${failed} not`);
  return report.length || failed ? 1 : 0;
}

try {
  process.exitCode = main();
} catch (e) {
  console.error(`validate.js: ${e.message}`);
  process.exitCode = 2;
}
