//! The tree of watched directories, keyed by watch descriptor.
//!
//! inotify reports an event as (watch descriptor, name); the path is ours to
//! know. Each node stores only its parent and its own name, so a directory
//! renamed inside the tree is one `relocate` and every watch below it answers
//! with the new path at once. Generic over the watch handle so the logic is
//! tested without a kernel.
//!
//! Children are sibling links, found by name through one hash table over
//! (parent, name): a directory with 100,000 subdirectories costs O(1) per
//! insert, lookup and removal, not a scan of its siblings. Short names are
//! stored inline; most names are short and a heap block costs more than
//! the name.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;

use crate::wire::path::WirePath;

/// Index of a node. Stable while the node lives; reused after removal.
pub type NodeId = u32;

const NO_PARENT: NodeId = NodeId::MAX;
const NONE: NodeId = NodeId::MAX;

/// A directory entry name; most are short and need no allocation.
#[derive(Debug)]
enum Name {
    Inline(u8, [u8; 22]),
    Heap(Box<[u8]>),
}

impl Name {
    fn new(bytes: &[u8]) -> Self {
        if bytes.len() <= 22 {
            let mut buf = [0u8; 22];
            buf[..bytes.len()].copy_from_slice(bytes);
            Name::Inline(bytes.len() as u8, buf)
        } else {
            Name::Heap(bytes.into())
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            Name::Inline(len, buf) => &buf[..*len as usize],
            Name::Heap(b) => b,
        }
    }
}

#[derive(Debug)]
struct Node<W> {
    handle: W,
    wd: i32,
    parent: NodeId,
    first_child: NodeId,
    next_sibling: NodeId,
    prev_sibling: NodeId,
    name: Name,
}

/// Watched directories: an arena of nodes plus a map from descriptor to node.
#[derive(Debug)]
pub struct WatchTree<W> {
    nodes: Vec<Option<Node<W>>>,
    free: Vec<NodeId>,
    by_wd: HashMap<i32, NodeId>,
    /// Every non-root node, hashed on (parent, name).
    by_name: HashTable<NodeId>,
    hasher: RandomState,
    root: Option<NodeId>,
}

impl<W> Default for WatchTree<W> {
    fn default() -> Self {
        Self::new()
    }
}

fn key_hash(hasher: &RandomState, parent: NodeId, name: &[u8]) -> u64 {
    hasher.hash_one((parent, name))
}

fn node_of<W>(nodes: &[Option<Node<W>>], id: NodeId) -> &Node<W> {
    nodes[id as usize]
        .as_ref()
        .expect("node ids handed out refer to live nodes")
}

impl<W> WatchTree<W> {
    pub fn new() -> Self {
        WatchTree {
            nodes: Vec::new(),
            free: Vec::new(),
            by_wd: HashMap::new(),
            by_name: HashTable::new(),
            hasher: RandomState::new(),
            root: None,
        }
    }

    /// Number of watched directories.
    pub fn len(&self) -> usize {
        self.by_wd.len()
    }

    pub fn is_root(&self, id: NodeId) -> bool {
        self.root == Some(id)
    }

    pub fn lookup(&self, wd: i32) -> Option<NodeId> {
        self.by_wd.get(&wd).copied()
    }

    fn node(&self, id: NodeId) -> &Node<W> {
        node_of(&self.nodes, id)
    }

    fn node_mut(&mut self, id: NodeId) -> &mut Node<W> {
        self.nodes[id as usize]
            .as_mut()
            .expect("node ids handed out refer to live nodes")
    }

    fn alloc(&mut self, node: Node<W>) -> NodeId {
        let wd = node.wd;
        let id = match self.free.pop() {
            Some(id) => {
                self.nodes[id as usize] = Some(node);
                id
            }
            None => {
                self.nodes.push(Some(node));
                NodeId::try_from(self.nodes.len() - 1).expect("fewer than 4 billion watches")
            }
        };
        self.by_wd.insert(wd, id);
        id
    }

    /// Sets the root watch. Any earlier tree must have been cleared.
    pub fn insert_root(&mut self, handle: W, wd: i32) -> NodeId {
        let id = self.alloc(Node {
            handle,
            wd,
            parent: NO_PARENT,
            first_child: NONE,
            next_sibling: NONE,
            prev_sibling: NONE,
            name: Name::new(&[]),
        });
        self.root = Some(id);
        id
    }

    /// Records a watch on `parent/name`. When the kernel handed back a
    /// descriptor we already know (the same directory reached again, e.g.
    /// after a move we could not pair), the existing node moves there instead.
    pub fn insert(&mut self, parent: NodeId, name: &[u8], handle: W, wd: i32) -> NodeId {
        if let Some(existing) = self.lookup(wd) {
            if !self.is_root(existing) {
                self.relocate(existing, parent, name);
            }
            return existing;
        }
        if let Some(stale) = self.child(parent, name) {
            // A directory of that name was replaced without us seeing the
            // removal; the old node's watch is gone with it.
            self.remove_subtree(stale);
        }
        let id = self.alloc(Node {
            handle,
            wd,
            parent,
            first_child: NONE,
            next_sibling: NONE,
            prev_sibling: NONE,
            name: Name::new(name),
        });
        self.link(id, parent);
        id
    }

    /// Puts `id` (its parent and name already set) under `parent`.
    fn link(&mut self, id: NodeId, parent: NodeId) {
        let old_first = self.node(parent).first_child;
        {
            let node = self.node_mut(id);
            node.parent = parent;
            node.prev_sibling = NONE;
            node.next_sibling = old_first;
        }
        if old_first != NONE {
            self.node_mut(old_first).prev_sibling = id;
        }
        self.node_mut(parent).first_child = id;
        let hash = key_hash(&self.hasher, parent, self.node(id).name.as_bytes());
        let (nodes, hasher) = (&self.nodes, &self.hasher);
        self.by_name.insert_unique(hash, id, |&other| {
            let n = node_of(nodes, other);
            key_hash(hasher, n.parent, n.name.as_bytes())
        });
    }

    /// Takes `id` out of its parent's children (not the root).
    fn unlink(&mut self, id: NodeId) {
        let (parent, prev, next, hash) = {
            let n = self.node(id);
            let hash = key_hash(&self.hasher, n.parent, n.name.as_bytes());
            (n.parent, n.prev_sibling, n.next_sibling, hash)
        };
        if let Ok(entry) = self.by_name.find_entry(hash, |&other| other == id) {
            entry.remove();
        }
        if prev != NONE {
            self.node_mut(prev).next_sibling = next;
        } else {
            self.node_mut(parent).first_child = next;
        }
        if next != NONE {
            self.node_mut(next).prev_sibling = prev;
        }
    }

    /// The child of `parent` named `name`, if watched.
    pub fn child(&self, parent: NodeId, name: &[u8]) -> Option<NodeId> {
        let hash = key_hash(&self.hasher, parent, name);
        self.by_name
            .find(hash, |&id| {
                let n = self.node(id);
                n.parent == parent && n.name.as_bytes() == name
            })
            .copied()
    }

    /// The node watching `path` (relative to the root), if any.
    pub fn find(&self, path: &WirePath) -> Option<NodeId> {
        let mut cur = self.root?;
        if path.is_root() {
            return Some(cur);
        }
        for name in path.as_bytes().split(|&b| b == b'/') {
            cur = self.child(cur, name)?;
        }
        Some(cur)
    }

    /// The node's path relative to the root (`"."` for the root).
    pub fn path(&self, id: NodeId) -> WirePath {
        let mut names: Vec<&[u8]> = Vec::new();
        let mut cur = id;
        while cur != NO_PARENT {
            let node = self.node(cur);
            if node.parent != NO_PARENT {
                names.push(node.name.as_bytes());
            }
            cur = node.parent;
        }
        if names.is_empty() {
            return WirePath::root();
        }
        let len = names.iter().map(|n| n.len() + 1).sum::<usize>() - 1;
        let mut bytes = Vec::with_capacity(len);
        for (i, name) in names.iter().rev().enumerate() {
            if i > 0 {
                bytes.push(b'/');
            }
            bytes.extend_from_slice(name);
        }
        WirePath::from_bytes(bytes)
    }

    /// Moves a node (and so everything below it) to `new_parent/new_name`.
    pub fn relocate(&mut self, id: NodeId, new_parent: NodeId, new_name: &[u8]) {
        if let Some(other) = self.child(new_parent, new_name) {
            if other != id {
                // rename(2) over an existing empty directory replaces it.
                self.remove_subtree(other);
            }
        }
        if self.node(id).parent != NO_PARENT {
            self.unlink(id);
        }
        self.node_mut(id).name = Name::new(new_name);
        self.link(id, new_parent);
    }

    /// Forgets a node and everything below it; returns their watch handles
    /// so the caller can remove the kernel watches (needed when the subtree
    /// moved out of the tree but still exists).
    pub fn remove_subtree(&mut self, id: NodeId) -> Vec<W> {
        if self.node(id).parent != NO_PARENT {
            self.unlink(id);
        } else {
            self.root = None;
        }
        let mut handles = Vec::new();
        let mut stack = vec![id];
        while let Some(cur) = stack.pop() {
            let node = self.nodes[cur as usize]
                .take()
                .expect("children of a live node are live");
            self.by_wd.remove(&node.wd);
            self.free.push(cur);
            let mut child = node.first_child;
            while child != NONE {
                let c = self.node(child);
                let hash = key_hash(&self.hasher, c.parent, c.name.as_bytes());
                let next = c.next_sibling;
                if let Ok(entry) = self.by_name.find_entry(hash, |&other| other == child) {
                    entry.remove();
                }
                stack.push(child);
                child = next;
            }
            handles.push(node.handle);
        }
        handles
    }

    /// Forgets everything (after the inotify instance was replaced).
    pub fn clear(&mut self) {
        *self = Self::new();
    }

    #[cfg(test)]
    fn handle(&self, id: NodeId) -> &W {
        &self.node(id).handle
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> (WatchTree<i32>, NodeId) {
        let mut t = WatchTree::new();
        let root = t.insert_root(1, 1);
        (t, root)
    }

    #[test]
    fn paths_follow_parents() {
        let (mut t, root) = tree();
        let a = t.insert(root, b"a", 2, 2);
        let b = t.insert(a, b"b c", 3, 3);
        assert_eq!(t.path(root), WirePath::root());
        assert_eq!(t.path(a).as_bytes(), b"a");
        assert_eq!(t.path(b).as_bytes(), b"a/b c");
        assert_eq!(t.lookup(3), Some(b));
        assert_eq!(t.child(a, b"b c"), Some(b));
        assert_eq!(*t.handle(b), 3);
        assert_eq!(t.find(&WirePath::from("a/b c")), Some(b));
        assert_eq!(t.find(&WirePath::root()), Some(root));
        assert_eq!(t.find(&WirePath::from("a/x")), None);
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn relocate_relabels_the_subtree() {
        let (mut t, root) = tree();
        let a = t.insert(root, b"a", 2, 2);
        let b = t.insert(a, b"b", 3, 3);
        let c = t.insert(b, b"c", 4, 4);
        let x = t.insert(root, b"x", 5, 5);
        t.relocate(b, x, b"renamed");
        assert_eq!(t.path(c).as_bytes(), b"x/renamed/c");
        assert_eq!(t.child(a, b"b"), None);
        assert_eq!(t.child(x, b"renamed"), Some(b));
    }

    #[test]
    fn remove_subtree_returns_every_handle_and_frees_slots() {
        let (mut t, root) = tree();
        let a = t.insert(root, b"a", 2, 2);
        let b = t.insert(a, b"b", 3, 3);
        t.insert(b, b"c", 4, 4);
        t.insert(root, b"keep", 5, 5);
        let mut handles = t.remove_subtree(a);
        handles.sort();
        assert_eq!(handles, vec![2, 3, 4]);
        assert_eq!(t.len(), 2);
        assert_eq!(t.lookup(3), None);
        let d = t.insert(root, b"d", 6, 6);
        assert!(d <= 3, "freed slots are reused");
        assert_eq!(t.path(d).as_bytes(), b"d");
    }

    #[test]
    fn known_descriptor_moves_instead_of_duplicating() {
        let (mut t, root) = tree();
        let a = t.insert(root, b"a", 2, 2);
        let again = t.insert(root, b"b", 2, 2);
        assert_eq!(a, again);
        assert_eq!(t.path(a).as_bytes(), b"b");
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn replacing_a_name_drops_the_stale_node() {
        let (mut t, root) = tree();
        let old = t.insert(root, b"a", 2, 2);
        t.insert(old, b"sub", 3, 3);
        let new = t.insert(root, b"a", 4, 4);
        assert_eq!(t.child(root, b"a"), Some(new));
        assert_eq!(t.lookup(3), None);
        assert_eq!(t.len(), 2);
    }
}
