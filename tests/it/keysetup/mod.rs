//! keysetup against a real sshd on 127.0.0.1 with StrictModes on, logging
//! in as throw-away users whose homes live in a directory the test owns.
//! The local side is a throw-away HOME (or a throw-away user); nobody's
//! real ~/.ssh is read or written.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::support::bin;
use crate::support::sshd::Sshd;
use crate::support::users::User;

mod check;
mod mutual;

/// A remote account: a throw-away user behind its own sshd. The sshd also
/// accepts an "admin" key from a root-owned file, the login that works
/// before keysetup runs (as an existing key or a password would).
pub(super) struct Remote {
    // Dropped in this order: the server, then the user, then the files.
    pub(super) sshd: Sshd,
    pub(super) user: User,
    pub(super) admin_key: PathBuf,
    pub(super) dir: tempfile::TempDir,
}

/// A directory whose every parent passes sshd's StrictModes (owned by root,
/// nobody else may write) and lets the throw-away users through (o+x):
/// cargo's target directory when its path qualifies (not under /tmp, not
/// under a 700 /root), else a directory under /run.
pub(super) fn strict_dir() -> tempfile::TempDir {
    let qualifies = |dir: &Path| {
        dir.ancestors().all(|a| {
            fs::metadata(a).is_ok_and(|m| {
                m.uid() == 0
                    && m.permissions().mode() & 0o022 == 0
                    && m.permissions().mode() & 0o001 != 0
            })
        })
    };
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let base = if qualifies(target) {
        target.to_path_buf()
    } else {
        let run = PathBuf::from("/run/syncpipe-tests");
        fs::create_dir_all(&run).unwrap();
        fs::set_permissions(&run, fs::Permissions::from_mode(0o755)).unwrap();
        assert!(
            qualifies(&run),
            "no directory passes sshd's StrictModes here"
        );
        run
    };
    let dir = tempfile::Builder::new()
        .prefix("keysetup-")
        .tempdir_in(base)
        .unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

pub(super) fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "admin", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
}

impl Remote {
    pub(super) fn new() -> Remote {
        let dir = strict_dir();
        let admin_key = dir.path().join("admin");
        keygen(&admin_key);
        let admin_keys = dir.path().join("admin_keys");
        fs::copy(dir.path().join("admin.pub"), &admin_keys).unwrap();
        fs::set_permissions(&admin_keys, fs::Permissions::from_mode(0o644)).unwrap();
        let user = User::create(&dir.path().join("remote-home"));
        let sshd = Sshd::start_with_config(&sshd_lines(&admin_keys));
        Remote {
            dir,
            user,
            admin_key,
            sshd,
        }
    }

    pub(super) fn dest(&self) -> String {
        format!("{}@127.0.0.1", self.user.name)
    }

    pub(super) fn port(&self) -> String {
        self.sshd.port().to_string()
    }

    pub(super) fn ssh_dir(&self) -> PathBuf {
        self.user.home.join(".ssh")
    }

    pub(super) fn authorized_keys(&self) -> PathBuf {
        self.ssh_dir().join("authorized_keys")
    }

    /// Seeds the remote authorized_keys with `bytes` (owned by the user).
    pub(super) fn seed(&self, bytes: &[u8], mode: u32) {
        fs::create_dir_all(self.ssh_dir()).unwrap();
        fs::write(self.authorized_keys(), bytes).unwrap();
        fs::set_permissions(self.authorized_keys(), fs::Permissions::from_mode(mode)).unwrap();
        fs::set_permissions(self.ssh_dir(), fs::Permissions::from_mode(0o700)).unwrap();
        self.user.own(&self.ssh_dir());
    }
}

pub(super) fn sshd_lines(admin_keys: &Path) -> Vec<String> {
    vec![
        format!(
            "AuthorizedKeysFile {} .ssh/authorized_keys",
            admin_keys.display()
        ),
        "StrictModes yes".into(),
    ]
}

/// The local side: a throw-away HOME for keysetup run as root.
pub(super) struct Local {
    dir: tempfile::TempDir,
}

impl Local {
    pub(super) fn new() -> Local {
        Local { dir: strict_dir() }
    }

    pub(super) fn home(&self) -> &Path {
        self.dir.path()
    }

    pub(super) fn key(&self) -> PathBuf {
        self.home().join(".ssh/id_syncpipe_ed25519")
    }

    pub(super) fn known_hosts(&self) -> PathBuf {
        self.home().join(".ssh/known_hosts")
    }

    pub(super) fn keysetup(&self, args: &[&str]) -> Output {
        let t0 = std::time::Instant::now();
        let out = Command::new(bin("keysetup"))
            .args(args)
            .env("HOME", self.home())
            .env_remove("SSH_AUTH_SOCK")
            .env("NOTIFY_SOCKET", "/nonexistent/notify")
            .current_dir(self.home())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        eprintln!(
            "keysetup {args:?} -> {:?} in {:?}\nstdout:\n{}stderr:\n{}",
            out.status.code(),
            t0.elapsed(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// `keysetup --accept-new --login-key ADMIN -p PORT user@127.0.0.1 EXTRA…`.
    pub(super) fn setup(&self, remote: &Remote, extra: &[&str]) -> Output {
        let admin = remote.admin_key.display().to_string();
        let port = remote.port();
        let dest = remote.dest();
        let mut args = vec!["--accept-new", "--login-key", &admin, "-p", &port];
        args.extend_from_slice(extra);
        args.push(&dest);
        self.keysetup(&args)
    }

    /// `ssh` with the kit's key alone against `remote`.
    pub(super) fn ssh(&self, remote: &Remote, command: &str) -> Output {
        Command::new("ssh")
            .args(["-F", "/dev/null", "-p", &remote.port(), "-i"])
            .arg(self.key())
            .arg("-o")
            .arg(format!(
                "UserKnownHostsFile={}",
                self.known_hosts().display()
            ))
            .args([
                "-o",
                "BatchMode=yes",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "StrictHostKeyChecking=yes",
            ])
            .arg(remote.dest())
            .arg(command)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
}

pub(super) fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub(super) fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(super) fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
}

pub(super) fn public_line(key: &Path) -> String {
    let mut pub_path = key.as_os_str().to_os_string();
    pub_path.push(".pub");
    fs::read_to_string(pub_path).unwrap().trim().to_string()
}

/// What a hand-kept authorized_keys holds: comments, blank lines, CRLF,
/// options, and no final newline.
pub(super) const MESSY: &[u8] = b"# hand-kept\r\n\n\
no-pty,environment=\"A=b c\" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB bob\n\
\tssh-rsa AAAAB3NzaC1yc2E carol";

#[test]
fn first_install_then_nothing_changes() {
    let remote = Remote::new();
    let local = Local::new();
    remote.seed(MESSY, 0o644);

    let out = local.setup(&remote, &[]);
    assert!(out.status.success());
    let err = stderr(&out);
    assert!(err.contains("made a new key"), "{err}");
    assert!(
        err.contains("recorded the host key of [127.0.0.1]"),
        "{err}"
    );
    assert!(err.contains("added the key"), "{err}");
    // Says which key logged in.
    assert!(
        err.contains(&format!(
            "logs in without a password, with key {}",
            local.key().display()
        )),
        "{err}"
    );
    assert!(!err.contains("NOTIFY"), "{err}");

    // The old bytes are all there, the new line after them; modes fixed; backup kept.
    let ak = fs::read(remote.authorized_keys()).unwrap();
    let mut expected = MESSY.to_vec();
    expected.extend_from_slice(format!("\n{}\n", public_line(&local.key())).as_bytes());
    assert_eq!(
        String::from_utf8_lossy(&ak),
        String::from_utf8_lossy(&expected)
    );
    assert_eq!(mode(&remote.authorized_keys()), 0o600);
    assert_eq!(mode(&remote.ssh_dir()), 0o700);
    assert_eq!(
        fs::read(remote.ssh_dir().join("authorized_keys.bak")).unwrap(),
        MESSY
    );
    assert_eq!(
        fs::metadata(remote.authorized_keys()).unwrap().uid(),
        remote.user.uid
    );
    assert!(public_line(&local.key()).contains(" syncpipe:root@"));
    assert_eq!(mode(&local.key()), 0o600);
    assert_eq!(mode(&local.home().join(".ssh")), 0o700);

    // The key logs in by itself.
    let login = local.ssh(&remote, "id -un");
    assert!(login.status.success(), "{}", stderr(&login));
    assert_eq!(stdout(&login).trim(), remote.user.name);

    // Again, without the admin key or --accept-new: nothing changes.
    let files = [
        remote.authorized_keys(),
        remote.ssh_dir().join("authorized_keys.bak"),
        local.key(),
        local.known_hosts(),
    ];
    let before: Vec<Vec<u8>> = files.iter().map(|f| fs::read(f).unwrap()).collect();
    let dest = remote.dest();
    let again = local.keysetup(&["-p", &remote.port(), &dest]);
    assert!(again.status.success());
    assert!(stderr(&again).contains("already in"), "{}", stderr(&again));
    let after: Vec<Vec<u8>> = files.iter().map(|f| fs::read(f).unwrap()).collect();
    assert_eq!(before, after);
}

#[test]
fn restricted_key_pushes_into_its_directory_only() {
    let remote = Remote::new();
    let local = Local::new();
    let dst = remote.dir.path().join("dst");
    fs::create_dir(&dst).unwrap();
    remote.user.own(&dst);
    let only = format!("rsync-wo:{}", dst.display());

    let out = local.setup(&remote, &["--only", &only, "--from", "127.0.0.1"]);
    assert!(out.status.success());
    assert!(
        stderr(&out).contains("may only run: /usr/bin/rrsync -wo"),
        "{}",
        stderr(&out)
    );
    let ak = fs::read_to_string(remote.authorized_keys()).unwrap();
    assert_eq!(
        ak,
        format!(
            "command=\"/usr/bin/rrsync -wo {}\",restrict,from=\"127.0.0.1\" {}\n",
            dst.display(),
            public_line(&local.key())
        )
    );

    // No shell: the forced command runs instead and refuses.
    let shell = local.ssh(&remote, "touch /tmp/pwned-keysetup; echo SHELL-OK");
    assert!(!shell.status.success());
    assert!(!stdout(&shell).contains("SHELL-OK"));

    let e = format!(
        "ssh -F /dev/null -p {} -i {} -o UserKnownHostsFile={} -o BatchMode=yes -o IdentitiesOnly=yes",
        remote.port(),
        local.key().display(),
        local.known_hosts().display()
    );
    let src = local.home().join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("sub/file"), b"data").unwrap();
    let rsync = |args: &[String]| {
        Command::new("rsync")
            .args(["-a", "-e", &e])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    // A push into the allowed directory works...
    let push = rsync(&[
        format!("{}/", src.display()),
        format!("{}:/", remote.dest()),
    ]);
    assert!(push.status.success(), "{}", stderr(&push));
    assert_eq!(fs::read(dst.join("sub/file")).unwrap(), b"data");
    // ...an absolute path lands inside it too, not at that path...
    let abs = rsync(&[
        format!("{}/", src.display()),
        format!("{}:/etc", remote.dest()),
    ]);
    assert!(abs.status.success(), "{}", stderr(&abs));
    assert!(dst.join("etc/sub/file").exists());
    assert!(!Path::new("/etc/sub/file").exists());
    // ...climbing out is refused, and so is reading.
    let out_of_dir = rsync(&[
        format!("{}/", src.display()),
        format!("{}:../escape", remote.dest()),
    ]);
    assert!(!out_of_dir.status.success());
    assert!(!remote.dir.path().join("escape").exists());
    let pull = rsync(&[
        format!("{}:/", remote.dest()),
        local.home().join("pulled").display().to_string(),
    ]);
    assert!(!pull.status.success());
    assert!(!local.home().join("pulled/sub/file").exists());

    // A new restriction replaces the line in place (the admin key logs in:
    // the kit's key only runs rrsync now).
    let only2 = format!("rsync:{}", dst.display());
    let out = local.setup(&remote, &["--only", &only2]);
    assert!(out.status.success());
    assert!(
        stderr(&out).contains("replaced the kit's line"),
        "{}",
        stderr(&out)
    );
    let ak = fs::read_to_string(remote.authorized_keys()).unwrap();
    assert_eq!(ak.lines().count(), 1, "{ak}");
    assert!(ak.starts_with(&format!(
        "command=\"/usr/bin/rrsync {}\",restrict ",
        dst.display()
    )));
}

#[test]
fn revoke_removes_exactly_the_kits_line() {
    let remote = Remote::new();
    let local = Local::new();
    let seed = [MESSY, b"\n"].concat();
    remote.seed(&seed, 0o600);
    assert!(local.setup(&remote, &["--alias", "nas"]).status.success());
    assert!(local.ssh(&remote, "true").status.success());
    let config = fs::read_to_string(local.home().join(".ssh/config")).unwrap();
    assert!(config.contains("# syncpipe: begin nas"));

    let dest = remote.dest();
    let admin = remote.admin_key.display().to_string();
    let out = local.keysetup(&[
        "revoke",
        "-p",
        &remote.port(),
        "--login-key",
        &admin,
        "--alias",
        "nas",
        &dest,
    ]);
    assert!(out.status.success());
    assert!(stderr(&out).contains("removed 1 line"), "{}", stderr(&out));
    assert_eq!(fs::read(remote.authorized_keys()).unwrap(), seed);
    assert!(!local.ssh(&remote, "true").status.success());
    assert_eq!(
        fs::read_to_string(local.home().join(".ssh/config")).unwrap(),
        ""
    );

    // Nothing left to remove: still fine, nothing written.
    let out = local.keysetup(&["revoke", "-p", &remote.port(), "--login-key", &admin, &dest]);
    assert!(out.status.success());
    assert!(stderr(&out).contains("has no line of the kit"));
    assert_eq!(fs::read(remote.authorized_keys()).unwrap(), seed);
}

#[test]
fn alias_block_is_written_and_updated_in_place() {
    let remote = Remote::new();
    let local = Local::new();
    let ssh_dir = local.home().join(".ssh");
    fs::create_dir(&ssh_dir).unwrap();
    fs::set_permissions(&ssh_dir, fs::Permissions::from_mode(0o700)).unwrap();
    let config = ssh_dir.join("config");
    let head = "# my settings\nServerAliveInterval 60\n\n";
    let tail = "Host *\n    Port 2200\n    User nobody\n";
    fs::write(&config, format!("{head}{tail}")).unwrap();

    assert!(local.setup(&remote, &["--alias", "nas"]).status.success());
    let text = fs::read_to_string(&config).unwrap();
    assert!(text.starts_with(head) && text.ends_with(tail), "{text}");

    // ssh itself resolves the alias to this host, port, user and key, and
    // logs in with it: the block wins over `Host *` below it.
    let resolve = |cfg: &Path| {
        let out = Command::new("ssh")
            .arg("-F")
            .arg(cfg)
            .args(["-G", "nas"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let g = resolve(&config);
    assert!(g.contains("hostname 127.0.0.1\n"), "{g}");
    assert!(g.contains(&format!("port {}\n", remote.port())), "{g}");
    assert!(g.contains(&format!("user {}\n", remote.user.name)), "{g}");
    assert!(
        g.contains(&format!("identityfile {}\n", local.key().display())),
        "{g}"
    );
    assert!(g.contains("serveraliveinterval 60\n"), "{g}");
    let login = Command::new("ssh")
        .arg("-F")
        .arg(&config)
        .arg("-o")
        .arg(format!(
            "UserKnownHostsFile={}",
            local.known_hosts().display()
        ))
        .args(["-o", "BatchMode=yes", "nas", "id -un"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        stdout(&login).trim(),
        remote.user.name,
        "{}",
        stderr(&login)
    );

    // Same set-up again: the file is untouched.
    let before = fs::read(&config).unwrap();
    assert!(local.setup(&remote, &["--alias", "nas"]).status.success());
    assert_eq!(fs::read(&config).unwrap(), before);

    // The same account behind another sshd: the block is updated where it is.
    let second = Sshd::start_with_config(&sshd_lines(&remote.dir.path().join("admin_keys")));
    let port2 = second.port().to_string();
    let admin = remote.admin_key.display().to_string();
    let dest = remote.dest();
    let out = local.keysetup(&[
        "--accept-new",
        "--login-key",
        &admin,
        "-p",
        &port2,
        "--alias",
        "nas",
        &dest,
    ]);
    assert!(out.status.success());
    let updated = fs::read_to_string(&config).unwrap();
    assert_eq!(
        updated,
        String::from_utf8(before).unwrap().replace(
            &format!("Port {}\n", remote.port()),
            &format!("Port {port2}\n")
        )
    );
    assert!(resolve(&config).contains(&format!("port {port2}\n")));
}

fn fingerprint(pub_file: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(pub_file)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string()
}

#[test]
fn host_keys_are_pinned_and_changes_refused() {
    let remote = Remote::new();
    let local = Local::new();
    let admin = remote.admin_key.display().to_string();
    let port = remote.port();
    let dest = remote.dest();
    let real = fingerprint(&remote.sshd.host_key_pub());

    // Unknown and not told to trust: refused, showing what the host offers.
    let out = local.keysetup(&["--login-key", &admin, "-p", &port, &dest]);
    assert_eq!(out.status.code(), Some(7));
    assert!(stderr(&out).contains(&real), "{}", stderr(&out));
    assert!(!remote.authorized_keys().exists());

    // A pin that does not match: refused.
    let wrong = format!("SHA256:{}", "A".repeat(43));
    let out = local.keysetup(&[
        "--host-key",
        &wrong,
        "--login-key",
        &admin,
        "-p",
        &port,
        &dest,
    ]);
    assert_eq!(out.status.code(), Some(7));
    assert!(stderr(&out).contains("no host key has the fingerprint"));
    assert!(
        !local.known_hosts().exists()
            || fs::read_to_string(local.known_hosts()).unwrap().is_empty()
    );

    // The right pin: recorded, and the set-up goes through.
    let out = local.keysetup(&[
        "--host-key",
        &real,
        "--login-key",
        &admin,
        "-p",
        &port,
        &dest,
    ]);
    assert!(out.status.success());
    let known = fs::read_to_string(local.known_hosts()).unwrap();
    let host_key: Vec<String> = fs::read_to_string(remote.sshd.host_key_pub())
        .unwrap()
        .split_whitespace()
        .take(2)
        .map(str::to_string)
        .collect();
    assert_eq!(
        known,
        format!("[127.0.0.1]:{port} {} {}\n", host_key[0], host_key[1])
    );

    // Hashed the way Debian's HashKnownHosts writes it, the entry is still
    // found: nothing is added on the next run.
    let hashed = Command::new("ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(local.known_hosts())
        .output()
        .unwrap();
    assert!(hashed.status.success());
    let hashed = fs::read(local.known_hosts()).unwrap();
    assert!(hashed.starts_with(b"|1|"));
    let out = local.keysetup(&["--host-key", &real, "-p", &port, &dest]);
    assert!(out.status.success());
    assert_eq!(fs::read(local.known_hosts()).unwrap(), hashed);

    // The server's key changes (another key recorded for it): refused loudly,
    // nothing touched on either side.
    let other = local.home().join("other_host_key");
    keygen(&other);
    let other_pub = fs::read_to_string(other.with_extension("pub")).unwrap();
    let other_words: Vec<&str> = other_pub.split_whitespace().collect();
    let forged = format!("[127.0.0.1]:{port} {} {}\n", other_words[0], other_words[1]);
    fs::write(local.known_hosts(), &forged).unwrap();
    let ak_before = fs::read(remote.authorized_keys()).unwrap();
    let out = local.keysetup(&["--accept-new", "--login-key", &admin, "-p", &port, &dest]);
    assert_eq!(out.status.code(), Some(7));
    assert!(stderr(&out).contains("HAS CHANGED"), "{}", stderr(&out));
    assert!(stderr(&out).contains(&real), "{}", stderr(&out));
    assert_eq!(fs::read_to_string(local.known_hosts()).unwrap(), forged);
    assert_eq!(fs::read(remote.authorized_keys()).unwrap(), ak_before);
}

#[test]
fn authorize_on_the_target_itself() {
    let local = Local::new();
    let key = local.home().join("incoming");
    keygen(&key);
    let pub_file = local.home().join("incoming.pub");
    let ssh_dir = local.home().join(".ssh");
    fs::create_dir(&ssh_dir).unwrap();
    fs::set_permissions(&ssh_dir, fs::Permissions::from_mode(0o755)).unwrap();
    let ak = ssh_dir.join("authorized_keys");
    fs::write(&ak, MESSY).unwrap();
    fs::set_permissions(&ak, fs::Permissions::from_mode(0o644)).unwrap();

    let pub_arg = pub_file.display().to_string();
    let out = local.keysetup(&["authorize", "--key", &pub_arg, "--only", "bisync:/srv/x"]);
    assert!(out.status.success());
    let expected = format!(
        "{}\ncommand=\"bisync --serve /srv/x\",restrict {}\n",
        String::from_utf8_lossy(MESSY),
        public_line(&key)
    );
    assert_eq!(fs::read_to_string(&ak).unwrap(), expected);
    assert_eq!(
        fs::read(ssh_dir.join("authorized_keys.bak")).unwrap(),
        MESSY
    );
    assert_eq!((mode(&ak), mode(&ssh_dir)), (0o600, 0o700));

    // Twice: the same bytes.
    assert!(local
        .keysetup(&["authorize", "--key", &pub_arg, "--only", "bisync:/srv/x"])
        .status
        .success());
    assert_eq!(fs::read_to_string(&ak).unwrap(), expected);

    // A ~/.ssh that belongs to someone else is refused with the reason.
    nix::unistd::chown(&ssh_dir, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
    let out = local.keysetup(&["authorize", "--key", &pub_arg]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("belongs to uid 65534"),
        "{}",
        stderr(&out)
    );
    nix::unistd::chown(&ssh_dir, Some(nix::unistd::Uid::from_raw(0)), None).unwrap();

    // A ~/.ssh that is a symlink elsewhere is refused too, and left alone.
    let elsewhere = local.home().join("elsewhere");
    fs::rename(&ssh_dir, &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &ssh_dir).unwrap();
    let out = local.keysetup(&["authorize", "--key", &pub_arg]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("is a symlink to"), "{}", stderr(&out));
    assert_eq!(
        fs::read_to_string(elsewhere.join("authorized_keys")).unwrap(),
        expected
    );

    // Not a public key: a usage error.
    let out = local.keysetup(&["authorize", "--key", "/etc/hostname"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn remote_ssh_dir_that_is_a_symlink_is_refused() {
    let remote = Remote::new();
    let local = Local::new();
    let elsewhere = remote.dir.path().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    fs::write(elsewhere.join("authorized_keys"), b"# theirs\n").unwrap();
    remote.user.own(&elsewhere);
    std::os::unix::fs::symlink(&elsewhere, remote.ssh_dir()).unwrap();

    let out = local.setup(&remote, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("remote ~/.ssh is a symlink to"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        fs::read(elsewhere.join("authorized_keys")).unwrap(),
        b"# theirs\n"
    );
    assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 1);
}
