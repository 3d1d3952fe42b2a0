//! How replicas share the claim work: which shards a replica owns, and
//! when it looks at each shard's due set next.
//!
//! Every replica keeps itself in the deployment's replica set
//! (`lua/heartbeat.lua`) and reads the set back. A shard belongs to the live
//! replica with the highest rendezvous weight for it, so every replica that
//! read the same set computes the same owners, and a replica that joins or
//! leaves moves only the shards it gains or held: no other shard changes
//! hands. A replica looks at
//!
//! - its own shards when the earliest due time it knows of comes, and at
//!   least every `recheck_ms`;
//! - another replica's shards one `recheck_ms` after the due time it knows
//!   of (the owner had its chance), and at least every `recheck_ms` times
//!   the number of live replicas, so a shard whose owner died unnoticed is
//!   never starved;
//! - any shard at the time its own passes scheduled something in it;
//! - a shard again at once after a look that filled a batch.
//!
//! Idle, with `S` shards and `R` replicas, a replica makes about
//! `S/R + (S - S/R)/R` looks per `recheck_ms`, and the deployment about
//! `2S`, where every replica looking at every shard made `R × S`.

use crate::store::keys::fnv1a;

/// One replica's view of the shares and its schedule of looks.
#[derive(Debug)]
pub struct Looks {
    me: String,
    /// Live replica ids, sorted; always holds `me`.
    live: Vec<String>,
    recheck_ms: u64,
    shards: Vec<Shard>,
}

#[derive(Debug, Clone, Copy)]
struct Shard {
    mine: bool,
    /// When to look next, ms.
    next_ms: u64,
    /// The earliest due time noted since the current look began (`u64::MAX`:
    /// none), so a note made while a look is under way outlives it.
    noted_ms: u64,
}

impl Looks {
    /// The view of `me` alone: it owns all `shards`, each to be looked at
    /// at `now_ms`.
    pub fn new(me: &str, shards: u32, recheck_ms: u64, now_ms: u64) -> Self {
        Self {
            me: me.to_owned(),
            live: vec![me.to_owned()],
            recheck_ms,
            shards: vec![
                Shard {
                    mine: true,
                    next_ms: now_ms,
                    noted_ms: u64::MAX,
                };
                shards as usize
            ],
        }
    }

    /// How many replicas are alive, this one included.
    pub fn live(&self) -> usize {
        self.live.len()
    }

    /// The shards this replica owns, ascending.
    pub fn mine(&self) -> Vec<u32> {
        (0..self.shards.len() as u32)
            .filter(|&s| self.shards[s as usize].mine)
            .collect()
    }

    /// Takes the replica set a heartbeat read (`me` is added when missing)
    /// and recomputes the owners; a shard that became this replica's is
    /// looked at by `now_ms`. Returns whether the set changed.
    pub fn set_live(&mut self, mut live: Vec<String>, now_ms: u64) -> bool {
        if !live.contains(&self.me) {
            live.push(self.me.clone());
        }
        live.sort_unstable();
        live.dedup();
        if live == self.live {
            return false;
        }
        for (i, shard) in self.shards.iter_mut().enumerate() {
            let mine = owner_of(i as u32, &live) == Some(self.me.as_str());
            if mine && !shard.mine {
                shard.next_ms = shard.next_ms.min(now_ms);
            }
            shard.mine = mine;
        }
        self.live = live;
        true
    }

    /// The shards to look at now, ascending.
    pub fn plan(&self, now_ms: u64) -> Vec<u32> {
        (0..self.shards.len() as u32)
            .filter(|&s| self.shards[s as usize].next_ms <= now_ms)
            .collect()
    }

    /// When the next look is due, ms (`u64::MAX` without shards).
    pub fn wake_at(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.next_ms)
            .min()
            .unwrap_or(u64::MAX)
    }

    /// A look at `shards` begins: what is noted from now on is kept for
    /// after it, as the look may read Redis before the noted write lands.
    pub fn begin(&mut self, shards: &[u32]) {
        for &shard in shards {
            if let Some(s) = self.shards.get_mut(shard as usize) {
                s.noted_ms = u64::MAX;
            }
        }
    }

    /// A look at `shard` at `now_ms` found `next_due` as the earliest due
    /// time left, and filled its batch when `full`; `None` for `next_due`
    /// and `false` for `full` after a look that failed.
    pub fn looked(&mut self, shard: u32, now_ms: u64, next_due: Option<u64>, full: bool) {
        let recheck = self.recheck_ms;
        let others = recheck.saturating_mul(self.live.len() as u64);
        let Some(s) = self.shards.get_mut(shard as usize) else {
            return;
        };
        let next = if full {
            now_ms
        } else if s.mine {
            next_due
                .unwrap_or(u64::MAX)
                .min(now_ms.saturating_add(recheck))
        } else {
            next_due
                .map_or(u64::MAX, |d| d.saturating_add(recheck))
                .min(now_ms.saturating_add(others))
        };
        s.next_ms = next.min(s.noted_ms);
        s.noted_ms = u64::MAX;
    }

    /// Something in `shard` is due at `at_ms` (this replica scheduled it).
    pub fn note(&mut self, shard: u32, at_ms: u64) {
        if let Some(s) = self.shards.get_mut(shard as usize) {
            s.next_ms = s.next_ms.min(at_ms);
            s.noted_ms = s.noted_ms.min(at_ms);
        }
    }

    /// Something in any shard may be due at `at_ms`.
    pub fn note_all(&mut self, at_ms: u64) {
        for s in &mut self.shards {
            s.next_ms = s.next_ms.min(at_ms);
            s.noted_ms = s.noted_ms.min(at_ms);
        }
    }
}

/// The owner of `shard` among `live`: the id of the highest weight (ties,
/// which need equal 64-bit weights, go to the greater id).
pub fn owner_of(shard: u32, live: &[String]) -> Option<&str> {
    live.iter()
        .max_by_key(|id| (weight(shard, id), id.as_str()))
        .map(String::as_str)
}

/// The rendezvous weight of replica `id` for `shard`: FNV-1a of both, then
/// a 64-bit finaliser (FNV's bits mix poorly on their own).
fn weight(shard: u32, id: &str) -> u64 {
    let mut h = fnv1a(id.bytes().chain(shard.to_le_bytes()));
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        let mut v: Vec<String> = (0..n).map(|i| format!("{:016x}", i * 7919 + 3)).collect();
        v.sort();
        v
    }

    fn owners(shards: u32, live: &[String]) -> Vec<String> {
        (0..shards)
            .map(|s| owner_of(s, live).unwrap().to_owned())
            .collect()
    }

    #[test]
    fn every_shard_has_one_owner_and_views_agree() {
        let live = ids(4);
        let mut union = Vec::new();
        for me in &live {
            let mut looks = Looks::new(me, 64, 100, 0);
            assert!(looks.set_live(live.clone(), 0));
            union.extend(looks.mine());
        }
        union.sort_unstable();
        assert_eq!(union, (0..64).collect::<Vec<u32>>(), "a partition");
    }

    #[test]
    fn a_joiner_takes_shards_only_for_itself_and_a_leaver_gives_only_its_own() {
        const S: u32 = 256;
        let five = ids(5);
        let four = five[..4].to_vec();
        let before = owners(S, &four);
        let after = owners(S, &five);
        let moved: Vec<usize> = (0..S as usize).filter(|&s| before[s] != after[s]).collect();
        assert!(!moved.is_empty());
        for s in &moved {
            assert_eq!(after[*s], five[4], "shard {s} moved to the joiner only");
        }
        // leaving is the same comparison the other way round
        let three: Vec<String> = four.iter().filter(|i| **i != four[1]).cloned().collect();
        let left = owners(S, &three);
        for s in 0..S as usize {
            if before[s] != four[1] {
                assert_eq!(left[s], before[s], "shard {s} kept its owner");
            }
        }
        // shares are roughly even: each between half and twice S/R
        for id in &five {
            let n = after.iter().filter(|o| *o == id).count();
            assert!((25..=103).contains(&n), "{id} owns {n} of {S}");
        }
    }

    #[test]
    fn own_shards_every_recheck_others_every_recheck_times_replicas() {
        let live = ids(4);
        let mut looks = Looks::new(&live[0], 16, 100, 1_000);
        looks.set_live(live.clone(), 1_000);
        let mine = looks.mine();
        let others: Vec<u32> = (0..16).filter(|s| !mine.contains(s)).collect();
        assert!(!mine.is_empty() && !others.is_empty());
        assert_eq!(looks.plan(1_000).len(), 16, "every shard at first");
        for s in 0..16 {
            looks.looked(s, 1_000, None, false);
        }
        assert!(looks.plan(1_099).is_empty());
        assert_eq!(looks.plan(1_100), mine);
        for &s in &mine {
            looks.looked(s, 1_100, None, false);
        }
        assert!(looks.plan(1_199).is_empty());
        assert_eq!(looks.plan(1_200), mine);
        for &s in &mine {
            looks.looked(s, 1_399, None, false);
        }
        // 4 replicas: another's empty shard waits 4 rechecks
        assert_eq!(looks.plan(1_400), others);
    }

    #[test]
    fn due_times_notes_and_full_batches_bring_looks_forward() {
        let live = ids(3);
        let mut looks = Looks::new(&live[0], 8, 100, 0);
        looks.set_live(live.clone(), 0);
        for s in 0..8 {
            looks.looked(s, 0, None, false);
        }
        let mine = looks.mine()[0];
        let other = (0..8).find(|s| !looks.mine().contains(s)).unwrap();
        // own: at the due time; another's: a recheck after it
        looks.looked(mine, 0, Some(40), false);
        looks.looked(other, 0, Some(40), false);
        assert_eq!(looks.plan(40), [mine]);
        assert!(!looks.plan(139).contains(&other));
        assert!(looks.plan(140).contains(&other));
        // a due time past the cap waits for the cap only
        looks.looked(other, 0, Some(10_000), false);
        assert!(!looks.plan(299).contains(&other));
        assert!(looks.plan(300).contains(&other));
        // something this replica scheduled, and a full batch
        looks.looked(other, 0, None, false);
        looks.note(other, 7);
        assert!(looks.plan(7).contains(&other));
        looks.begin(&[other]);
        looks.looked(other, 8, None, true);
        assert!(looks.plan(8).contains(&other), "full: look again at once");
        assert_eq!(looks.wake_at(), 8);
        for s in 0..8 {
            looks.looked(s, 10, None, false);
        }
        looks.note_all(12);
        assert_eq!(looks.plan(12).len(), 8);
    }

    #[test]
    fn a_note_made_while_a_look_is_under_way_outlives_it() {
        let mut looks = Looks::new("me", 2, 100, 0);
        looks.looked(1, 0, None, false);
        looks.begin(&[0]);
        // a pass schedules something in shard 0 while its look reads Redis
        looks.note(0, 30);
        looks.looked(0, 10, None, false);
        assert_eq!(looks.plan(30), [0], "the note survives the look");
        // a note from before the look began is the look's own business
        looks.note(0, 40);
        looks.begin(&[0]);
        looks.looked(0, 45, Some(500), false);
        assert!(!looks.plan(144).contains(&0));
        assert!(looks.plan(145).contains(&0));
    }

    #[test]
    fn a_shard_that_becomes_mine_is_looked_at_at_once() {
        let live = ids(2);
        let mut looks = Looks::new(&live[0], 16, 100, 0);
        looks.set_live(live.clone(), 0);
        for s in 0..16 {
            looks.looked(s, 0, None, false);
        }
        let had = looks.mine();
        assert!(had.len() < 16);
        assert!(!looks.set_live(live.clone(), 50), "same set: no change");
        // the other replica is gone: its shards are looked at now
        assert!(looks.set_live(vec![live[0].clone()], 50));
        assert_eq!(looks.mine().len(), 16);
        let gained: Vec<u32> = (0..16).filter(|s| !had.contains(s)).collect();
        assert_eq!(looks.plan(50), gained);
        assert_eq!(looks.live(), 1);
    }
}
