//! Paths on the wire: lossless for any byte string, plain for the common case.
//!
//! Linux file names are bytes, not text. A name that is valid UTF-8 travels as a
//! plain JSON string (`"a b\nc"`), so `jq -r .path` just works; any other name
//! travels as `{"bytes": "<base64>"}` (RFC 4648 standard alphabet, padded), the
//! same split ripgrep's JSON printer makes. Nothing is ever replaced by U+FFFD.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A path as it travels in the stream: relative to the stream's root (or, in a
/// header, absolute). `"."` names the root itself.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct WirePath(Vec<u8>);

impl WirePath {
    /// The root of the tree, written `"."`.
    pub fn root() -> Self {
        WirePath(b".".to_vec())
    }

    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Self {
        WirePath(bytes.into())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    pub fn as_path(&self) -> &Path {
        Path::new(OsStr::from_bytes(&self.0))
    }

    pub fn is_root(&self) -> bool {
        self.0 == b"."
    }

    /// `self` joined with one more component; the root's child `x` is `x`, not `./x`.
    pub fn join(&self, name: &[u8]) -> Self {
        if self.is_root() || self.0.is_empty() {
            return WirePath(name.to_vec());
        }
        let mut bytes = Vec::with_capacity(self.0.len() + 1 + name.len());
        bytes.extend_from_slice(&self.0);
        bytes.push(b'/');
        bytes.extend_from_slice(name);
        WirePath(bytes)
    }

    /// The parent path (`"."` for a top-level entry), or `None` for the root.
    pub fn parent(&self) -> Option<WirePath> {
        if self.is_root() {
            return None;
        }
        match self.0.iter().rposition(|&b| b == b'/') {
            Some(i) => Some(WirePath(self.0[..i].to_vec())),
            None => Some(WirePath::root()),
        }
    }

    /// True when `self` is `other` or lies below it. The root contains everything.
    pub fn starts_with(&self, other: &WirePath) -> bool {
        if other.is_root() {
            return true;
        }
        self.0.starts_with(&other.0)
            && (self.0.len() == other.0.len() || self.0[other.0.len()] == b'/')
    }

    /// Number of components; the root has depth 0.
    pub fn depth(&self) -> usize {
        if self.is_root() || self.0.is_empty() {
            0
        } else {
            1 + self.0.iter().filter(|&&b| b == b'/').count()
        }
    }
}

impl From<&Path> for WirePath {
    fn from(p: &Path) -> Self {
        WirePath(p.as_os_str().as_bytes().to_vec())
    }
}

impl From<PathBuf> for WirePath {
    fn from(p: PathBuf) -> Self {
        WirePath(p.into_os_string().into_vec())
    }
}

impl From<&str> for WirePath {
    fn from(s: &str) -> Self {
        WirePath(s.as_bytes().to_vec())
    }
}

impl From<WirePath> for PathBuf {
    fn from(p: WirePath) -> Self {
        PathBuf::from(OsString::from_vec(p.0))
    }
}

impl fmt::Debug for WirePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_path())
    }
}

/// For messages to people: lossy, never for the wire.
impl fmt::Display for WirePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_path().display())
    }
}

impl Serialize for WirePath {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(text) => s.serialize_str(text),
            Err(_) => {
                let mut map = s.serialize_map(Some(1))?;
                map.serialize_entry("bytes", &BASE64.encode(&self.0))?;
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for WirePath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(WirePathVisitor)
    }
}

struct WirePathVisitor;

impl<'de> Visitor<'de> for WirePathVisitor {
    type Value = WirePath;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(r#"a path: a string, or {"bytes": "<base64>"}"#)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<WirePath, E> {
        Ok(WirePath(v.as_bytes().to_vec()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<WirePath, E> {
        Ok(WirePath(v.into_bytes()))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<WirePath, A::Error> {
        let mut bytes = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key == "bytes" {
                let encoded: std::borrow::Cow<'de, str> = map.next_value()?;
                let decoded = BASE64
                    .decode(encoded.as_bytes())
                    .map_err(|e| de::Error::custom(format!("bad base64 in path: {e}")))?;
                bytes = Some(decoded);
            } else {
                map.next_value::<de::IgnoredAny>()?;
            }
        }
        bytes
            .map(WirePath)
            .ok_or_else(|| de::Error::missing_field("bytes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_is_a_plain_string() {
        let p = WirePath::from("a b/\n-x/$(touch pwned)");
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#""a b/\n-x/$(touch pwned)""#
        );
    }

    #[test]
    fn invalid_utf8_is_base64() {
        let p = WirePath::from_bytes(vec![b'a', 0xff, b'b']);
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(json, r#"{"bytes":"Yf9i"}"#);
        let back: WirePath = serde_json::from_str(&json).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn join_parent_and_prefix() {
        let root = WirePath::root();
        let a = root.join(b"a");
        let ab = a.join(b"b");
        assert_eq!(a.as_bytes(), b"a");
        assert_eq!(ab.as_bytes(), b"a/b");
        assert_eq!(ab.parent(), Some(a.clone()));
        assert_eq!(a.parent(), Some(root.clone()));
        assert_eq!(root.parent(), None);
        assert!(ab.starts_with(&a));
        assert!(ab.starts_with(&root));
        assert!(!WirePath::from("ab").starts_with(&a));
        assert_eq!(ab.depth(), 2);
        assert_eq!(root.depth(), 0);
    }

    #[test]
    fn rejects_garbage() {
        assert!(serde_json::from_str::<WirePath>("12").is_err());
        assert!(serde_json::from_str::<WirePath>(r#"{"bytes":"!!"}"#).is_err());
        assert!(serde_json::from_str::<WirePath>(r#"{"text":"a"}"#).is_err());
    }
}
