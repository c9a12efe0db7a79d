//! Member and cluster ids, derived from the configuration exactly as etcd derives them, so
//! that a cluster bootstrapped with the same flags gets the same ids under oxcd as under
//! etcd: a member's id is the first 8 bytes (big-endian) of SHA-1 over its sorted peer URLs
//! followed by the cluster token; the cluster's id is the same over the sorted member ids.

use sha1::{Digest, Sha1};

/// The id of a member with these peer URLs in the cluster named by `token`.
pub fn member_id(peer_urls: &[String], token: &str) -> u64 {
    hash_member(peer_urls, token, None)
}

/// The id of a member added to a running cluster: etcd mixes in the time (Unix seconds),
/// so that a member added again at the same URLs gets a new id.
pub(crate) fn new_member_id(peer_urls: &[String], token: &str, unix_seconds: u64) -> u64 {
    hash_member(peer_urls, token, Some(unix_seconds))
}

fn hash_member(peer_urls: &[String], token: &str, unix_seconds: Option<u64>) -> u64 {
    let mut sorted: Vec<&String> = peer_urls.iter().collect();
    sorted.sort();
    let mut hasher = Sha1::new();
    for url in sorted {
        hasher.update(url.as_bytes());
    }
    hasher.update(token.as_bytes());
    if let Some(seconds) = unix_seconds {
        hasher.update(seconds.to_string().as_bytes());
    }
    first_8_bytes(&hasher.finalize())
}

/// The id of a cluster made of these members.
pub(crate) fn cluster_id(member_ids: &[u64]) -> u64 {
    let mut sorted = member_ids.to_vec();
    sorted.sort_unstable();
    let mut hasher = Sha1::new();
    for id in sorted {
        hasher.update(id.to_be_bytes());
    }
    first_8_bytes(&hasher.finalize())
}

fn first_8_bytes(digest: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_depend_on_urls_and_token_only() {
        let a = member_id(&["http://127.0.0.1:2380".into()], "etcd-cluster");
        let b = member_id(&["http://127.0.0.1:2380".into()], "etcd-cluster");
        let c = member_id(&["http://127.0.0.1:2380".into()], "other-token");
        assert_eq!(a, b);
        assert_ne!(a, c);
        let two = [
            "http://127.0.0.1:2380".to_string(),
            "http://127.0.0.1:2381".to_string(),
        ];
        let reversed = [two[1].clone(), two[0].clone()];
        assert_eq!(member_id(&two, "t"), member_id(&reversed, "t"));
        assert_eq!(cluster_id(&[3, 1, 2]), cluster_id(&[1, 2, 3]));
        assert_ne!(cluster_id(&[1, 2]), cluster_id(&[1, 3]));
    }

    /// etcd 3.4.23 started as `etcd --name default` with its default peer URL
    /// (`http://localhost:2380`) and token (`etcd-cluster`) reports member id
    /// 8e9e05c52164694d and cluster id cdf818194e3a8c32.
    #[test]
    fn default_member_matches_etcd() {
        let member = member_id(&["http://localhost:2380".into()], "etcd-cluster");
        assert_eq!(format!("{member:x}"), "8e9e05c52164694d");
        assert_eq!(format!("{:x}", cluster_id(&[member])), "cdf818194e3a8c32");
    }
}
