"""{{name}}: a synchost transform in Python. It upper-cases the text of the
columns its config names and leaves the rest as they are; a row whose column
holds something other than text is rejected, naming it. Replace `map_row`
with your mapping."""

import synchost_sdk as sdk


class Plugin(sdk.Transform):
    NAME = "{{name}}"
    VERSION = "0.1.0"
    DESCRIPTION = "Upper-cases the columns its config names"
    # What the host checks tenant files against.
    CONFIG_SCHEMA = {
        "type": "object",
        "properties": {"columns": {"type": "array", "items": {"type": "string"}, "description": "The columns to upper-case."}},
        "required": ["columns"],
        "additionalProperties": False,
    }

    def __init__(self, config):
        super().__init__(config)
        self.columns = config["columns"]

    def map_row(self, key, fields):
        out = dict(fields)
        for name in self.columns:
            value = fields.get(name)
            if value is None:
                continue
            if not isinstance(value, str):
                raise sdk.RejectedError(f"row `{key}`: column `{name}` holds {value!r}, not text")
            out[name] = value.upper()
        yield key, out


Transform, Config = sdk.export_transform(Plugin)
