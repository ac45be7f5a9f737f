//! A small blocking HTTP client for plugins, over `wasi:http/outgoing-handler`.
//!
//! A plugin call is synchronous and the host runs each plugin instance on its
//! own thread, so a plugin gains nothing from async I/O: [`send`] makes one
//! request and waits for the whole response. The host decides which hosts a
//! plugin may reach (the tenant's `allowed_hosts`) and how long a request may
//! take and how large a response may be; a request it refuses fails with an
//! error for which [`HttpError::is_denied`] is true.
//!
//! ```ignore
//! use synchost_plugin_sdk::http::{self, Method, Request};
//!
//! let response = http::send(&Request {
//!     method: Method::Get,
//!     url: "http://127.0.0.1:8080/api/people?cursor=abc",
//!     headers: &[("accept", "application/json")],
//!     body: None,
//! })?;
//! if response.status == 200 { /* response.body */ }
//! ```
//!
//! Any status is a [`Response`]; only a request that got no complete answer
//! (refused by the host, connection failures, timeouts, a cut-off body) is an
//! [`HttpError`].

use std::fmt;

use wasi::http::outgoing_handler;
use wasi::http::types::{self as wasi_http, ErrorCode, Fields, IncomingBody, OutgoingBody, OutgoingRequest, Scheme};
use wasi::io::streams::{InputStream, OutputStream, StreamError};

/// The largest piece of a body moved across the boundary at once. The host
/// bounds writes by `check-write` anyway; this only keeps the copies small.
const CHUNK: usize = 64 * 1024;

/// The request methods a connector needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    /// The method's name as it goes on the wire, e.g. `"PATCH"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }

    fn to_wasi(self) -> wasi_http::Method {
        match self {
            Method::Get => wasi_http::Method::Get,
            Method::Post => wasi_http::Method::Post,
            Method::Put => wasi_http::Method::Put,
            Method::Patch => wasi_http::Method::Patch,
            Method::Delete => wasi_http::Method::Delete,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One request. `url` is absolute (`http://` or `https://`); a fragment is
/// dropped, and the query is sent as written (encode it before).
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: Method,
    pub url: &'a str,
    /// Header names and values, sent in this order. `Content-Length` is set
    /// from `body`; `Host` and hop-by-hop headers are the host's to set.
    pub headers: &'a [(&'a str, &'a str)],
    pub body: Option<&'a [u8]>,
}

/// A complete response, whatever its status.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Header names (lower case, as HTTP/2 and the host give them) and values,
    /// in the order received; values that are not UTF-8 are converted lossily.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name`, compared without regard to case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// A request that got no complete response. Its message names the method,
/// the URL and what went wrong.
#[derive(Debug)]
pub struct HttpError {
    method: Method,
    url: String,
    kind: ErrorKind,
}

#[derive(Debug)]
enum ErrorKind {
    /// The URL could not be split into scheme, authority and path.
    InvalidUrl(&'static str),
    /// The host refused a header (a forbidden name, or invalid syntax).
    Header { name: String, error: wasi_http::HeaderError },
    /// What `wasi:http` reported: by the host's policy, the connection or the
    /// peer.
    Code(ErrorCode),
    /// A body stream failed without an HTTP error code.
    Stream(String),
}

impl HttpError {
    fn new(request: &Request, kind: ErrorKind) -> Self {
        HttpError { method: request.method, url: request.url.to_string(), kind }
    }

    /// The host refused the request: its destination is not among the
    /// plugin's `allowed_hosts` (or is an address only an explicit grant
    /// reaches). Retrying cannot help; an operator must grant it.
    pub fn is_denied(&self) -> bool {
        matches!(self.kind, ErrorKind::Code(ErrorCode::HttpRequestDenied | ErrorCode::DestinationIpProhibited))
    }

    /// The request may well succeed if tried again later: a timeout, a
    /// refused, reset or dropped connection, a failed DNS lookup, a response
    /// cut off part-way.
    pub fn is_transient(&self) -> bool {
        match &self.kind {
            ErrorKind::Code(code) => matches!(
                code,
                ErrorCode::DnsTimeout
                    | ErrorCode::DnsError(_)
                    | ErrorCode::DestinationNotFound
                    | ErrorCode::DestinationUnavailable
                    | ErrorCode::DestinationIpUnroutable
                    | ErrorCode::ConnectionRefused
                    | ErrorCode::ConnectionTerminated
                    | ErrorCode::ConnectionTimeout
                    | ErrorCode::ConnectionReadTimeout
                    | ErrorCode::ConnectionWriteTimeout
                    | ErrorCode::ConnectionLimitReached
                    | ErrorCode::HttpResponseIncomplete
                    | ErrorCode::HttpResponseTimeout
            ),
            // A body stream that breaks without a code is a connection that
            // went away mid-transfer.
            ErrorKind::Stream(_) => true,
            ErrorKind::InvalidUrl(_) | ErrorKind::Header { .. } => false,
        }
    }

    /// The request itself is wrong in a way only its configuration can fix:
    /// a bad URL or header, or a TLS setup the peer will not accept.
    fn is_misconfigured(&self) -> bool {
        match &self.kind {
            ErrorKind::InvalidUrl(_) | ErrorKind::Header { .. } => true,
            ErrorKind::Code(code) => matches!(
                code,
                ErrorCode::HttpRequestUriInvalid
                    | ErrorCode::HttpRequestMethodInvalid
                    | ErrorCode::TlsCertificateError
                    | ErrorCode::TlsProtocolError
                    | ErrorCode::ConfigurationError
            ),
            ErrorKind::Stream(_) => false,
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} failed: ", self.method, self.url)?;
        match &self.kind {
            ErrorKind::InvalidUrl(reason) => write!(f, "invalid URL: {reason}"),
            ErrorKind::Header { name, error } => {
                let error = format!("{error:?}");
                write!(f, "header `{name}` refused: {}", error.trim_start_matches("HeaderError::"))
            }
            // The binding's Debug names every case `ErrorCode::X(..)`; the case
            // name alone reads better and matches the WIT.
            ErrorKind::Code(code) => f.write_str(format!("{code:?}").trim_start_matches("ErrorCode::")),
            ErrorKind::Stream(message) => write!(f, "the body stream failed: {message}"),
        }
    }
}

impl std::error::Error for HttpError {}

/// The WIT error the host acts on: a refused destination or a request only
/// its configuration can fix needs an operator (`config`); everything else
/// that kept a request from completing is worth another try (`transient`),
/// since nothing says the operation itself can never apply.
impl From<HttpError> for crate::Error {
    fn from(e: HttpError) -> Self {
        if e.is_denied() {
            crate::Error::Config(format!(
                "{e} (the host refused it: its host and port must be on the plugin's allowed_hosts, and a name that \
                 resolves to a private or loopback address, such as localhost, must be listed by that address, \
                 e.g. `127.0.0.1:8080`; the host's log names the address)"
            ))
        } else if e.is_misconfigured() {
            crate::Error::Config(e.to_string())
        } else {
            crate::Error::Transient(e.to_string())
        }
    }
}

/// Sends `request` and waits for the complete response (status, headers and
/// the whole body).
pub fn send(request: &Request) -> Result<Response, HttpError> {
    let fail = |kind| HttpError::new(request, kind);
    let url = Url::parse(request.url).map_err(|reason| fail(ErrorKind::InvalidUrl(reason)))?;

    let mut entries: Vec<(String, Vec<u8>)> =
        request.headers.iter().map(|(name, value)| (name.to_string(), value.as_bytes().to_vec())).collect();
    if let Some(body) = request.body {
        entries.push(("content-length".to_string(), body.len().to_string().into_bytes()));
    }
    let headers = Fields::new();
    for (name, value) in &entries {
        headers.append(name, value).map_err(|error| fail(ErrorKind::Header { name: name.clone(), error }))?;
    }

    let outgoing = OutgoingRequest::new(headers);
    // These only fail on values the host cannot represent; the parsed URL
    // gives none of those, but say so rather than send something else.
    let set = outgoing.set_method(&request.method.to_wasi()).is_ok()
        && outgoing.set_scheme(Some(&url.scheme)).is_ok()
        && outgoing.set_authority(Some(url.authority)).is_ok()
        && outgoing.set_path_with_query(Some(&url.path_with_query)).is_ok();
    if !set {
        return Err(fail(ErrorKind::InvalidUrl("the host does not accept its scheme, authority or path")));
    }

    // Take the body before handing the request over, but write it only after:
    // the host sends the request (and drains the body) once `handle` has it,
    // so a body larger than the host's buffer written first would never finish.
    let body = request.body.map(|_| outgoing.body().expect("the body of a new request is taken once"));
    let pending = outgoing_handler::handle(outgoing, None).map_err(|code| fail(ErrorKind::Code(code)))?;

    // A body the peer stopped reading (it answered early, or the connection
    // broke) is not an error of its own: the response, or its error, says
    // what happened.
    let mut write_error = None;
    if let (Some(body), Some(bytes)) = (body, request.body) {
        let stream = body.write().expect("the stream of a new body is taken once");
        write_error = write_all(&stream, bytes).err();
        drop(stream);
        // Finishing tells the host the body is complete; a body dropped
        // unfinished is sent as cut off, which is right after a failed write.
        if write_error.is_none()
            && let Err(code) = OutgoingBody::finish(body, None)
        {
            write_error = Some(ErrorKind::Code(code));
        }
    }

    pending.subscribe().block();
    let response = match pending.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(code))) => return Err(fail(ErrorKind::Code(code))),
        // `get` after readiness answers once; a second answer cannot happen here.
        Some(Err(())) | None => {
            return Err(fail(write_error.unwrap_or(ErrorKind::Stream("the response was already taken".into()))));
        }
    };

    let status = response.status();
    let headers = response
        .headers()
        .entries()
        .into_iter()
        .map(|(name, value)| (name, String::from_utf8_lossy(&value).into_owned()))
        .collect();
    let incoming = response.consume().expect("the body of a new response is taken once");
    let body = read_all(&incoming).map_err(fail)?;
    // Trailers (and a late error in them) are not something a REST connector
    // uses; finishing the body releases it before the response is dropped.
    drop(IncomingBody::finish(incoming));
    Ok(Response { status, headers, body })
}

/// Writes `bytes` in pieces the stream says it can take, then flushes.
fn write_all(stream: &OutputStream, mut bytes: &[u8]) -> Result<(), ErrorKind> {
    while !bytes.is_empty() {
        let budget = stream.check_write().map_err(stream_error)?;
        if budget == 0 {
            stream.subscribe().block();
            continue;
        }
        let n = bytes.len().min(CHUNK).min(usize::try_from(budget).unwrap_or(usize::MAX));
        stream.write(&bytes[..n]).map_err(stream_error)?;
        bytes = &bytes[n..];
    }
    stream.blocking_flush().map_err(stream_error)
}

/// Reads a response body until its stream closes.
fn read_all(body: &IncomingBody) -> Result<Vec<u8>, ErrorKind> {
    let stream: InputStream = body.stream().expect("the stream of a new body is taken once");
    let mut out = Vec::new();
    let result = loop {
        match stream.blocking_read(CHUNK as u64) {
            Ok(chunk) => out.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break Ok(out),
            Err(e) => break Err(stream_error(e)),
        }
    };
    // The stream is a child of the body and must go first.
    drop(stream);
    result
}

fn stream_error(e: StreamError) -> ErrorKind {
    match e {
        StreamError::LastOperationFailed(error) => match wasi_http::http_error_code(&error) {
            Some(code) => ErrorKind::Code(code),
            None => ErrorKind::Stream(error.to_debug_string()),
        },
        StreamError::Closed => ErrorKind::Stream("closed by the peer".into()),
    }
}

/// The parts of an absolute URL that `wasi:http` takes one by one.
struct Url<'a> {
    scheme: Scheme,
    authority: &'a str,
    path_with_query: String,
}

impl<'a> Url<'a> {
    fn parse(url: &'a str) -> Result<Self, &'static str> {
        let (scheme, rest) = url.split_once("://").ok_or("it does not start with http:// or https://")?;
        let scheme = if scheme.eq_ignore_ascii_case("http") {
            Scheme::Http
        } else if scheme.eq_ignore_ascii_case("https") {
            Scheme::Https
        } else {
            return Err("only http and https are supported");
        };
        // The fragment is the client's business, never sent.
        let rest = rest.split('#').next().unwrap_or_default();
        let (authority, path) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
        if authority.is_empty() {
            return Err("it has no host");
        }
        if authority.contains('@') {
            return Err("credentials in the URL are not supported; send them in a header");
        }
        if rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("it contains spaces or control characters; percent-encode them");
        }
        // "http://host" and "http://host?q" both mean the root path.
        let path_with_query = if path.starts_with('/') { path.to_string() } else { format!("/{path}") };
        Ok(Url { scheme, authority, path_with_query })
    }
}
