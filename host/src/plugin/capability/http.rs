//! Outgoing HTTP for plugins (`wasi:http`), only where their tenant allows.
//!
//! Every request passes [`HttpPolicy::admit`] before a connection is opened:
//! its host and port must be on the plugin's `allowed_hosts`, and every address
//! the host resolves to must be public unless that address itself is listed
//! (so a listed name that points at 127.0.0.1 or 10.x cannot be used to reach
//! the host's own network). Plain-HTTP requests are then sent to the checked
//! address, so a second DNS answer cannot swap it; HTTPS needs the name for
//! its certificate, and the certificate check is what stops a swap there.
//! Timeouts and a response-size cap come from the plugin's limits.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use crate::config::{AllowedHost, Limits};

/// What one plugin instance may do over HTTP. Cheap to clone: requests take a
/// copy into their future, which outlives the borrow of the store.
#[derive(Clone)]
pub(in crate::plugin) struct HttpPolicy {
    tenant: Arc<str>,
    plugin: Arc<str>,
    allowed: Arc<[AllowedHost]>,
    limits: Limits,
}

type IoFuture = Box<dyn Future<Output = Result<(), Error>> + Send>;

/// Links `wasi:http`'s outgoing handler (and no incoming one): each request
/// then passes the instance's policy.
pub(in crate::plugin) fn add_to_linker(
    linker: &mut wasmtime::component::Linker<crate::plugin::ctx::PluginCtx>,
) -> wasmtime::Result<()> {
    wasmtime_wasi_http::p2::add_only_http_to_linker_sync(linker)
}

impl HttpPolicy {
    pub(in crate::plugin) fn new(tenant: &str, plugin: &str, allowed: &[AllowedHost], limits: Limits) -> HttpPolicy {
        HttpPolicy { tenant: tenant.into(), plugin: plugin.into(), allowed: allowed.into(), limits }
    }

    /// Checks a request's destination. Returns the address to connect to when
    /// the request may go there, or the error the plugin sees.
    async fn admit(&self, uri: &http::Uri) -> Result<SocketAddr, Error> {
        let host = uri.host().ok_or(Error::HttpRequestUriInvalid)?;
        let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let bare_host = host.trim_start_matches('[').trim_end_matches(']');
        if !self.allowed.iter().any(|entry| entry.allows(host, port)) {
            return Err(self.refuse(host, port, "it is not on the plugin's allowed_hosts"));
        }
        let addresses: Vec<SocketAddr> = match bare_host.parse::<IpAddr>() {
            // An address written in the URL and matched above is listed itself.
            Ok(ip) => return Ok(SocketAddr::new(ip, port)),
            Err(_) => match tokio::net::lookup_host((bare_host, port)).await {
                Ok(found) => found.collect(),
                Err(e) => {
                    tracing::warn!(tenant = %self.tenant, plugin = %self.plugin, "cannot resolve `{host}`: {e}");
                    return Err(Error::DnsError { rcode: Some(e.to_string()), info_code: None });
                }
            },
        };
        if let Some(hidden) = addresses
            .iter()
            .find(|a| !is_public(a.ip()) && !self.allowed.iter().any(|entry| entry.lists_address(a.ip(), port)))
        {
            return Err(self.refuse(
                host,
                port,
                &format!(
                    "it resolves to {}, a private or loopback address, which is reached only when listed itself",
                    hidden.ip()
                ),
            ));
        }
        addresses.first().copied().ok_or(Error::DestinationNotFound)
    }

    fn refuse(&self, host: &str, port: u16, why: &str) -> Error {
        crate::metrics::http_refused(&self.tenant, &self.plugin);
        tracing::warn!(
            tenant = %self.tenant,
            plugin = %self.plugin,
            "tenant `{}`, plugin `{}`: HTTP request to {host}:{port} refused: {why}",
            self.tenant,
            self.plugin
        );
        Error::HttpRequestDenied
    }

    /// The guest's timeouts, none longer than the plugin's `http_timeout`
    /// nor than what is left of the call. Called in the host call itself,
    /// where the call's deadline is known, not in the request's future.
    fn options(&self, asked: Option<RequestOptions>) -> RequestOptions {
        // A timeout of zero would mean none to the client: at least a millisecond.
        let cap = crate::plugin::deadline::bounded(self.limits.http_timeout).max(std::time::Duration::from_millis(1));
        let asked = asked.unwrap_or_default();
        let bound = |t: Option<std::time::Duration>| Some(t.map_or(cap, |t| t.min(cap)));
        RequestOptions {
            connect_timeout: bound(asked.connect_timeout),
            first_byte_timeout: bound(asked.first_byte_timeout),
            between_bytes_timeout: bound(asked.between_bytes_timeout),
        }
    }
}

impl WasiHttpHooks for HttpPolicy {
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _request_done: IoFuture,
    ) -> Box<dyn Future<Output = Result<(http::Response<WasiBody>, IoFuture), Error>> + Send> {
        let policy = self.clone();
        let options = policy.options(options);
        Box::new(async move {
            let address = policy.admit(request.uri()).await?;
            if request.uri().scheme() != Some(&http::uri::Scheme::HTTPS) {
                pin_address(&mut request, address)?;
            }
            let (response, io) = wasmtime_wasi_http::default_send_request(request, Some(options)).await?;
            let cap = policy.limits.http_max_response_bytes;
            if let Some(length) = response.body().size_hint().exact()
                && length > cap
            {
                return Err(Error::HttpResponseBodySize(Some(length)));
            }
            let response = response.map(|body| CappedBody { inner: body, left: cap, cap }.boxed_unsync());
            Ok((response, Box::new(io) as IoFuture))
        })
    }
}

/// Points a plain-HTTP request at the checked address; its `Host` header,
/// already set, keeps the name.
fn pin_address(request: &mut http::Request<WasiBody>, address: SocketAddr) -> Result<(), Error> {
    let mut parts = request.uri().clone().into_parts();
    parts.authority = Some(address.to_string().parse().map_err(|_| Error::HttpRequestUriInvalid)?);
    *request.uri_mut() = http::Uri::from_parts(parts).map_err(|_| Error::HttpRequestUriInvalid)?;
    Ok(())
}

/// A response body that fails once it has yielded more than `cap` bytes.
struct CappedBody<B> {
    inner: B,
    left: u64,
    cap: u64,
}

impl<B: Body<Data = Bytes, Error = Error> + Unpin> Body for CappedBody<B> {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let frame = std::task::ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if let Some(Ok(frame)) = &frame
            && let Some(data) = frame.data_ref()
        {
            match self.left.checked_sub(data.len() as u64) {
                Some(left) => self.left = left,
                None => return Poll::Ready(Some(Err(Error::HttpResponseBodySize(Some(self.cap))))),
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Whether `ip` is an address on the public internet: not loopback, private,
/// link-local, shared, documentation, multicast or otherwise special.
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_unspecified()
                || v4.is_multicast()
                || a == 0
                || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
                || (a == 198 && (b == 18 || b == 19)) // benchmarking
                || a >= 240) // reserved
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link-local
                || (first == 0x2001 && v6.segments()[1] == 0x0db8)) // documentation
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_count_as_public() {
        for private in
            ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0"]
        {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for private in ["::1", "fd00::1", "fe80::1", "::ffff:127.0.0.1", "2001:db8::1"] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["93.184.216.34", "1.1.1.1", "2606:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    fn policy(allowed: &[&str]) -> HttpPolicy {
        let allowed: Vec<AllowedHost> = allowed.iter().map(|a| AllowedHost::parse(a).unwrap()).collect();
        HttpPolicy::new("t", "p", &allowed, Limits::default())
    }

    fn admit(policy: &HttpPolicy, url: &str) -> Result<SocketAddr, Error> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(policy.admit(&url.parse().unwrap()))
    }

    #[test]
    fn requests_go_only_to_listed_hosts_and_ports() {
        let policy = policy(&["127.0.0.1:8080"]);
        assert_eq!(admit(&policy, "http://127.0.0.1:8080/x").unwrap(), "127.0.0.1:8080".parse().unwrap());
        assert!(matches!(admit(&policy, "http://127.0.0.1:8081/x"), Err(Error::HttpRequestDenied)));
        assert!(matches!(admit(&policy, "http://10.0.0.1:8080/x"), Err(Error::HttpRequestDenied)));
    }

    #[test]
    fn a_listed_name_that_resolves_to_loopback_is_refused() {
        let policy = policy(&["localhost:8080"]);
        assert!(matches!(admit(&policy, "http://localhost:8080/x"), Err(Error::HttpRequestDenied)));
        let listed_too = super::tests::policy(&["localhost:8080", "127.0.0.1:8080", "[::1]:8080"]);
        assert!(admit(&listed_too, "http://localhost:8080/x").unwrap().ip().is_loopback());
    }
}
