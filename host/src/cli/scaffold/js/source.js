// {{name}}: a synchost source in JavaScript. This example makes up its data:
// `count` people, as a snapshot (for diff syncs) paged `page_size` rows at a
// time, and as a change stream (for event syncs) with one upsert per person,
// the cursor being how many were read. Replace person and the paging with
// reads of your system.

import * as sdk from './synchost-sdk.js';

const person = (i) => [String(i), { id: i, name: `person ${i}` }];

function offset(token, what) {
  if (token === null) return 0;
  if (!/^\d+$/.test(token)) throw new sdk.ConfigError(`${what} \`${token}\` is not one this plugin made`);
  return Number(token);
}

class Plugin extends sdk.Source {
  static NAME = '{{name}}';
  static VERSION = '0.1.0';
  static DESCRIPTION = 'Makes up people, as a snapshot and as events';
  static CONFIG_SCHEMA = {
    type: 'object',
    properties: {
      count: { type: 'integer', minimum: 0, description: 'How many people there are.' },
      page_size: { type: 'integer', minimum: 1, default: 100, description: 'Rows per snapshot page.' },
    },
    required: ['count'],
    additionalProperties: false,
  };

  snapshot(token) {
    const start = offset(token, 'page token');
    const end = Math.min(start + (this.config.page_size ?? 100), this.config.count);
    const rows = [];
    for (let i = start; i < end; i++) rows.push(person(i));
    return [rows, end < this.config.count ? String(end) : null];
  }

  events(cursor, max) {
    const start = offset(cursor, 'cursor');
    const end = Math.min(start + max, this.config.count);
    const events = [];
    for (let i = start; i < end; i++) events.push(['upsert', ...person(i), i]);
    return [events, String(end)];
  }
}

export const { source, config } = sdk.exportSource(Plugin);
