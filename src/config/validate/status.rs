//! `$.status`: the status page's address and its basic-auth login, required off loopback.

use super::Check;
use crate::config::raw::RawStatus;
use crate::config::StatusPage;

pub(super) fn validate_status(c: &mut Check, r: &RawStatus) -> Option<StatusPage> {
    let listen = r
        .listen
        .clone()
        .unwrap_or_else(|| "127.0.0.1:9180".to_string());
    if listen.is_empty() {
        return None;
    }
    let addr: std::net::SocketAddr = match listen.parse() {
        Ok(a) => a,
        Err(_) => {
            c.err(
                "$.status.listen",
                format!("`{listen}` is not an address:port such as 127.0.0.1:9180"),
            );
            return None;
        }
    };
    use crate::status_http::login::{Login, PasswordHash};
    // `password_sha256` is the field's old name; either takes either format.
    let (path, hash) = match (&r.password_hash, &r.password_sha256) {
        (Some(h), None) => ("$.status.password_hash", Some(h)),
        (None, Some(h)) => ("$.status.password_sha256", Some(h)),
        (None, None) => ("$.status.password_hash", None),
        (Some(_), Some(_)) => {
            c.err(
                "$.status",
                "give `password_hash` or its old name `password_sha256`, not both",
            );
            return None;
        }
    };
    let auth = match (&r.user, hash) {
        (Some(u), Some(h)) => match PasswordHash::parse(h) {
            Some(hash) => Some(Login {
                user: u.clone(),
                hash,
            }),
            None => {
                c.err(
                    path,
                    "must be a hash as printed by `dyeing-gateway hash-password`",
                );
                None
            }
        },
        (None, None) => None,
        _ => {
            c.err(
                "$.status",
                "give both `user` and `password_hash`, or neither",
            );
            None
        }
    };
    if !addr.ip().is_loopback() && auth.is_none() {
        c.err(
            "$.status.listen",
            format!("{addr} is reachable from the network: set `user` and `password_hash` (a technician's laptop must log in)"),
        );
    }
    Some(StatusPage { listen: addr, auth })
}
