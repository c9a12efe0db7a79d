//! JSON Web Tokens (etcd's `--auth-token jwt,...`): signed tokens carrying the user, the
//! auth revision they were issued at and an expiry. Any member holding the verification
//! key accepts them, restarts do not forget them, and a token issued before a change of
//! users or roles is refused as stale (the client logs in again).
//!
//! Options as etcd parses them, comma-separated after `jwt`: `sign-method` (required:
//! RS256/384/512, PS256/384/512, ES256/384, EdDSA, HS256/384/512), `pub-key` and
//! `priv-key` (PEM files; for HS* the private key file holds the shared secret), `ttl` (a
//! Go duration, default `5m`). A member with only the public key verifies tokens but
//! cannot issue them. Unlike etcd, an asymmetric private key needs its public key beside
//! it (etcd derives it); the pair is checked to match at start.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::AuthInfo;

/// etcd's default token lifetime.
const DEFAULT_TTL: Duration = Duration::from_secs(5 * 60);

/// What a token says.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    username: String,
    revision: u64,
    exp: u64,
}

/// Why the options cannot make a token provider, in etcd's words where it has them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("auth: invalid auth options: {0}")]
    InvalidOptions(String),
    #[error("auth: invalid auth signature method")]
    InvalidMethod,
    #[error("auth: missing key data")]
    MissingKey,
    #[error("auth: public and private keys don't match")]
    KeyMismatch,
    #[error("auth: token signing attempted with verify-only key")]
    VerifyOnly,
    #[error("auth: signing a token: {0}")]
    Signing(String),
}

/// Issues and verifies signed tokens.
pub struct JwtTokens {
    algorithm: Algorithm,
    /// `None` on a verify-only member.
    encoding: Option<EncodingKey>,
    decoding: DecodingKey,
    ttl: Duration,
}

impl std::fmt::Debug for JwtTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtTokens")
            .field("algorithm", &self.algorithm)
            .field("verify_only", &self.encoding.is_none())
            .field("ttl", &self.ttl)
            .finish()
    }
}

fn algorithm(name: &str) -> Result<Algorithm, JwtError> {
    Ok(match name {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        "HS256" => Algorithm::HS256,
        "HS384" => Algorithm::HS384,
        "HS512" => Algorithm::HS512,
        _ => return Err(JwtError::InvalidMethod),
    })
}

/// A Go duration (`300ms`, `1.5h`, `2h45m`): etcd reads `ttl` with `time.ParseDuration`.
pub fn parse_go_duration(text: &str) -> Option<Duration> {
    if text == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = text;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * seconds;
    }
    Duration::try_from_secs_f64(total).ok()
}

impl JwtTokens {
    /// The provider `--auth-token` describes (`jwt,sign-method=RS256,pub-key=...`), with
    /// its key files read through `read`.
    pub fn from_options(
        spec: &str,
        read: impl Fn(&str) -> std::io::Result<Vec<u8>>,
    ) -> Result<JwtTokens, JwtError> {
        let mut method = None;
        let mut public = None;
        let mut private = None;
        let mut ttl = DEFAULT_TTL;
        for option in spec.split(',').skip(1).filter(|option| !option.is_empty()) {
            let (name, value) = option
                .split_once('=')
                .ok_or_else(|| JwtError::InvalidOptions(format!("{option:?} is not name=value")))?;
            let file = |path: &str| {
                read(path).map_err(|error| JwtError::InvalidOptions(format!("{path}: {error}")))
            };
            match name {
                "sign-method" => method = Some(algorithm(value)?),
                "pub-key" => public = Some(file(value)?),
                "priv-key" => private = Some(file(value)?),
                "ttl" => {
                    ttl = parse_go_duration(value).ok_or_else(|| {
                        JwtError::InvalidOptions(format!("invalid duration {value:?}"))
                    })?
                }
                other => tracing::warn!(option = other, "unknown JWT option"),
            }
        }
        let algorithm = method.ok_or(JwtError::InvalidMethod)?;
        let invalid =
            |error: jsonwebtoken::errors::Error| JwtError::InvalidOptions(error.to_string());
        let (encoding, decoding) = match algorithm {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                let secret = private.ok_or(JwtError::MissingKey)?;
                (
                    Some(EncodingKey::from_secret(&secret)),
                    DecodingKey::from_secret(&secret),
                )
            }
            _ => {
                let public = public.ok_or(JwtError::MissingKey)?;
                let decoding = match algorithm {
                    Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(&public),
                    Algorithm::EdDSA => DecodingKey::from_ed_pem(&public),
                    _ => DecodingKey::from_rsa_pem(&public),
                }
                .map_err(invalid)?;
                let encoding = match &private {
                    None => None,
                    Some(private) => Some(
                        match algorithm {
                            Algorithm::ES256 | Algorithm::ES384 => {
                                EncodingKey::from_ec_pem(private)
                            }
                            Algorithm::EdDSA => EncodingKey::from_ed_pem(private),
                            _ => EncodingKey::from_rsa_pem(private),
                        }
                        .map_err(invalid)?,
                    ),
                };
                (encoding, decoding)
            }
        };
        let tokens = JwtTokens {
            algorithm,
            encoding,
            decoding,
            ttl,
        };
        // A private key that does not match the public one would issue tokens nobody
        // accepts: refuse it at start.
        if tokens.encoding.is_some() {
            let probe = tokens.assign("probe", 1)?;
            if tokens.verify(&probe, false).is_none() {
                return Err(JwtError::KeyMismatch);
            }
        }
        Ok(tokens)
    }

    /// A token for `username` at auth revision `revision`, expiring after the TTL.
    pub fn assign(&self, username: &str, revision: u64) -> Result<String, JwtError> {
        let key = self.encoding.as_ref().ok_or(JwtError::VerifyOnly)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let claims = Claims {
            username: username.to_string(),
            revision,
            exp: (now + self.ttl).as_secs(),
        };
        jsonwebtoken::encode(&Header::new(self.algorithm), &claims, key)
            .map_err(|error| JwtError::Signing(error.to_string()))
    }

    /// Who a valid, unexpired token of this provider's method stands for.
    pub fn info(&self, token: &str) -> Option<AuthInfo> {
        self.verify(token, true)
    }

    fn verify(&self, token: &str, check_expiry: bool) -> Option<AuthInfo> {
        let mut validation = Validation::new(self.algorithm);
        validation.leeway = 0;
        validation.validate_exp = check_expiry;
        validation.required_spec_claims = ["exp".to_string()].into();
        match jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation) {
            Ok(data) => Some(AuthInfo {
                username: data.claims.username,
                revision: data.claims.revision,
            }),
            Err(error) => {
                tracing::warn!(%error, "failed to parse a JWT token");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(spec: &str, files: &[(&str, Vec<u8>)]) -> Result<JwtTokens, JwtError> {
        let files: Vec<(String, Vec<u8>)> = files
            .iter()
            .map(|(n, c)| (n.to_string(), c.clone()))
            .collect();
        JwtTokens::from_options(spec, move |path| {
            files
                .iter()
                .find(|(name, _)| name == path)
                .map(|(_, content)| content.clone())
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
        })
    }

    fn ec_pair() -> (Vec<u8>, Vec<u8>) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        (
            key.serialize_pem().into_bytes(),
            key.public_key_pem().into_bytes(),
        )
    }

    #[test]
    fn go_durations_parse_as_go_does() {
        assert_eq!(parse_go_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_go_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration("300ms"), Some(Duration::from_millis(300)));
        assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
        for bad in ["", "5", "m", "5x", "1..2s", "-1s"] {
            assert_eq!(parse_go_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn tokens_carry_user_and_revision_and_verify_with_the_public_key() {
        let (private, public) = ec_pair();
        let files = [("priv", private), ("pub", public.clone())];
        let tokens = provider(
            "jwt,sign-method=ES256,priv-key=priv,pub-key=pub,ttl=1m",
            &files,
        )
        .expect("a provider");
        let token = tokens.assign("alice", 7).unwrap();
        let info = tokens.info(&token).expect("valid");
        assert_eq!(info.username, "alice");
        assert_eq!(info.revision, 7);
        // Another member with only the public key accepts it and cannot issue.
        let verifier = provider("jwt,sign-method=ES256,pub-key=pub", &[("pub", public)]).unwrap();
        assert_eq!(verifier.info(&token), Some(info));
        assert_eq!(verifier.assign("alice", 7), Err(JwtError::VerifyOnly));
        // Tampered, truncated or foreign tokens are refused.
        let mut tampered = token.clone();
        tampered.pop();
        assert_eq!(tokens.info(&tampered), None);
        assert_eq!(tokens.info("not.a.token"), None);
        assert_eq!(tokens.info(""), None);
        let (other_private, other_public) = ec_pair();
        let other = provider(
            "jwt,sign-method=ES256,priv-key=p,pub-key=q",
            &[("p", other_private), ("q", other_public)],
        )
        .unwrap();
        assert_eq!(tokens.info(&other.assign("alice", 7).unwrap()), None);
    }

    #[test]
    fn expired_tokens_and_other_methods_are_refused() {
        let files = [("secret", b"a shared secret".to_vec())];
        let short = provider("jwt,sign-method=HS256,priv-key=secret,ttl=0", &files).unwrap();
        let token = short.assign("alice", 1).unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(short.info(&token), None);
        let hs512 = provider("jwt,sign-method=HS512,priv-key=secret", &files).unwrap();
        let long = provider("jwt,sign-method=HS256,priv-key=secret", &files).unwrap();
        assert_eq!(hs512.info(&long.assign("alice", 1).unwrap()), None);
    }

    #[test]
    fn bad_options_are_refused_with_etcd_errors() {
        let (private, public) = ec_pair();
        let (_, other_public) = ec_pair();
        let files = [
            ("priv", private),
            ("pub", public),
            ("other", other_public),
            ("garbage", b"not a key".to_vec()),
        ];
        let refused = |spec: &str| provider(spec, &files).unwrap_err();
        assert_eq!(refused("jwt,pub-key=pub"), JwtError::InvalidMethod);
        assert_eq!(refused("jwt,sign-method=XX1"), JwtError::InvalidMethod);
        assert_eq!(refused("jwt,sign-method=ES256"), JwtError::MissingKey);
        assert_eq!(refused("jwt,sign-method=HS256"), JwtError::MissingKey);
        assert_eq!(
            refused("jwt,sign-method=ES256,priv-key=priv,pub-key=other"),
            JwtError::KeyMismatch
        );
        assert!(matches!(
            refused("jwt,sign-method=ES256,pub-key=garbage"),
            JwtError::InvalidOptions(_)
        ));
        assert!(matches!(
            refused("jwt,sign-method=ES256,pub-key=missing"),
            JwtError::InvalidOptions(_)
        ));
        assert!(matches!(
            refused("jwt,sign-method=ES256,pub-key=pub,ttl=soon"),
            JwtError::InvalidOptions(_)
        ));
        assert!(matches!(
            refused("jwt,sign-method"),
            JwtError::InvalidOptions(_)
        ));
    }

    proptest::proptest! {
        /// Arbitrary text as a signed token is refused without panicking, including text
        /// shaped like a token (three base64 parts).
        #[test]
        fn arbitrary_tokens_are_refused(
            text in ".{0,200}",
            parts in proptest::collection::vec("[A-Za-z0-9_-]{0,40}", 3),
        ) {
            let files = [("secret", b"a shared secret".to_vec())];
            let tokens = provider("jwt,sign-method=HS256,priv-key=secret", &files).unwrap();
            proptest::prop_assert_eq!(tokens.info(&text), None);
            proptest::prop_assert_eq!(tokens.info(&parts.join(".")), None);
        }
    }
}
