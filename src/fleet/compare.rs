//! The nodes sharing a database, as values: which are live, which differ
//! from this one, and what changed since the last look (so a difference is
//! logged once, not at every heartbeat).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

/// A row of the `nodes` table, and whether its node is live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    pub name: String,
    /// Seconds since 1970.
    pub started: u64,
    /// Its last heartbeat, seconds since 1970.
    pub last_seen: u64,
    pub config_hash: String,
    /// The mgnt version it runs.
    pub version: String,
    /// It holds its name's lock: its process, and its connection, are alive.
    pub live: bool,
}

/// The key of the advisory lock that node name `name` is held by. A hash
/// of the name, named so that no other use of advisory locks picks it.
pub fn lock_key(name: &str) -> i64 {
    let digest = ring::digest::digest(
        &ring::digest::SHA256,
        format!("mgnt node {name}").as_bytes(),
    );
    let mut key = [0; 8];
    key.copy_from_slice(&digest.as_ref()[..8]);
    i64::from_be_bytes(key)
}

/// A one-key (bigint) advisory lock as `pg_locks` shows it: "a bigint key
/// is displayed with its high-order half in the classid column, its
/// low-order half in the objid column, and objsubid equal to 1".
pub fn key_of_lock(classid: u32, objid: u32) -> i64 {
    ((u64::from(classid) << 32) | u64::from(objid)) as i64
}

/// Marks live the nodes whose lock is among `held` (keys of held locks).
pub fn mark_live(nodes: &mut [Node], held: &BTreeSet<i64>) {
    for node in nodes {
        node.live = held.contains(&lock_key(&node.name));
    }
}

/// The other live nodes whose config hash is not `ours`, as node `me`
/// sees them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Differences {
    pub ours: String,
    /// Node name → its config hash.
    pub theirs: BTreeMap<String, String>,
}

impl Differences {
    pub fn of(me: &str, ours: &str, nodes: &[Node]) -> Self {
        let theirs = nodes
            .iter()
            .filter(|n| n.live && n.name != me && n.config_hash != ours)
            .map(|n| (n.name.clone(), n.config_hash.clone()))
            .collect();
        Self {
            ours: ours.to_owned(),
            theirs,
        }
    }

    /// What to tell since `before`: the differences that are new (a node
    /// that began to differ, or differs by other hashes than it did), and
    /// the nodes that no longer differ (they agree now, or stopped).
    pub fn news(&self, before: &Self) -> News {
        let same_ours = self.ours == before.ours;
        let differ = self
            .theirs
            .iter()
            .filter(|&(node, hash)| !same_ours || before.theirs.get(node) != Some(hash))
            .map(|(node, hash)| (node.clone(), hash.clone()))
            .collect();
        let agree = before
            .theirs
            .keys()
            .filter(|node| !self.theirs.contains_key(*node))
            .cloned()
            .collect();
        News { differ, agree }
    }
}

/// The changes [`Differences::news`] finds.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct News {
    /// Node name and its config hash.
    pub differ: Vec<(String, String)>,
    pub agree: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, hash: &str, live: bool) -> Node {
        Node {
            name: name.into(),
            started: 1,
            last_seen: 2,
            config_hash: hash.into(),
            version: "0.1.0".into(),
            live,
        }
    }

    #[test]
    fn a_lock_key_reads_back_from_its_pg_locks_halves() {
        for name in ["node-a", "b", "x.example_1"] {
            let key = lock_key(name) as u64;
            let (classid, objid) = ((key >> 32) as u32, key as u32);
            assert_eq!(key_of_lock(classid, objid), lock_key(name), "{name}");
        }
        assert_ne!(lock_key("node-a"), lock_key("node-b"));
    }

    #[test]
    fn only_live_nodes_with_their_lock_held_count() {
        let mut nodes = vec![node("a", "h1", false), node("b", "h2", true)];
        let held = BTreeSet::from([lock_key("a"), 42]);
        mark_live(&mut nodes, &held);
        assert!(nodes[0].live && !nodes[1].live);
    }

    #[test]
    fn differences_leave_out_this_node_the_dead_and_the_equal() {
        let nodes = [
            node("me", "h1", true),
            node("same", "h1", true),
            node("other", "h2", true),
            node("dead", "h3", false),
        ];
        let d = Differences::of("me", "h1", &nodes);
        assert_eq!(d.theirs, BTreeMap::from([("other".into(), "h2".into())]));
        // Our own row with an older hash (a reload not yet written) is no difference.
        assert!(Differences::of("me", "h9", &nodes[..1]).theirs.is_empty());
    }

    #[test]
    fn a_difference_is_news_once_per_change() {
        let nodes = |b: &str, c: &str| {
            [
                node("a", "h1", true),
                node("b", b, true),
                node("c", c, true),
            ]
        };
        let none = Differences::default();
        let first = Differences::of("a", "h1", &nodes("h2", "h1"));
        assert_eq!(
            first.news(&none),
            News {
                differ: vec![("b".into(), "h2".into())],
                agree: vec![]
            }
        );
        // The next heartbeat sees the same: nothing to tell.
        let again = Differences::of("a", "h1", &nodes("h2", "h1"));
        assert_eq!(again.news(&first), News::default());
        // b reloads to another hash still not ours, c starts to differ.
        let moved = Differences::of("a", "h1", &nodes("h3", "h4"));
        assert_eq!(
            moved.news(&again).differ,
            [("b".into(), "h3".into()), ("c".into(), "h4".into())]
        );
        // We reload to b's hash: b agrees, c differs from our new hash.
        let ours_moved = Differences::of("a", "h3", &nodes("h3", "h4"));
        assert_eq!(
            ours_moved.news(&moved),
            News {
                differ: vec![("c".into(), "h4".into())],
                agree: vec!["b".into()]
            }
        );
    }
}
