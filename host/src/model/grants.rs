//! Capability grants: what a guest may reach beyond its own input.
//!
//! Nothing is granted by default. An operator sets a [`CapabilityCeiling`] per
//! tenant (the installation default is the empty one), and a tenant grants
//! each component kind a [`ComponentGrant`] that must fit under it. Both are
//! checked again whenever the guest acts, not only when they are set, so
//! lowering a ceiling takes effect on the next call of every running guest's
//! next attempt without touching its grants. [`EffectiveGrant`] is the
//! intersection the runtime enforces.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{is_public, OriginPattern, TenantId};

/// Entries in one allow-list (origins or CIDRs).
pub const MAX_ALLOW_ENTRIES: usize = 64;
/// Config names one grant may list.
pub const MAX_GRANTED_NAMES: usize = 128;
/// Longest origin pattern, config name.
pub const MAX_PATTERN_LEN: usize = 255;
pub const MAX_CONFIG_NAME_LEN: usize = 128;
/// Bounds of a per-request HTTP timeout.
pub const MAX_HTTP_TIMEOUT_MS: u64 = 600_000;
/// The installation's HTTP defaults, used where neither side sets one.
pub const DEFAULT_HTTP_TIMEOUT_MS: u64 = 30_000;
pub const DEFAULT_HTTP_RESPONSE_BYTES: u64 = 16 << 20;
pub const DEFAULT_HTTP_CONNECTIONS: u32 = 16;
/// Bounds the operator may set.
pub const MAX_HTTP_RESPONSE_BYTES: u64 = 1 << 30;
pub const MAX_HTTP_CONNECTIONS: u32 = 1_024;
/// Largest scratch quota an operator may let a tenant grant (4 GiB).
pub const MAX_SCRATCH_BYTES: u64 = 4 << 30;

/// What the operator lets one tenant grant at all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CapabilityCeiling {
    /// Origins (`scheme://host[:port]`, `*` wildcards) the tenant may grant.
    pub http_allow: Vec<String>,
    /// Address ranges a guest may connect to although they are loopback,
    /// private, link-local or otherwise non-public (e.g. `10.1.0.0/16`).
    /// Without one, such an address is refused whatever the origin.
    pub http_allow_cidrs: Vec<String>,
    /// Longest any one request's connect, first-byte or between-bytes wait.
    pub http_timeout_ms: Option<u64>,
    /// Largest response body a guest may read.
    pub http_max_response_bytes: Option<u64>,
    /// Outbound connections the tenant's guests may hold at once.
    pub http_max_connections: Option<u32>,
    /// Whether the tenant may grant its config values and secrets.
    pub config: bool,
    /// Largest scratch quota the tenant may grant a component; without it,
    /// no component of the tenant gets a scratch directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scratch_bytes: Option<u64>,
    /// Whether the tenant may let a component kind's attempts run on
    /// instances kept from its earlier attempts (`reuse_instances` in a
    /// grant).
    #[serde(skip_serializing_if = "is_false")]
    pub reuse_instances: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// What a tenant grants one component kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ComponentGrant {
    /// Origins the guest may send HTTP requests to.
    pub http: Vec<String>,
    /// Per-request timeout (connect, first byte, between bytes).
    pub http_timeout_ms: Option<u64>,
    /// Largest response body the guest may read.
    pub http_max_response_bytes: Option<u64>,
    /// Names of config values and secrets the guest may read.
    pub config: Vec<String>,
    /// A directory of each attempt's own, preopened as `/scratch`, holding
    /// at most this many bytes (writes and created entries count; see
    /// the capabilities docs). Without it the guest sees no files at all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scratch_bytes: Option<u64>,
    /// Run the kind's attempts on instances kept from its earlier attempts
    /// instead of a fresh instance each: much faster for JavaScript and
    /// Python guests, but what the guest keeps in its memory (globals,
    /// caches, the last input) is there for the next attempt of the kind.
    /// Needs the operator's ceiling to allow it; not with `scratch_bytes`.
    #[serde(skip_serializing_if = "is_false")]
    pub reuse_instances: bool,
}

/// A grant as stored and listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StoredGrant {
    pub kind: String,
    pub grant: ComponentGrant,
    pub updated_at: DateTime<Utc>,
}

/// Why a ceiling or a grant was refused: the field and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantError {
    pub field: &'static str,
    pub reason: String,
}

impl GrantError {
    fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

fn check_count(field: &'static str, n: usize, max: usize) -> Result<(), GrantError> {
    if n > max {
        return Err(GrantError::new(
            field,
            format!("holds {n} entries; at most {max}"),
        ));
    }
    Ok(())
}

fn check_range(field: &'static str, value: Option<u64>, max: u64) -> Result<(), GrantError> {
    match value {
        Some(v) if v == 0 || v > max => Err(GrantError::new(
            field,
            format!("is {v}; must be 1 to {max}"),
        )),
        _ => Ok(()),
    }
}

impl CapabilityCeiling {
    pub fn validate(&self) -> Result<(), GrantError> {
        check_count("http_allow", self.http_allow.len(), MAX_ALLOW_ENTRIES)?;
        check_count(
            "http_allow_cidrs",
            self.http_allow_cidrs.len(),
            MAX_ALLOW_ENTRIES,
        )?;
        for p in &self.http_allow {
            OriginPattern::parse(p).map_err(|r| GrantError::new("http_allow", r))?;
        }
        for c in &self.http_allow_cidrs {
            parse_cidr(c).map_err(|r| GrantError::new("http_allow_cidrs", r))?;
        }
        check_range("http_timeout_ms", self.http_timeout_ms, MAX_HTTP_TIMEOUT_MS)?;
        check_range(
            "http_max_response_bytes",
            self.http_max_response_bytes,
            MAX_HTTP_RESPONSE_BYTES,
        )?;
        check_range(
            "http_max_connections",
            self.http_max_connections.map(u64::from),
            u64::from(MAX_HTTP_CONNECTIONS),
        )?;
        check_range("scratch_bytes", self.scratch_bytes, MAX_SCRATCH_BYTES)
    }

    fn origins(&self) -> Vec<OriginPattern> {
        self.http_allow
            .iter()
            .filter_map(|p| OriginPattern::parse(p).ok())
            .collect()
    }

    /// The address ranges allowed past the non-public address rule.
    pub fn cidrs(&self) -> Vec<ipnet::IpNet> {
        self.http_allow_cidrs
            .iter()
            .filter_map(|c| parse_cidr(c).ok())
            .collect()
    }
}

impl ComponentGrant {
    /// Check the grant's shape and that it fits under `ceiling`.
    pub fn validate(&self, ceiling: &CapabilityCeiling) -> Result<(), GrantError> {
        check_count("http", self.http.len(), MAX_ALLOW_ENTRIES)?;
        check_count("config", self.config.len(), MAX_GRANTED_NAMES)?;
        let allowed = ceiling.origins();
        for p in &self.http {
            let pattern = OriginPattern::parse(p).map_err(|r| GrantError::new("http", r))?;
            if !allowed.iter().any(|c| c.covers(&pattern)) {
                return Err(GrantError::new(
                    "http",
                    format!("`{p}` is outside what the operator allows this tenant"),
                ));
            }
        }
        let timeout_cap = ceiling.http_timeout_ms.unwrap_or(MAX_HTTP_TIMEOUT_MS);
        check_range("http_timeout_ms", self.http_timeout_ms, timeout_cap)?;
        let response_cap = ceiling
            .http_max_response_bytes
            .unwrap_or(DEFAULT_HTTP_RESPONSE_BYTES);
        check_range(
            "http_max_response_bytes",
            self.http_max_response_bytes,
            response_cap,
        )?;
        for name in &self.config {
            check_config_name(name).map_err(|r| GrantError::new("config", r))?;
        }
        if !self.config.is_empty() && !ceiling.config {
            return Err(GrantError::new(
                "config",
                "the operator does not let this tenant grant config values",
            ));
        }
        if self.reuse_instances && !ceiling.reuse_instances {
            return Err(GrantError::new(
                "reuse_instances",
                "the operator does not let this tenant reuse instances",
            ));
        }
        if self.reuse_instances && self.scratch_bytes.is_some() {
            return Err(GrantError::new(
                "reuse_instances",
                "cannot be combined with scratch_bytes: each attempt's scratch \
                 directory is given to a fresh instance",
            ));
        }
        match (self.scratch_bytes, ceiling.scratch_bytes) {
            (Some(_), None) => Err(GrantError::new(
                "scratch_bytes",
                "the operator does not let this tenant grant scratch space",
            )),
            (requested, Some(cap)) => check_range("scratch_bytes", requested, cap),
            (None, None) => Ok(()),
        }
    }
}

/// A config value's name: letters, digits, `_`, `-` and `.`.
pub fn check_config_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_CONFIG_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` must be 1 to {MAX_CONFIG_NAME_LEN} letters, digits, `_`, `-` or `.`",
            name.chars().take(MAX_CONFIG_NAME_LEN).collect::<String>()
        ))
    }
}

fn parse_cidr(s: &str) -> Result<ipnet::IpNet, String> {
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("`{s}` is not an address range like `10.0.0.0/8`"))
}

/// What the runtime enforces for one attempt: the grant, cut to the ceiling.
#[derive(Debug, Clone, Default)]
pub struct EffectiveGrant {
    pub tenant: TenantId,
    /// Origins allowed by both the grant and the ceiling (a request must
    /// match one of each).
    pub http_grant: Vec<OriginPattern>,
    pub http_ceiling: Vec<OriginPattern>,
    pub http_allow_cidrs: Vec<ipnet::IpNet>,
    pub http_timeout_ms: u64,
    pub http_max_response_bytes: u64,
    pub http_max_connections: u32,
    /// Config names the guest may read (empty if the ceiling forbids them).
    pub config: Vec<String>,
    /// Scratch quota in bytes; 0 means no scratch directory.
    pub scratch_bytes: u64,
    /// Attempts may run on an instance kept from an earlier attempt of the
    /// same kind (granted, allowed by the ceiling, and no scratch).
    pub reuse_instances: bool,
}

impl EffectiveGrant {
    pub fn resolve(tenant: TenantId, ceiling: &CapabilityCeiling, grant: &ComponentGrant) -> Self {
        let min = |a: Option<u64>, b: Option<u64>, default: u64| {
            a.unwrap_or(default).min(b.unwrap_or(default))
        };
        Self {
            tenant,
            http_grant: grant
                .http
                .iter()
                .filter_map(|p| OriginPattern::parse(p).ok())
                .collect(),
            http_ceiling: ceiling.origins(),
            http_allow_cidrs: ceiling.cidrs(),
            http_timeout_ms: min(
                grant.http_timeout_ms,
                ceiling.http_timeout_ms,
                DEFAULT_HTTP_TIMEOUT_MS,
            ),
            http_max_response_bytes: min(
                grant.http_max_response_bytes,
                ceiling.http_max_response_bytes,
                DEFAULT_HTTP_RESPONSE_BYTES,
            ),
            http_max_connections: ceiling
                .http_max_connections
                .unwrap_or(DEFAULT_HTTP_CONNECTIONS),
            config: if ceiling.config {
                grant.config.clone()
            } else {
                Vec::new()
            },
            scratch_bytes: match (grant.scratch_bytes, ceiling.scratch_bytes) {
                (Some(granted), Some(cap)) => granted.min(cap),
                _ => 0,
            },
            reuse_instances: grant.reuse_instances
                && ceiling.reuse_instances
                && grant.scratch_bytes.is_none(),
        }
    }

    /// Whether a request to this origin is allowed by the grant and the ceiling.
    pub fn allows_origin(&self, scheme: &str, host: &str, port: u16) -> bool {
        let matches = |list: &[OriginPattern]| list.iter().any(|p| p.matches(scheme, host, port));
        matches(&self.http_grant) && matches(&self.http_ceiling)
    }

    /// Whether the guest may connect to `ip`: public addresses always, any
    /// other only inside a range the operator allowed.
    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        is_public(ip) || self.http_allow_cidrs.iter().any(|n| n.contains(&ip))
    }

    pub fn grants_http(&self) -> bool {
        !self.http_grant.is_empty() && !self.http_ceiling.is_empty()
    }
}

/// One interface a component imports, and whether its grant covers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ComponentImport {
    /// As the component names it, e.g. `wasi:http/outgoing-handler@0.2.4`.
    pub name: String,
    /// `http`, `config`, `files`, `sockets` for interfaces a grant governs
    /// (files means the scratch directory; sockets are never granted);
    /// absent for those every component has (its task imports,
    /// clocks, random, stdio…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capability: Option<String>,
    /// Whether the kind's grant (under the ceiling) lets calls through.
    pub granted: bool,
}

impl ComponentImport {
    /// Classify `name` under `grant`.
    pub fn of(name: &str, grant: &EffectiveGrant) -> Self {
        let interface = name.split('@').next().unwrap_or(name);
        let (capability, granted) = match interface {
            "wasi:http/outgoing-handler" | "wasi:http/types" => (Some("http"), grant.grants_http()),
            "wasi:config/store" => (Some("config"), !grant.config.is_empty()),
            i if i.starts_with("wasi:filesystem/") => (Some("files"), grant.scratch_bytes > 0),
            i if i.starts_with("wasi:sockets/") => (Some("sockets"), false),
            _ => (None, true),
        };
        Self {
            name: name.to_owned(),
            capability: capability.map(str::to_owned),
            granted,
        }
    }
}

/// Everything one attempt may use beyond its input: the effective grant and
/// the opened values of the config names it grants. `Debug` never prints a
/// value.
#[derive(Clone, Default)]
pub struct AttemptCapabilities {
    pub grant: EffectiveGrant,
    /// Granted names that exist, with their values.
    pub config: Vec<(String, String)>,
}

impl std::fmt::Debug for AttemptCapabilities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.config.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("AttemptCapabilities")
            .field("grant", &self.grant)
            .field("config_names", &names)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_must_fit_the_ceiling() {
        let ceiling = CapabilityCeiling {
            http_allow: vec!["https://*.example.com".into()],
            ..Default::default()
        };
        let grant = |http: &str| ComponentGrant {
            http: vec![http.into()],
            ..Default::default()
        };
        grant("https://api.example.com").validate(&ceiling).unwrap();
        let err = grant("https://evil.com").validate(&ceiling).unwrap_err();
        assert_eq!(err.field, "http");
        let config = ComponentGrant {
            config: vec!["API_KEY".into()],
            ..Default::default()
        };
        assert_eq!(config.validate(&ceiling).unwrap_err().field, "config");
        let open = CapabilityCeiling {
            config: true,
            ..ceiling.clone()
        };
        config.validate(&open).unwrap();
    }

    #[test]
    fn reuse_needs_the_ceiling_and_no_scratch() {
        let reuse = ComponentGrant {
            reuse_instances: true,
            ..Default::default()
        };
        let closed = CapabilityCeiling::default();
        let err = reuse.validate(&closed).unwrap_err();
        assert_eq!(err.field, "reuse_instances");
        let open = CapabilityCeiling {
            reuse_instances: true,
            scratch_bytes: Some(1 << 20),
            ..Default::default()
        };
        reuse.validate(&open).unwrap();
        let with_scratch = ComponentGrant {
            scratch_bytes: Some(1024),
            ..reuse.clone()
        };
        let err = with_scratch.validate(&open).unwrap_err();
        assert_eq!(err.field, "reuse_instances");
        assert!(err.reason.contains("scratch_bytes"), "{}", err.reason);
        let tenant = TenantId::nil();
        assert!(EffectiveGrant::resolve(tenant, &open, &reuse).reuse_instances);
        // A ceiling that stops allowing it turns an existing grant's off.
        assert!(!EffectiveGrant::resolve(tenant, &closed, &reuse).reuse_instances);
        assert!(!EffectiveGrant::resolve(tenant, &open, &with_scratch).reuse_instances);
        // Not granted: off, and left out of the stored document.
        let plain = ComponentGrant::default();
        assert!(!EffectiveGrant::resolve(tenant, &open, &plain).reuse_instances);
        assert_eq!(
            serde_json::to_value(&plain).unwrap().get("reuse_instances"),
            None
        );
    }

    #[test]
    fn scratch_needs_the_ceiling_and_fits_under_it() {
        let scratch = |bytes| ComponentGrant {
            scratch_bytes: Some(bytes),
            ..Default::default()
        };
        let closed = CapabilityCeiling::default();
        assert_eq!(
            scratch(1 << 20).validate(&closed).unwrap_err().field,
            "scratch_bytes"
        );
        let open = CapabilityCeiling {
            scratch_bytes: Some(8 << 20),
            ..Default::default()
        };
        scratch(8 << 20).validate(&open).unwrap();
        assert_eq!(
            scratch((8 << 20) + 1).validate(&open).unwrap_err().field,
            "scratch_bytes"
        );
        assert_eq!(
            scratch(0).validate(&open).unwrap_err().field,
            "scratch_bytes"
        );
        let too_big = CapabilityCeiling {
            scratch_bytes: Some(MAX_SCRATCH_BYTES + 1),
            ..Default::default()
        };
        assert_eq!(too_big.validate().unwrap_err().field, "scratch_bytes");
        let eff = EffectiveGrant::resolve(TenantId::nil(), &open, &scratch(1 << 20));
        assert_eq!(eff.scratch_bytes, 1 << 20);
        // A ceiling lowered below an existing grant cuts the grant down.
        let lowered = CapabilityCeiling {
            scratch_bytes: Some(4096),
            ..Default::default()
        };
        let eff = EffectiveGrant::resolve(TenantId::nil(), &lowered, &scratch(1 << 20));
        assert_eq!(eff.scratch_bytes, 4096);
        let eff = EffectiveGrant::resolve(TenantId::nil(), &closed, &scratch(1 << 20));
        assert_eq!(eff.scratch_bytes, 0);
    }

    #[test]
    fn effective_grant_needs_both_sides() {
        let ceiling = CapabilityCeiling {
            http_allow: vec!["https://*.example.com".into()],
            http_timeout_ms: Some(5_000),
            ..Default::default()
        };
        let grant = ComponentGrant {
            http: vec!["https://api.example.com".into(), "https://other.org".into()],
            http_timeout_ms: Some(60_000),
            config: vec!["X".into()],
            ..Default::default()
        };
        let eff = EffectiveGrant::resolve(TenantId::nil(), &ceiling, &grant);
        assert!(eff.allows_origin("https", "api.example.com", 443));
        assert!(!eff.allows_origin("https", "other.org", 443));
        assert_eq!(eff.http_timeout_ms, 5_000);
        assert!(eff.config.is_empty(), "the ceiling grants no config");
        let allowed = CapabilityCeiling {
            http_allow_cidrs: vec!["127.0.0.0/8".into()],
            ..ceiling
        };
        let eff = EffectiveGrant::resolve(TenantId::nil(), &allowed, &grant);
        assert!(eff.allows_ip("127.0.0.1".parse().unwrap()));
        assert!(!eff.allows_ip("10.0.0.1".parse().unwrap()));
    }
}
