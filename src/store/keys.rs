//! The only code that formats Redis key names.
//!
//! Every key of one transaction, and the per-shard sets it is indexed in,
//! share the hash tag `{s<shard>}`, so every script touches one slot and
//! runs unchanged on Redis Cluster; the shard spreads transactions across
//! slots.

/// Key names of one deployment (prefix and shard count).
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
    shards: u32,
}

/// Every key a script may touch for one transaction, computed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransKeys {
    /// The shard of the transaction.
    pub shard: u32,
    /// Hash of the global record.
    pub trans: String,
    /// Hash of the branch rows.
    pub branches: String,
    /// Due sorted set of the shard.
    pub due: String,
    /// Creation-time index of the shard.
    pub created: String,
}

impl Keys {
    /// Keys under `prefix` with `shards` shards.
    pub fn new(prefix: &str, shards: u32) -> Self {
        Self {
            prefix: prefix.to_owned(),
            shards,
        }
    }

    /// Number of shards.
    pub fn shards(&self) -> u32 {
        self.shards
    }

    /// The shard of `gid`: FNV-1a of its bytes, modulo the shard count.
    /// Stable across versions: changing it is a data migration.
    pub fn shard_of(&self, gid: &str) -> u32 {
        (fnv1a(gid.bytes()) % u64::from(self.shards)) as u32
    }

    /// `<prefix>:{s<shard>}:t:<gid>` and its companions.
    pub fn trans(&self, gid: &str) -> TransKeys {
        let shard = self.shard_of(gid);
        let tag = self.tag(shard);
        TransKeys {
            shard,
            trans: format!("{tag}:t:{gid}"),
            branches: format!("{tag}:b:{gid}"),
            due: format!("{tag}:due"),
            created: format!("{tag}:created"),
        }
    }

    /// Due sorted set of `shard`.
    pub fn due(&self, shard: u32) -> String {
        format!("{}:due", self.tag(shard))
    }

    /// Transactions of `shard` set aside because no replica can decode
    /// them (hash: gid to `<ms>\t<error>`).
    pub fn aside(&self, shard: u32) -> String {
        format!("{}:aside", self.tag(shard))
    }

    /// Creation-time index of `shard`.
    pub fn created(&self, shard: u32) -> String {
        format!("{}:created", self.tag(shard))
    }

    /// The data hash and key index of KV category `cat`, under the tag
    /// `{kv:<cat>}` (one slot per category).
    pub fn kv(&self, cat: &str) -> (String, String) {
        let tag = format!("{}:{{kv:{cat}}}", self.prefix);
        (format!("{tag}:data"), format!("{tag}:keys"))
    }

    /// The deployment's replica set (sorted set: replica id to the time it
    /// is alive until, ms), kept by `lua/heartbeat.lua`.
    pub fn replicas(&self) -> String {
        format!("{}:replicas", self.prefix)
    }

    /// The deployment's meta hash (shard count).
    pub fn meta(&self) -> String {
        format!("{}:meta", self.prefix)
    }

    fn tag(&self, shard: u32) -> String {
        format!("{}:{{s{shard}}}", self.prefix)
    }
}

/// 64-bit FNV-1a of `bytes`: cheap, stable across versions and platforms.
pub(crate) fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The hash tag of a key, as Redis Cluster computes it.
#[cfg(test)]
fn hash_tag(key: &str) -> &str {
    if let Some(open) = key.find('{') {
        if let Some(len) = key[open + 1..].find('}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_keys_of_a_transaction_share_its_shard_tag() {
        let keys = Keys::new("dtx", 16);
        for gid in ["a", "gid-{x}", "{weird}", "0123456789abcdef"] {
            let k = keys.trans(gid);
            let tag = format!("s{}", k.shard);
            for key in [&k.trans, &k.branches, &k.due, &k.created] {
                assert_eq!(hash_tag(key), tag, "{key}");
            }
            assert_eq!(k.due, keys.due(k.shard));
            assert_eq!(k.created, keys.created(k.shard));
        }
    }

    #[test]
    fn shards_spread_and_are_stable() {
        let keys = Keys::new("dtx", 16);
        assert_eq!(keys.shard_of("gid-1"), keys.shard_of("gid-1"));
        let mut seen = [0u32; 16];
        for i in 0..1600 {
            seen[keys.shard_of(&format!("gid-{i}")) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
        // pinned: a change here moves existing data to other shards
        assert_eq!(
            keys.trans("abc").trans,
            format!("dtx:{{s{}}}:t:abc", keys.shard_of("abc"))
        );
        assert_eq!(Keys::new("p", 1000).shard_of("abc"), 931);
    }
}
