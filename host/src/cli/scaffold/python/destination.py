"""{{name}}: a synchost destination in Python. This example keeps its
records in memory, for one run, to show what a destination must do: apply
creates, updates (of the changed fields only), upserts and deletes, one
outcome per operation; take a redelivered operation (same idempotency key)
once; reject what can never apply, with the reason; page its records out for
diff syncs to compare. Replace `self.records` with your system."""

import synchost_sdk as sdk


class Plugin(sdk.Destination):
    NAME = "{{name}}"
    VERSION = "0.1.0"
    DESCRIPTION = "Keeps records in memory for one run"
    CONFIG_SCHEMA = {
        "type": "object",
        "properties": {"page_size": {"type": "integer", "minimum": 1, "default": 100, "description": "Records per snapshot page."}},
        "additionalProperties": False,
    }

    def __init__(self, config):
        super().__init__(config)
        self.page_size = config.get("page_size", 100)
        self.records = {}  # key -> (fields, idempotency key of the last operation)

    def snapshot(self, token):
        start = int(token) if token else 0
        keys = sorted(self.records)[start:start + self.page_size]
        end = start + len(keys)
        return [(key, self.records[key][0]) for key in keys], (str(end) if end < len(self.records) else None)

    def apply(self, operations):
        outcomes = []
        for action, key, fields, changed, idempotency_key in operations:
            record = self.records.get(key)
            if record is not None and record[1] == idempotency_key:
                outcomes.append(None)  # redelivered: applied already
            elif action == "delete":
                self.records.pop(key, None)
                outcomes.append(None)
            elif action == "update" and record is None:
                outcomes.append(sdk.RejectedError(f"no record `{key}` to update"))
            else:
                current = dict(record[0]) if record else {}
                current.update({k: v for k, v in fields.items() if action != "update" or k in changed})
                self.records[key] = (current, idempotency_key)
                outcomes.append(None)
        return outcomes


Destination, Config = sdk.export_destination(Plugin)
