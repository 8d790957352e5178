//! Origins a guest may call: allow-list entries (`scheme://host[:port]`
//! with `*` wildcards) and which IP addresses count as public. The grant
//! checks in `grants.rs` and the runtime's outbound sender use them; the
//! sender checks every resolved address with [`is_public`] unless the
//! operator's ceiling allows its CIDR.

use std::net::IpAddr;

use super::grants::MAX_PATTERN_LEN;

/// One allow-list entry: `scheme://host[:port]`, where the scheme may be `*`,
/// the host `*` or `*.suffix`, and the port `*` (absent: the scheme's own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginPattern {
    scheme: SchemePattern,
    host: HostPattern,
    port: PortPattern,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SchemePattern {
    Http,
    Https,
    Any,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Any,
    /// `*.suffix`: any name ending in `.suffix` (not `suffix` itself).
    Subdomains(String),
    Exact(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PortPattern {
    Default,
    Any,
    Port(u16),
}

impl OriginPattern {
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad =
            |why: &str| format!("`{s}` is not an origin like `https://api.example.com`: {why}");
        if s.len() > MAX_PATTERN_LEN {
            return Err(format!(
                "an origin pattern is at most {MAX_PATTERN_LEN} bytes"
            ));
        }
        let (scheme, rest) = s.split_once("://").ok_or_else(|| bad("no `://`"))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => SchemePattern::Http,
            "https" => SchemePattern::Https,
            "*" => SchemePattern::Any,
            _ => return Err(bad("the scheme must be `http`, `https` or `*`")),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) {
            return Err(bad("only scheme, host and port; no path, query or user"));
        }
        let (host, port) = split_host_port(rest).ok_or_else(|| bad("bad host or port"))?;
        let port = match port {
            None => PortPattern::Default,
            Some("*") => PortPattern::Any,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => PortPattern::Port(n),
                _ => return Err(bad("the port must be 1 to 65535 or `*`")),
            },
        };
        let host = host.to_ascii_lowercase();
        let host = if host == "*" {
            HostPattern::Any
        } else if let Some(suffix) = host.strip_prefix("*.") {
            if !is_host_name(suffix) {
                return Err(bad("a wildcard is `*` or `*.` followed by a host name"));
            }
            HostPattern::Subdomains(suffix.to_owned())
        } else if is_host_name(&host) || host.parse::<IpAddr>().is_ok() {
            HostPattern::Exact(host)
        } else {
            return Err(bad("the host is not a name or an IP address"));
        };
        Ok(Self { scheme, host, port })
    }

    /// Whether a request to `scheme://host:port` matches.
    pub fn matches(&self, scheme: &str, host: &str, port: u16) -> bool {
        let scheme_ok = match self.scheme {
            SchemePattern::Any => scheme == "http" || scheme == "https",
            SchemePattern::Http => scheme == "http",
            SchemePattern::Https => scheme == "https",
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let host_ok = match &self.host {
            HostPattern::Any => true,
            HostPattern::Exact(h) => h.eq_ignore_ascii_case(host),
            HostPattern::Subdomains(s) => host
                .to_ascii_lowercase()
                .strip_suffix(s.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
        };
        let port_ok = match self.port {
            PortPattern::Any => true,
            PortPattern::Port(p) => p == port,
            PortPattern::Default => port == default_port(scheme),
        };
        scheme_ok && host_ok && port_ok
    }

    /// Whether every request `other` matches, this matches too.
    pub fn covers(&self, other: &OriginPattern) -> bool {
        let schemes = |s: SchemePattern| match s {
            SchemePattern::Http => vec!["http"],
            SchemePattern::Https => vec!["https"],
            SchemePattern::Any => vec!["http", "https"],
        };
        let host_ok = match (&self.host, &other.host) {
            (HostPattern::Any, _) => true,
            (_, HostPattern::Any) => false,
            (HostPattern::Exact(a), HostPattern::Exact(b)) => a == b,
            (HostPattern::Exact(_), HostPattern::Subdomains(_)) => false,
            (HostPattern::Subdomains(s), HostPattern::Exact(h)) => h
                .strip_suffix(s.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
            (HostPattern::Subdomains(s), HostPattern::Subdomains(t)) => {
                t == s || t.ends_with(&format!(".{s}"))
            }
        };
        let ports_ok = schemes(other.scheme).into_iter().all(|scheme| {
            let allowed = |p: PortPattern| match p {
                PortPattern::Any => None,
                PortPattern::Port(n) => Some(n),
                PortPattern::Default => Some(default_port(scheme)),
            };
            let scheme_ok = schemes(self.scheme).contains(&scheme);
            scheme_ok
                && match (allowed(self.port), allowed(other.port)) {
                    (None, _) => true,
                    (Some(_), None) => false,
                    (Some(a), Some(b)) => a == b,
                }
        });
        host_ok && ports_ok
    }
}

fn default_port(scheme: &str) -> u16 {
    if scheme == "http" {
        80
    } else {
        443
    }
}

/// `host[:port]`, with IPv6 hosts in brackets.
fn split_host_port(s: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after {
            "" => Some((host, None)),
            p => Some((host, Some(p.strip_prefix(':')?))),
        };
    }
    match s.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() => Some((host, Some(port))),
        Some(_) => None,
        None if !s.is_empty() => Some((s, None)),
        None => None,
    }
}

fn is_host_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Whether `ip` is a public unicast address: not loopback, private,
/// link-local (cloud metadata lives there), unique-local, shared (CGNAT),
/// multicast, broadcast, unspecified, documentation or reserved. An
/// IPv4-mapped or -compatible IPv6 address is judged as its IPv4 address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_unspecified()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && c == 0)
                || (a == 198 && (b == 18 || b == 19))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let seg = v6.segments();
            if seg[..6] == [0; 6] {
                // ::/96 (IPv4-compatible, unspecified, loopback) and ::ffff:0:0/96.
                return false;
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg[0] & 0xfe00) == 0xfc00
                || (seg[0] & 0xffc0) == 0xfe80
                || (seg[0] & 0xffc0) == 0xfec0
                || (seg[0] == 0x2001 && seg[1] == 0x0db8)
                || seg[0] == 0x0064 && seg[1] == 0xff9b
                || seg[0] == 0x2002)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> OriginPattern {
        OriginPattern::parse(s).unwrap()
    }

    #[test]
    fn patterns_parse_and_refuse() {
        for good in [
            "https://api.example.com",
            "https://api.example.com/",
            "http://127.0.0.1:8080",
            "*://*.example.com:*",
            "https://[::1]:443",
            "https://*",
        ] {
            OriginPattern::parse(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        for bad in [
            "api.example.com",
            "ftp://x.com",
            "https://x.com/path",
            "https://user@x.com",
            "https://x.com:0",
            "https://x.com:99999",
            "https://*x.com",
            "https://x..com",
            "https://",
        ] {
            assert!(OriginPattern::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn matching() {
        assert!(p("https://api.example.com").matches("https", "API.example.com", 443));
        assert!(!p("https://api.example.com").matches("http", "api.example.com", 80));
        assert!(!p("https://api.example.com").matches("https", "api.example.com", 8443));
        assert!(p("https://*.example.com").matches("https", "a.b.example.com", 443));
        assert!(!p("https://*.example.com").matches("https", "example.com", 443));
        assert!(!p("https://*.example.com").matches("https", "badexample.com", 443));
        assert!(p("*://x.com:*").matches("http", "x.com", 1234));
        assert!(p("http://127.0.0.1:*").matches("http", "127.0.0.1", 9));
    }

    #[test]
    fn covering() {
        assert!(p("https://*.example.com").covers(&p("https://a.example.com")));
        assert!(p("https://*.example.com").covers(&p("https://*.a.example.com")));
        assert!(!p("https://*.example.com").covers(&p("https://example.com")));
        assert!(!p("https://a.example.com").covers(&p("https://*.example.com")));
        assert!(!p("https://x.com").covers(&p("*://x.com")));
        assert!(p("*://x.com").covers(&p("https://x.com")));
        assert!(!p("https://x.com").covers(&p("https://x.com:*")));
        assert!(p("https://x.com:*").covers(&p("https://x.com:8443")));
        assert!(p("https://x.com:443").covers(&p("https://x.com")));
        assert!(p("*://*:*").covers(&p("http://10.0.0.1:80")));
    }

    #[test]
    fn non_public_addresses() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip} counted as public");
        }
        for ip in ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"] {
            assert!(is_public(ip.parse().unwrap()), "{ip} counted as non-public");
        }
    }
}
