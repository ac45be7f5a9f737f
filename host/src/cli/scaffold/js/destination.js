// {{name}}: a synchost destination in JavaScript. This example keeps its
// records in memory, for one run, to show what a destination must do: apply
// creates, updates (of the changed fields only), upserts and deletes, one
// outcome per operation; take a redelivered operation (same idempotency key)
// once; reject what can never apply, with the reason; page its records out
// for diff syncs to compare. Replace this.records with your system.

import * as sdk from './synchost-sdk.js';

class Plugin extends sdk.Destination {
  static NAME = '{{name}}';
  static VERSION = '0.1.0';
  static DESCRIPTION = 'Keeps records in memory for one run';
  static CONFIG_SCHEMA = {
    type: 'object',
    properties: { page_size: { type: 'integer', minimum: 1, default: 100, description: 'Records per snapshot page.' } },
    additionalProperties: false,
  };

  constructor(config) {
    super(config);
    this.records = new Map(); // key -> { fields, last }
  }

  snapshot(token) {
    const size = this.config.page_size ?? 100;
    const start = token ? Number(token) : 0;
    const keys = [...this.records.keys()].sort().slice(start, start + size);
    const end = start + keys.length;
    return [keys.map((key) => [key, this.records.get(key).fields]), end < this.records.size ? String(end) : null];
  }

  apply(operations) {
    return operations.map(([action, key, fields, changed, idempotencyKey]) => {
      const record = this.records.get(key);
      if (record && record.last === idempotencyKey) return null; // redelivered: applied already
      if (action === 'delete') {
        this.records.delete(key);
        return null;
      }
      if (action === 'update' && !record) return new sdk.RejectedError(`no record \`${key}\` to update`);
      const current = { ...(record ? record.fields : {}) };
      for (const [name, value] of Object.entries(fields)) {
        if (action !== 'update' || changed.includes(name)) current[name] = value;
      }
      this.records.set(key, { fields: current, last: idempotencyKey });
      return null;
    });
  }
}

export const { destination, config } = sdk.exportDestination(Plugin);
