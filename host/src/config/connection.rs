//! `[connections.NAME]` in a tenant file: the SQL databases a tenant's plugins
//! may use through the `sql` host interface, with their credentials and
//! timeouts. Plugins see connection names only; a plugin may open a
//! connection only if its own table grants it (`connections = ["NAME"]`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::duration::{ABOVE_ZERO, parse_duration};
use super::error::{ConfigError, ConfigErrors, Lines, Location};

/// The kinds of database a connection can reach, from its URL's scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SqlDialect {
    /// `postgres://` or `postgresql://`.
    Postgres,
    /// `mysql://` or `mariadb://`: MySQL and MariaDB speak the same protocol.
    Mysql,
    /// `sqlite://PATH`, relative to the tenant file unless absolute.
    Sqlite,
}

impl std::fmt::Display for SqlDialect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SqlDialect::Postgres => "postgres",
            SqlDialect::Mysql => "mysql",
            SqlDialect::Sqlite => "sqlite",
        })
    }
}

/// `idle_timeout` unless a connection sets it: a pipeline run every few
/// seconds keeps its session; one a host no longer runs (it moved to another
/// host of the fleet, say) lets its session go soon.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A password, kept out of `Debug` output and so out of logs.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Secret(String);

impl Secret {
    pub(super) fn new(secret: String) -> Secret {
        Secret(secret)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// One connection, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionConfig {
    /// Its name in the tenant file: what plugins ask for.
    pub name: String,
    pub dialect: SqlDialect,
    /// The URL as written, which holds no password (one there is refused).
    pub url: String,
    /// SQLite only: the database file, absolute.
    pub sqlite_path: Option<PathBuf>,
    /// From `password` or from the environment variable `password_env`.
    pub password: Option<Secret>,
    /// How long one statement, or one wait for a page of rows, may take.
    pub statement_timeout: Duration,
    /// How long opening a connection (or waiting for a free one) may take.
    pub connect_timeout: Duration,
    /// How long a pooled session may sit unused before it is closed
    /// (`idle_timeout`): a host keeps no session per tenant it is not
    /// syncing for now.
    pub idle_timeout: Duration,
    /// Connections the host keeps open to this database, at most.
    pub max_connections: u32,
    /// Where the table stands in the tenant file, for errors found later.
    pub location: Location,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConnectionEntry {
    url: Spanned<String>,
    #[serde(default)]
    password: Option<Spanned<String>>,
    #[serde(default)]
    password_env: Option<Spanned<String>>,
    #[serde(default)]
    statement_timeout: Option<Spanned<String>>,
    #[serde(default)]
    connect_timeout: Option<Spanned<String>>,
    idle_timeout: Option<Spanned<String>>,
    #[serde(default)]
    max_connections: Option<Spanned<u32>>,
}

/// Where a tenant file is being read, for errors.
pub(super) struct Site<'a> {
    pub lines: &'a Lines<'a>,
}

impl Site<'_> {
    pub(super) fn at(&self, offset: usize) -> Location {
        self.lines.at(offset)
    }

    pub(super) fn file(&self) -> &Path {
        self.lines.file()
    }

    fn error(&self, offset: usize, key: String, message: String) -> ConfigError {
        ConfigError::new(self.at(offset), key, message)
    }
}

impl ConnectionConfig {
    /// Whether `other` reaches the same database the same way: everything but
    /// where the table stands in its file.
    pub fn same_target(&self, other: &ConnectionConfig) -> bool {
        ConnectionConfig { location: other.location.clone(), ..self.clone() } == *other
    }
}

impl ConnectionEntry {
    /// Checks one `[connections.NAME]` table; `name_at` is where its name stands.
    pub(super) fn check(self, name: &str, name_at: usize, site: &Site<'_>) -> Result<ConnectionConfig, ConfigErrors> {
        let table = format!("connections.{name}");
        let mut errors = ConfigErrors::default();
        if let Some(problem) = super::name_problem("connection", name) {
            errors.push(site.error(name_at, table.clone(), problem));
        }
        let url_at = self.url.span().start;
        let url_key = format!("{table}.url");
        let text = self.url.get_ref().trim().to_string();
        let (dialect, sqlite_path) = url_dialect(&text, url_at, &url_key, site, &mut errors);
        if matches!(dialect, Some(SqlDialect::Postgres | SqlDialect::Mysql)) {
            check_server_url(&text, url_at, &url_key, site, &mut errors);
        }
        let password = self.password(&table, site, &mut errors);
        let mut duration = |value: &Option<Spanned<String>>, key: &str, default: Duration| match value {
            None => default,
            Some(text) => match parse_duration(text.get_ref(), ABOVE_ZERO) {
                Ok(d) => d,
                Err(message) => {
                    errors.push(site.error(text.span().start, format!("{table}.{key}"), message));
                    default
                }
            },
        };
        let statement_timeout = duration(&self.statement_timeout, "statement_timeout", Duration::from_secs(30));
        let connect_timeout = duration(&self.connect_timeout, "connect_timeout", Duration::from_secs(10));
        let idle_timeout = duration(&self.idle_timeout, "idle_timeout", DEFAULT_IDLE_TIMEOUT);
        let max_connections = match &self.max_connections {
            None => 8,
            Some(n) if (1..=256).contains(n.get_ref()) => *n.get_ref(),
            Some(n) => {
                errors.push(site.error(
                    n.span().start,
                    format!("{table}.max_connections"),
                    format!("`{}` must be from 1 to 256", n.get_ref()),
                ));
                8
            }
        };
        let Some(dialect) = dialect else { return Err(errors) };
        errors.into_result(ConnectionConfig {
            name: name.to_string(),
            dialect,
            url: text,
            sqlite_path,
            password,
            statement_timeout,
            connect_timeout,
            idle_timeout,
            max_connections,
            location: site.at(url_at),
        })
    }
}

/// The dialect a connection URL names by its scheme, and for SQLite the
/// database file (relative to the tenant file).
fn url_dialect(
    text: &str,
    url_at: usize,
    url_key: &str,
    site: &Site<'_>,
    errors: &mut ConfigErrors,
) -> (Option<SqlDialect>, Option<PathBuf>) {
    match text.split_once("://").map(|(scheme, rest)| (scheme.to_ascii_lowercase(), rest)) {
        Some((scheme, _)) if scheme == "postgres" || scheme == "postgresql" => (Some(SqlDialect::Postgres), None),
        Some((scheme, _)) if scheme == "mysql" || scheme == "mariadb" => (Some(SqlDialect::Mysql), None),
        Some((scheme, rest)) if scheme == "sqlite" => {
            let file = rest.split('?').next().unwrap_or_default();
            if file.is_empty() {
                errors.push(site.error(
                    url_at,
                    url_key.to_string(),
                    "names no database file: write sqlite://PATH".into(),
                ));
            }
            let base = site.file().parent().unwrap_or(Path::new("."));
            (Some(SqlDialect::Sqlite), Some(std::path::absolute(base.join(file)).unwrap_or_else(|_| file.into())))
        }
        _ => {
            errors.push(site.error(
                url_at,
                url_key.to_string(),
                format!(
                    "`{text}` is not a database URL this host knows: use postgres://, mysql://, mariadb:// or \
                         sqlite://"
                ),
            ));
            (None, None)
        }
    }
}

/// Checks a PostgreSQL or MySQL URL: it parses, names a host, and holds no
/// password (URLs end up in logs and reports).
fn check_server_url(text: &str, url_at: usize, url_key: &str, site: &Site<'_>, errors: &mut ConfigErrors) {
    match url::Url::parse(text) {
        Err(e) => errors.push(site.error(url_at, url_key.to_string(), format!("`{text}` is not a valid URL: {e}"))),
        Ok(parsed) if parsed.password().is_some() => errors.push(site.error(
            url_at,
            url_key.to_string(),
            "holds a password; URLs end up in logs and reports, so put it in `password` or `password_env`".into(),
        )),
        Ok(parsed) if parsed.host_str().is_none_or(str::is_empty) => {
            errors.push(site.error(url_at, url_key.to_string(), format!("`{text}` names no host")))
        }
        Ok(_) => {}
    }
}

impl ConnectionEntry {
    /// The connection's password, from `password` or the environment variable
    /// `password_env` names (never both).
    fn password(&self, table: &str, site: &Site<'_>, errors: &mut ConfigErrors) -> Option<Secret> {
        match (&self.password, &self.password_env) {
            (Some(_), Some(env)) => {
                errors.push(site.error(
                    env.span().start,
                    format!("{table}.password_env"),
                    "set either `password` or `password_env`, not both".into(),
                ));
                None
            }
            (Some(password), None) => Some(Secret(password.get_ref().clone())),
            (None, Some(env)) => match std::env::var(env.get_ref()) {
                Ok(value) => Some(Secret(value)),
                Err(e) => {
                    errors.push(site.error(
                        env.span().start,
                        format!("{table}.password_env"),
                        format!("cannot read the environment variable `{}`: {e}", env.get_ref()),
                    ));
                    None
                }
            },
            (None, None) => None,
        }
    }
}
