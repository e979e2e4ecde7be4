//! The HTTP client shared by the InfluxDB sink and the batch API threads: ureq with rustls on
//! `ring`, certificate verification always on, Mozilla's roots by default or the plant's own
//! CA bundle (`tls.ca_file`), no redirects (a write must not be replayed somewhere else), a
//! global timeout per request. Plain HTTP is used only where a URL says `http://`.
//!
//! No thread per request: each worker keeps its one agent, whose connections stay open between
//! requests (keep-alive), and an IP-literal host or `localhost` (the usual configuration) is
//! resolved in place. Only another host name is looked up by ureq's resolver, which runs the
//! lookup on a thread of its own so the request's timeout bounds it.
//!
//! `redact_url` is the one way a URL is shown (logs, `check`, the status page, the outbox's
//! results, the audit trail): the user info and every query value may be credentials.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, SystemTime};
use ureq::http::Uri;
use ureq::tls::{parse_pem, PemItem, RootCerts, TlsConfig};
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};

/// A URL as it may be shown: user info becomes `***@` and every query value `***`
/// (`https://***@host/path?api_key=***`). The scheme, host, port, path and query keys stay,
/// so a technician can still tell which endpoint is meant.
pub(crate) fn redact_url(url: &str) -> String {
    // Without `://` (a typo) there is no telling where the host ends: everything up to the
    // query is treated as the authority.
    let (scheme, rest, ends) = match url.find("://") {
        Some(i) => (&url[..i + 3], &url[i + 3..], &['/', '?', '#'][..]),
        None => ("", url, &['?', '#'][..]),
    };
    let end = rest.find(ends).unwrap_or(rest.len());
    let (authority, rest) = rest.split_at(end);
    let mut out = String::with_capacity(url.len());
    out.push_str(scheme);
    match authority.rfind('@') {
        Some(at) => {
            out.push_str("***");
            out.push_str(&authority[at..]);
        }
        None => out.push_str(authority),
    }
    let (before_fragment, fragment) = rest.split_at(rest.find('#').unwrap_or(rest.len()));
    match before_fragment.split_once('?') {
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            let parts: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) => format!("{k}=***"),
                    // A bare item may be a token on its own.
                    None if kv.is_empty() => String::new(),
                    None => "***".to_string(),
                })
                .collect();
            out.push_str(&parts.join("&"));
        }
        None => out.push_str(before_fragment),
    }
    if !fragment.is_empty() {
        out.push_str("#***");
    }
    out
}

/// Read a PEM bundle; every certificate in it becomes a trusted root.
pub(crate) fn load_ca(path: &Path) -> Result<Vec<ureq::tls::Certificate<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs: Vec<_> = parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

pub(crate) fn agent(
    timeout: Duration,
    ca: Option<&[ureq::tls::Certificate<'static>]>,
) -> ureq::Agent {
    let tls = match ca {
        Some(certs) => TlsConfig::builder()
            .root_certs(RootCerts::new_with_certs(certs))
            .build(),
        None => TlsConfig::builder().build(),
    };
    let config = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .tls_config(tls)
        .user_agent(concat!("dyeing-gateway/", env!("CARGO_PKG_VERSION")))
        .build();
    ureq::Agent::with_parts(
        config,
        DefaultConnector::default(),
        InPlaceResolver::default(),
    )
}

/// Resolves IP literals and `localhost` without a lookup (and so without a thread); any other
/// host name goes to ureq's own resolver.
#[derive(Debug, Default)]
struct InPlaceResolver(DefaultResolver);

impl Resolver for InPlaceResolver {
    fn resolve(
        &self,
        uri: &Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        match in_place(uri) {
            Some(addrs) => {
                let mut out = self.empty();
                for a in addrs {
                    out.push(a);
                }
                Ok(out)
            }
            None => self.0.resolve(uri, config, timeout),
        }
    }
}

/// The addresses of an `http`/`https` URI whose host is an IP literal or `localhost`
/// (IPv4 first, as the system's resolver orders them), or `None`.
fn in_place(uri: &Uri) -> Option<Vec<SocketAddr>> {
    let port = match (uri.port_u16(), uri.scheme_str()?) {
        (Some(p), "http" | "https") => p,
        (None, "http") => 80,
        (None, "https") => 443,
        _ => return None,
    };
    let host = uri.host()?;
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Some(vec![SocketAddr::new(ip, port)]);
    }
    host.eq_ignore_ascii_case("localhost").then(|| {
        vec![
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port),
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), port),
        ]
    })
}

/// An answer's status, the start of its body (read up to 64 KiB, kept up to `keep` bytes, cut
/// on a character boundary) and its `Retry-After`: what the API threads log and act on.
pub(crate) fn read_answer(
    resp: &mut ureq::http::Response<ureq::Body>,
    keep: usize,
) -> (u16, String, Option<Duration>) {
    let status = resp.status().as_u16();
    let after = retry_after(resp.headers());
    let mut text = resp
        .body_mut()
        .with_config()
        .limit(64 * 1024)
        .read_to_string()
        .unwrap_or_default();
    cut(&mut text, keep);
    (status, text, after)
}

/// Keep at most `keep` bytes of `text`, cut on a character boundary.
pub(crate) fn cut(text: &mut String, keep: usize) {
    if keep < text.len() {
        let at = (0..=keep)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        text.truncate(at);
    }
}

/// The longest wait a `Retry-After` can ask for; a longer one is capped.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(3600);

/// A `Retry-After` header (RFC 9110 §10.2.3): delay-seconds, or an HTTP date (a date in the
/// past means now). Capped at an hour; anything else is ignored.
pub(crate) fn retry_after(headers: &ureq::http::HeaderMap) -> Option<Duration> {
    parse_retry_after(
        headers.get("retry-after")?.to_str().ok()?,
        SystemTime::now(),
    )
}

fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    let wait = match v.parse::<u64>() {
        Ok(s) => Duration::from_secs(s),
        Err(_) => {
            let at = httpdate::parse_http_date(v).ok()?;
            at.duration_since(now).unwrap_or(Duration::ZERO)
        }
    };
    Some(wait.min(RETRY_AFTER_MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_user_info_or_query_values() {
        for (url, shown) in [
            ("http://influx:8086", "http://influx:8086"),
            (
                "https://user:pa55@api.plant.local:8443/batch/finish",
                "https://***@api.plant.local:8443/batch/finish",
            ),
            (
                "http://api/strings?api_key=s3cret&site=2",
                "http://api/strings?api_key=***&site=***",
            ),
            ("http://tok@api/x?s3cret#frag", "http://***@api/x?***#***"),
            // An @ in the path is not user info; one in the authority is, up to the last.
            ("http://api/a@b", "http://api/a@b"),
            ("http://u:p@ss@api/", "http://***@api/"),
            // Not even a URL (a typo in the scheme): the same rules.
            ("htp//user:pw@host/x?k=v", "***@host/x?k=***"),
            ("user:pw@host/x", "***@host/x"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn ip_literals_and_localhost_resolve_in_place_other_names_do_not() {
        let r = |u: &str| in_place(&u.parse::<Uri>().expect("uri"));
        let a = |s: &str| s.parse::<SocketAddr>().expect("addr");
        assert_eq!(
            r("http://127.0.0.1:8086/write"),
            Some(vec![a("127.0.0.1:8086")])
        );
        assert_eq!(r("https://10.1.2.3/api"), Some(vec![a("10.1.2.3:443")]));
        assert_eq!(r("http://[::1]:8086"), Some(vec![a("[::1]:8086")]));
        assert_eq!(
            r("http://LocalHost:9"),
            Some(vec![a("127.0.0.1:9"), a("[::1]:9")])
        );
        assert_eq!(r("http://influx.plant.local:8086"), None);
        assert_eq!(r("ftp://127.0.0.1/"), None);
    }

    #[test]
    fn a_kept_body_is_cut_on_a_character_boundary() {
        let cut_at = |keep| {
            let mut s = String::from("ab\u{e9}cd"); // é is 2 bytes, at 2..4
            cut(&mut s, keep);
            s
        };
        assert_eq!(cut_at(3), "ab");
        assert_eq!(cut_at(4), "ab\u{e9}");
        assert_eq!(cut_at(100), "ab\u{e9}cd");
    }

    #[test]
    fn retry_after_takes_seconds_or_an_http_date_and_caps_both() {
        let now = httpdate::parse_http_date("Fri, 27 Nov 2026 14:00:00 GMT").expect("date");
        let p = |v| parse_retry_after(v, now);
        assert_eq!(p("120"), Some(Duration::from_secs(120)));
        assert_eq!(p(" 0 "), Some(Duration::ZERO));
        assert_eq!(
            p("Fri, 27 Nov 2026 14:00:30 GMT"),
            Some(Duration::from_secs(30))
        );
        // A date in the past: retry now.
        assert_eq!(p("Fri, 27 Nov 2026 13:00:00 GMT"), Some(Duration::ZERO));
        assert_eq!(p("999999"), Some(RETRY_AFTER_MAX));
        assert_eq!(p("Sat, 28 Nov 2026 14:00:00 GMT"), Some(RETRY_AFTER_MAX));
        assert_eq!(p("-5"), None);
        assert_eq!(p("soon"), None);
        assert_eq!(p(""), None);
    }
}
