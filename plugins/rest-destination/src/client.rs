//! One request to the API with the headers every request carries, and what
//! its answer means for the host: the status classes that `snapshot` and
//! `apply` turn into WIT errors.

use synchost_plugin_sdk::http::{self, HttpError, Method, Request, Response};

use crate::config::Api;

/// How much of an error response's body goes into a message: enough for an
/// API's explanation, not a whole HTML error page in every report line.
const BODY_EXCERPT: usize = 300;

/// What a response's status says about the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// 2xx.
    Success,
    /// 404 and 410: the record (or the collection) is not there.
    Gone,
    /// 401 and 403: the credentials are wrong for every request, not this one.
    Unauthorized,
    /// 3xx: not followed, since a redirected write could land anywhere; the
    /// configured URL is wrong.
    Redirect,
    /// 408, 425, 429 and 5xx: the API is busy or broken for now.
    Retry,
    /// Any other 4xx (or a status outside 200–599): this request is refused.
    Refused,
}

impl Status {
    pub fn of(code: u16) -> Status {
        match code {
            200..=299 => Status::Success,
            404 | 410 => Status::Gone,
            401 | 403 => Status::Unauthorized,
            300..=399 => Status::Redirect,
            408 | 425 | 429 | 500..=599 => Status::Retry,
            _ => Status::Refused,
        }
    }
}

impl Api {
    /// Sends one request with the common headers, plus `Idempotency-Key` and
    /// a JSON body when given.
    pub fn send(
        &self,
        method: Method,
        url: &str,
        idempotency_key: Option<&str>,
        body: Option<&[u8]>,
    ) -> Result<Response, HttpError> {
        let mut headers: Vec<(&str, &str)> = self.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        if body.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        if let Some(key) = idempotency_key {
            headers.push(("Idempotency-Key", key));
        }
        http::send(&Request { method, url, headers: &headers, body })
    }

    /// The hint for a 401 or 403: which secret the credentials came from.
    pub fn credentials_hint(&self) -> String {
        match &self.auth_secret {
            Some(name) => format!("check the secret `{name}` (auth_secret) and its permissions"),
            None => "the API wants credentials: set auth_secret".to_string(),
        }
    }
}

/// "`POST http://…/people` answered 422: {body excerpt}" — the start of every
/// message about an unwelcome response.
pub(crate) fn describe(method: Method, url: &str, response: &Response) -> String {
    let body = String::from_utf8_lossy(&response.body);
    let body = body.trim();
    let mut message = format!("{method} {url} answered {}", response.status);
    if let Some(location) = response.header("location").filter(|_| Status::of(response.status) == Status::Redirect) {
        message.push_str(&format!(" (redirect to {location})"));
    }
    if !body.is_empty() {
        message.push_str(": ");
        match body.char_indices().nth(BODY_EXCERPT) {
            Some((cut, _)) => {
                message.push_str(&body[..cut]);
                message.push('…');
            }
            None => message.push_str(body),
        }
    }
    message
}
