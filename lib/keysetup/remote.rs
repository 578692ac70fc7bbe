//! The remote half of keysetup: one fixed POSIX sh script run over a single
//! ssh login (so a password is asked once, as ssh-copy-id does). Every piece
//! of data (the request, the new file, host names) travels on stdin, never
//! in the command line. The script reports the facts of `~/.ssh` and sends
//! the file; the editing is done here with the same code as the local side;
//! the script then writes the result atomically with a `.bak`, or only fixes
//! modes when nothing changed.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Stdio};
use std::thread;

use anyhow::{bail, Context};

use crate::cli::exit::{coded, Code};
use crate::keysetup::ssh::{ssh_error, Endpoint, Login, Ssh};

/// The script. It holds no single quote, so it can sit inside `'…'`.
pub const SCRIPT: &str = r#"umask 077
fail() { printf "SYNCPIPE-ERR %s\n" "$*"; exit 3; }
facts() { if [ -e "$1" ] || [ -L "$1" ]; then ls -ldn -- "$1" 2>/dev/null | head -n 1; else echo -; fi; }
IFS= read -r request || fail "no request on stdin"
cd || fail "cannot enter the home directory"
set -f
set -- $request
case $2 in authorized_keys|known_hosts) name=$2 ;; *) name=authorized_keys ;; esac
f=.ssh/$name
guard() {
  if [ -L .ssh ]; then fail "~/.ssh is a symlink; refusing to edit through it"; fi
  if [ -e .ssh ] && [ ! -d .ssh ]; then fail "~/.ssh is not a directory"; fi
  if [ -e .ssh ] && [ ! -O .ssh ]; then fail "~/.ssh belongs to another user"; fi
  if [ -L "$f" ]; then fail "~/$f is a symlink; refusing to edit through it"; fi
  if [ -e "$f" ] && [ ! -O "$f" ]; then fail "~/$f belongs to another user"; fi
}
fixmodes() {
  if [ -d .ssh ]; then chmod 700 .ssh || fail "chmod 700 ~/.ssh failed"; fi
  if [ -f "$f" ]; then chmod 600 "$f" || fail "chmod 600 ~/$f failed"; fi
}
case $1 in
inspect|edit)
  printf "SYNCPIPE-KEYSETUP 1\n"
  printf "uid %s\n" "$(id -u)"
  printf "home %s\n" "$(facts "$HOME")"
  printf "sshdir %s\n" "$(facts .ssh)"
  printf "file %s\n" "$(facts "$f")"
  if [ -x /usr/bin/rrsync ]; then echo "rrsync yes"; else echo "rrsync no"; fi
  if command -v bisync >/dev/null 2>&1; then echo "bisync yes"; else echo "bisync no"; fi
  if [ -f "$f" ] && [ ! -L "$f" ] && [ -r "$f" ]; then
    printf "size %s\n" "$(wc -c < "$f" | tr -d " ")"; cat "$f"
  else echo "size -"; fi
  printf "SYNCPIPE-END\n"
  [ "$1" = edit ] || exit 0
  IFS= read -r reply || fail "no reply on stdin"
  guard
  case $reply in
  keep) ;;
  write\ *)
    n=${reply#write }
    mkdir -p .ssh || fail "cannot create ~/.ssh"
    t=.ssh/.$name.syncpipe.$$
    cat > "$t" || { rm -f "$t"; fail "cannot write ~/$t"; }
    if [ "$(wc -c < "$t" | tr -d " ")" != "$n" ]; then rm -f "$t"; fail "the new file arrived incomplete"; fi
    if [ -f "$f" ]; then
      cat "$f" > "$t.bak" && mv -f "$t.bak" "$f.bak" || { rm -f "$t" "$t.bak"; fail "cannot back up ~/$f"; }
    fi
    chmod 600 "$t" && { sync "$t" 2>/dev/null || :; } && mv -f "$t" "$f" || { rm -f "$t"; fail "cannot replace ~/$f"; } ;;
  *) fail "unknown reply" ;;
  esac
  fixmodes
  echo SYNCPIPE-OK ;;
keygen)
  guard
  mkdir -p .ssh || fail "cannot create ~/.ssh"
  fixmodes
  k=.ssh/id_syncpipe_ed25519
  if [ ! -e "$k" ]; then
    ssh-keygen -q -t ed25519 -N "" -C "syncpipe:$(id -un)@$(uname -n)" -f "$k" </dev/null >/dev/null || fail "ssh-keygen failed"
  fi
  [ -f "$k.pub" ] || ssh-keygen -y -f "$k" > "$k.pub" || fail "cannot read ~/$k.pub"
  printf "SYNCPIPE-PUBKEY %s\n" "$(head -n 1 "$k.pub")" ;;
login)
  IFS= read -r dest || fail "no destination"
  IFS= read -r port || fail "no port"
  if out=$(ssh -o BatchMode=yes -o IdentitiesOnly=yes -o StrictHostKeyChecking=yes -o ConnectTimeout=10 -i .ssh/id_syncpipe_ed25519 -p "$port" -- "$dest" true 2>&1 </dev/null); then
    echo SYNCPIPE-OK
  else
    fail "$(printf "%s" "$out" | tr "\n" " ")"
  fi ;;
*) fail "unknown request" ;;
esac
"#;

/// The command line ssh runs remotely: the fixed script under `sh`,
/// whatever the login shell is.
pub fn remote_command() -> String {
    format!("exec sh -c '{SCRIPT}' keysetup")
}

/// A file or directory as `ls -ldn` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// `d`, `-`, `l`, …
    pub kind: char,
    pub mode: u32,
    pub uid: u32,
    /// Where a symlink points.
    pub link: Option<String>,
}

/// Parses `drwx------ 2 1000 1000 4096 Jan  1 00:00 name [-> target]`.
pub fn parse_ls(line: &str) -> Option<Entry> {
    let mut words = line.split_whitespace();
    let perms: Vec<char> = words.next()?.chars().collect();
    if perms.len() < 10 {
        return None;
    }
    let _links = words.next()?;
    let uid = words.next()?.parse().ok()?;
    let mut mode = 0;
    let bits = [
        (1, 'r', 0o400),
        (2, 'w', 0o200),
        (3, 'x', 0o100),
        (4, 'r', 0o040),
        (5, 'w', 0o020),
        (6, 'x', 0o010),
        (7, 'r', 0o004),
        (8, 'w', 0o002),
        (9, 'x', 0o001),
    ];
    for (i, c, bit) in bits {
        // s/t mean "x and special"; S/T "special without x".
        let p = perms[i];
        if p == c || (c == 'x' && (p == 's' || p == 't')) {
            mode |= bit;
        }
    }
    let link = line.split_once(" -> ").map(|(_, t)| t.to_string());
    Some(Entry {
        kind: perms[0],
        mode,
        uid,
        link,
    })
}

/// What the script reported about the remote account.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    pub uid: u32,
    pub home: Option<Entry>,
    pub ssh_dir: Option<Entry>,
    pub file: Option<Entry>,
    pub rrsync: bool,
    pub bisync: bool,
    /// The file's bytes; `None` when it does not exist (or cannot be read).
    pub content: Option<Vec<u8>>,
}

impl Facts {
    /// What would make sshd (StrictModes) ignore the file, or make the kit
    /// refuse to edit it, one line each with its fix.
    pub fn problems(&self, file: &str) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(home) = &self.home {
            if home.uid != self.uid && home.uid != 0 {
                out.push(format!("remote home directory belongs to uid {} instead of {}: fix as root: chown {} ~", home.uid, self.uid, self.uid));
            }
            if home.mode & 0o022 != 0 {
                out.push(format!("remote home directory has mode {:03o}: sshd ignores keys when others may write there; run chmod go-w ~ on the remote", home.mode));
            }
        }
        if let Some(dir) = &self.ssh_dir {
            if dir.kind == 'l' {
                out.push(format!(
                    "remote ~/.ssh is a symlink to {}: replace it by the directory",
                    dir.link.as_deref().unwrap_or("?")
                ));
            } else if dir.kind != 'd' {
                out.push("remote ~/.ssh is not a directory: move it away".into());
            } else if dir.uid != self.uid {
                out.push(format!("remote ~/.ssh belongs to uid {} instead of {}: fix as root: chown -R {} ~/.ssh", dir.uid, self.uid, self.uid));
            } else if dir.mode & 0o077 != 0 {
                out.push(format!("remote ~/.ssh has mode {:03o}, should be 700: chmod 700 ~/.ssh (keysetup does it)", dir.mode));
            }
        }
        if let Some(f) = &self.file {
            if f.kind == 'l' {
                out.push(format!(
                    "remote ~/.ssh/{file} is a symlink to {}: replace it by the file",
                    f.link.as_deref().unwrap_or("?")
                ));
            } else if f.uid != self.uid {
                out.push(format!("remote ~/.ssh/{file} belongs to uid {} instead of {}: fix as root: chown {} ~/.ssh/{file}", f.uid, self.uid, self.uid));
            } else if f.mode & 0o077 != 0 {
                out.push(format!("remote ~/.ssh/{file} has mode {:03o}, should be 600: chmod 600 ~/.ssh/{file} (keysetup does it)", f.mode));
            }
        }
        out
    }

    /// Problems the kit cannot fix by itself (not mere modes).
    pub fn blockers(&self, file: &str) -> Vec<String> {
        self.problems(file)
            .into_iter()
            .filter(|p| !p.contains("(keysetup does it)"))
            .collect()
    }
}

fn entry(value: &str) -> Option<Entry> {
    if value == "-" {
        None
    } else {
        parse_ls(value)
    }
}

/// Reads the script's report up to `SYNCPIPE-END`; lines before the
/// report's start (a chatty shell rc file) are skipped.
pub fn read_facts(reader: &mut impl BufRead) -> Result<Facts, String> {
    let mut line = String::new();
    let mut skipped = Vec::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
            return Err(remote_error(&skipped));
        }
        if line.trim_end() == "SYNCPIPE-KEYSETUP 1" {
            break;
        }
        skipped.push(line.trim_end().to_string());
    }
    let mut facts = Facts::default();
    loop {
        line.clear();
        if reader.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
            return Err("the remote report ended early".into());
        }
        let text = line.trim_end_matches('\n');
        let (key, value) = text.split_once(' ').unwrap_or((text, ""));
        match key {
            "uid" => facts.uid = value.parse().map_err(|_| format!("bad uid {value:?}"))?,
            "home" => facts.home = entry(value),
            "sshdir" => facts.ssh_dir = entry(value),
            "file" => facts.file = entry(value),
            "rrsync" => facts.rrsync = value == "yes",
            "bisync" => facts.bisync = value == "yes",
            "size" => {
                if value != "-" {
                    let n: usize = value.parse().map_err(|_| format!("bad size {value:?}"))?;
                    // authorized_keys or ssh_config: a few KiB. A remote
                    // that claims more must not make us allocate it.
                    const MAX: usize = 16 << 20;
                    if n > MAX {
                        return Err(format!(
                            "the remote file is {n} bytes, more than {MAX}; not reading it"
                        ));
                    }
                    let mut content = vec![0; n];
                    reader
                        .read_exact(&mut content)
                        .map_err(|e| format!("reading the remote file: {e}"))?;
                    facts.content = Some(content);
                }
                line.clear();
                reader.read_line(&mut line).map_err(|e| e.to_string())?;
                if line != "SYNCPIPE-END\n" {
                    return Err("the remote file changed while it was read; run again".into());
                }
                return Ok(facts);
            }
            _ => {}
        }
    }
}

fn remote_error(lines: &[String]) -> String {
    lines
        .iter()
        .find_map(|l| l.strip_prefix("SYNCPIPE-ERR ").map(str::to_string))
        .unwrap_or_else(|| "the remote script did not answer".into())
}

/// What to do with the file after seeing it.
pub enum Reply {
    Keep,
    Write(Vec<u8>),
}

/// A running remote script, its stderr collected on a thread.
struct Session {
    child: Child,
    stderr: thread::JoinHandle<String>,
}

impl Session {
    fn start(ssh: &Ssh, endpoint: &Endpoint, login: &Login, request: &str) -> anyhow::Result<Self> {
        let mut child = ssh
            .command(endpoint, login, &remote_command())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running ssh")?;
        let mut err = child.stderr.take().expect("piped stderr");
        let stderr = thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        let mut session = Session { child, stderr };
        // A login that fails closes stdin early: the error comes from ssh.
        let _ = session
            .child
            .stdin
            .as_mut()
            .expect("piped stdin")
            .write_all(request.as_bytes());
        Ok(session)
    }

    /// Waits for the end; an ssh failure becomes a coded error, a failure
    /// reported by the script its message.
    fn finish(mut self, what: &str, endpoint: &Endpoint, rest: &str) -> anyhow::Result<String> {
        drop(self.child.stdin.take());
        let mut out = rest.to_string();
        if let Some(mut stdout) = self.child.stdout.take() {
            let _ = stdout.read_to_string(&mut out);
        }
        let status = self.child.wait().context("waiting for ssh")?;
        let stderr = self.stderr.join().unwrap_or_default();
        if let Some(msg) = out.lines().find_map(|l| l.strip_prefix("SYNCPIPE-ERR ")) {
            bail!("{what} on {}@{}: {msg}", endpoint.user, endpoint.hostname);
        }
        if status.code() == Some(255) || (!status.success() && !out.contains("SYNCPIPE-")) {
            let output = std::process::Output {
                status,
                stdout: Vec::new(),
                stderr: stderr.into_bytes(),
            };
            return Err(ssh_error(what, endpoint, &output));
        }
        Ok(out)
    }
}

/// Reads the remote `file` (`authorized_keys` or `known_hosts`), lets
/// `decide` choose, and writes or keeps it, fixing modes, in one login.
pub fn edit(
    ssh: &Ssh,
    endpoint: &Endpoint,
    login: &Login,
    file: &str,
    decide: impl FnOnce(&Facts) -> anyhow::Result<Reply>,
) -> anyhow::Result<Facts> {
    let what = format!("editing ~/.ssh/{file}");
    let mut session = Session::start(ssh, endpoint, login, &format!("edit {file}\n"))?;
    let mut reader = BufReader::new(session.child.stdout.take().expect("piped stdout"));
    let facts = match read_facts(&mut reader) {
        Ok(facts) => facts,
        Err(msg) => {
            let mut rest = String::new();
            let _ = reader.read_to_string(&mut rest);
            session.finish(&what, endpoint, &rest)?;
            bail!("{what} on {}@{}: {msg}", endpoint.user, endpoint.hostname);
        }
    };
    let reply = match decide(&facts) {
        Ok(reply) => reply,
        Err(e) => {
            // Tell the script to stop without touching anything.
            drop(session.child.stdin.take());
            let _ = session.child.wait();
            return Err(e);
        }
    };
    {
        let stdin = session.child.stdin.as_mut().expect("piped stdin");
        let sent = match &reply {
            Reply::Keep => stdin.write_all(b"keep\n"),
            Reply::Write(bytes) => stdin
                .write_all(format!("write {}\n", bytes.len()).as_bytes())
                .and_then(|()| stdin.write_all(bytes)),
        };
        sent.with_context(|| format!("{what}: sending to ssh"))?;
    }
    // The end of stdin is the end of the new file.
    drop(session.child.stdin.take());
    let mut rest = String::new();
    let _ = reader.read_to_string(&mut rest);
    let out = session.finish(&what, endpoint, &rest)?;
    if !out.lines().any(|l| l == "SYNCPIPE-OK") {
        bail!(
            "{what} on {}@{}: the remote script did not confirm",
            endpoint.user,
            endpoint.hostname
        );
    }
    Ok(facts)
}

/// Reads the remote facts and `file` without changing anything.
pub fn inspect(ssh: &Ssh, endpoint: &Endpoint, login: &Login, file: &str) -> anyhow::Result<Facts> {
    let what = format!("inspecting ~/.ssh/{file}");
    let mut session = Session::start(ssh, endpoint, login, &format!("inspect {file}\n"))?;
    let mut reader = BufReader::new(session.child.stdout.take().expect("piped stdout"));
    let parsed = read_facts(&mut reader);
    let mut rest = String::new();
    let _ = reader.read_to_string(&mut rest);
    session.finish(&what, endpoint, &rest)?;
    parsed
        .map_err(|msg| anyhow::anyhow!("{what} on {}@{}: {msg}", endpoint.user, endpoint.hostname))
}

/// Makes the remote account's kit key unless it has one; returns its public line.
pub fn remote_keygen(ssh: &Ssh, endpoint: &Endpoint, login: &Login) -> anyhow::Result<String> {
    let what = "making the remote key";
    let session = Session::start(ssh, endpoint, login, "keygen\n")?;
    let out = session.finish(what, endpoint, "")?;
    out.lines()
        .find_map(|l| l.strip_prefix("SYNCPIPE-PUBKEY "))
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("{what} on {}: no public key came back", endpoint.hostname))
}

/// Proves from the remote side that its kit key logs in to `back` (`user@host`) on `port`.
pub fn remote_login(
    ssh: &Ssh,
    endpoint: &Endpoint,
    login: &Login,
    back: &str,
    port: u16,
) -> anyhow::Result<()> {
    let what = format!(
        "logging in back from {} to {back} port {port}",
        endpoint.hostname
    );
    let session = Session::start(ssh, endpoint, login, &format!("login\n{back}\n{port}\n"))?;
    match session.finish(&what, endpoint, "") {
        Ok(out) if out.lines().any(|l| l == "SYNCPIPE-OK") => Ok(()),
        Ok(_) => Err(coded(Code::Auth, format!("{what}: no confirmation"))),
        Err(e) => Err(coded(Code::Auth, format!("{e:#}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_fits_in_single_quotes() {
        assert!(!SCRIPT.contains('\''));
    }

    #[test]
    fn ls_lines() {
        let e = parse_ls("drwx------ 2 1000 1000 4096 Jan  1 00:00 /home/a b").unwrap();
        assert_eq!((e.kind, e.mode, e.uid, e.link), ('d', 0o700, 1000, None));
        let e = parse_ls("lrwxrwxrwx 1 0 0 4 Nov 21 10:46 .ssh -> /etc/x").unwrap();
        assert_eq!((e.kind, e.link.as_deref()), ('l', Some("/etc/x")));
        assert_eq!(parse_ls("-rwsr-xr-T 1 5 5 0 x").unwrap().mode, 0o754);
        assert_eq!(parse_ls("garbage"), None);
    }

    #[test]
    fn reports_with_chatter_and_content() {
        let text = b"Welcome to host\nSYNCPIPE-KEYSETUP 1\nuid 1001\nhome drwxrwxr-x 3 1001 1001 0 x /h\nsshdir drwxr-xr-x 2 1001 1001 0 x .ssh\nfile -rw-rw-r-- 1 0 0 3 x f\nrrsync yes\nbisync no\nsize 3\na\nbSYNCPIPE-END\nkept";
        let mut reader = &text[..];
        let facts = read_facts(&mut reader).unwrap();
        assert_eq!(facts.uid, 1001);
        assert_eq!(facts.content.as_deref(), Some(&b"a\nb"[..]));
        assert!(facts.rrsync && !facts.bisync);
        assert_eq!(reader, b"kept");
        let problems = facts.problems("authorized_keys");
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("mode 775"));
        assert!(problems[1].contains("~/.ssh has mode 755"));
        assert!(problems[2].contains("belongs to uid 0"));
        assert_eq!(facts.blockers("authorized_keys").len(), 2);
    }

    #[test]
    fn script_errors_and_changed_files() {
        let mut reader = &b"SYNCPIPE-ERR ~/.ssh is a symlink\n"[..];
        assert_eq!(read_facts(&mut reader).unwrap_err(), "~/.ssh is a symlink");
        let mut reader = &b"SYNCPIPE-KEYSETUP 1\nuid 1\nsize 2\nabc\nSYNCPIPE-END\n"[..];
        assert!(read_facts(&mut reader).unwrap_err().contains("changed"));
        let mut reader = &b"SYNCPIPE-KEYSETUP 1\nuid 1\nsize -\nSYNCPIPE-END\n"[..];
        assert_eq!(read_facts(&mut reader).unwrap().content, None);
    }
}
