//! One entry of a plugin's `allowed_hosts`: where it may send HTTP requests.
//!
//! `"api.example.com"` allows ports 80 and 443, `"api.example.com:8443"` that
//! port only, `"api.example.com:*"` any port. IP addresses are written as such
//! (`"10.0.0.5:8080"`, `"[::1]:8080"`); listing a private or loopback address
//! by its number is the only way a plugin may reach one.

use std::net::IpAddr;

/// A host and the ports a plugin may reach on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHost {
    pub host: HostName,
    pub ports: Ports,
}

/// A host as written: a DNS name (lowercase) or an IP address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostName {
    Name(String),
    Ip(IpAddr),
}

/// Which ports of the host are allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ports {
    /// 80 and 443: what a URL without a port uses.
    Web,
    One(u16),
    Any,
}

impl AllowedHost {
    /// Parses one entry; the error says how to write it.
    pub fn parse(text: &str) -> Result<AllowedHost, String> {
        let bad =
            |why: &str| format!("`{text}` is not a host: {why}; write e.g. \"api.example.com\" or \"10.0.0.5:8080\"");
        let text = text.trim();
        if text.contains("://") || text.contains('/') {
            return Err(bad("give the host and port only, without a scheme or path"));
        }
        // `[v6]:port`, `[v6]`, `v4:port`, `name:port`, or a bare host.
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (inside, after) = rest.split_once(']').ok_or_else(|| bad("an IPv6 address needs its closing `]`"))?;
            match after {
                "" => (inside, None),
                _ => (inside, Some(after.strip_prefix(':').ok_or_else(|| bad("a port follows `]:`"))?)),
            }
        } else if text.parse::<IpAddr>().is_ok() {
            (text, None)
        } else {
            match text.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (text, None),
            }
        };
        let ports = match port {
            None => Ports::Web,
            Some("*") => Ports::Any,
            Some(port) => {
                Ports::One(port.parse().ok().filter(|&p| p != 0).ok_or_else(|| bad("the port is not 1–65535"))?)
            }
        };
        let host = match host.parse::<IpAddr>() {
            Ok(ip) => HostName::Ip(ip),
            Err(_) if is_dns_name(host) => HostName::Name(host.to_ascii_lowercase()),
            Err(_) => return Err(bad("the name has characters a DNS name cannot have")),
        };
        Ok(AllowedHost { host, ports })
    }

    /// Whether this entry allows `port`.
    pub fn allows_port(&self, port: u16) -> bool {
        match self.ports {
            Ports::Web => port == 80 || port == 443,
            Ports::One(p) => p == port,
            Ports::Any => true,
        }
    }

    /// Whether this entry allows the host named `host` (as in a URL) on `port`.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        let named = match (&self.host, host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>()) {
            (HostName::Ip(ip), Ok(requested)) => *ip == requested,
            (HostName::Name(name), Err(_)) => name.eq_ignore_ascii_case(host.trim_end_matches('.')),
            _ => false,
        };
        named && self.allows_port(port)
    }

    /// Whether this entry lists the address `ip` itself, on `port`.
    pub fn lists_address(&self, ip: IpAddr, port: u16) -> bool {
        self.host == HostName::Ip(ip) && self.allows_port(port)
    }
}

impl std::fmt::Display for AllowedHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.host {
            HostName::Name(name) => f.write_str(name)?,
            HostName::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]")?,
            HostName::Ip(ip) => write!(f, "{ip}")?,
        }
        match self.ports {
            Ports::Web => Ok(()),
            Ports::One(port) => write!(f, ":{port}"),
            Ports::Any => f.write_str(":*"),
        }
    }
}

fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.trim_end_matches('.').split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_with_their_ports() {
        let web = AllowedHost::parse("API.example.com").unwrap();
        assert!(web.allows("api.example.com", 443) && web.allows("api.example.com", 80));
        assert!(!web.allows("api.example.com", 8443) && !web.allows("example.com", 443));
        let one = AllowedHost::parse("127.0.0.1:8080").unwrap();
        assert!(one.allows("127.0.0.1", 8080) && !one.allows("127.0.0.1", 8081) && !one.allows("localhost", 8080));
        assert!(one.lists_address("127.0.0.1".parse().unwrap(), 8080));
        let v6 = AllowedHost::parse("[::1]:*").unwrap();
        assert!(v6.allows("[::1]", 1) && v6.allows("::1", 65535));
        assert_eq!(v6.to_string(), "[::1]:*");
    }

    #[test]
    fn malformed_entries_say_how_to_write_one() {
        for bad in
            ["http://example.com", "example.com/api", "exa mple.com", "example.com:0", "example.com:http", "[::1"]
        {
            let error = AllowedHost::parse(bad).unwrap_err();
            assert!(error.contains(bad) && error.contains("write e.g."), "{error}");
        }
    }
}
