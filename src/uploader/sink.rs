//! Sinks take one write request (newline-separated line protocol) and say how it went.
//! `InfluxSink` speaks the InfluxDB v2 write API (`/api/v2/write`, `Authorization: Token`) or
//! the 1.x API (`/write?db=`); `StdoutSink` prints each write request (the `demo` command).

use crate::config::{Influx, InfluxApi};
use std::io::Write;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// 2xx: every point is stored.
    Accepted,
    /// 413: the request is too large; send fewer points at once.
    TooLarge,
    /// 400/422: at least one line is malformed; the server's reason.
    Rejected(String),
    /// 401/403/404: wrong token, no permission, unknown bucket or database. Data is kept.
    Refused(u16, String),
    /// 429, 5xx, a timeout or a network error: try again later.
    Retry {
        after: Option<Duration>,
        reason: String,
    },
}

pub trait Sink: Send {
    fn write(&mut self, body: &str) -> Outcome;
    fn describe(&self) -> String;
}

pub struct StdoutSink {
    pub requests: u64,
}

impl Sink for StdoutSink {
    fn write(&mut self, body: &str) -> Outcome {
        self.requests += 1;
        let n = body.lines().count();
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "--- write request {} ({n} points) ---\n{body}",
            self.requests
        );
        let _ = out.flush();
        Outcome::Accepted
    }
    fn describe(&self) -> String {
        "standard output".into()
    }
}

pub struct InfluxSink {
    agent: ureq::Agent,
    url: String,
    authorization: Option<String>,
    describe: String,
}

/// Percent-encode a query parameter value (RFC 3986 unreserved characters pass).
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(T[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl InfluxSink {
    /// `ca`: the trusted CAs for https:// (`None`: Mozilla's roots).
    pub fn new(cfg: &Influx, ca: Option<&[ureq::tls::Certificate<'static>]>) -> Self {
        let agent = crate::http::agent(cfg.timeout, ca);
        let (url, authorization, describe) = match &cfg.api {
            InfluxApi::V2 { org, bucket, token } => (
                format!(
                    "{}/api/v2/write?org={}&bucket={}&precision=ms",
                    cfg.url,
                    query_escape(org),
                    query_escape(bucket)
                ),
                (!token.is_empty()).then(|| format!("Token {}", token.expose())),
                format!(
                    "InfluxDB v2 API at {} (org {org}, bucket {bucket})",
                    cfg.url
                ),
            ),
            InfluxApi::V1 {
                database,
                username,
                password,
            } => (
                format!(
                    "{}/write?db={}&precision=ms",
                    cfg.url,
                    query_escape(database)
                ),
                username.as_ref().map(|u| {
                    format!(
                        "Basic {}",
                        base64(format!("{u}:{}", password.expose()).as_bytes())
                    )
                }),
                format!("InfluxDB 1.x API at {} (database {database})", cfg.url),
            ),
        };
        InfluxSink {
            agent,
            url,
            authorization,
            describe,
        }
    }
}

pub fn classify(status: u16, body: String, after: Option<Duration>) -> Outcome {
    match status {
        200..=299 => Outcome::Accepted,
        413 => Outcome::TooLarge,
        400 | 422 => Outcome::Rejected(body),
        401 | 403 | 404 => Outcome::Refused(status, body),
        _ => Outcome::Retry {
            after,
            reason: format!("HTTP {status}: {body}"),
        },
    }
}

impl Sink for InfluxSink {
    fn write(&mut self, body: &str) -> Outcome {
        let mut req = self
            .agent
            .post(&self.url)
            .header("Content-Type", "text/plain; charset=utf-8");
        if let Some(a) = &self.authorization {
            req = req.header("Authorization", a);
        }
        match req.send(body) {
            Ok(mut resp) => {
                let (status, text, after) = crate::http::read_answer(&mut resp, 500);
                classify(status, text.trim().to_string(), after)
            }
            Err(e) => Outcome::Retry {
                after: None,
                reason: e.to_string(),
            },
        }
    }
    fn describe(&self) -> String {
        self.describe.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn query_values_are_escaped() {
        assert_eq!(query_escape("my org&x=1"), "my%20org%26x%3D1");
    }

    #[test]
    fn status_codes_map_to_outcomes() {
        assert_eq!(classify(204, String::new(), None), Outcome::Accepted);
        assert_eq!(classify(413, String::new(), None), Outcome::TooLarge);
        assert!(matches!(classify(400, "bad".into(), None), Outcome::Rejected(b) if b == "bad"));
        assert!(matches!(
            classify(401, String::new(), None),
            Outcome::Refused(401, _)
        ));
        assert!(matches!(
            classify(429, String::new(), Some(Duration::from_secs(3))),
            Outcome::Retry { after: Some(d), .. } if d == Duration::from_secs(3)
        ));
        assert!(matches!(
            classify(503, String::new(), None),
            Outcome::Retry { after: None, .. }
        ));
    }
}
