//! Bearer tokens (`--gateway-tokens FILE`): each names the clusters and topics it may use and
//! the patterns it may use them for, with an optional rate limit.
//!
//! ```toml
//! [[token]]
//! name = "web-frontend"          # for logs and errors (never the secret)
//! secret = "at least 16 printable characters"
//! clusters = ["chat", "api-*"]   # exact names, or prefixes ending in "*"; "*" is every name
//! topics = ["news/*"]
//! allow = ["request", "publish", "subscribe"]   # and broadcast, tunnel, serve
//! rate_per_s = 200               # requests per second (a bucket of `burst`, default the rate)
//! burst = 400
//! ```

use std::sync::Mutex;
use std::time::Instant;

use serde::Deserialize;

/// What a token may be used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pattern {
    /// `POST /v1/clusters/{cluster}/request`.
    Request,
    /// `POST /v1/clusters/{cluster}/broadcast`.
    Broadcast,
    /// `POST /v1/topics/{topic}/publish`.
    Publish,
    /// `GET /v1/topics/{topic}/events`.
    Subscribe,
    /// `GET /v1/clusters/{cluster}/tunnel`.
    Tunnel,
    /// `GET /v1/clusters/{cluster}/serve`.
    Serve,
}

impl Pattern {
    /// Whether the pattern addresses a cluster (else a topic).
    pub fn on_cluster(self) -> bool {
        !matches!(self, Pattern::Publish | Pattern::Subscribe)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    #[serde(default)]
    token: Vec<TokenSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenSpec {
    name: String,
    secret: String,
    #[serde(default)]
    clusters: Vec<String>,
    #[serde(default)]
    topics: Vec<String>,
    allow: Vec<Pattern>,
    rate_per_s: Option<f64>,
    burst: Option<f64>,
}

/// One token.
#[derive(Debug)]
pub struct Token {
    /// Its name.
    pub name: String,
    secret: String,
    clusters: Vec<String>,
    topics: Vec<String>,
    allow: Vec<Pattern>,
    bucket: Option<Mutex<Bucket>>,
}

#[derive(Debug)]
struct Bucket {
    rate: f64,
    burst: f64,
    level: f64,
    at: Instant,
}

/// The tokens of a token file.
#[derive(Debug, Default)]
pub struct Tokens {
    tokens: Vec<Token>,
}

/// Why a request is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Denied {
    /// No token, or not one of the file's (401).
    Unauthenticated,
    /// The token may not do this (403); the text says what.
    Forbidden(String),
    /// The token's rate is exceeded (429).
    RateLimited(String),
}

/// Whether `name` matches `pattern` (exact, `prefix*`, or `*`).
fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// Compares secrets in time independent of where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

impl Tokens {
    /// Parses a token file's text.
    pub fn parse(text: &str) -> Result<Tokens, String> {
        let file: TokenFile = toml::from_str(text).map_err(|e| e.to_string())?;
        if file.token.is_empty() {
            return Err("no [[token]] in the file".into());
        }
        let mut tokens = Vec::new();
        for t in file.token {
            let n = &t.name;
            if t.secret.len() < 16 || !t.secret.chars().all(|c| c.is_ascii_graphic()) {
                return Err(format!(
                    "token {n:?}: the secret needs 16 or more printable ASCII characters, no spaces"
                ));
            }
            if t.allow.is_empty() {
                return Err(format!("token {n:?}: allows nothing (allow = [...])"));
            }
            let bucket = match t.rate_per_s {
                Some(rate) if rate.is_finite() && rate > 0.0 => {
                    let burst = t.burst.unwrap_or(rate).max(1.0);
                    Some(Mutex::new(Bucket {
                        rate,
                        burst,
                        level: burst,
                        at: Instant::now(),
                    }))
                }
                Some(_) => return Err(format!("token {n:?}: rate_per_s must be above 0")),
                None => None,
            };
            if tokens
                .iter()
                .any(|o: &Token| same(o.secret.as_bytes(), t.secret.as_bytes()))
            {
                return Err(format!("token {n:?}: the same secret as another token"));
            }
            tokens.push(Token {
                name: t.name,
                secret: t.secret,
                clusters: t.clusters,
                topics: t.topics,
                allow: t.allow,
                bucket,
            });
        }
        Ok(Tokens { tokens })
    }

    /// The token an `Authorization` header value (`Bearer <secret>`) names.
    pub fn find(&self, authorization: Option<&str>) -> Option<&Token> {
        let secret = authorization?.strip_prefix("Bearer ")?.trim();
        self.tokens
            .iter()
            .find(|t| same(t.secret.as_bytes(), secret.as_bytes()))
    }

    /// Checks that the bearer of `authorization` may use `pattern` on `name`, and takes one
    /// from its rate.
    pub fn check(
        &self,
        authorization: Option<&str>,
        pattern: Pattern,
        name: &str,
    ) -> Result<&Token, Denied> {
        let t = self.find(authorization).ok_or(Denied::Unauthenticated)?;
        if !t.allow.contains(&pattern) {
            return Err(Denied::Forbidden(format!(
                "token {:?} may not use {pattern:?}",
                t.name
            )));
        }
        let (kind, list) = if pattern.on_cluster() {
            ("cluster", &t.clusters)
        } else {
            ("topic", &t.topics)
        };
        if !list.iter().any(|p| matches(p, name)) {
            return Err(Denied::Forbidden(format!(
                "token {:?} may not use {kind} {name:?}",
                t.name
            )));
        }
        if let Some(b) = &t.bucket {
            let mut b = b.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = Instant::now();
            let refill = now.duration_since(b.at).as_secs_f64() * b.rate;
            b.level = (b.level + refill).min(b.burst);
            b.at = now;
            if b.level < 1.0 {
                return Err(Denied::RateLimited(format!(
                    "token {:?} is limited to {} requests/s",
                    t.name, b.rate
                )));
            }
            b.level -= 1.0;
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
[[token]]
name = "web"
secret = "0123456789abcdef-web"
clusters = ["chat", "api-*"]
topics = ["*"]
allow = ["request", "subscribe"]

[[token]]
name = "slow"
secret = "0123456789abcdef-slow"
topics = ["news"]
allow = ["publish"]
rate_per_s = 1
burst = 2
"#;

    #[test]
    fn tokens_reach_only_what_they_were_given() {
        let t = Tokens::parse(FILE).unwrap();
        let web = Some("Bearer 0123456789abcdef-web");
        assert!(t.check(web, Pattern::Request, "chat").is_ok());
        assert!(t.check(web, Pattern::Request, "api-users").is_ok());
        assert!(t.check(web, Pattern::Subscribe, "anything").is_ok());
        for (p, n) in [
            (Pattern::Request, "chat2"),
            (Pattern::Request, "api"),
            (Pattern::Broadcast, "chat"),
            (Pattern::Publish, "anything"),
            (Pattern::Tunnel, "chat"),
        ] {
            assert!(
                matches!(t.check(web, p, n), Err(Denied::Forbidden(_))),
                "{p:?} {n}"
            );
        }
        for bad in [
            None,
            Some("Bearer nope"),
            Some("0123456789abcdef-web"),
            Some("Basic x"),
        ] {
            assert_eq!(
                t.check(bad, Pattern::Request, "chat").unwrap_err(),
                Denied::Unauthenticated
            );
        }
    }

    #[test]
    fn a_rate_limited_token_gets_its_burst_then_429() {
        let t = Tokens::parse(FILE).unwrap();
        let slow = Some("Bearer 0123456789abcdef-slow");
        assert!(t.check(slow, Pattern::Publish, "news").is_ok());
        assert!(t.check(slow, Pattern::Publish, "news").is_ok());
        assert!(matches!(
            t.check(slow, Pattern::Publish, "news"),
            Err(Denied::RateLimited(_))
        ));
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        for (text, says) in [
            ("", "no [[token]]"),
            (
                "[[token]]\nname = \"a\"\nsecret = \"short\"\nallow = [\"request\"]\n",
                "16 or more",
            ),
            (
                "[[token]]\nname = \"a\"\nsecret = \"0123456789abcdefX\"\nallow = []\n",
                "allows nothing",
            ),
            (
                "[[token]]\nname = \"a\"\nsecret = \"0123456789abcdefX\"\nallow = [\"fly\"]\n",
                "unknown variant",
            ),
            (
                "[[token]]\nname = \"a\"\nsecret = \"0123456789abcdefX\"\nallow = [\"request\"]\nrate_per_s = 0\n",
                "above 0",
            ),
        ] {
            let e = Tokens::parse(text).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }
}
