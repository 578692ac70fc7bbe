//! A throw-away `rsync --daemon` on 127.0.0.1: random free port, modules
//! pointing at directories the test chooses, optional user/password auth
//! with a client password file. Killed on drop; can be stopped and started
//! again on the same port.

use std::fs;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::sshd::free_port;
use super::{tempdir, wait_until, TIMEOUT};

/// One `[module]` of the daemon's configuration.
pub struct Module {
    pub name: String,
    pub path: PathBuf,
    /// `(user, password)`: the module then requires `auth users`.
    pub auth: Option<(String, String)>,
    pub read_only: bool,
}

impl Module {
    /// A writable module without authentication.
    pub fn open(name: &str, path: &Path) -> Self {
        Module {
            name: name.into(),
            path: path.into(),
            auth: None,
            read_only: false,
        }
    }

    /// A writable module that requires `user` with `password`.
    pub fn with_auth(name: &str, path: &Path, user: &str, password: &str) -> Self {
        Module {
            auth: Some((user.into(), password.into())),
            ..Module::open(name, path)
        }
    }
}

pub struct Rsyncd {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl Rsyncd {
    pub fn start(modules: &[Module]) -> Self {
        let dir = tempdir();
        let d = dir.path();
        let mut conf =
            String::from("use chroot = no\nuid = root\ngid = root\nmax connections = 0\n");
        for (i, m) in modules.iter().enumerate() {
            conf.push_str(&format!(
                "\n[{}]\n    path = {}\n    read only = {}\n",
                m.name,
                m.path.display(),
                if m.read_only { "yes" } else { "no" },
            ));
            if let Some((user, password)) = &m.auth {
                let secrets = d.join(format!("secrets{i}"));
                fs::write(&secrets, format!("{user}:{password}\n")).unwrap();
                fs::set_permissions(&secrets, fs::Permissions::from_mode(0o600)).unwrap();
                conf.push_str(&format!(
                    "    auth users = {user}\n    secrets file = {}\n",
                    secrets.display()
                ));
            }
        }
        fs::write(d.join("rsyncd.conf"), conf).unwrap();
        let mut daemon = Rsyncd {
            port: free_port(),
            dir,
            child: None,
        };
        daemon.restart();
        daemon
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `rsync://127.0.0.1:PORT/MODULE/` with `sub` appended.
    pub fn url(&self, module: &str, sub: &str) -> String {
        format!("rsync://127.0.0.1:{}/{module}/{sub}", self.port)
    }

    /// A client password file (mode 0600, as rsync demands) holding `password`.
    pub fn password_file(&self, password: &str) -> PathBuf {
        let path = self.dir.path().join("client-password");
        fs::write(&path, format!("{password}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// (Re)starts the daemon on the same port; returns once it accepts connections.
    pub fn restart(&mut self) {
        self.stop();
        let child = Command::new("rsync")
            .arg("--daemon")
            .arg("--no-detach")
            .arg("--address=127.0.0.1")
            .arg(format!("--port={}", self.port))
            .arg(format!(
                "--config={}",
                self.dir.path().join("rsyncd.conf").display()
            ))
            .arg(format!(
                "--log-file={}",
                self.dir.path().join("rsyncd.log").display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning rsync --daemon");
        self.child = Some(child);
        let port = self.port;
        assert!(
            wait_until(TIMEOUT, || TcpStream::connect(("127.0.0.1", port)).is_ok()),
            "rsync daemon did not listen on port {port}"
        );
    }

    /// The daemon's log, for messages when a test fails.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("rsyncd.log")).unwrap_or_default()
    }
}

impl Drop for Rsyncd {
    fn drop(&mut self) {
        self.stop();
    }
}
