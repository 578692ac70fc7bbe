//! Throw-away Unix users for tests that need a real account on the far
//! side of sshd (its own home, `~/.ssh`, uid): made with `useradd` under a
//! unique name, home in a directory the test owns, deleted on drop. Needs
//! root, as the tests run here and in CI.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::Duration;

pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

/// Runs a user-database command, retrying while another test holds the
/// lock on /etc/passwd (useradd and userdel exit 1 or 10 then).
fn run_locked(cmd: &mut Command) -> std::process::Output {
    let mut last = None;
    for _ in 0..100 {
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
        if out.status.success() {
            return out;
        }
        let err = String::from_utf8_lossy(&out.stderr);
        if !(err.contains("lock") || err.contains("try again")) {
            return out;
        }
        last = Some(out);
        thread::sleep(Duration::from_millis(50));
    }
    last.unwrap()
}

/// Deletes users left by test processes that died before their drop ran
/// (the name holds the pid of the process that made it).
fn remove_stale_users() {
    let Ok(passwd) = fs::read_to_string("/etc/passwd") else {
        return;
    };
    for name in passwd.lines().filter_map(|l| l.split(':').next()) {
        let Some(pid) = name
            .strip_prefix("spk")
            .and_then(|rest| rest.split_once('x'))
            .and_then(|(pid, n)| n.parse::<u32>().ok().and(pid.parse::<u32>().ok()))
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run_locked(Command::new("userdel").arg(name));
        }
    }
}

impl User {
    /// Makes a user whose home is `home` (created, owned by the user, 755).
    /// The password field is `*`: no password login, but not "locked", so
    /// sshd without PAM accepts its keys.
    pub fn create(home: &Path) -> User {
        assert!(
            nix::unistd::geteuid().is_root(),
            "these tests make throw-away users and need root"
        );
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        static CLEANED: std::sync::Once = std::sync::Once::new();
        CLEANED.call_once(remove_stale_users);
        let name = format!(
            "spk{}x{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let out = run_locked(
            Command::new("useradd")
                .args(["-M", "-U", "-s", "/bin/sh", "-p", "*", "-d"])
                .arg(home)
                .arg(&name),
        );
        assert!(
            out.status.success(),
            "useradd {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let entry = nix::unistd::User::from_name(&name)
            .unwrap()
            .expect("the new user exists");
        fs::create_dir_all(home).unwrap();
        nix::unistd::chown(home, Some(entry.uid), Some(entry.gid)).unwrap();
        fs::set_permissions(home, fs::Permissions::from_mode(0o755)).unwrap();
        User {
            name,
            uid: entry.uid.as_raw(),
            gid: entry.gid.as_raw(),
            home: home.to_path_buf(),
        }
    }

    /// `program` run as this user with its home as HOME and working directory.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(program);
        cmd.uid(self.uid)
            .gid(self.gid)
            .env("HOME", &self.home)
            .env("USER", &self.name)
            .env("LOGNAME", &self.name)
            .env_remove("SSH_AUTH_SOCK")
            .current_dir(&self.home);
        cmd
    }

    /// Gives `path` (and everything below) to this user.
    pub fn own(&self, path: &Path) {
        let status = Command::new("chown")
            .arg("-R")
            .arg(format!("{}:{}", self.uid, self.gid))
            .arg(path)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for User {
    fn drop(&mut self) {
        let _ = run_locked(Command::new("userdel").arg(&self.name));
    }
}
