//! A throw-away `sshd` on 127.0.0.1: random free port, host and user ed25519
//! keys in a temporary directory, killed on drop. It can be stopped and
//! started again on the same port (a target that goes away and comes back).
//! Never port 22, never the user's `~/.ssh`.

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;

use super::{tempdir, TIMEOUT};

pub struct Sshd {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    /// Logins accepted since the start, across restarts (sshd's
    /// "Accepted publickey" lines).
    logins: Arc<AtomicUsize>,
}

impl Sshd {
    /// Starts sshd and waits until it listens. Every key the server accepts
    /// is in `authorized_keys()`; the client key is `identity()`.
    pub fn start() -> Self {
        Self::start_with_authorized(|public_key| public_key.to_string())
    }

    /// Like [`start`](Self::start), with the authorized_keys line for the
    /// client key built by `line` (e.g. `command="…",restrict ssh-ed25519 …`).
    pub fn start_with_authorized(line: impl FnOnce(&str) -> String) -> Self {
        Self::start_with(line, &[])
    }

    /// Like [`start`](Self::start), with `extra` sshd_config lines put
    /// first, where they win over the defaults below them (sshd takes the
    /// first value it reads): e.g. `StrictModes yes`, or an
    /// `AuthorizedKeysFile` that includes users' own `.ssh/authorized_keys`.
    pub fn start_with_config(extra: &[String]) -> Self {
        Self::start_with(|public_key| public_key.to_string(), extra)
    }

    fn start_with(line: impl FnOnce(&str) -> String, extra: &[String]) -> Self {
        // As root, sshd refuses to run without its privilege separation directory.
        fs::create_dir_all("/run/sshd").expect("creating /run/sshd");
        let dir = tempdir();
        let d = dir.path();
        keygen(&d.join("host_key"));
        keygen(&d.join("id_ed25519"));
        let public = fs::read_to_string(d.join("id_ed25519.pub")).unwrap();
        fs::write(
            d.join("authorized_keys"),
            format!("{}\n", line(public.trim())),
        )
        .unwrap();
        let port = free_port();
        fs::write(
            d.join("sshd_config"),
            format!(
                "{extra}Port {port}\n\
                 ListenAddress 127.0.0.1\n\
                 HostKey {hk}\n\
                 AuthorizedKeysFile {ak}\n\
                 PidFile none\n\
                 StrictModes no\n\
                 UsePAM no\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 PermitRootLogin prohibit-password\n\
                 LogLevel ERROR\n\
                 SetEnv XDG_STATE_HOME={state}\n",
                state = d.join("state").display(),
                hk = d.join("host_key").display(),
                ak = d.join("authorized_keys").display(),
                extra = extra.iter().map(|l| format!("{l}\n")).collect::<String>(),
            ),
        )
        .unwrap();
        let host_public = fs::read_to_string(d.join("host_key.pub")).unwrap();
        let mut parts = host_public.split_whitespace();
        let (kind, key) = (parts.next().unwrap(), parts.next().unwrap());
        fs::write(
            d.join("known_hosts"),
            format!("[127.0.0.1]:{port} {kind} {key}\n"),
        )
        .unwrap();
        let mut sshd = Sshd {
            dir,
            port,
            child: None,
            logins: Arc::new(AtomicUsize::new(0)),
        };
        sshd.restart();
        sshd
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// How many ssh logins the server has accepted so far.
    pub fn logins(&self) -> usize {
        self.logins.load(Ordering::SeqCst)
    }

    /// The connections being served right now (each is one or two sshd
    /// processes below the listener; counted as processes).
    pub fn sessions(&self) -> usize {
        let is_sshd = |pid: &u32| {
            fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sshd")
        };
        self.child.as_ref().map_or(0, |child| {
            descendants(child.id()).into_iter().filter(is_sshd).count()
        })
    }

    /// The client's private key.
    pub fn identity(&self) -> PathBuf {
        self.dir.path().join("id_ed25519")
    }

    pub fn known_hosts(&self) -> PathBuf {
        self.dir.path().join("known_hosts")
    }

    /// The server's public host key (`ssh-ed25519 AAAA… comment`).
    pub fn host_key_pub(&self) -> PathBuf {
        self.dir.path().join("host_key.pub")
    }

    /// `XDG_STATE_HOME` of the sessions (where pushd's agent keeps its
    /// records), private to this server.
    pub fn state_home(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn authorized_keys(&self) -> PathBuf {
        self.dir.path().join("authorized_keys")
    }

    /// The `-o` options a client needs (without the `-o`): no prompts, only
    /// our key, only our known_hosts, strict host key checking.
    pub fn client_options(&self) -> Vec<String> {
        vec![
            "BatchMode=yes".into(),
            "IdentitiesOnly=yes".into(),
            format!("UserKnownHostsFile={}", self.known_hosts().display()),
            "GlobalKnownHostsFile=/dev/null".into(),
            "StrictHostKeyChecking=yes".into(),
            "ConnectTimeout=5".into(),
        ]
    }

    /// Full ssh arguments before the host: `-F /dev/null -p PORT -i KEY -o …`.
    pub fn ssh_args(&self) -> Vec<String> {
        let mut args = vec![
            "-F".into(),
            "/dev/null".into(),
            "-p".into(),
            self.port.to_string(),
            "-i".into(),
            self.identity().display().to_string(),
        ];
        for o in self.client_options() {
            args.push("-o".into());
            args.push(o);
        }
        args
    }

    /// `ssh … 127.0.0.1 REMOTE_COMMAND` ready to run.
    pub fn ssh(&self, remote_command: &str) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.args(self.ssh_args())
            .arg("127.0.0.1")
            .arg(remote_command);
        cmd
    }

    /// Kills the server and every connection it serves (each connection's
    /// sshd calls setsid(), so only a walk of the process tree finds them).
    pub fn stop(&mut self) {
        self.drop_connections();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills every connection in progress, leaving the server listening:
    /// a link that breaks in the middle of a transfer. Only the sshd
    /// processes die; the commands they ran see their input end, as after
    /// a real network failure, and clean up after themselves.
    pub fn drop_connections(&self) {
        if let Some(child) = &self.child {
            let is_sshd = |pid: &u32| {
                fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sshd")
            };
            for pid in descendants(child.id()).into_iter().filter(is_sshd) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }

    /// (Re)starts the server on the same port and waits until it listens.
    pub fn restart(&mut self) {
        self.stop();
        let mut child = Command::new("/usr/sbin/sshd")
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(self.dir.path().join("sshd_config"))
            .arg("-o")
            .arg("LogLevel=INFO")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning sshd");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let logins = Arc::clone(&self.logins);
        // Drained for sshd's whole life so it never blocks on a full pipe.
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("Accepted publickey") {
                    logins.fetch_add(1, Ordering::SeqCst);
                }
                let _ = tx.send(line);
            }
        });
        self.child = Some(child);
        let mut seen = Vec::new();
        loop {
            match rx.recv_timeout(TIMEOUT) {
                Ok(line) if line.contains("Server listening") => return,
                Ok(line) => seen.push(line),
                Err(_) => panic!("sshd did not start listening: {seen:?}"),
            }
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}

fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "syncpipe-test", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .expect("running ssh-keygen");
    assert!(status.success(), "ssh-keygen failed for {}", path.display());
}

/// A port nobody listens on right now (the kernel's pick; the small race
/// until the server binds it is acceptable on a test machine).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding a free port")
        .port()
}

/// Every process below `pid` (children, their children, ...), from /proc.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(p) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // The command name is in parentheses and may hold spaces: the
        // parent pid is the second field after the last ')'.
        let Some(after) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
            continue;
        };
        if let Some(ppid) = after.split_whitespace().nth(1).and_then(|f| f.parse().ok()) {
            parents.push((p, ppid));
        }
    }
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    found.remove(0);
    found
}
