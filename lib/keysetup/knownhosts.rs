//! Host keys: the name a host has in `known_hosts` (`[host]:port`), the
//! `SHA256:` fingerprints people pin, and the verdict on what a server
//! offers against what is recorded: known, unknown (record it on first
//! contact or when it matches the pin), changed or revoked (refuse loudly).
//! Looking entries up (hashed names included) and fingerprinting is left to
//! `ssh-keygen`; this module only decides.

use std::fmt;

use crate::keysetup::authkeys::is_key_type;

/// The host field ssh writes and looks up: `host` on port 22, else `[host]:port`.
pub fn host_pattern(host: &str, port: u16) -> String {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

/// A host's public key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostKey {
    pub key_type: String,
    pub blob: String,
}

impl fmt::Display for HostKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.key_type, self.blob)
    }
}

/// A key the server offered, with its fingerprint (from `ssh-keygen -l`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offered {
    pub key: HostKey,
    pub fingerprint: Fingerprint,
}

/// `SHA256:` and 43 characters of unpadded base64, as OpenSSH prints it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Fingerprint(String);

impl Fingerprint {
    pub fn parse(text: &str) -> Result<Fingerprint, String> {
        let body = text.trim().strip_prefix("SHA256:").ok_or_else(|| {
            format!("{text:?} is not a SHA256 fingerprint: write it as ssh-keygen -l prints it, SHA256:…")
        })?;
        let body = body.trim_end_matches('=');
        let ok = body.len() == 43
            && body
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
        if !ok {
            return Err(format!(
                "{text:?} is not a SHA256 fingerprint (expected 43 base64 characters after SHA256:)"
            ));
        }
        Ok(Fingerprint(format!("SHA256:{body}")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parses one `ssh-keygen -l` output line: `BITS SHA256:… COMMENT (TYPE)`.
pub fn parse_keygen_fingerprint(line: &str) -> Option<Fingerprint> {
    line.split_whitespace()
        .nth(1)
        .and_then(|f| Fingerprint::parse(f).ok())
}

/// A recorded line's marker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Marker {
    None,
    Revoked,
    CertAuthority,
}

/// One recorded key (a `known_hosts` line, as `ssh-keygen -F` prints it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Known {
    pub marker: Marker,
    pub key: HostKey,
}

/// Parses a known_hosts or `ssh-keyscan` line: `[@marker] HOSTS TYPE BLOB [comment]`.
/// `None` for comments, blanks and anything else.
pub fn parse_known_line(line: &str) -> Option<Known> {
    let mut words = line.split_whitespace().peekable();
    let marker = match words.peek().copied() {
        Some("@revoked") => Marker::Revoked,
        Some("@cert-authority") => Marker::CertAuthority,
        Some(w) if w.starts_with('#') => return None,
        Some(_) => Marker::None,
        None => return None,
    };
    if marker != Marker::None {
        words.next();
    }
    let _hosts = words.next()?;
    let key_type = words.next()?;
    let blob = words.next()?;
    if !is_key_type(key_type.as_bytes()) {
        return None;
    }
    Some(Known {
        marker,
        key: HostKey {
            key_type: key_type.into(),
            blob: blob.into(),
        },
    })
}

/// What the recorded keys say about the offered ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A recorded key matches: ssh will accept the server.
    Known,
    /// Nothing is recorded for the key types offered: first contact.
    Unknown,
    /// A key of a type the server offers is recorded, but a different one:
    /// the server was replaced, or someone is in the middle.
    Changed { recorded: HostKey },
    /// An offered key is marked `@revoked`.
    Revoked { key: HostKey },
}

/// Judges the offered keys against the recorded ones, as ssh would:
/// it asks for the key types it knows for this host, so a recorded key of
/// an offered type that differs is a change even when another type matches.
pub fn judge(recorded: &[Known], offered: &[HostKey]) -> Verdict {
    if let Some(k) = recorded
        .iter()
        .find(|r| r.marker == Marker::Revoked && offered.contains(&r.key))
    {
        return Verdict::Revoked { key: k.key.clone() };
    }
    let plain: Vec<&HostKey> = recorded
        .iter()
        .filter(|r| r.marker == Marker::None)
        .map(|r| &r.key)
        .collect();
    for offer in offered {
        let same_type: Vec<&&HostKey> = plain
            .iter()
            .filter(|k| k.key_type == offer.key_type)
            .collect();
        if !same_type.is_empty() && !same_type.iter().any(|k| **k == offer) {
            return Verdict::Changed {
                recorded: (*same_type[0]).clone(),
            };
        }
    }
    if offered.iter().any(|o| plain.contains(&o)) {
        Verdict::Known
    } else {
        Verdict::Unknown
    }
}

/// How the user wants an unknown host handled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trust {
    /// Refuse an unknown host (show its fingerprints).
    Strict,
    /// Record whatever an unknown host offers (`--accept-new`).
    AcceptNew,
    /// Record the offered key with this fingerprint, refuse if none has it.
    Pin(Fingerprint),
}

/// What to record for an unknown host, or why not.
pub fn choose_key(trust: &Trust, offered: &[Offered]) -> Result<Vec<HostKey>, String> {
    let listing = || {
        offered
            .iter()
            .map(|o| format!("{} {}", o.key.key_type, o.fingerprint))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match trust {
        Trust::Strict => Err(format!(
            "the host key is not known yet; it offers {}. Compare with `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on the host, then pass --host-key SHA256:… (or --accept-new to trust it on first use)",
            listing()
        )),
        Trust::AcceptNew => Ok(offered.iter().map(|o| o.key.clone()).collect()),
        Trust::Pin(fp) => offered
            .iter()
            .find(|o| &o.fingerprint == fp)
            .map(|o| vec![o.key.clone()])
            .ok_or_else(|| {
                format!(
                    "no host key has the fingerprint {fp} given with --host-key; the host offers {}",
                    listing()
                )
            }),
    }
}

/// The known_hosts line recording `key` for `pattern`.
pub fn known_line(pattern: &str, key: &HostKey) -> String {
    format!("{pattern} {} {}", key.key_type, key.blob)
}

/// `existing` with `lines` appended, each on its own line; the old bytes
/// are kept as they are (a missing final newline is added first).
pub fn append_lines(existing: &[u8], lines: &[String]) -> Vec<u8> {
    let mut out = existing.to_vec();
    if !out.is_empty() && !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    for line in lines {
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const FP: &str = "SHA256:C+8U/gWBcD2ky5ITu813a5yMBrIjbAPEYEfDH9IwrEI";

    fn key(t: &str, b: &str) -> HostKey {
        HostKey {
            key_type: t.into(),
            blob: b.into(),
        }
    }

    fn known(t: &str, b: &str) -> Known {
        Known {
            marker: Marker::None,
            key: key(t, b),
        }
    }

    #[test]
    fn patterns() {
        assert_eq!(host_pattern("example.org", 22), "example.org");
        assert_eq!(host_pattern("127.0.0.1", 2222), "[127.0.0.1]:2222");
        assert_eq!(host_pattern("::1", 2222), "[::1]:2222");
        assert_eq!(host_pattern("[::1]", 22), "::1");
    }

    #[test]
    fn fingerprints() {
        assert_eq!(Fingerprint::parse(FP).unwrap().as_str(), FP);
        assert_eq!(
            Fingerprint::parse(&format!(" {FP}= ")).unwrap().as_str(),
            FP
        );
        assert!(Fingerprint::parse("MD5:aa:bb").is_err());
        assert!(Fingerprint::parse("SHA256:short").is_err());
        assert!(Fingerprint::parse(&FP.replace('+', "*")).is_err());
        assert_eq!(
            parse_keygen_fingerprint(&format!("256 {FP} [h]:22 (ED25519)"))
                .unwrap()
                .as_str(),
            FP
        );
        assert_eq!(parse_keygen_fingerprint("garbage"), None);
    }

    #[test]
    fn known_lines() {
        assert_eq!(
            parse_known_line("[h]:22 ssh-ed25519 AAAA"),
            Some(known("ssh-ed25519", "AAAA"))
        );
        assert_eq!(
            parse_known_line("|1|abc=|def= ssh-rsa BBBB comment")
                .unwrap()
                .key,
            key("ssh-rsa", "BBBB")
        );
        assert_eq!(
            parse_known_line("@revoked * ssh-ed25519 CCCC")
                .unwrap()
                .marker,
            Marker::Revoked
        );
        assert_eq!(parse_known_line("# Host h found: line 1"), None);
        assert_eq!(parse_known_line(""), None);
        assert_eq!(parse_known_line("h ssh-foo AAAA"), None);
    }

    #[test]
    fn verdicts() {
        let ed1 = key("ssh-ed25519", "E1");
        let ed2 = key("ssh-ed25519", "E2");
        let rsa = key("ssh-rsa", "R1");
        let offered = [ed1.clone(), rsa.clone()];
        assert_eq!(judge(&[], &offered), Verdict::Unknown);
        assert_eq!(
            judge(&[known("ssh-ed25519", "E1")], &offered),
            Verdict::Known
        );
        assert_eq!(judge(&[known("ssh-rsa", "R1")], &offered), Verdict::Known);
        // A matching rsa key does not excuse a changed ed25519 key.
        assert_eq!(
            judge(
                &[known("ssh-rsa", "R1"), known("ssh-ed25519", "E2")],
                &offered
            ),
            Verdict::Changed {
                recorded: ed2.clone()
            }
        );
        // A key of a type no longer offered is not a change, nor a match.
        assert_eq!(
            judge(&[known("ecdsa-sha2-nistp256", "X")], &offered),
            Verdict::Unknown
        );
        let revoked = Known {
            marker: Marker::Revoked,
            key: ed1.clone(),
        };
        assert_eq!(
            judge(&[revoked, known("ssh-ed25519", "E1")], &offered),
            Verdict::Revoked { key: ed1 }
        );
    }

    #[test]
    fn choosing_what_to_record() {
        let offered = vec![
            Offered {
                key: key("ssh-ed25519", "E1"),
                fingerprint: Fingerprint::parse(FP).unwrap(),
            },
            Offered {
                key: key("ssh-rsa", "R1"),
                fingerprint: Fingerprint::parse(&format!("SHA256:{}", "A".repeat(43))).unwrap(),
            },
        ];
        let strict = choose_key(&Trust::Strict, &offered).unwrap_err();
        assert!(strict.contains(FP), "{strict}");
        assert_eq!(choose_key(&Trust::AcceptNew, &offered).unwrap().len(), 2);
        let pinned = Trust::Pin(Fingerprint::parse(FP).unwrap());
        assert_eq!(
            choose_key(&pinned, &offered).unwrap(),
            vec![key("ssh-ed25519", "E1")]
        );
        let wrong = Trust::Pin(Fingerprint::parse(&format!("SHA256:{}", "B".repeat(43))).unwrap());
        assert!(choose_key(&wrong, &offered)
            .unwrap_err()
            .contains("no host key"));
    }

    #[test]
    fn appending_keeps_old_bytes() {
        let lines = vec![known_line("[h]:2", &key("ssh-ed25519", "E"))];
        assert_eq!(append_lines(b"", &lines), b"[h]:2 ssh-ed25519 E\n");
        assert_eq!(
            append_lines(b"x y z", &lines),
            b"x y z\n[h]:2 ssh-ed25519 E\n"
        );
        assert_eq!(
            append_lines(b"a\r\n", &lines),
            b"a\r\n[h]:2 ssh-ed25519 E\n"
        );
    }
}
