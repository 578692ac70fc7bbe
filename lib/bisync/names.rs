//! Names that differ only in Unicode normalization (NFC `café` from Linux,
//! NFD `café` from macOS) or in case (a replica on a case-insensitive
//! filesystem). Byte for byte they are different paths, so bisync would
//! carry both to the other side: one file twice. Here they are found
//! ([`clashes`], always reported) and, when asked (`--normalization`,
//! `--case-insensitive`), matched: a name spelt one way on A and the other
//! on B is the same file ([`Matching`]), B's spelling kept on B.
//! Pure: scans in, decisions out.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Serialize;
use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};

use super::entry::{Entry, Hash, Side};
use super::planner::Scan;
use super::replica::{Applied, Change, Fill, Replica};
use crate::wire::path::WirePath;

/// What counts as the same name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fold {
    /// Compare NFC forms (`--normalization`).
    pub normalization: bool,
    /// Compare lower-cased forms (`--case-insensitive`).
    pub case: bool,
}

impl Fold {
    pub fn any(self) -> bool {
        self.normalization || self.case
    }

    /// The name as compared; `None` when the path is not UTF-8 (such names
    /// are only ever equal byte for byte).
    /// Borrowed when folding changes nothing (most names), so a big tree
    /// costs no copy of every path.
    fn key(self, path: &WirePath) -> Option<Cow<'_, str>> {
        let text = std::str::from_utf8(path.as_bytes()).ok()?;
        let mut key = Cow::Borrowed(text);
        if self.normalization && is_nfc_quick(text.chars()) != IsNormalized::Yes {
            key = Cow::Owned(text.nfc().collect());
        }
        if self.case && key.chars().any(|c| c.to_lowercase().ne(std::iter::once(c))) {
            key = Cow::Owned(key.to_lowercase());
        }
        Some(key)
    }
}

/// Paths that are one name under a [`Fold`] but different bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Clash {
    /// `normalization` when NFC forms agree, else `case`.
    pub kind: &'static str,
    /// Every spelling, with the replica it is on.
    pub paths: Vec<(Side, WirePath)>,
    /// Whether `--normalization`/`--case-insensitive` matched them as one
    /// file; otherwise they are synced as distinct names.
    pub matched: bool,
}

type Groups<'p> = BTreeMap<Cow<'p, str>, Vec<(Side, &'p WirePath)>>;

fn groups<'p>(
    a: impl Iterator<Item = &'p WirePath>,
    b: impl Iterator<Item = &'p WirePath>,
    fold: Fold,
) -> Groups<'p> {
    let mut by_key: Groups<'p> = BTreeMap::new();
    let sides: [(Side, Box<dyn Iterator<Item = &'p WirePath>>); 2] =
        [(Side::A, Box::new(a)), (Side::B, Box::new(b))];
    for (side, paths) in sides {
        for path in paths {
            let Some(key) = fold.key(path) else { continue };
            let group = by_key.entry(key).or_default();
            if !group.iter().any(|(s, p)| *s == side && *p == path) {
                group.push((side, path));
            }
        }
    }
    by_key.retain(|_, g| {
        let first = &g[0].1;
        g.iter().any(|(_, p)| p != first)
    });
    by_key
}

fn last_component(path: &WirePath) -> &[u8] {
    let b = path.as_bytes();
    match b.iter().rposition(|&c| c == b'/') {
        Some(i) => &b[i + 1..],
        None => b,
    }
}

/// Every group of names that differ only in normalization or case, where
/// the difference is in the last component (a clashing directory is
/// reported once, not with each file below it).
pub fn clashes(a: &Scan, b: &Scan, matching: &Matching) -> Vec<Clash> {
    let all = Fold {
        normalization: true,
        case: true,
    };
    let mut out = Vec::new();
    for (_, paths) in groups(a.keys(), b.keys(), all) {
        let mut paths: Vec<(Side, WirePath)> =
            paths.into_iter().map(|(s, p)| (s, p.clone())).collect();
        let parents: Vec<_> = paths.iter().map(|(_, p)| p.parent()).collect();
        if parents.iter().any(|p| *p != parents[0]) {
            continue;
        }
        paths.sort();
        paths.dedup();
        let nfc = |p: &WirePath| {
            Fold {
                normalization: true,
                case: false,
            }
            .key(p)
            .map(Cow::into_owned)
        };
        let kind = if paths.iter().all(|(_, p)| nfc(p) == nfc(&paths[0].1)) {
            "normalization"
        } else {
            "case"
        };
        let matched = paths
            .iter()
            .all(|(s, p)| *s == Side::A || matching.to_canon.contains_key(p))
            && paths.iter().filter(|(s, _)| *s == Side::A).count() <= 1;
        let distinct: std::collections::BTreeSet<&[u8]> =
            paths.iter().map(|(_, p)| last_component(p)).collect();
        if distinct.len() > 1 {
            out.push(Clash {
                kind,
                paths,
                matched,
            });
        }
    }
    out
}

/// B's spellings matched to A's: B's scan is re-keyed to A's names, and
/// each step on B is carried out on B's own name.
#[derive(Clone, Debug, Default)]
pub struct Matching {
    /// B's spelling -> A's.
    pub to_canon: BTreeMap<WirePath, WirePath>,
    /// A's spelling -> B's.
    pub to_actual: BTreeMap<WirePath, WirePath>,
}

impl Matching {
    /// Matches a name spelt once on A and once, differently, on B (and on
    /// neither side twice) under `fold`. Names spelt twice on one side stay
    /// apart: they are reported, and a case-insensitive replica refuses
    /// the second (the step is skipped, never forced). The names of the
    /// last sync (`known`, A's spellings) count as A's too, so a file
    /// deleted on A still matches B's spelling and the delete crosses over.
    pub fn new<'k>(
        a: &Scan,
        b: &Scan,
        known: impl Iterator<Item = &'k WirePath>,
        fold: Fold,
    ) -> Matching {
        let mut m = Matching::default();
        if !fold.any() {
            return m;
        }
        let known: Vec<&WirePath> = known.filter(|p| !a.contains_key(*p)).collect();
        for (_, group) in groups(a.keys().chain(known), b.keys(), fold) {
            let on = |side: Side| group.iter().filter(move |(s, _)| *s == side);
            let (mut ga, mut gb) = (on(Side::A), on(Side::B));
            let (Some((_, pa)), None, Some((_, pb)), None) =
                (ga.next(), ga.next(), gb.next(), gb.next())
            else {
                continue;
            };
            if pa != pb && !b.contains_key(*pa) && !a.contains_key(*pb) {
                m.to_canon.insert((*pb).clone(), (*pa).clone());
                m.to_actual.insert((*pa).clone(), (*pb).clone());
            }
        }
        m
    }

    pub fn is_empty(&self) -> bool {
        self.to_canon.is_empty()
    }

    /// `path` with its longest mapped ancestor (or itself) replaced.
    fn translate(map: &BTreeMap<WirePath, WirePath>, path: &WirePath) -> WirePath {
        if map.is_empty() {
            return path.clone();
        }
        let bytes = path.as_bytes();
        let mut cut = Some(bytes.len());
        while let Some(end) = cut {
            let prefix = WirePath::from_bytes(&bytes[..end]);
            if let Some(to) = map.get(&prefix) {
                let mut out = to.as_bytes().to_vec();
                out.extend_from_slice(&bytes[end..]);
                return WirePath::from_bytes(out);
            }
            cut = bytes[..end].iter().rposition(|&c| c == b'/');
        }
        path.clone()
    }

    /// B's real name for a path of the plan.
    pub fn actual(&self, path: &WirePath) -> WirePath {
        Self::translate(&self.to_actual, path)
    }

    /// The plan's name for one of B's paths.
    pub fn canon(&self, path: &WirePath) -> WirePath {
        Self::translate(&self.to_canon, path)
    }

    /// B's scan under A's names.
    pub fn rekey(&self, scan: Scan) -> Scan {
        if self.is_empty() {
            return scan;
        }
        scan.into_iter().map(|(p, e)| (self.canon(&p), e)).collect()
    }
}

/// B seen through a [`Matching`]: paths in and out are the plan's (A's
/// spellings); on B itself every step uses B's own names.
pub struct Mapped<'r> {
    pub inner: &'r mut dyn Replica,
    pub matching: &'r Matching,
}

impl Mapped<'_> {
    fn change_on_b(&self, change: &Change) -> Change {
        let m = self.matching;
        match change.clone() {
            Change::Rename { path, to, expect } => Change::Rename {
                path: m.actual(&path),
                to: m.actual(&to),
                expect,
            },
            Change::Remove { path, expect } => Change::Remove {
                path: m.actual(&path),
                expect,
            },
            Change::Rmdir { path, expect } => Change::Rmdir {
                path: m.actual(&path),
                expect,
            },
            Change::Mkdir { path, entry } => Change::Mkdir {
                path: m.actual(&path),
                entry,
            },
            Change::SetMeta { path, src, expect } => Change::SetMeta {
                path: m.actual(&path),
                src,
                expect,
            },
        }
    }
}

impl Replica for Mapped<'_> {
    fn who(&self) -> &super::replica::Who {
        self.inner.who()
    }
    fn set_owners(&mut self, owners: bool) -> anyhow::Result<()> {
        self.inner.set_owners(owners)
    }
    fn set_backup(&mut self, backup: Option<super::backup::Backup>) -> anyhow::Result<()> {
        self.inner.set_backup(backup)
    }
    fn scan(&mut self, checksum: bool) -> anyhow::Result<Scan> {
        Ok(self.matching.rekey(self.inner.scan(checksum)?))
    }
    fn scan_paths(&mut self, paths: &[WirePath], checksum: bool) -> anyhow::Result<Scan> {
        let paths: Vec<WirePath> = paths.iter().map(|p| self.matching.actual(p)).collect();
        Ok(self
            .matching
            .rekey(self.inner.scan_paths(&paths, checksum)?))
    }
    fn hash(&mut self, paths: &[WirePath]) -> anyhow::Result<Vec<Option<Hash>>> {
        let paths: Vec<WirePath> = paths.iter().map(|p| self.matching.actual(p)).collect();
        self.inner.hash(&paths)
    }
    fn change(&mut self, change: &Change) -> anyhow::Result<Applied> {
        let change = self.change_on_b(change);
        self.inner.change(&change)
    }
    fn read(
        &mut self,
        path: &WirePath,
        expect: &Entry,
        out: &mut dyn std::io::Write,
    ) -> anyhow::Result<bool> {
        self.inner.read(&self.matching.actual(path), expect, out)
    }
    fn write(
        &mut self,
        path: &WirePath,
        src: &Entry,
        expect: Option<&Entry>,
        fill: &mut Fill<'_>,
    ) -> anyhow::Result<Applied> {
        self.inner
            .write(&self.matching.actual(path), src, expect, fill)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bisync::entry::Entry;

    fn scan(paths: &[&str]) -> Scan {
        paths
            .iter()
            .map(|p| (WirePath::from(*p), Entry::dir(0o755)))
            .collect()
    }

    const NFC: &str = "caf\u{e9}";
    const NFD: &str = "cafe\u{301}";

    #[test]
    fn clashes_are_found_once_and_matched_only_when_asked() {
        let a = scan(&[NFC, &format!("{NFC}/x"), "README", "plain"]);
        let b = scan(&[NFD, &format!("{NFD}/x"), "readme", "plain"]);
        let none = Matching::new(&a, &b, std::iter::empty(), Fold::default());
        assert!(none.is_empty());
        let found = clashes(&a, &b, &none);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].kind, "normalization");
        assert_eq!(found[1].kind, "case");
        assert!(found.iter().all(|c| !c.matched));

        let nfc = Matching::new(
            &a,
            &b,
            std::iter::empty(),
            Fold {
                normalization: true,
                case: false,
            },
        );
        assert_eq!(nfc.to_canon.len(), 2);
        let rekeyed = nfc.rekey(b.clone());
        assert!(rekeyed.contains_key(&WirePath::from(NFC)));
        assert!(rekeyed.contains_key(&WirePath::from(format!("{NFC}/x").as_str())));
        assert!(rekeyed.contains_key(&WirePath::from("readme")));
        // A file new on A, below the matched directory, lands in B's.
        assert_eq!(
            nfc.actual(&WirePath::from(format!("{NFC}/new").as_str())),
            WirePath::from(format!("{NFD}/new").as_str())
        );
        let found = clashes(&a, &b, &nfc);
        assert!(found.iter().any(|c| c.kind == "normalization" && c.matched));
        assert!(found.iter().any(|c| c.kind == "case" && !c.matched));

        let both = Matching::new(
            &a,
            &b,
            std::iter::empty(),
            Fold {
                normalization: true,
                case: true,
            },
        );
        assert_eq!(both.to_canon.len(), 3);
    }

    #[test]
    fn two_spellings_on_one_side_stay_apart() {
        let a = scan(&["Notes", "notes"]);
        let b = scan(&["NOTES"]);
        let fold = Fold {
            normalization: false,
            case: true,
        };
        let m = Matching::new(&a, &b, std::iter::empty(), fold);
        // Deleted on a since the last sync: the archive's name still
        // matches b's spelling.
        let known = [WirePath::from("Notes")];
        let gone = Matching::new(&Scan::new(), &b, known.iter(), fold);
        assert_eq!(
            gone.canon(&WirePath::from("NOTES")),
            WirePath::from("Notes")
        );
        assert!(m.is_empty());
        let found = clashes(&a, &b, &m);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].paths.len(), 3);
        assert!(!found[0].matched);
    }
}
