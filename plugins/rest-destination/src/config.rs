//! The plugin's `config` table, checked and turned into an [`Api`]: the
//! collection's URL, the headers every request carries (with the secret
//! resolved) and the field mapping in both directions.
//!
//! Every mistake is a `config` error that names the key, so the host pauses the
//! pipeline and the operator sees what to fix.

use std::collections::BTreeMap;

use serde::Deserialize;
use synchost_plugin_sdk::{Error, host};

/// What the tenant file's `config` table holds; see the crate docs for each key.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RestConfig {
    /// The API's base URL, http:// or https:// without a query, e.g.
    /// "https://api.example.com/v1". Its host must be in `allowed_hosts`.
    base_url: String,
    /// The collection's path under `base_url`, e.g. "/people"; records are
    /// `{collection}/{key}`.
    #[serde(default)]
    collection: String,
    /// The API field that holds a record's key.
    #[serde(default = "default_key_field")]
    key_field: String,
    /// How the snapshot lists the collection: "cursor", "page" (until a page
    /// comes back empty) or "none" (one request lists everything).
    #[serde(default)]
    pagination: Pagination,
    /// Records asked for per page, sent as `page_size_param`.
    #[serde(default = "default_page_size")]
    #[schemars(range(min = 1))]
    page_size: u32,
    /// The response field that holds a page's records; a response that is a
    /// bare JSON array is the records themselves, with no next cursor.
    #[serde(default = "default_items_field")]
    items_field: String,
    /// Cursor paging: the response field that holds the next cursor (missing,
    /// null or empty on the last page).
    #[serde(default = "default_next_field")]
    next_field: String,
    /// Cursor paging: the query parameter that carries the cursor.
    #[serde(default = "default_cursor_param")]
    cursor_param: String,
    /// Page paging: the query parameter that carries the page number.
    #[serde(default = "default_page_param")]
    page_param: String,
    /// The query parameter that carries `page_size`. Default: "per_page" for
    /// page paging, else "limit".
    page_size_param: Option<String>,
    /// Page paging: the number of the first page.
    #[serde(default = "default_first_page")]
    first_page: u64,
    /// How an update is sent: "patch" sends the changed fields, "put" the
    /// whole row.
    #[serde(default)]
    update_method: UpdateMethod,
    /// How an event's upsert is sent: "put", "put-then-post" (POST where the
    /// PUT answers 404) or "patch-then-post" (POST where the PATCH answers 404).
    #[serde(default)]
    upsert_method: UpsertMethod,
    /// Before each PUT, GET the record and merge the row into it, so fields
    /// the sync does not write survive an API whose PUT replaces the record.
    #[serde(default)]
    put_merges: bool,
    /// Synchost field → API field, e.g. `{ name = "full_name" }`, used both
    /// ways; other fields pass through unchanged.
    #[serde(default)]
    fields: BTreeMap<String, String>,
    /// The name of a secret (in the plugin's `secrets`) sent in the auth
    /// header. Without it no auth header is sent.
    auth_secret: Option<String>,
    /// The header that carries the secret: `auth_header: auth_scheme <secret>`.
    #[serde(default = "default_auth_header")]
    auth_header: String,
    /// The scheme written before the secret; an empty scheme sends the secret
    /// alone.
    #[serde(default = "default_auth_scheme")]
    auth_scheme: String,
    /// More headers sent with every request, name → value.
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

fn default_key_field() -> String {
    "id".into()
}
fn default_page_size() -> u32 {
    500
}
fn default_items_field() -> String {
    "items".into()
}
fn default_next_field() -> String {
    "next".into()
}
fn default_cursor_param() -> String {
    "cursor".into()
}
fn default_page_param() -> String {
    "page".into()
}
fn default_first_page() -> u64 {
    1
}
fn default_auth_header() -> String {
    "Authorization".into()
}
fn default_auth_scheme() -> String {
    "Bearer".into()
}

/// How the collection's list is paged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Pagination {
    /// `?cursor=<token>`; the response names the next token (or null).
    #[default]
    Cursor,
    /// `?page=N&per_page=M`, until a page comes back empty.
    Page,
    /// One request returns the whole collection.
    None,
}

/// The method an `update` operation is sent with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum UpdateMethod {
    /// Only the changed fields, merged into the record by the API.
    #[default]
    Patch,
    /// The whole row, for APIs without PATCH.
    Put,
}

/// How an `upsert` (an event's full state) is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum UpsertMethod {
    /// `PUT {collection}/{key}`, for APIs whose PUT creates a missing record.
    #[default]
    Put,
    /// `PUT`, and `POST {collection}` when the PUT answers 404.
    PutThenPost,
    /// `PATCH` (the API merges the fields), and `POST` when it answers 404.
    PatchThenPost,
}

/// Everything a request needs, built from the config once per plugin instance.
pub(crate) struct Api {
    /// `base_url` and `collection` joined, without a trailing slash.
    pub collection_url: String,
    pub key_field: String,
    pub pagination: Pagination,
    pub page_size: u32,
    pub items_field: String,
    pub next_field: String,
    pub cursor_param: String,
    pub page_param: String,
    pub page_size_param: String,
    pub first_page: u64,
    pub update_method: UpdateMethod,
    pub upsert_method: UpsertMethod,
    /// Read the record and merge the row into it before every `PUT`, for
    /// APIs whose PUT replaces the whole record: fields the sync does not
    /// write survive.
    pub put_merges: bool,
    /// Headers sent with every request: `Accept`, the auth header, `headers`.
    pub headers: Vec<(String, String)>,
    /// The secret the auth header came from, to name it when the API refuses it.
    pub auth_secret: Option<String>,
    /// synchost field → API field.
    to_api: BTreeMap<String, String>,
    /// API field → synchost field.
    from_api: BTreeMap<String, String>,
}

impl RestConfig {
    /// Checks what serde cannot, resolves the secret and builds the [`Api`].
    pub(crate) fn build(self) -> Result<Api, Error> {
        let bad = |key: &str, why: String| Error::Config(format!("invalid plugin config: `{key}`: {why}"));

        let base = self.base_url.trim_end_matches('/');
        let Some((scheme, rest)) = base.split_once("://") else {
            return Err(bad("base_url", format!("`{}` is not an http:// or https:// URL", self.base_url)));
        };
        if !matches!(scheme, "http" | "https") || rest.is_empty() {
            return Err(bad("base_url", format!("`{}` is not an http:// or https:// URL", self.base_url)));
        }
        // Paging adds its own query; one already in the URL would be ambiguous.
        if base.contains(['?', '#']) || self.collection.contains(['?', '#']) {
            let key = if base.contains(['?', '#']) { "base_url" } else { "collection" };
            return Err(bad(key, "must not contain a query or fragment; paging adds its own".into()));
        }
        let collection = self.collection.trim_matches('/');
        let collection_url = if collection.is_empty() { base.to_string() } else { format!("{base}/{collection}") };

        for (key, value) in [
            ("key_field", &self.key_field),
            ("items_field", &self.items_field),
            ("next_field", &self.next_field),
            ("cursor_param", &self.cursor_param),
            ("page_param", &self.page_param),
            ("auth_header", &self.auth_header),
        ] {
            if value.trim().is_empty() {
                return Err(bad(key, "must not be empty".into()));
            }
        }
        if self.page_size == 0 {
            return Err(bad("page_size", "must be at least 1".into()));
        }

        let mut from_api = BTreeMap::new();
        for (ours, theirs) in &self.fields {
            if theirs.is_empty() {
                return Err(bad(&format!("fields.{ours}"), "the API field name is empty".into()));
            }
            if let Some(other) = from_api.insert(theirs.clone(), ours.clone()) {
                return Err(bad(
                    &format!("fields.{ours}"),
                    format!("`{other}` maps to API field `{theirs}` too; one API field can carry one field"),
                ));
            }
        }

        let mut headers = vec![("Accept".to_string(), "application/json".to_string())];
        if let Some(name) = &self.auth_secret {
            let token = host::secret(name).ok_or_else(|| {
                bad(
                    "auth_secret",
                    format!("there is no secret `{name}` for this plugin; add it to the plugin's `secrets` in the tenant file"),
                )
            })?;
            let value = if self.auth_scheme.is_empty() { token } else { format!("{} {token}", self.auth_scheme) };
            headers.push((self.auth_header.clone(), value));
        }
        headers.extend(self.headers.iter().map(|(name, value)| (name.clone(), value.clone())));

        let page_size_param = self.page_size_param.unwrap_or_else(|| {
            match self.pagination {
                Pagination::Page => "per_page",
                Pagination::Cursor | Pagination::None => "limit",
            }
            .to_string()
        });

        Ok(Api {
            collection_url,
            key_field: self.key_field,
            pagination: self.pagination,
            page_size: self.page_size,
            items_field: self.items_field,
            next_field: self.next_field,
            cursor_param: self.cursor_param,
            page_param: self.page_param,
            page_size_param,
            first_page: self.first_page,
            update_method: self.update_method,
            upsert_method: self.upsert_method,
            put_merges: self.put_merges,
            headers,
            auth_secret: self.auth_secret,
            to_api: self.fields,
            from_api,
        })
    }
}

impl Api {
    /// The URL of one record: the collection's URL and the key as one
    /// percent-encoded path segment (so `a/b` stays one segment).
    pub fn record_url(&self, key: &str) -> String {
        format!("{}/{}", self.collection_url, encode(key))
    }

    /// The API's name for a synchost field, or `None` if the field is not
    /// sent: a name that `fields` uses for an API field of another field is
    /// carried only by that mapping, so the two never overwrite each other.
    pub fn api_name<'a>(&'a self, field: &'a str) -> Option<&'a str> {
        match self.to_api.get(field) {
            Some(theirs) => Some(theirs),
            None if self.from_api.contains_key(field) => None,
            None => Some(field),
        }
    }

    /// The synchost name of an API field, or `None` if it is not read back
    /// (the mirror image of [`Api::api_name`]).
    pub fn field_name<'a>(&'a self, api_field: &'a str) -> Option<&'a str> {
        match self.from_api.get(api_field) {
            Some(ours) => Some(ours),
            None if self.to_api.contains_key(api_field) => None,
            None => Some(api_field),
        }
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters, which is
/// safe both as a path segment and as a query value.
pub(crate) fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
