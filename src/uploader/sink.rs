//! Sinks take one write request (newline-separated line protocol) and say how it went.
//! `InfluxSink` speaks the InfluxDB v2 write API (`/api/v2/write`, `Authorization: Token`) or
//! the 1.x API (`/write?db=`); `StdoutSink` prints each write request (the `demo` command).
//!
//! A 400/422 answer is read into a `Rejection`: InfluxDB 1.x (`{"error": ...}`) and 2.x
//! (`{"code", "message"}`) both say `partial write: ... dropped=N` when they stored every point
//! but the N they dropped, name each line they could not parse (`unable to parse '<line>':
//! <why>`) and name one field type conflict (`input field "f" on measurement "m" is type
//! string, already exists as type float`).

use crate::config::{Influx, InfluxApi};
use crate::lineproto::FieldType;
use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// 2xx: every point is stored.
    Accepted,
    /// 413: the request is too large; send fewer points at once.
    TooLarge,
    /// 400/422: at least one line was refused; what the server said about it.
    Rejected(Rejection),
    /// 401/403/404: wrong token, no permission, unknown bucket or database. Data is kept.
    Refused(u16, String),
    /// 429, 5xx, a timeout or a network error: try again later.
    Retry {
        after: Option<Duration>,
        reason: String,
    },
}

/// What a 400/422 answer says about the points of the request.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rejection {
    /// The server's message (the `error` or `message` of its JSON answer, else the body).
    pub message: String,
    /// `partial write`: the server stored every point of the request it did not drop.
    pub partial: bool,
    /// The number of points it says it dropped (`dropped=N`).
    pub dropped: Option<usize>,
    /// The field type conflict it names, if any (InfluxDB names one per answer).
    pub conflict: Option<Conflict>,
}

/// `input field "field" on measurement "measurement" is type sent, already exists as type
/// stored`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub measurement: String,
    pub field: String,
    pub sent: FieldType,
    pub stored: FieldType,
}

impl Rejection {
    pub(crate) fn parse(body: &str) -> Rejection {
        let message = serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| {
                ["error", "message"]
                    .iter()
                    .find_map(|k| v.get(k).and_then(|m| m.as_str()).map(String::from))
            })
            .unwrap_or_else(|| body.to_string());
        let partial = message.contains("partial write");
        let dropped = message
            .rsplit_once(" dropped=")
            .and_then(|(_, n)| n.trim().parse().ok());
        let conflict = Self::conflict(&message);
        Rejection {
            message,
            partial,
            dropped,
            conflict,
        }
    }

    fn conflict(m: &str) -> Option<Conflict> {
        let rest = m.split_once("field type conflict: input field \"")?.1;
        let (field, rest) = rest.split_once("\" on measurement \"")?;
        let (measurement, rest) = rest.split_once("\" is type ")?;
        let (sent, rest) = rest.split_once(", already exists as type ")?;
        let stored = rest.split(|c: char| !c.is_ascii_alphabetic()).next()?;
        Some(Conflict {
            measurement: measurement.to_string(),
            field: field.to_string(),
            sent: FieldType::from_influx(sent)?,
            stored: FieldType::from_influx(stored)?,
        })
    }

    /// The lines of `lines` (by index) that the message names as unparsable, with the
    /// server's reason for each.
    pub(crate) fn unparsable(&self, lines: &[String]) -> Vec<(usize, String)> {
        const MARK: &str = "unable to parse '";
        if !self.message.contains(MARK) {
            return Vec::new();
        }
        let mut index: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, l) in lines.iter().enumerate() {
            index.entry(l.as_str()).or_default().push(i);
        }
        let mut out = Vec::new();
        for part in self.message.split(MARK).skip(1) {
            // The quoted line may itself hold `': `: try each one until a sent line matches.
            let found = part
                .match_indices("': ")
                .find_map(|(at, _)| index.remove(&part[..at]).map(|ix| (ix, &part[at + 3..])));
            if let Some((ix, after)) = found {
                let why = after.lines().next().unwrap_or_default();
                let why = why.rsplit_once(" dropped=").map_or(why, |(w, _)| w);
                out.extend(ix.into_iter().map(|i| (i, why.to_string())));
            }
        }
        out.sort_unstable();
        out
    }
}

pub trait Sink: Send {
    fn write(&mut self, body: &str) -> Outcome;
    fn describe(&self) -> String;
}

pub(crate) struct StdoutSink {
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
                    crate::http::redact_url(&cfg.url)
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
                format!(
                    "InfluxDB 1.x API at {} (database {database})",
                    crate::http::redact_url(&cfg.url)
                ),
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

/// How much of an answer's body is kept for the log (a rejection keeps all that was read).
const SHOWN: usize = 500;

pub(crate) fn classify(status: u16, mut body: String, after: Option<Duration>) -> Outcome {
    if !matches!(status, 400 | 422) {
        crate::http::cut(&mut body, SHOWN);
    }
    match status {
        200..=299 => Outcome::Accepted,
        413 => Outcome::TooLarge,
        400 | 422 => Outcome::Rejected(Rejection::parse(&body)),
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
                // The whole answer (up to 64 KiB): a rejection names every unparsable line.
                let (status, text, after) = crate::http::read_answer(&mut resp, usize::MAX);
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
        assert!(
            matches!(classify(400, "bad".into(), None), Outcome::Rejected(r) if r.message == "bad" && !r.partial)
        );
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

    #[test]
    fn a_1x_partial_write_with_a_type_conflict_is_read() {
        // As influxd 1.6 answers (400).
        let r = Rejection::parse(
            r#"{"error":"partial write: field type conflict: input field \"temperature\" on measurement \"high frequency\" is type float, already exists as type string dropped=3"}"#,
        );
        assert!(r.partial);
        assert_eq!(r.dropped, Some(3));
        assert_eq!(
            r.conflict,
            Some(Conflict {
                measurement: "high frequency".into(),
                field: "temperature".into(),
                sent: FieldType::Float,
                stored: FieldType::String,
            })
        );
    }

    #[test]
    fn a_2x_partial_write_is_read_from_its_json_message() {
        // As InfluxDB 2 answers (422 unprocessable entity).
        let r = Rejection::parse(
            r#"{"code":"unprocessable entity","message":"failure writing points to database: partial write: field type conflict: input field \"v\" on measurement \"m\" is type integer, already exists as type float dropped=1224"}"#,
        );
        assert!(r.partial);
        assert_eq!(r.dropped, Some(1224));
        assert_eq!(
            r.conflict.map(|c| (c.sent, c.stored)),
            Some((FieldType::Integer, FieldType::Float))
        );
    }

    #[test]
    fn unparsable_lines_are_found_by_the_names_the_server_gives() {
        let lines: Vec<String> = [
            "m v=1 1",
            "broken line",
            "m s=\"a': b\"",
            "another bad",
            "broken line",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let r = Rejection::parse(
            r#"{"error":"partial write: unable to parse 'broken line': invalid field format\nunable to parse 'another bad': invalid field format dropped=0"}"#,
        );
        assert!(r.partial);
        assert_eq!(r.conflict, None);
        assert_eq!(
            r.unparsable(&lines),
            vec![
                (1, "invalid field format".to_string()),
                (3, "invalid field format".to_string()),
                (4, "invalid field format".to_string()),
            ]
        );
        // A quoted line holding the separator itself.
        let r = Rejection::parse("unable to parse 'm s=\"a': b\"': bad string");
        assert!(!r.partial);
        assert_eq!(r.unparsable(&lines), vec![(2, "bad string".to_string())]);
    }
}
