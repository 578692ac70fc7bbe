//! The tree of watched directories, keyed by watch descriptor.
//!
//! inotify reports an event as (watch descriptor, name); the path is ours to
//! know. Each node stores only its parent and its own name, so a directory
//! renamed inside the tree is one `relocate` and every watch below it answers
//! with the new path at once. Generic over the watch handle so the logic is
//! tested without a kernel.

use std::collections::HashMap;

use crate::wirepath::WirePath;

/// Index of a node. Stable while the node lives; reused after removal.
pub type NodeId = u32;

const NO_PARENT: NodeId = NodeId::MAX;

#[derive(Debug)]
struct Node<W> {
    handle: W,
    wd: i32,
    parent: NodeId,
    name: Box<[u8]>,
    children: Vec<NodeId>,
}

/// Watched directories: an arena of nodes plus a map from descriptor to node.
#[derive(Debug)]
pub struct WatchTree<W> {
    nodes: Vec<Option<Node<W>>>,
    free: Vec<NodeId>,
    by_wd: HashMap<i32, NodeId>,
    root: Option<NodeId>,
}

impl<W> Default for WatchTree<W> {
    fn default() -> Self {
        Self::new()
    }
}

impl<W> WatchTree<W> {
    pub fn new() -> Self {
        WatchTree {
            nodes: Vec::new(),
            free: Vec::new(),
            by_wd: HashMap::new(),
            root: None,
        }
    }

    /// Number of watched directories.
    pub fn len(&self) -> usize {
        self.by_wd.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_wd.is_empty()
    }

    pub fn root(&self) -> Option<NodeId> {
        self.root
    }

    pub fn is_root(&self, id: NodeId) -> bool {
        self.root == Some(id)
    }

    pub fn lookup(&self, wd: i32) -> Option<NodeId> {
        self.by_wd.get(&wd).copied()
    }

    fn node(&self, id: NodeId) -> &Node<W> {
        self.nodes[id as usize]
            .as_ref()
            .expect("node ids handed out refer to live nodes")
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
            name: Box::new([]),
            children: Vec::new(),
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
            name: name.into(),
            children: Vec::new(),
        });
        self.node_mut(parent).children.push(id);
        id
    }

    /// The parent of a node; `None` for the root.
    pub fn parent(&self, id: NodeId) -> Option<NodeId> {
        Some(self.node(id).parent).filter(|&p| p != NO_PARENT)
    }

    /// The child of `parent` named `name`, if watched.
    pub fn child(&self, parent: NodeId, name: &[u8]) -> Option<NodeId> {
        self.node(parent)
            .children
            .iter()
            .copied()
            .find(|&c| &*self.node(c).name == name)
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
                names.push(&node.name);
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
        let old_parent = self.node(id).parent;
        if old_parent != NO_PARENT {
            self.node_mut(old_parent).children.retain(|&c| c != id);
        }
        let node = self.node_mut(id);
        node.parent = new_parent;
        node.name = new_name.into();
        self.node_mut(new_parent).children.push(id);
    }

    /// Forgets a node and everything below it; returns their watch handles
    /// so the caller can remove the kernel watches (needed when the subtree
    /// moved out of the tree but still exists).
    pub fn remove_subtree(&mut self, id: NodeId) -> Vec<W> {
        let parent = self.node(id).parent;
        if parent != NO_PARENT {
            self.node_mut(parent).children.retain(|&c| c != id);
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
            stack.extend(node.children);
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
