"""synchost's kit for plugins written in Python, built with componentize-py.

A plugin is a class deriving from `Source`, `Destination` or `Transform`,
made once per component instance (once per run) from its config, a dict; an
app module exports it with `Source, Config = export_source(MyPlugin)` (or the
destination or transform twin), since componentize-py looks for classes of
those names there. Errors are exceptions: `ConfigError` (the host stops the
pipeline), `TransientError` (it tries again later), `RejectedError` (this row
or operation can never apply).

Tables cross the boundary laid out by column (see the WIT's `types`): the
kit's `rows_of` reads one as (key, fields) pairs, and `TableBuilder` builds
one; both get the byte offsets right (they count UTF-8 bytes, not
characters), which hand-written code easily does not.

Build: componentize-py -d WIT -w synchost:plugin/transform-plugin componentize
APP -p . -p KIT -o plugin.wasm (WIT: this kit's wit/ directory). A plugin
that makes HTTP requests (the `http` module) is built against the world's
`-http` twin, e.g. `synchost:plugin/source-plugin-http`.
"""

import json
import struct
from typing import Any, Dict, Iterable, List, Optional, Tuple

from componentize_py_types import Err
from wit_world.imports import host

try:
    from wit_world.imports import types
except ImportError:
    # A world that imports wasi:http too has two `types` interfaces, which
    # componentize-py then names by package.
    from wit_world.imports import synchost_plugin_types as types

WIT_VERSION = "0.2.3"

Fields = Dict[str, Any]


class PluginError(Exception):
    """A failure the host acts on; use one of the three kinds below."""

    def to_wit(self) -> Any:
        raise NotImplementedError


class ConfigError(PluginError):
    """The configuration or the system is wrong: an operator must act."""

    def to_wit(self) -> Any:
        return types.Error_Config(str(self))


class TransientError(PluginError):
    """Worth trying again later (a timeout, a lost connection)."""

    def to_wit(self) -> Any:
        return types.Error_Transient(str(self))


class RejectedError(PluginError):
    """This item can never apply: the host reports or dead-letters it."""

    def to_wit(self) -> Any:
        return types.Error_Rejected(str(self))


def log(level: str, message: str) -> None:
    """Logs through the host, which tags the line with tenant and plugin:
    level is "trace", "debug", "info", "warn" or "error"."""
    host.log(getattr(host.Level, level.upper()), message)


def secret(name: str) -> Optional[str]:
    """A secret the tenant file gives this plugin, if it gives it."""
    return host.secret(name)


# --- values and tables -----------------------------------------------------

def _encode(value: Any) -> Tuple[Any, bytes]:
    """The kind and bytes of a Python value in a table column."""
    if value is None:
        return types.Kind.NULL, b""
    if isinstance(value, bool):
        return types.Kind.BOOLEAN, b"\x01" if value else b"\x00"
    if isinstance(value, int):
        return types.Kind.INTEGER, struct.pack("<q", value)
    if isinstance(value, float):
        return types.Kind.FLOAT, struct.pack("<d", value)
    if isinstance(value, str):
        return types.Kind.TEXT, value.encode("utf-8")
    if isinstance(value, (bytes, bytearray)):
        return types.Kind.BYTES, bytes(value)
    return types.Kind.JSON, json.dumps(value, separators=(",", ":")).encode("utf-8")


def _decode(kind: Any, data: bytes) -> Any:
    """A table cell as a Python value: json cells as the text they hold."""
    if kind == types.Kind.NULL:
        return None
    if kind == types.Kind.BOOLEAN:
        return data != b"\x00"
    if kind == types.Kind.INTEGER:
        return struct.unpack("<q", data)[0]
    if kind == types.Kind.FLOAT:
        return struct.unpack("<d", data)[0]
    if kind == types.Kind.BYTES:
        return bytes(data)
    return data.decode("utf-8")


def to_value(value: Any) -> Any:
    """A Python value as a WIT `value` (for rows of events and operations)."""
    kind, data = _encode(value)
    return {
        types.Kind.NULL: lambda: types.Value_Null(),
        types.Kind.BOOLEAN: lambda: types.Value_Boolean(value),
        types.Kind.INTEGER: lambda: types.Value_Integer(value),
        types.Kind.FLOAT: lambda: types.Value_Float(value),
        types.Kind.TEXT: lambda: types.Value_Text(value),
        types.Kind.BYTES: lambda: types.Value_Bytes(bytes(value)),
        types.Kind.JSON: lambda: types.Value_Json(data.decode("utf-8")),
    }[kind]()


def from_value(value: Any) -> Any:
    """A WIT `value` as a Python value (json as its text)."""
    return None if isinstance(value, types.Value_Null) else value.value


def rows_of(table: Any) -> List[Tuple[str, Fields]]:
    """The rows of a table, in order, as (key, {column: value})."""
    keys = table.key_data.encode("utf-8")
    columns = []
    for column in table.values:
        cells, start = [], 0
        for kind, end in zip(column.kinds, column.ends):
            cells.append(_decode(kind, column.data[start:end]))
            start = end
        columns.append(cells)
    rows, start = [], 0
    for i, end in enumerate(table.key_ends):
        key = keys[start:end].decode("utf-8")
        start = end
        rows.append((key, {name: cells[i] for name, cells in zip(table.columns, columns)}))
    return rows


class TableBuilder:
    """Builds a table row by row; a field the columns lack adds a column
    (null in the rows before it), and a column a row lacks gets null."""

    def __init__(self, columns: Iterable[str] = ()):
        self.columns: List[str] = list(columns)
        self._keys = bytearray()
        self._key_ends: List[int] = []
        self._cells: List[List[Tuple[Any, bytes]]] = [[] for _ in self.columns]

    def add(self, key: str, fields: Fields) -> None:
        for name in fields:
            if name not in self.columns:
                self.columns.append(name)
                self._cells.append([(types.Kind.NULL, b"")] * len(self._key_ends))
        self._keys += key.encode("utf-8")
        self._key_ends.append(len(self._keys))
        for name, cells in zip(self.columns, self._cells):
            cells.append(_encode(fields.get(name)))

    def build(self) -> Any:
        values = []
        for cells in self._cells:
            kinds, ends, data = [], [], bytearray()
            for kind, bytes_ in cells:
                data += bytes_
                kinds.append(kind)
                ends.append(len(data))
            values.append(types.Column(kinds, ends, bytes(data)))
        return types.Table(list(self.columns), self._keys.decode("utf-8"), list(self._key_ends), values)


def table_of(rows: Iterable[Tuple[str, Fields]], columns: Iterable[str] = ()) -> Any:
    """A table of (key, fields) rows."""
    builder = TableBuilder(columns)
    for key, fields in rows:
        builder.add(key, fields)
    return builder.build()


# --- plugins ---------------------------------------------------------------

class Plugin:
    """What every plugin has: a name, version and description, an optional
    JSON Schema of its config (the host checks tenant files against it), and
    a constructor taking the config as a dict."""

    NAME = "plugin"
    VERSION = "0.1.0"
    DESCRIPTION = ""
    CONFIG_SCHEMA: Optional[Dict[str, Any]] = None

    def __init__(self, config: Dict[str, Any]):
        self.config = config

    @classmethod
    def unsupported(cls, call: str) -> ConfigError:
        return ConfigError(f"plugin `{cls.NAME}` does not support `{call}`")


class Transform(Plugin):
    """Maps rows. Override `map_row` (one row in, zero or more out), or
    `transform` for the whole table at once; and `output_columns`, the
    fields every output row has, which the host learns from the output's
    columns even when a batch gives no rows (it asks with an empty one to
    know what a pipeline writes)."""

    def output_columns(self) -> List[str]:
        return []

    def map_row(self, key: str, fields: Fields) -> Iterable[Tuple[str, Fields]]:
        raise self.unsupported("transform")

    def transform(self, rows: List[Tuple[str, Fields]]) -> List[Tuple[int, str, Fields]]:
        """(origin, key, fields) for each output row, origin being the index
        of the input row it came from."""
        out = []
        for origin, (key, fields) in enumerate(rows):
            for out_key, out_fields in self.map_row(key, fields):
                out.append((origin, out_key, out_fields))
        return out


class Source(Plugin):
    """Reads a system. `snapshot` returns (rows, next token or None);
    `events` returns (events, cursor), an event being ("upsert", key,
    fields) or ("delete", key, None), with its position at index 3 if the
    source has one (else its index in the stream is used)."""

    def snapshot(self, token: Optional[str]) -> Tuple[List[Tuple[str, Fields]], Optional[str]]:
        raise self.unsupported("snapshot")

    def events(self, cursor: Optional[str], max: int) -> Tuple[List[Tuple[Any, ...]], str]:
        raise self.unsupported("events")


class Destination(Plugin):
    """Writes a system. `apply` gets operations as (action, key, fields,
    changed) with action "create", "update", "upsert" or "delete", and the
    idempotency key at index 4; it returns None for each applied one, or the
    PluginError it failed with."""

    def snapshot(self, token: Optional[str]) -> Tuple[List[Tuple[str, Fields]], Optional[str]]:
        raise self.unsupported("snapshot")

    def apply(self, operations: List[Tuple[Any, ...]]) -> List[Optional[PluginError]]:
        raise self.unsupported("apply")


_instance: Dict[str, Plugin] = {}


def _plugin(cls: type) -> Any:
    """This instance's plugin, made from the config at first need."""
    if "plugin" not in _instance:
        try:
            config = json.loads(host.config())
        except ValueError as e:
            raise Err(types.Error_Config(f"the config is not JSON: {e}"))
        _instance["plugin"] = _guarded(lambda: cls(config))
    return _instance["plugin"]


def _guarded(call: Any) -> Any:
    """Runs `call`, turning a PluginError into the WIT error the host reads."""
    try:
        return call()
    except PluginError as e:
        raise Err(e.to_wit())


def _info(cls: type) -> Any:
    return types.PluginInfo(cls.NAME, cls.VERSION, cls.DESCRIPTION, WIT_VERSION)


def _snapshot(cls: type, token: Optional[str]) -> Any:
    """A source's or destination's snapshot page, as the WIT has it."""
    plugin = _plugin(cls)
    rows, next_token = _guarded(lambda: plugin.snapshot(token))
    return types.Page(table_of(rows), next_token)


def _config_export(cls: type) -> type:
    class Config:
        def schema(self) -> Optional[str]:
            return None if cls.CONFIG_SCHEMA is None else json.dumps(cls.CONFIG_SCHEMA)
    return Config


def export_transform(cls: type) -> Tuple[type, type]:
    """The `Transform` and `Config` classes componentize-py exports."""
    from wit_world.exports import transform as wit

    class Transform:
        def info(self) -> Any:
            return _info(cls)

        def transform(self, input: Any) -> Any:
            plugin = _plugin(cls)
            out = _guarded(lambda: plugin.transform(rows_of(input)))
            builder = TableBuilder(plugin.output_columns())
            for _, key, fields in out:
                builder.add(key, fields)
            return wit.Transformed(builder.build(), [origin for origin, _, _ in out])

    return Transform, _config_export(cls)


def export_source(cls: type) -> Tuple[type, type]:
    """The `Source` and `Config` classes componentize-py exports."""

    class Source:
        def info(self) -> Any:
            return _info(cls)

        def snapshot(self, token: Optional[str]) -> Any:
            return _snapshot(cls, token)

        def events(self, cursor: Optional[str], max: int) -> Any:
            plugin = _plugin(cls)
            events, new_cursor = _guarded(lambda: plugin.events(cursor, max))
            columns: List[str] = []
            for event in events:
                for name in event[2] or {}:
                    if name not in columns:
                        columns.append(name)
            out = []
            for i, event in enumerate(events):
                op, key, fields = event[0], event[1], event[2]
                position = str(event[3]) if len(event) > 3 else str(i)
                if op == "delete":
                    change = types.Change_Delete(key)
                else:
                    values = [to_value((fields or {}).get(name)) for name in columns]
                    change = types.Change_Upsert(types.Row(key, values))
                out.append(types.Event(position, change))
            return types.EventBatch(columns, out, new_cursor)

    return Source, _config_export(cls)


def export_destination(cls: type) -> Tuple[type, type]:
    """The `Destination` and `Config` classes componentize-py exports."""

    class Destination:
        def info(self) -> Any:
            return _info(cls)

        def snapshot(self, token: Optional[str]) -> Any:
            return _snapshot(cls, token)

        def apply(self, batch: Any) -> Any:
            plugin = _plugin(cls)
            operations = []
            for op in batch.operations:
                action = op.action
                if isinstance(action, types.Action_Delete):
                    operations.append(("delete", action.value, None, [], op.idempotency_key))
                    continue
                row = action.value.row if isinstance(action, types.Action_Update) else action.value
                changed = action.value.changed if isinstance(action, types.Action_Update) else []
                fields = {name: from_value(v) for name, v in zip(batch.columns, row.values)}
                name = {types.Action_Create: "create", types.Action_Update: "update"}.get(type(action), "upsert")
                operations.append((name, row.key, fields, changed, op.idempotency_key))
            outcomes = _guarded(lambda: plugin.apply(operations))
            from componentize_py_types import Ok
            return [Ok(None) if error is None else Err(error.to_wit()) for error in outcomes]

    return Destination, _config_export(cls)
