//! `[streams.NAME]` in a tenant file: the NATS JetStream streams a tenant's
//! plugins may read through the `jetstream` host interface. The host owns the
//! connection, the durable pull consumer and the acknowledgements; plugins
//! see stream names only, and may fetch from a stream only if their own table
//! grants it (`streams = ["NAME"]`).

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::connection::{Secret, Site};
use super::duration::parse_duration;
use super::error::{ConfigError, ConfigErrors, Location};

/// One stream, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamConfig {
    /// Its name in the tenant file: what plugins ask for.
    pub name: String,
    /// `nats://host:port`, with no credentials in it.
    pub url: String,
    /// The JetStream stream's own name on the server.
    pub stream: String,
    /// Only messages whose subject matches this are read.
    pub filter_subject: Option<String>,
    /// The durable consumer the host reads through and acknowledges on.
    pub durable: String,
    /// How long a fetched message may stay unacknowledged before the server
    /// delivers it again: longer than a batch takes to apply and commit.
    pub ack_wait: Duration,
    /// An authentication token, if the server wants one.
    pub token: Option<Secret>,
    pub location: Location,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StreamEntry {
    url: Spanned<String>,
    stream: Spanned<String>,
    #[serde(default)]
    filter_subject: Option<String>,
    #[serde(default)]
    durable: Option<Spanned<String>>,
    #[serde(default)]
    ack_wait: Option<Spanned<String>>,
    #[serde(default)]
    token: Option<String>,
}

/// Whether `name` may name a stream or consumer on a NATS server.
fn is_nats_name(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(|c| c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\'))
}

impl StreamEntry {
    /// Checks one `[streams.NAME]` table of tenant `tenant`.
    pub(super) fn check(
        self,
        tenant: &str,
        name: &str,
        name_at: usize,
        site: &Site<'_>,
    ) -> Result<StreamConfig, ConfigErrors> {
        let table = format!("streams.{name}");
        let mut errors = ConfigErrors::default();
        let error =
            |at: usize, key: &str, message: String| ConfigError::new(site.at(at), format!("{table}{key}"), message);
        if let Some(problem) = super::name_problem("stream", name) {
            errors.push(error(name_at, "", problem));
        }
        let url = self.url.get_ref().trim().to_string();
        match url::Url::parse(&url) {
            Ok(parsed) if parsed.scheme() != "nats" && parsed.scheme() != "tls" => errors.push(error(
                self.url.span().start,
                ".url",
                format!("`{url}` is not a NATS URL: write nats://HOST:PORT"),
            )),
            Ok(parsed) if parsed.password().is_some() || !parsed.username().is_empty() => errors.push(error(
                self.url.span().start,
                ".url",
                "holds credentials; URLs end up in logs and reports, so put a token in `token`".into(),
            )),
            Ok(_) => {}
            Err(e) => errors.push(error(self.url.span().start, ".url", format!("`{url}` is not a valid URL: {e}"))),
        }
        if !is_nats_name(self.stream.get_ref()) {
            errors.push(error(
                self.stream.span().start,
                ".stream",
                format!("`{}` is not a JetStream stream name", self.stream.get_ref()),
            ));
        }
        let durable = match &self.durable {
            Some(durable) if !is_nats_name(durable.get_ref()) => {
                errors.push(error(
                    durable.span().start,
                    ".durable",
                    format!("`{}` is not a consumer name: no spaces, `.`, `*` or `>`", durable.get_ref()),
                ));
                String::new()
            }
            Some(durable) => durable.get_ref().clone(),
            None => format!("synchost_{tenant}_{name}"),
        };
        let ack_wait = match &self.ack_wait {
            None => Duration::from_secs(300),
            Some(text) => match parse_duration(text.get_ref(), Duration::from_secs(1)) {
                Ok(d) => d,
                Err(message) => {
                    errors.push(error(text.span().start, ".ack_wait", message));
                    Duration::from_secs(300)
                }
            },
        };
        errors.into_result(StreamConfig {
            name: name.to_string(),
            url,
            stream: self.stream.into_inner(),
            filter_subject: self.filter_subject,
            durable,
            ack_wait,
            token: self.token.map(Secret::new),
            location: site.at(name_at),
        })
    }
}
