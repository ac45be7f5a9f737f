//! The `types` interface of `synchost:plugin` (`wit/types.wit`), one Rust type
//! per WIT type, with the same names, fields and cases the bindings
//! generators would give them (they are checked against the WIT: see the
//! crate's docs). The comments say what each means; `types.wit` is the
//! contract.
//!
//! With the `wasmtime` feature each type derives wasmtime's component traits,
//! named as in the WIT (`#[component(name = …)]`); a guest's wit-bindgen code
//! needs nothing more than [`Kind::_lift`].

/// The derives every type has, and wasmtime's on the host.
macro_rules! wit_type {
    ($style:ident, $item:item) => {
        #[derive(Debug, Clone, PartialEq)]
        #[cfg_attr(
            feature = "wasmtime",
            derive(wasmtime::component::ComponentType, wasmtime::component::Lift, wasmtime::component::Lower),
            component($style)
        )]
        $item
    };
}

wit_type!(
    variant,
    /// One field value.
    pub enum Value {
        /// No value (SQL NULL, JSON null, an empty CSV cell).
        #[cfg_attr(feature = "wasmtime", component(name = "null"))]
        Null,
        #[cfg_attr(feature = "wasmtime", component(name = "boolean"))]
        Boolean(bool),
        #[cfg_attr(feature = "wasmtime", component(name = "integer"))]
        Integer(i64),
        #[cfg_attr(feature = "wasmtime", component(name = "float"))]
        Float(f64),
        #[cfg_attr(feature = "wasmtime", component(name = "text"))]
        Text(String),
        #[cfg_attr(feature = "wasmtime", component(name = "bytes"))]
        Bytes(Vec<u8>),
        /// Nested data (an array or object) as JSON text.
        #[cfg_attr(feature = "wasmtime", component(name = "json"))]
        Json(String),
    }
);

wit_type!(
    record,
    /// One record: its key and its values, positionally matching the column names
    /// of the batch that carries it.
    pub struct Row {
        /// Identifies the record in its data set; unique within a snapshot.
        pub key: String,
        pub values: Vec<Value>,
    }
);

/// What kind of value one cell of a column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "wasmtime",
    derive(wasmtime::component::ComponentType, wasmtime::component::Lift, wasmtime::component::Lower),
    component(enum)
)]
#[repr(u8)]
pub enum Kind {
    #[cfg_attr(feature = "wasmtime", component(name = "null"))]
    Null,
    #[cfg_attr(feature = "wasmtime", component(name = "boolean"))]
    Boolean,
    #[cfg_attr(feature = "wasmtime", component(name = "integer"))]
    Integer,
    #[cfg_attr(feature = "wasmtime", component(name = "float"))]
    Float,
    #[cfg_attr(feature = "wasmtime", component(name = "text"))]
    Text,
    #[cfg_attr(feature = "wasmtime", component(name = "bytes"))]
    Bytes,
    #[cfg_attr(feature = "wasmtime", component(name = "json"))]
    Json,
}

impl Kind {
    /// The kind with discriminant `value`, as wit-bindgen's guest code lifts an
    /// enum (it calls this by name). The component model has checked the
    /// discriminant before a guest sees it.
    #[doc(hidden)]
    pub fn _lift(value: u8) -> Kind {
        match value {
            0 => Kind::Null,
            1 => Kind::Boolean,
            2 => Kind::Integer,
            3 => Kind::Float,
            4 => Kind::Text,
            5 => Kind::Bytes,
            6 => Kind::Json,
            other => panic!("{other} is not a `kind`"),
        }
    }
}

wit_type!(
    record,
    /// The values of one column, one per row of its table, back to back: row `i`'s
    /// value has kind `kinds[i]` and its bytes are `data[ends[i - 1]..ends[i]]`
    /// (from 0 for the first row); offsets count bytes. See [`crate::table`].
    pub struct Column {
        pub kinds: Vec<Kind>,
        pub ends: Vec<u32>,
        pub data: Vec<u8>,
    }
);

wit_type!(
    record,
    /// Rows laid out by column.
    pub struct Table {
        /// The column names, in the order of `values`.
        pub columns: Vec<String>,
        /// The rows' keys back to back: row `i`'s key is
        /// `key_data[key_ends[i - 1]..key_ends[i]]` (from 0 for the first row).
        #[cfg_attr(feature = "wasmtime", component(name = "key-data"))]
        pub key_data: String,
        #[cfg_attr(feature = "wasmtime", component(name = "key-ends"))]
        pub key_ends: Vec<u32>,
        /// One column per name, each with one value per row.
        pub values: Vec<Column>,
    }
);

wit_type!(
    record,
    /// One page of a snapshot.
    pub struct Page {
        pub rows: Table,
        /// Token for the next page, handed back unchanged by the host; `None`
        /// when this was the last page.
        pub next: Option<String>,
    }
);

wit_type!(
    variant,
    /// What a failure means, and so what the host does with it.
    pub enum Error {
        /// The configuration or the system is wrong: the host stops the pipeline
        /// and an operator has to act.
        #[cfg_attr(feature = "wasmtime", component(name = "config"))]
        Config(String),
        /// Worth retrying later (a timeout, a lost connection, a busy system).
        #[cfg_attr(feature = "wasmtime", component(name = "transient"))]
        Transient(String),
        /// This item can never apply: the host reports or dead-letters it.
        #[cfg_attr(feature = "wasmtime", component(name = "rejected"))]
        Rejected(String),
    }
);

impl Error {
    /// The message, whatever the kind.
    pub fn message(&self) -> &str {
        match self {
            Error::Config(m) | Error::Transient(m) | Error::Rejected(m) => m,
        }
    }

    /// `config`, `transient` or `rejected`.
    pub fn class(&self) -> &'static str {
        match self {
            Error::Config(_) => "config",
            Error::Transient(_) => "transient",
            Error::Rejected(_) => "rejected",
        }
    }
}

/// How the error reads in reports and logs: "transient error: …".
impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} error: {}", self.class(), self.message())
    }
}

impl std::error::Error for Error {}

wit_type!(
    record,
    /// An update of an existing record.
    pub struct RowUpdate {
        /// The record with the new values of the fields the sync owns.
        pub row: Row,
        /// The names of the columns whose values changed.
        pub changed: Vec<String>,
    }
);

wit_type!(
    variant,
    /// One change to apply to a destination.
    pub enum Action {
        /// Create a record that does not exist yet.
        #[cfg_attr(feature = "wasmtime", component(name = "create"))]
        Create(Row),
        /// Change some fields of an existing record; leave the others alone.
        #[cfg_attr(feature = "wasmtime", component(name = "update"))]
        Update(RowUpdate),
        /// Create the record, or set these fields on the existing one.
        #[cfg_attr(feature = "wasmtime", component(name = "upsert"))]
        Upsert(Row),
        /// Remove the record with this key.
        #[cfg_attr(feature = "wasmtime", component(name = "delete"))]
        Delete(String),
    }
);

impl Action {
    /// The key of the record the action is about.
    pub fn key(&self) -> &str {
        match self {
            Action::Create(row) | Action::Upsert(row) => &row.key,
            Action::Update(update) => &update.row.key,
            Action::Delete(key) => key,
        }
    }

    /// The action's name, as reports and archives show it.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Create(_) => "create",
            Action::Update(_) => "update",
            Action::Upsert(_) => "upsert",
            Action::Delete(_) => "delete",
        }
    }

    /// The row the action carries; none for a delete.
    pub fn row(&self) -> Option<&Row> {
        match self {
            Action::Create(row) | Action::Upsert(row) => Some(row),
            Action::Update(update) => Some(&update.row),
            Action::Delete(_) => None,
        }
    }
}

wit_type!(
    record,
    /// An action with the key a destination may use to apply it at most once.
    pub struct Operation {
        /// Unique for this change: the same operation delivered twice (after a
        /// crash, say) carries the same idempotency key.
        #[cfg_attr(feature = "wasmtime", component(name = "idempotency-key"))]
        pub idempotency_key: String,
        pub action: Action,
    }
);

wit_type!(
    record,
    /// Operations that share column names (for the rows they carry).
    pub struct OperationBatch {
        pub columns: Vec<String>,
        pub operations: Vec<Operation>,
    }
);

wit_type!(
    variant,
    /// A change read from a source's change stream.
    pub enum Change {
        /// The full current state of the record.
        #[cfg_attr(feature = "wasmtime", component(name = "upsert"))]
        Upsert(Row),
        /// The record with this key is gone.
        #[cfg_attr(feature = "wasmtime", component(name = "delete"))]
        Delete(String),
    }
);

wit_type!(
    record,
    /// One event of a change stream.
    pub struct Event {
        /// Where the event stands in the stream (for reports and idempotency).
        pub position: String,
        pub change: Change,
    }
);

wit_type!(
    record,
    /// Events read after a cursor.
    pub struct EventBatch {
        /// Column names of the rows in upsert events.
        pub columns: Vec<String>,
        pub events: Vec<Event>,
        /// The cursor to resume after these events; the host stores it only once
        /// the events are applied.
        pub cursor: String,
    }
);

wit_type!(
    record,
    /// A plugin's description of itself.
    pub struct PluginInfo {
        pub name: String,
        /// The plugin's own version (semver).
        pub version: String,
        pub description: String,
        /// The version of the synchost:plugin package the plugin was built
        /// against, e.g. "0.2.0".
        #[cfg_attr(feature = "wasmtime", component(name = "wit-version"))]
        pub wit_version: String,
    }
);
