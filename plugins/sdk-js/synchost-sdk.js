// synchost's kit for plugins written in JavaScript, built with
// componentize-js (npm @bytecodealliance/componentize-js).
//
// A plugin is a class extending Source, Destination or Transform, made once
// per component instance (once per run) from its config, an object; the app
// module exports it with `export const { transform, config } =
// exportTransform(MyPlugin)` (or the source or destination twin), the names
// componentize-js looks for. Errors are thrown: ConfigError (the host stops
// the pipeline), TransientError (it tries again later), RejectedError (this
// row or operation can never apply).
//
// Tables cross the boundary laid out by column (see the WIT's `types`):
// rowsOf reads one as [key, fields] pairs and TableBuilder builds one; both
// count offsets in UTF-8 bytes, not in JavaScript's UTF-16 units.

import { config as hostConfig, log as hostLog, secret as hostSecret } from 'synchost:plugin/host@0.2.3';

export const WIT_VERSION = '0.2.3';

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export class PluginError extends Error {}
export class ConfigError extends PluginError { get kind() { return 'config'; } }
export class TransientError extends PluginError { get kind() { return 'transient'; } }
export class RejectedError extends PluginError { get kind() { return 'rejected'; } }

/** Logs through the host: level is 'trace', 'debug', 'info', 'warn' or 'error'. */
export function log(level, message) {
  hostLog(level, message);
}

/** A secret the tenant file gives this plugin, or undefined. */
export function secret(name) {
  return hostSecret(name);
}

// --- values and tables ---------------------------------------------------

function encode(value) {
  if (value === null || value === undefined) return ['null', new Uint8Array(0)];
  if (typeof value === 'boolean') return ['boolean', new Uint8Array([value ? 1 : 0])];
  if (typeof value === 'bigint' || (typeof value === 'number' && Number.isInteger(value))) {
    const bytes = new Uint8Array(8);
    new DataView(bytes.buffer).setBigInt64(0, BigInt(value), true);
    return ['integer', bytes];
  }
  if (typeof value === 'number') {
    const bytes = new Uint8Array(8);
    new DataView(bytes.buffer).setFloat64(0, value, true);
    return ['float', bytes];
  }
  if (typeof value === 'string') return ['text', encoder.encode(value)];
  if (value instanceof Uint8Array) return ['bytes', value];
  return ['json', encoder.encode(JSON.stringify(value))];
}

function decode(kind, bytes) {
  const view = () => new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  switch (kind) {
    case 'null': return null;
    case 'boolean': return bytes[0] !== 0;
    // Integers beyond 2^53 stay exact as BigInt; the rest are numbers.
    case 'integer': { const n = view().getBigInt64(0, true); return Number.isSafeInteger(Number(n)) ? Number(n) : n; }
    case 'float': return view().getFloat64(0, true);
    case 'bytes': return bytes.slice();
    default: return decoder.decode(bytes);
  }
}

/** A JavaScript value as a WIT `value` (for the rows of events and operations). */
export function toValue(value) {
  const [kind, bytes] = encode(value);
  switch (kind) {
    case 'null': return { tag: 'null' };
    case 'integer': return { tag: 'integer', val: BigInt(value) };
    case 'bytes': return { tag: 'bytes', val: bytes };
    case 'json': return { tag: 'json', val: decoder.decode(bytes) };
    default: return { tag: kind, val: value };
  }
}

/** A WIT `value` as a JavaScript value (json as its text). */
export function fromValue(value) {
  if (value.tag === 'null') return null;
  if (value.tag === 'integer') return Number.isSafeInteger(Number(value.val)) ? Number(value.val) : value.val;
  return value.val;
}

/** The rows of a table, in order, as [key, {column: value}]. */
export function rowsOf(table) {
  const keys = encoder.encode(table.keyData);
  const columns = table.values.map((column) => {
    const cells = [];
    let start = 0;
    for (let i = 0; i < column.kinds.length; i++) {
      const end = column.ends[i];
      cells.push(decode(column.kinds[i], column.data.subarray(start, end)));
      start = end;
    }
    return cells;
  });
  const rows = [];
  let start = 0;
  for (let i = 0; i < table.keyEnds.length; i++) {
    const end = table.keyEnds[i];
    const key = decoder.decode(keys.subarray(start, end));
    start = end;
    const fields = {};
    table.columns.forEach((name, c) => { fields[name] = columns[c][i]; });
    rows.push([key, fields]);
  }
  return rows;
}

/** Builds a table row by row; a field the columns lack adds a column (null
 * in the rows before), and a column a row lacks gets null. */
export class TableBuilder {
  constructor(columns = []) {
    this.columns = [...columns];
    this.keys = [];
    this.keyEnds = [];
    this.keyLength = 0;
    this.cells = this.columns.map(() => []);
  }

  add(key, fields) {
    for (const name of Object.keys(fields)) {
      if (!this.columns.includes(name)) {
        this.columns.push(name);
        this.cells.push(this.keyEnds.map(() => encode(null)));
      }
    }
    this.keys.push(key);
    this.keyLength += encoder.encode(key).length;
    this.keyEnds.push(this.keyLength);
    this.columns.forEach((name, c) => this.cells[c].push(encode(fields[name])));
  }

  build() {
    const values = this.cells.map((cells) => {
      const size = cells.reduce((sum, [, bytes]) => sum + bytes.length, 0);
      const data = new Uint8Array(size);
      const kinds = [], ends = [];
      let at = 0;
      for (const [kind, bytes] of cells) {
        data.set(bytes, at);
        at += bytes.length;
        kinds.push(kind);
        ends.push(at);
      }
      return { kinds, ends, data };
    });
    return { columns: [...this.columns], keyData: this.keys.join(''), keyEnds: [...this.keyEnds], values };
  }
}

/** A table of [key, fields] rows. */
export function tableOf(rows, columns = []) {
  const builder = new TableBuilder(columns);
  for (const [key, fields] of rows) builder.add(key, fields);
  return builder.build();
}

// --- plugins ---------------------------------------------------------------

/** What every plugin has: a name, version and description, an optional JSON
 * Schema of its config, and a constructor taking the config as an object. */
export class Plugin {
  static NAME = 'plugin';
  static VERSION = '0.1.0';
  static DESCRIPTION = '';
  static CONFIG_SCHEMA = undefined;

  constructor(config) {
    this.config = config;
  }

  unsupported(call) {
    return new ConfigError(`plugin \`${this.constructor.NAME}\` does not support \`${call}\``);
  }
}

/** Maps rows: override mapRow(key, fields), which returns a list of
 * [key, fields] (none, one or several), or transform(rows) for all at once;
 * and outputColumns(), the fields every output row has. */
export class Transform extends Plugin {
  outputColumns() { return []; }
  mapRow(key, fields) { throw this.unsupported('transform'); }
  transform(rows) {
    const out = [];
    rows.forEach(([key, fields], origin) => {
      for (const [outKey, outFields] of this.mapRow(key, fields)) out.push([origin, outKey, outFields]);
    });
    return out;
  }
}

/** Reads a system: snapshot(token) returns [rows, next token or null];
 * events(cursor, max) returns [events, cursor], an event being
 * ['upsert', key, fields, position] or ['delete', key, null, position].
 * Either may be async and await fetch(): the host may reach only the hosts
 * its tenant lists in allowed_hosts. */
export class Source extends Plugin {
  snapshot(token) { throw this.unsupported('snapshot'); }
  events(cursor, max) { throw this.unsupported('events'); }
}

/** Writes a system: apply gets operations as [action, key, fields, changed,
 * idempotencyKey] and returns, for each, null or the PluginError it failed with. */
export class Destination extends Plugin {
  snapshot(token) { throw this.unsupported('snapshot'); }
  apply(operations) { throw this.unsupported('apply'); }
}

let instance;

function plugin(cls) {
  if (instance === undefined) {
    let config;
    try {
      config = JSON.parse(hostConfig());
    } catch (e) {
      throw { tag: 'config', val: `the config is not JSON: ${e}` };
    }
    instance = guarded(() => new cls(config));
  }
  return instance;
}

/** Turns a PluginError into the WIT error the host reads. */
function toWit(e) {
  if (e instanceof PluginError) throw { tag: e.kind, val: e.message };
  throw e;
}

/** Runs call and hands its result to done, turning a PluginError into the
 * WIT error the host reads. A call may be async (a source that uses fetch):
 * then the export returns a promise, and componentize-js runs the event loop
 * until it settles before answering the host. */
function guarded(call, done = (result) => result) {
  let result;
  try {
    result = call();
  } catch (e) {
    toWit(e);
  }
  return result instanceof Promise ? result.then(done, toWit) : done(result);
}

function info(cls) {
  return { name: cls.NAME, version: cls.VERSION, description: cls.DESCRIPTION, witVersion: WIT_VERSION };
}

/** A source's or destination's snapshot page, as the WIT has it. */
function snapshot(cls, token) {
  const p = plugin(cls);
  return guarded(() => p.snapshot(token ?? null), ([rows, next]) => ({ rows: tableOf(rows), next: next ?? undefined }));
}

function configExport(cls) {
  return { schema: () => (cls.CONFIG_SCHEMA === undefined ? undefined : JSON.stringify(cls.CONFIG_SCHEMA)) };
}

/** The `transform` and `config` exports componentize-js looks for. */
export function exportTransform(cls) {
  return {
    transform: {
      info: () => info(cls),
      transform(input) {
        const p = plugin(cls);
        const out = guarded(() => p.transform(rowsOf(input)));
        const builder = new TableBuilder(p.outputColumns());
        for (const [, key, fields] of out) builder.add(key, fields);
        return { rows: builder.build(), origins: out.map(([origin]) => origin) };
      },
    },
    config: configExport(cls),
  };
}

/** An event batch, as the WIT has it, from [events, cursor]. */
function eventBatch([events, cursor]) {
  const columns = [];
  for (const [, , fields] of events) for (const name of Object.keys(fields ?? {})) if (!columns.includes(name)) columns.push(name);
  const out = events.map(([op, key, fields, position], i) => ({
    position: String(position ?? i),
    change: op === 'delete'
      ? { tag: 'delete', val: key }
      : { tag: 'upsert', val: { key, values: columns.map((name) => toValue((fields ?? {})[name])) } },
  }));
  return { columns, events: out, cursor };
}

/** The `source` and `config` exports componentize-js looks for. */
export function exportSource(cls) {
  return {
    source: {
      info: () => info(cls),
      snapshot: (token) => snapshot(cls, token),
      events(cursor, max) {
        const p = plugin(cls);
        return guarded(() => p.events(cursor ?? null, max), eventBatch);
      },
    },
    config: configExport(cls),
  };
}

/** The `destination` and `config` exports componentize-js looks for. */
export function exportDestination(cls) {
  return {
    destination: {
      info: () => info(cls),
      snapshot: (token) => snapshot(cls, token),
      apply(batch) {
        const p = plugin(cls);
        const operations = batch.operations.map(({ idempotencyKey, action }) => {
          if (action.tag === 'delete') return ['delete', action.val, null, [], idempotencyKey];
          const row = action.tag === 'update' ? action.val.row : action.val;
          const changed = action.tag === 'update' ? action.val.changed : [];
          const fields = {};
          batch.columns.forEach((name, i) => { fields[name] = fromValue(row.values[i]); });
          return [action.tag, row.key, fields, changed, idempotencyKey];
        });
        return guarded(() => p.apply(operations), (outcomes) =>
          outcomes.map((error) => (error ? { tag: 'err', val: { tag: error.kind, val: error.message } } : { tag: 'ok' })));
      },
    },
    config: configExport(cls),
  };
}
