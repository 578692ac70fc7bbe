//! A hash table keyed by path bytes for the fold's big sets (the index of
//! pending paths, batchd's created paths): one cache line per look-up, and a
//! line that can be fetched ahead of time.
//!
//! At 100,000 distinct paths the fold waits on memory: a look-up in a
//! `hashbrown` map is two misses (the control bytes, then the bucket), they
//! were nearly three quarters of batchd's fold time, and that map has no way
//! to start the fetch before the look-up. Here a slot is 32 bytes, aligned,
//! holding a short key inline with its value, probed linearly from the
//! hash's home slot (the table is at most half full): a look-up touches one
//! line, nearly always, and [`prefetch`](PathTable::prefetch) asks for that
//! line while the events before it are folded. A large table asks for huge
//! pages ([`with_huge_pages`]).

use std::hash::BuildHasher;

use foldhash::fast::RandomState;

/// Keys up to this long are kept in the slot; longer ones on the heap (a
/// look-up of them follows a pointer, as in any map).
const INLINE: usize = 22;

/// A key as a slot keeps it: 24 bytes either way.
#[derive(Clone, Debug)]
enum Stored {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<[u8]>),
}

impl Stored {
    fn new(key: &[u8]) -> Self {
        match short(key) {
            Some((len, bytes)) => Stored::Inline { len, bytes },
            None => Stored::Heap(key.into()),
        }
    }

    /// True when this is `key`, given as [`short`] gave it: short keys are
    /// compared as whole arrays (a few instructions, no call to `memcmp`).
    /// A key is inline exactly when it is short enough, so the kinds differ
    /// only for different keys.
    fn is(&self, short: &Option<Short>, key: &[u8]) -> bool {
        match (self, short) {
            (Stored::Inline { len, bytes }, Some(short)) => *len == short.0 && *bytes == short.1,
            (Stored::Heap(bytes), None) => **bytes == *key,
            _ => false,
        }
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            Stored::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Stored::Heap(bytes) => bytes,
        }
    }
}

/// A short key's length and its bytes padded with zeros, as a slot holds it.
type Short = (u8, [u8; INLINE]);

fn short(key: &[u8]) -> Option<Short> {
    (key.len() <= INLINE).then(|| {
        let mut bytes = [0; INLINE];
        bytes[..key.len()].copy_from_slice(key);
        (key.len() as u8, bytes)
    })
}

#[derive(Clone, Debug)]
struct Full<V> {
    key: Stored,
    value: V,
}

/// A slot on its own cache line (or half of one): a look-up reads one line.
/// (A `V` over 8 bytes makes it 64; the index's `Entry` is 8.)
#[derive(Clone, Debug)]
#[repr(align(32))]
struct Slot<V>(Option<Full<V>>);

/// A map from path bytes to a small `Copy` value, with linear probing and
/// deletion by shifting back (no tombstones, so the table never needs
/// cleaning).
#[derive(Clone, Debug)]
pub(crate) struct PathTable<V> {
    /// A power of two long (or empty), at most half full.
    slots: Vec<Slot<V>>,
    len: usize,
    /// Seeded per process, so crafted names cannot pile into one run of
    /// slots across runs.
    hasher: RandomState,
}

impl<V> Default for PathTable<V> {
    fn default() -> Self {
        PathTable {
            slots: Vec::new(),
            len: 0,
            hasher: RandomState::default(),
        }
    }
}

impl<V: Copy> PathTable<V> {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Empties the table, keeping its memory.
    pub(crate) fn clear(&mut self) {
        if self.len > 0 {
            self.slots.iter_mut().for_each(|slot| slot.0 = None);
            self.len = 0;
        }
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    fn home(&self, key: &[u8]) -> usize {
        self.hasher.hash_one(key) as usize & self.mask()
    }

    /// Asks the CPU for the line `key`'s look-up will read; a hint only.
    pub(crate) fn prefetch(&self, key: &[u8]) {
        if self.len > 0 {
            prefetch(&self.slots[self.home(key)]);
        }
    }

    /// The slot holding `key`, if any.
    fn find(&self, key: &[u8]) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let mask = self.mask();
        let mut i = self.home(key);
        let short = short(key);
        loop {
            match &self.slots[i].0 {
                None => return None,
                Some(full) if full.key.is(&short, key) => return Some(i),
                Some(_) => i = (i + 1) & mask,
            }
        }
    }

    pub(crate) fn get(&self, key: &[u8]) -> Option<V> {
        let i = self.find(key)?;
        self.slots[i].0.as_ref().map(|full| full.value)
    }

    pub(crate) fn get_mut(&mut self, key: &[u8]) -> Option<&mut V> {
        let i = self.find(key)?;
        self.slots[i].0.as_mut().map(|full| &mut full.value)
    }

    pub(crate) fn contains_key(&self, key: &[u8]) -> bool {
        self.find(key).is_some()
    }

    /// Sets `key`'s value, returning the one it replaced.
    pub(crate) fn insert(&mut self, key: &[u8], value: V) -> Option<V> {
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow();
        }
        let mask = self.mask();
        let mut i = self.home(key);
        let short = short(key);
        loop {
            match &mut self.slots[i].0 {
                Some(full) if full.key.is(&short, key) => {
                    return Some(std::mem::replace(&mut full.value, value));
                }
                Some(_) => i = (i + 1) & mask,
                empty @ None => {
                    *empty = Some(Full {
                        key: Stored::new(key),
                        value,
                    });
                    self.len += 1;
                    return None;
                }
            }
        }
    }

    /// Removes `key`, returning its value. The slots after it that were
    /// pushed past their home move back, so every key stays reachable from
    /// its home without crossing an empty slot.
    pub(crate) fn remove(&mut self, key: &[u8]) -> Option<V> {
        let mut hole = self.find(key)?;
        let removed = self.slots[hole].0.take().map(|full| full.value);
        self.len -= 1;
        let mask = self.mask();
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let Some(full) = &self.slots[j].0 else {
                return removed;
            };
            let home = self.home(full.key.as_slice());
            // `j`'s key may fill the hole unless its home lies after the
            // hole (cyclically, up to `j`): then it is reachable as it is.
            if (j.wrapping_sub(home) & mask) >= (j.wrapping_sub(hole) & mask) {
                self.slots[hole].0 = self.slots[j].0.take();
                hole = j;
            }
        }
    }

    fn grow(&mut self) {
        let size = (self.slots.len() * 2).max(16);
        let mut slots = with_huge_pages(size);
        slots.resize(size, Slot(None));
        let old = std::mem::replace(&mut self.slots, slots);
        let mask = self.mask();
        for full in old.into_iter().filter_map(|slot| slot.0) {
            let mut i = self.home(full.key.as_slice());
            while self.slots[i].0.is_some() {
                i = (i + 1) & mask;
            }
            self.slots[i].0 = Some(full);
        }
    }

    /// Every key with its value, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&[u8], V)> {
        self.slots
            .iter()
            .filter_map(|slot| slot.0.as_ref())
            .map(|full| (full.key.as_slice(), full.value))
    }

    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.slots
            .iter_mut()
            .filter_map(|slot| slot.0.as_mut())
            .map(|full| &mut full.value)
    }
}

/// An empty vector with room for `capacity` items, whose memory the kernel
/// is asked to back with huge pages (2 MiB) where it can, when it is large.
/// Fill it after this call: the advice holds for pages not yet touched.
///
/// Random look-ups over many megabytes miss the TLB nearly every time, and
/// in a virtual machine each miss walks two sets of page tables: backing
/// the index with huge pages took a seventh off the fold's time at 100,000
/// paths. (Transparent huge pages are often set to `madvise`, as on Debian:
/// then nothing is huge unless asked for.)
pub(crate) fn with_huge_pages<T>(capacity: usize) -> Vec<T> {
    const HUGE: usize = 2 << 20;
    let v = Vec::with_capacity(capacity);
    let bytes = capacity.saturating_mul(std::mem::size_of::<T>());
    if bytes >= 2 * HUGE {
        let start = (v.as_ptr() as usize).next_multiple_of(HUGE);
        let end = (v.as_ptr() as usize + bytes) / HUGE * HUGE;
        if end > start {
            advise_huge(start, end - start);
        }
    }
    v
}

/// `madvise(MADV_HUGEPAGE)` on whole huge pages inside one allocation of
/// ours; a hint: a kernel that cannot (or is set never to) keeps small pages.
#[allow(unsafe_code)]
fn advise_huge(start: usize, len: usize) {
    // SAFETY: the range lies inside a live allocation of this process, and
    // MADV_HUGEPAGE changes only how the kernel backs it, never its
    // contents or who may use it.
    let _ = unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_HUGEPAGE) };
}

/// Starts loading the line holding `*at` into the caches; a hint only. (A
/// plain read would do the same but hold the CPU's reorder window until the
/// line came; the prefetch instruction retires at once.)
#[allow(unsafe_code)]
pub(crate) fn prefetch<T>(at: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: SSE is part of x86_64, so the instruction exists; a
        // prefetch reads nothing the program sees and never faults, and
        // `at` is a valid reference anyway.
        unsafe { _mm_prefetch::<_MM_HINT_T0>((at as *const T).cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[test]
    fn a_slot_is_half_a_cache_line() {
        // The index's value: a slot number and two small fields.
        assert_eq!(std::mem::size_of::<Slot<(u32, u8, bool)>>(), 32);
        assert_eq!(std::mem::size_of::<Slot<()>>(), 32);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(Vec<u8>, u32),
        Remove(Vec<u8>),
        Clear,
    }

    fn key() -> impl Strategy<Value = Vec<u8>> {
        // Few distinct keys, so the same ones come back; short and long
        // (inline and on the heap).
        // (21 to 24 bytes: either side of the inline limit.)
        (0u8..40, 0usize..36).prop_map(|(n, long)| {
            let mut k = vec![b'k', n];
            let len = match long {
                30.. => 21 + long % 4,
                26.. => 23 + long,
                _ => 2 + long % 4,
            };
            k.resize(len, b'x');
            k
        })
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (key(), any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
            4 => key().prop_map(Op::Remove),
            1 => Just(Op::Clear),
        ]
    }

    proptest! {
        #![proptest_config(crate::testconfig::proptest(256))]

        /// Whatever is inserted and removed, the table answers as a
        /// `HashMap` does.
        #[test]
        fn it_answers_as_a_hash_map(ops in prop::collection::vec(op(), 0..400)) {
            let mut table = PathTable::default();
            let mut model = HashMap::new();
            for op in ops {
                match op {
                    Op::Insert(k, v) => prop_assert_eq!(table.insert(&k, v), model.insert(k, v)),
                    Op::Remove(k) => prop_assert_eq!(table.remove(&k), model.remove(&k)),
                    Op::Clear => {
                        table.clear();
                        model.clear();
                    }
                }
                prop_assert_eq!(table.len(), model.len());
                for (k, v) in &model {
                    prop_assert_eq!(table.get(k), Some(*v));
                }
                let mut seen: Vec<(Vec<u8>, u32)> =
                    table.iter().map(|(k, v)| (k.to_vec(), v)).collect();
                seen.sort();
                let mut want: Vec<(Vec<u8>, u32)> =
                    model.iter().map(|(k, v)| (k.clone(), *v)).collect();
                want.sort();
                prop_assert_eq!(seen, want);
            }
        }
    }
}
