//! Simple tokens (etcd's `--auth-token simple`): opaque strings `<16 letters>.<index>`,
//! where the letters are drawn by the member a client authenticated with and the index is
//! the Raft index of the Authenticate entry. Every member issues the same token when it
//! applies that entry, so a client may use it with any member. A token lives in memory
//! only (a restart forgets it, as in etcd) and lapses after its TTL without use; each use
//! renews it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rand::Rng;

/// Letters of a token's random part.
const PREFIX_LEN: usize = 16;

/// The random part of a new token.
pub fn new_prefix(rng: &mut impl Rng) -> String {
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    (0..PREFIX_LEN)
        .map(|_| LETTERS[rng.random_range(0..LETTERS.len())] as char)
        .collect()
}

/// The Raft index a well-formed token was issued at; `None` for anything else.
pub fn token_index(token: &str) -> Option<u64> {
    let (prefix, index) = token.split_once('.')?;
    if prefix.len() != PREFIX_LEN || !prefix.bytes().all(|b| b.is_ascii_alphabetic()) {
        return None;
    }
    index.parse().ok()
}

/// The tokens issued by this member and not yet lapsed.
#[derive(Debug)]
pub struct SimpleTokens {
    ttl: Duration,
    /// Token → its user and when it lapses.
    tokens: HashMap<String, (String, Instant)>,
}

impl SimpleTokens {
    pub fn new(ttl: Duration) -> SimpleTokens {
        SimpleTokens {
            ttl,
            tokens: HashMap::new(),
        }
    }

    /// Issues the token of the Authenticate entry at `index` for `user`.
    pub fn assign(&mut self, prefix: &str, index: u64, user: &str, now: Instant) -> String {
        self.forget_lapsed(now);
        let token = format!("{prefix}.{index}");
        self.tokens
            .insert(token.clone(), (user.to_string(), now + self.ttl));
        token
    }

    /// The user of a live token, renewing it.
    pub fn user(&mut self, token: &str, now: Instant) -> Option<String> {
        let (user, lapses) = self.tokens.get_mut(token)?;
        if *lapses <= now {
            self.tokens.remove(token);
            return None;
        }
        *lapses = now + self.ttl;
        Some(user.clone())
    }

    /// Forgets the tokens of `user` (deleted, or its password changed).
    pub fn invalidate_user(&mut self, user: &str) {
        self.tokens.retain(|_, (owner, _)| owner != user);
    }

    /// Forgets every token (auth disabled).
    pub fn clear(&mut self) {
        self.tokens.clear();
    }

    fn forget_lapsed(&mut self, now: Instant) {
        self.tokens.retain(|_, (_, lapses)| *lapses > now);
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}
