"""pick: a synchost transform in Python. It keeps the fields its config
lists, each copied from an input column under a new name if need be (the
`from` rules of the field mapper, with the same config), and rejects a row
that lacks its key column."""

import synchost_sdk as sdk


class Pick(sdk.Transform):
    NAME = "pick"
    VERSION = "0.1.0"
    DESCRIPTION = "Keeps and renames the fields its config lists"
    CONFIG_SCHEMA = {
        "type": "object",
        "properties": {
            "fields": {
                "description": "The output fields, each copied `from` an input column.",
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}, "from": {"type": "string"}},
                    "required": ["name", "from"],
                    "additionalProperties": False,
                },
            }
        },
        "required": ["fields"],
        "additionalProperties": False,
    }

    def __init__(self, config):
        super().__init__(config)
        names = [field["name"] for field in config["fields"]]
        if len(set(names)) != len(names):
            raise sdk.ConfigError("a field is named twice in `fields`")
        self.rules = [(field["name"], field["from"]) for field in config["fields"]]

    def output_columns(self):
        return [name for name, _ in self.rules]

    def map_row(self, key, fields):
        if key == "":
            raise sdk.RejectedError("a row without a key")
        yield key, {name: fields.get(source) for name, source in self.rules}


Transform, Config = sdk.export_transform(Pick)
