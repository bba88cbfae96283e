//! What the API (registration) and the worker (delivery) agree on about
//! webhooks: event types, endpoint URLs and which addresses an endpoint may
//! reach, secrets, and the delivery message.
//!
//! An endpoint URL comes from a client, and the worker sends requests to it
//! from inside our network: by default it may not reach loopback, private,
//! link-local (cloud metadata) or otherwise special addresses. The check runs
//! at registration and again at delivery on the very addresses the worker
//! connects to, so a name that resolves somewhere else later (DNS rebinding)
//! is still refused.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::DomainError;

/// Every event type (DESIGN.md §10).
pub const EVENT_TYPES: [&str; 10] = [
    "payment.created",
    "payment.succeeded",
    "payment.failed",
    "payment.captured",
    "payment.capture_failed",
    "payment.cancelled",
    "payment.void_failed",
    "refund.created",
    "refund.succeeded",
    "refund.failed",
];

/// An event's type, as stored in `events.type` and sent as `type`; its
/// spellings are [`EVENT_TYPES`].
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, strum::EnumString, strum::IntoStaticStr, strum::VariantNames,
)]
pub enum EventKind {
    #[strum(serialize = "payment.created")]
    PaymentCreated,
    #[strum(serialize = "payment.succeeded")]
    PaymentSucceeded,
    #[strum(serialize = "payment.failed")]
    PaymentFailed,
    #[strum(serialize = "payment.captured")]
    PaymentCaptured,
    #[strum(serialize = "payment.capture_failed")]
    PaymentCaptureFailed,
    #[strum(serialize = "payment.cancelled")]
    PaymentCancelled,
    #[strum(serialize = "payment.void_failed")]
    PaymentVoidFailed,
    #[strum(serialize = "refund.created")]
    RefundCreated,
    #[strum(serialize = "refund.succeeded")]
    RefundSucceeded,
    #[strum(serialize = "refund.failed")]
    RefundFailed,
}

impl EventKind {
    /// Whether the event's object is a refund (else the payment).
    pub fn is_refund(self) -> bool {
        matches!(
            self,
            Self::RefundCreated | Self::RefundSucceeded | Self::RefundFailed
        )
    }
}

/// Whether an endpoint receives events: `disabled` after a `410 Gone`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    strum::EnumString,
    strum::IntoStaticStr,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum EndpointStatus {
    Enabled,
    Disabled,
}

/// How one delivery attempt ended.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    strum::EnumString,
    strum::IntoStaticStr,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum AttemptOutcome {
    /// A `2xx` answer.
    Delivered,
    /// An answer other than `2xx` (or `410`).
    Failed,
    /// `410 Gone`: the endpoint is disabled.
    Gone,
    /// No answer within `WEBHOOK_TIMEOUT_MS`.
    Timeout,
    /// The connection failed or was cut.
    ConnectionError,
    /// The address is not public: nothing was sent.
    Blocked,
    /// The endpoint was disabled meanwhile: nothing was sent.
    EndpointDisabled,
}

impl AttemptOutcome {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Longest endpoint URL accepted.
pub const MAX_URL_LEN: usize = 2048;

/// Endpoints a merchant may have: each event is sent to every one.
pub const MAX_ENDPOINTS: i64 = 16;

/// Hours a rotated-out secret still signs.
pub const PREVIOUS_SECRET_HOURS: i64 = 24;

/// Whether the address is one an endpoint may reach without
/// `WEBHOOK_ALLOW_PRIVATE`: a globally routable unicast address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local() // 169.254/16: cloud metadata lives here
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240) // reserved
}

/// IPv6 ranges an endpoint may never reach: every block of IANA's IPv6
/// Special-Purpose Address Registry that is not globally reachable, and a
/// few that are but lead inside or to IPv4 (NAT64, 6to4), plus the
/// deprecated site-local range. Unspecified, loopback, multicast, link-local
/// and unique-local are refused by `std`'s own tests beside this table.
static NOT_PUBLIC_V6: std::sync::LazyLock<Vec<ipnet::Ipv6Net>> = std::sync::LazyLock::new(|| {
    [
        "::/16",          // IPv4-compatible (deprecated) and other reserved forms
        "64:ff9b::/96",   // NAT64: reaches IPv4 addresses, private ones included
        "64:ff9b:1::/48", // local-use IPv4/IPv6 translation
        "100::/64",       // discard-only
        "100:0:0:1::/64", // dummy prefix
        "2001::/23",      // IETF protocol assignments: Teredo, benchmarking, ORCHIDv2…
        "2001:db8::/32",  // documentation
        "2002::/16",      // 6to4 wraps an IPv4 address
        "3fff::/20",      // documentation
        "5f00::/16",      // segment routing (SRv6) SIDs
        "fec0::/10",      // site-local (deprecated, still routed inside some networks)
    ]
    .iter()
    .map(|net| net.parse().expect("a valid network"))
    .collect()
});

fn is_public_v6(ip: Ipv6Addr) -> bool {
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || ip.is_unique_local() // fc00::/7, cloud metadata (fd00:ec2::254) included
        || ip.is_unicast_link_local()
        || NOT_PUBLIC_V6.iter().any(|net| net.contains(&ip)))
}

/// A registered endpoint's URL: `http` or `https`, a host, no credentials,
/// at most [`MAX_URL_LEN`]. Whether its addresses are allowed is checked
/// separately ([`check_addresses`]), because that needs a lookup.
pub fn parse_url(raw: &str) -> Result<url::Url, DomainError> {
    let invalid = |m: &str| DomainError(m.to_owned());
    if raw.len() > MAX_URL_LEN {
        return Err(invalid("The url is longer than 2048 characters."));
    }
    let url = url::Url::parse(raw).map_err(|_| invalid("The url is not a valid URL."))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("The url must be http or https."));
    }
    if url.host().is_none() {
        return Err(invalid("The url has no host."));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("The url may not carry credentials."));
    }
    Ok(url)
}

/// The URL's host as a literal address, if it is one.
pub fn literal_address(url: &url::Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
        url::Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
        url::Host::Domain(_) => None,
    }
}

/// Resolves the URL's host and refuses it unless every address is public
/// (or `allow_private`). A name that does not resolve is refused too: it
/// could not be delivered to.
pub async fn check_addresses(url: &url::Url, allow_private: bool) -> Result<(), DomainError> {
    let refused = || {
        DomainError(
            "The url resolves to a private, loopback, link-local or reserved address; \
             webhook endpoints must be reachable on the public internet."
                .to_owned(),
        )
    };
    if let Some(ip) = literal_address(url) {
        return (allow_private || is_public(ip))
            .then_some(())
            .ok_or_else(refused);
    }
    let host = url.host_str().unwrap_or_default();
    let port = url.port_or_known_default().unwrap_or(443);
    let lookup = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::net::lookup_host((host, port)),
    )
    .await;
    let addresses: Vec<IpAddr> = match lookup {
        Ok(Ok(found)) => found.map(|a| a.ip()).collect(),
        _ => Vec::new(),
    };
    if addresses.is_empty() {
        return Err(DomainError("The url's host does not resolve.".to_owned()));
    }
    if allow_private || addresses.iter().all(|ip| is_public(*ip)) {
        Ok(())
    } else {
        Err(refused())
    }
}

/// A new signing secret: `whsec_` and 32 random bytes in base64, the form
/// the Standard Webhooks libraries take.
pub fn new_secret() -> String {
    crate::secret::random("whsec_", &base64::engine::general_purpose::STANDARD)
}

/// The `webhook-signature` header: one `v1,…` signature per secret (the
/// current one, and during a rotation the previous one too), space
/// separated, made by the Standard Webhooks library itself.
pub fn signature_header(
    secrets: &[&str],
    event_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, standardwebhooks::WebhookError> {
    let mut signatures = Vec::with_capacity(secrets.len());
    for secret in secrets {
        let signer = standardwebhooks::Webhook::new(secret)?;
        signatures.push(signer.sign(event_id, timestamp, body)?);
    }
    Ok(signatures.join(" "))
}

/// The message on the webhook queue: deliver this delivery row (or find out
/// it is done). Like every message, it names the work, not its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum DeliveryJob {
    #[serde(rename = "webhook_delivery.v1")]
    DeliveryV1 { delivery_id: Uuid },
}

impl DeliveryJob {
    pub fn delivery_id(&self) -> Uuid {
        match self {
            Self::DeliveryV1 { delivery_id } => *delivery_id,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising an enum of ids cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    #[test]
    fn every_event_type_is_an_event_kind_and_back() {
        use strum::VariantNames as _;
        assert_eq!(EventKind::VARIANTS, EVENT_TYPES);
        for name in EVENT_TYPES {
            let kind: EventKind = name.parse().expect("a kind");
            assert_eq!(<&str>::from(kind), name);
            assert_eq!(kind.is_refund(), name.starts_with("refund."));
        }
    }

    #[test]
    fn internal_and_special_addresses_are_not_public() {
        for s in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
            "64:ff9b::a00:1",
            "fec0::1",                              // site-local
            "2001:0:4136:e378:8000:63bf:3fff:fdd2", // Teredo
            "2001:20::1",                           // ORCHIDv2
            "2001:2::1",                            // benchmarking
            "100::1",                               // discard-only
            "2001:db8::1",                          // documentation
            "3fff::1",                              // documentation
            "2002:a00:1::1",                        // 6to4 of 10.0.0.1
            "5f00::1",                              // SRv6
        ] {
            assert!(!is_public(ip(s)), "{s} must not be public");
        }
        for s in ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111"] {
            assert!(is_public(ip(s)), "{s} is public");
        }
    }

    #[test]
    fn only_http_urls_with_a_host_and_no_credentials_parse() {
        assert!(parse_url("https://example.com/hooks").is_ok());
        assert!(parse_url("http://93.184.215.14:8080/x").is_ok());
        for bad in [
            "ftp://example.com/",
            "garbage",
            "https://user:pw@example.com/",
            "file:///etc/passwd",
            "http://",
        ] {
            assert!(parse_url(bad).is_err(), "{bad} must be refused");
        }
        assert!(parse_url(&format!("https://example.com/{}", "a".repeat(2100))).is_err());
    }

    #[tokio::test]
    async fn private_addresses_are_refused_unless_allowed() {
        for raw in [
            "http://127.0.0.1/hook",
            "http://169.254.169.254/latest/meta-data",
            "http://10.0.0.1/x",
            "http://localhost:9999/x",
            "http://[::1]/x",
        ] {
            let url = parse_url(raw).expect("parses");
            assert!(check_addresses(&url, false).await.is_err(), "{raw}");
            assert!(check_addresses(&url, true).await.is_ok(), "{raw} allowed");
        }
    }

    #[test]
    fn both_secrets_sign_and_each_verifies_with_the_standard_library() {
        let (old, new) = (new_secret(), new_secret());
        assert!(new.starts_with("whsec_"));
        assert_ne!(old, new);
        let body = br#"{"id":"evt_1"}"#;
        let now = chrono::Utc::now().timestamp();
        let header = signature_header(&[&new, &old], "evt_1", now, body).expect("signs");
        let mut headers = http::HeaderMap::new();
        headers.insert("webhook-id", "evt_1".parse().expect("header"));
        headers.insert(
            "webhook-timestamp",
            now.to_string().parse().expect("header"),
        );
        headers.insert("webhook-signature", header.parse().expect("header"));
        for secret in [&old, &new] {
            standardwebhooks::Webhook::new(secret)
                .expect("a valid secret")
                .verify(body, &headers)
                .expect("verifies");
        }
        let stranger = standardwebhooks::Webhook::new(&new_secret()).expect("a valid secret");
        assert!(stranger.verify(body, &headers).is_err());
    }
}
