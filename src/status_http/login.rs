//! The status page's login: password hashes, their check, and the delay of failed logins.
//!
//! A *password hash* is `pbkdf2-sha256$<iterations>$<salt hex>$<key hex>` (PBKDF2-HMAC-SHA256,
//! RFC 8018, a 32-byte key), as `dyeing-gateway hash-password` prints it. The *legacy* format
//! `<salt>$hex(sha256(salt + password))` of earlier versions is still accepted, with a warning
//! that it should be made again.
//!
//! The *gate* decides each request's login: a credential that passed once is remembered (as a
//! keyed SHA-256 of the header, so the slow hash runs once per password, not per request);
//! after a failed login the same client's next try is not checked before a delay that doubles
//! with each failure (1 s, 2 s, ... 60 s), and at most `GLOBAL_FAILURES` failures per minute
//! are checked from all clients together, so guessing cannot use the CPU. A refused try gets
//! 429 at once: no worker waits.

use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Iterations `hash-password` uses: about 0.05 s on a PC and well under a second on the
/// appliance's ARM core, checked once per password per process (see the gate).
pub(crate) const ITERATIONS: u32 = 100_000;
const PREFIX: &str = "pbkdf2-sha256$";
/// Failed logins checked per minute from all clients together.
pub(crate) const GLOBAL_FAILURES: usize = 10;
const MAX_DELAY: Duration = Duration::from_secs(60);
/// Clients whose failures are remembered; the one allowed soonest is forgotten first.
const MAX_CLIENTS: usize = 1024;
/// Credentials remembered after a successful check.
const MAX_VERIFIED: usize = 8;

#[derive(Clone, PartialEq)]
pub enum PasswordHash {
    Pbkdf2 {
        iterations: u32,
        salt: Vec<u8>,
        key: [u8; 32],
    },
    /// `salt$hex(sha256(salt + password))`: fast to guess, kept so old configs still work.
    LegacySha256 { salt: String, digest: [u8; 32] },
}

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PasswordHash::Pbkdf2 { iterations, .. } => {
                write!(f, "PBKDF2-HMAC-SHA256 ({iterations} iterations)")
            }
            PasswordHash::LegacySha256 { .. } => write!(f, "salted SHA-256 (legacy)"),
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn key32(s: &str) -> Option<[u8; 32]> {
    unhex(s)?.try_into().ok()
}

impl PasswordHash {
    /// Either format; `None` when it is neither.
    pub(crate) fn parse(s: &str) -> Option<PasswordHash> {
        if let Some(rest) = s.strip_prefix(PREFIX) {
            let mut parts = rest.split('$');
            let iterations: u32 = parts.next()?.parse().ok()?;
            let salt = unhex(parts.next()?)?;
            let key = key32(parts.next()?)?;
            if parts.next().is_some()
                || !(1000..=10_000_000).contains(&iterations)
                || salt.len() < 8
            {
                return None;
            }
            return Some(PasswordHash::Pbkdf2 {
                iterations,
                salt,
                key,
            });
        }
        let (salt, digest) = s.split_once('$')?;
        Some(PasswordHash::LegacySha256 {
            salt: salt.to_string(),
            digest: key32(digest)?,
        })
    }

    /// A new hash of `password` with a random salt, in the current format.
    pub fn new(password: &str) -> PasswordHash {
        let salt = random_bytes::<16>().to_vec();
        let key = pbkdf2_key(password, &salt, ITERATIONS);
        PasswordHash::Pbkdf2 {
            iterations: ITERATIONS,
            salt,
            key,
        }
    }

    /// The text form for the config.
    pub fn encode(&self) -> String {
        match self {
            PasswordHash::Pbkdf2 {
                iterations,
                salt,
                key,
            } => format!("{PREFIX}{iterations}${}${}", hex(salt), hex(key)),
            PasswordHash::LegacySha256 { salt, digest } => format!("{salt}${}", hex(digest)),
        }
    }

    pub(crate) fn is_legacy(&self) -> bool {
        matches!(self, PasswordHash::LegacySha256 { .. })
    }

    /// Whether `password` matches (compared without an early exit).
    pub(crate) fn verify(&self, password: &str) -> bool {
        let (got, want) = match self {
            PasswordHash::Pbkdf2 {
                iterations,
                salt,
                key,
            } => (pbkdf2_key(password, salt, *iterations), key),
            PasswordHash::LegacySha256 { salt, digest } => {
                let mut h = Sha256::new();
                h.update(salt.as_bytes());
                h.update(password.as_bytes());
                (h.finalize().into(), digest)
            }
        };
        got.iter().zip(want).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

fn pbkdf2_key(password: &str, salt: &[u8], iterations: u32) -> [u8; 32] {
    pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(password.as_bytes(), salt, iterations)
}

/// Bytes from the kernel's random source; the clock and fastrand if it cannot be read (a salt
/// or a cache key must be unpredictable, not secret).
fn random_bytes<const N: usize>() -> [u8; N] {
    use std::io::Read;
    let mut b = [0u8; N];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_ok();
    if !ok {
        b.iter_mut().for_each(|x| *x = fastrand::u8(..));
    }
    b
}

/// The page's login: a user name and the hash of the password.
#[derive(Debug, Clone, PartialEq)]
pub struct Login {
    pub user: String,
    pub hash: PasswordHash,
}

/// What the gate says about one request.
#[derive(Debug, PartialEq)]
pub(crate) enum Verdict {
    Allowed,
    /// Wrong or missing credentials: 401.
    Refused,
    /// Not checked: too many failures; try again after this long (429).
    Wait(Duration),
}

#[derive(Default)]
struct Failures {
    count: u32,
    last: Option<Instant>,
    next_try: Option<Instant>,
}

/// The login in force, the credentials that passed, the failures by client.
pub(crate) struct Gate {
    login: Option<Login>,
    /// Bumped when the login changes, so a check that ran under the old one is not remembered.
    generation: u64,
    cache_key: [u8; 32],
    verified: VecDeque<[u8; 32]>,
    clients: HashMap<IpAddr, Failures>,
    recent_failures: VecDeque<Instant>,
}

impl Default for Gate {
    fn default() -> Gate {
        Gate::new(None)
    }
}

/// What a check needs outside the gate's lock (the slow hash runs unlocked).
pub(crate) struct Pending {
    login: Login,
    user: String,
    password: String,
    tag: [u8; 32],
    generation: u64,
}

impl Pending {
    pub(crate) fn check(&self) -> bool {
        // Both parts are always compared.
        let user_ok = self.user == self.login.user;
        self.login.hash.verify(&self.password) & user_ok
    }
}

pub(crate) enum Step {
    Done(Verdict),
    Check(Box<Pending>),
}

impl Gate {
    pub(crate) fn new(login: Option<Login>) -> Gate {
        Gate {
            login,
            generation: 0,
            cache_key: random_bytes(),
            verified: VecDeque::new(),
            clients: HashMap::new(),
            recent_failures: VecDeque::new(),
        }
    }

    /// A new login (a reload): credentials that passed the old one are forgotten.
    pub(crate) fn set_login(&mut self, login: Option<Login>) {
        if login != self.login {
            self.login = login;
            self.generation += 1;
            self.verified.clear();
        }
    }

    fn tag(&self, header: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.cache_key);
        h.update(header.as_bytes());
        h.finalize().into()
    }

    /// The first half of a decision, under the lock: allowed, refused, or a password to check.
    pub(crate) fn begin(&mut self, client: IpAddr, header: Option<&str>, now: Instant) -> Step {
        let Some(login) = &self.login else {
            return Step::Done(Verdict::Allowed);
        };
        let Some(header) = header else {
            return Step::Done(Verdict::Refused);
        };
        let tag = self.tag(header);
        if self.verified.contains(&tag) {
            return Step::Done(Verdict::Allowed);
        }
        if let Some(t) = self.clients.get(&client).and_then(|f| f.next_try) {
            if t > now {
                return Step::Done(Verdict::Wait(t - now));
            }
        }
        while self
            .recent_failures
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
        {
            self.recent_failures.pop_front();
        }
        if self.recent_failures.len() >= GLOBAL_FAILURES {
            let oldest = self.recent_failures.front().copied().unwrap_or(now);
            return Step::Done(Verdict::Wait(
                Duration::from_secs(60).saturating_sub(now.duration_since(oldest)),
            ));
        }
        let Some((user, password)) = header
            .strip_prefix("Basic ")
            .and_then(super::base64_decode)
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|t| {
                t.split_once(':')
                    .map(|(u, p)| (u.to_string(), p.to_string()))
            })
        else {
            return Step::Done(Verdict::Refused);
        };
        Step::Check(Box::new(Pending {
            login: login.clone(),
            user,
            password,
            tag,
            generation: self.generation,
        }))
    }

    /// The second half, under the lock again: remember the outcome of a check.
    pub(crate) fn finish(
        &mut self,
        client: IpAddr,
        p: &Pending,
        ok: bool,
        now: Instant,
    ) -> Verdict {
        if ok {
            self.clients.remove(&client);
            if p.generation == self.generation && !self.verified.contains(&p.tag) {
                if self.verified.len() >= MAX_VERIFIED {
                    self.verified.pop_front();
                }
                self.verified.push_back(p.tag);
            }
            return Verdict::Allowed;
        }
        self.recent_failures.push_back(now);
        if !self.clients.contains_key(&client) && self.clients.len() >= MAX_CLIENTS {
            let soonest = self
                .clients
                .iter()
                .min_by_key(|(_, f)| f.next_try)
                .map(|(ip, _)| *ip);
            if let Some(ip) = soonest {
                self.clients.remove(&ip);
            }
        }
        let f = self.clients.entry(client).or_default();
        // A quarter of an hour without failures starts the count again.
        if f.last
            .is_some_and(|t| now.duration_since(t) > Duration::from_secs(900))
        {
            f.count = 0;
        }
        f.count = f.count.saturating_add(1);
        f.last = Some(now);
        let delay = Duration::from_secs(1u64 << (f.count - 1).min(6)).min(MAX_DELAY);
        f.next_try = Some(now + delay);
        Verdict::Refused
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user_pass: &str) -> String {
        // Tiny encoder for the tests.
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let b = user_pass.as_bytes();
        let mut o = String::from("Basic ");
        for c in b.chunks(3) {
            let n = (u32::from(c[0]) << 16)
                | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
                | u32::from(*c.get(2).unwrap_or(&0));
            for i in 0..4 {
                if i <= c.len() {
                    o.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    o.push('=');
                }
            }
        }
        o
    }

    fn decide(g: &mut Gate, ip: IpAddr, header: &str, now: Instant) -> Verdict {
        match g.begin(ip, Some(header), now) {
            Step::Done(v) => v,
            Step::Check(p) => {
                let ok = p.check();
                g.finish(ip, &p, ok, now)
            }
        }
    }

    #[test]
    fn new_hashes_round_trip_and_the_legacy_format_still_verifies() {
        let h = PasswordHash::new("geheim");
        let text = h.encode();
        assert!(text.starts_with("pbkdf2-sha256$100000$"), "{text}");
        let back = PasswordHash::parse(&text).expect("parses");
        assert!(back.verify("geheim") && !back.verify("geheim2"));
        assert!(!back.is_legacy());
        // RFC 7914 section 11's PBKDF2-HMAC-SHA256 vector (first 32 bytes, 1 iteration is
        // below the accepted minimum, so the key function is checked directly).
        assert_eq!(
            hex(&pbkdf2_key("passwd", b"salt", 1)),
            "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc"
        );
        let legacy =
            "0011223344556677$".to_string() + &hex(&Sha256::digest(b"0011223344556677geheim"));
        let l = PasswordHash::parse(&legacy).expect("legacy parses");
        assert!(l.is_legacy() && l.verify("geheim") && !l.verify("x"));
        assert!(PasswordHash::parse("pbkdf2-sha256$10$00112233445566778899$00").is_none());
        assert!(PasswordHash::parse("nothing").is_none());
    }

    #[test]
    fn failed_logins_wait_longer_each_time_and_a_good_one_is_remembered() {
        let login = Login {
            user: "tech".into(),
            hash: PasswordHash::parse(
                &("pbkdf2-sha256$1000$0011223344556677$".to_string()
                    + &hex(&pbkdf2_key(
                        "geheim",
                        &[0, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77],
                        1000,
                    ))),
            )
            .expect("hash"),
        };
        let mut g = Gate::new(Some(login));
        let (a, b): (IpAddr, IpAddr) = ([10, 0, 0, 1].into(), [10, 0, 0, 2].into());
        let t0 = Instant::now();
        let (good, bad) = (basic("tech:geheim"), basic("tech:wrong"));
        assert_eq!(decide(&mut g, a, &bad, t0), Verdict::Refused);
        // At once again: not checked, 1 s to wait; then 2 s after the second failure.
        assert_eq!(
            decide(&mut g, a, &bad, t0),
            Verdict::Wait(Duration::from_secs(1))
        );
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(decide(&mut g, a, &bad, t1), Verdict::Refused);
        assert_eq!(
            decide(&mut g, a, &good, t1),
            Verdict::Wait(Duration::from_secs(2))
        );
        // Another client is not held up; after the wait the right password works.
        assert_eq!(decide(&mut g, b, &good, t1), Verdict::Allowed);
        let t3 = t1 + Duration::from_secs(2);
        assert_eq!(decide(&mut g, a, &good, t3), Verdict::Allowed);
        // Remembered: allowed even while a client is held up.
        assert_eq!(decide(&mut g, a, &bad, t3), Verdict::Refused);
        assert_eq!(decide(&mut g, a, &good, t3), Verdict::Allowed);
        // A global budget: GLOBAL_FAILURES failures a minute from all clients together.
        let t4 = t3 + Duration::from_secs(61);
        for i in 0..GLOBAL_FAILURES {
            let ip: IpAddr = [10, 1, 0, i as u8].into();
            assert_eq!(decide(&mut g, ip, &bad, t4), Verdict::Refused);
        }
        let other: IpAddr = [10, 2, 0, 1].into();
        assert!(matches!(decide(&mut g, other, &bad, t4), Verdict::Wait(_)));
        assert_eq!(decide(&mut g, a, &good, t4), Verdict::Allowed);
        // A new login forgets what passed the old one.
        g.set_login(None);
        assert_eq!(decide(&mut g, other, &bad, t4), Verdict::Allowed);
    }
}
