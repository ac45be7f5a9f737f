// {{name}}: a synchost transform in JavaScript. It upper-cases the text of
// the columns its config names and leaves the rest as they are; a row whose
// column holds something other than text is rejected, naming it. Replace
// mapRow with your mapping.

import * as sdk from './synchost-sdk.js';

class Plugin extends sdk.Transform {
  static NAME = '{{name}}';
  static VERSION = '0.1.0';
  static DESCRIPTION = 'Upper-cases the columns its config names';
  // What the host checks tenant files against.
  static CONFIG_SCHEMA = {
    type: 'object',
    properties: { columns: { type: 'array', items: { type: 'string' }, description: 'The columns to upper-case.' } },
    required: ['columns'],
    additionalProperties: false,
  };

  mapRow(key, fields) {
    const out = { ...fields };
    for (const name of this.config.columns) {
      const value = fields[name];
      if (value === null || value === undefined) continue;
      if (typeof value !== 'string') throw new sdk.RejectedError(`row \`${key}\`: column \`${name}\` holds ${value}, not text`);
      out[name] = value.toUpperCase();
    }
    return [[key, out]];
  }
}

export const { transform, config } = sdk.exportTransform(Plugin);
