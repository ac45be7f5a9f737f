// pick: a synchost transform in JavaScript. It keeps the fields its config
// lists, each copied from an input column under a new name if need be (the
// `from` rules of the field mapper, with the same config), and rejects a row
// without a key.

// The kit sits beside the app when it is built (componentize-js resolves
// imports within the app's directory).
import * as sdk from './synchost-sdk.js';

class Pick extends sdk.Transform {
  static NAME = 'pick';
  static VERSION = '0.1.0';
  static DESCRIPTION = 'Keeps and renames the fields its config lists';
  static CONFIG_SCHEMA = {
    type: 'object',
    properties: {
      fields: {
        description: 'The output fields, each copied `from` an input column.',
        type: 'array',
        items: {
          type: 'object',
          properties: { name: { type: 'string' }, from: { type: 'string' } },
          required: ['name', 'from'],
          additionalProperties: false,
        },
      },
    },
    required: ['fields'],
    additionalProperties: false,
  };

  constructor(config) {
    super(config);
    this.rules = config.fields.map(({ name, from }) => [name, from]);
  }

  outputColumns() {
    return this.rules.map(([name]) => name);
  }

  mapRow(key, fields) {
    if (key === '') throw new sdk.RejectedError('a row without a key');
    const out = {};
    for (const [name, from] of this.rules) out[name] = fields[from] ?? null;
    return [[key, out]];
  }
}

export const { transform, config } = sdk.exportTransform(Pick);
