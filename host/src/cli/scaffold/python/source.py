"""{{name}}: a synchost source in Python. This example makes up its data:
`count` people, as a snapshot (for diff syncs) paged `page_size` rows at a
time, and as a change stream (for event syncs) with one upsert per person,
the cursor being how many were read. Replace `person` and the paging with
reads of your system."""

import synchost_sdk as sdk


def person(i):
    return str(i), {"id": i, "name": f"person {i}"}


def offset(token, what):
    if token is None:
        return 0
    try:
        return int(token)
    except ValueError:
        raise sdk.ConfigError(f"{what} `{token}` is not one this plugin made")


class Plugin(sdk.Source):
    NAME = "{{name}}"
    VERSION = "0.1.0"
    DESCRIPTION = "Makes up people, as a snapshot and as events"
    CONFIG_SCHEMA = {
        "type": "object",
        "properties": {
            "count": {"type": "integer", "minimum": 0, "description": "How many people there are."},
            "page_size": {"type": "integer", "minimum": 1, "default": 100, "description": "Rows per snapshot page."},
        },
        "required": ["count"],
        "additionalProperties": False,
    }

    def __init__(self, config):
        super().__init__(config)
        self.count = config["count"]
        self.page_size = config.get("page_size", 100)

    def snapshot(self, token):
        start = offset(token, "page token")
        end = min(start + self.page_size, self.count)
        rows = [person(i) for i in range(start, end)]
        return rows, (str(end) if end < self.count else None)

    def events(self, cursor, max):
        start = offset(cursor, "cursor")
        end = min(start + max, self.count)
        events = [("upsert", *person(i), i) for i in range(start, end)]
        return events, str(end)


Source, Config = sdk.export_source(Plugin)
