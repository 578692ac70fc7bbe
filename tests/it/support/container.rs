//! A real systemd for tests: PID 1 of a throw-away container over the
//! host's own root (`systemd-nspawn --directory=/ --volatile=yes`), with
//! commands run inside through `nsenter`. Powered off (and if need be
//! killed) on drop; only the nspawn process started here is signalled.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How long booting may take before the container counts as unable to start.
const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

/// One booted container.
pub struct Container {
    nspawn: Child,
    init: u32,
    pub name: String,
    log: PathBuf,
    _scratch: tempfile::TempDir,
}

/// `--bind-ro` (`false`) or `--bind` (`true`) of a host path at a path inside.
pub struct Bind<'a> {
    pub host: &'a Path,
    pub inside: &'a str,
    pub writable: bool,
}

impl Container {
    /// Boots systemd with `binds`. `Err(why)` when the container cannot
    /// start here (no systemd-nspawn, not root, the boot fails): the caller
    /// skips and says so.
    pub fn boot(binds: &[Bind]) -> Result<Container, String> {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        if !nix::unistd::geteuid().is_root() {
            return Err("booting a container needs root".into());
        }
        if Command::new("systemd-nspawn")
            .arg("--version")
            .output()
            .is_err()
        {
            return Err(
                "systemd-nspawn is missing (Debian package systemd-container; `make test` installs it)"
                    .into(),
            );
        }
        let name = format!(
            "syncpipe-t{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        );
        let scratch = super::tempdir();
        let log = scratch.path().join("nspawn.log");
        let mut cmd = Command::new("systemd-nspawn");
        cmd.args([
            "--quiet",
            "--directory=/",
            "--volatile=yes",
            "--register=no",
            "--keep-unit",
            // Its own network namespace (loopback only): the host's units
            // that boot inside (ssh.socket, ...) must not bind host ports.
            "--private-network",
            "-M",
            &name,
            // A fresh machine id would start systemd-firstboot's prompt.
            "--bind-ro=/dev/null:/etc/systemd/system/systemd-firstboot.service",
            // A network of loopback only never gets "online": without this
            // network-online.target (which syncpipe@ wants) waits two minutes.
            "--bind-ro=/dev/null:/etc/systemd/system/systemd-networkd-wait-online.service",
        ]);
        for bind in binds {
            let flag = if bind.writable { "--bind" } else { "--bind-ro" };
            cmd.arg(format!("{flag}={}:{}", bind.host.display(), bind.inside));
        }
        cmd.arg("--boot")
            .stdin(Stdio::null())
            .stdout(fs::File::create(&log).expect("nspawn log"))
            .stderr(fs::File::create(scratch.path().join("nspawn.err")).expect("nspawn log"));
        let nspawn = cmd.spawn().map_err(|e| format!("systemd-nspawn: {e}"))?;
        let mut container = Container {
            nspawn,
            init: 0,
            name,
            log,
            _scratch: scratch,
        };
        let deadline = Instant::now() + BOOT_TIMEOUT;
        container.init = loop {
            if let Some(status) = container.nspawn.try_wait().ok().flatten() {
                return Err(format!(
                    "systemd-nspawn exited at once ({status}): {}",
                    container.output_tail()
                ));
            }
            if let Some(pid) = child_of(container.nspawn.id()) {
                break pid;
            }
            if Instant::now() > deadline {
                return Err(format!("no init process: {}", container.output_tail()));
            }
            thread::sleep(Duration::from_millis(20));
        };
        // Until systemd is up, systemctl has nothing to talk to.
        let up = super::wait_until(BOOT_TIMEOUT, || {
            let state = container.systemctl(&["is-system-running", "--wait"]);
            let text = String::from_utf8_lossy(&state.stdout);
            ["running", "degraded"].contains(&text.trim())
        });
        if !up {
            return Err(format!(
                "systemd did not finish booting: {}",
                container.output_tail()
            ));
        }
        Ok(container)
    }

    /// The container's PID 1 as the host sees it.
    pub fn init_pid(&self) -> u32 {
        self.init
    }

    /// A path inside the container, reachable from the host.
    pub fn host_path(&self, inside: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{inside}", self.init))
    }

    /// Runs `args` inside (all the container's namespaces), bounded in time.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new("nsenter")
            .arg(format!("--target={}", self.init))
            .args(["--all", "timeout", "60"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("nsenter (util-linux)")
    }

    pub fn systemctl(&self, args: &[&str]) -> Output {
        let mut all = vec!["systemctl", "--no-pager"];
        all.extend_from_slice(args);
        self.run(&all)
    }

    /// `systemctl ARGS`, which must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.systemctl(args);
        assert!(
            out.status.success(),
            "systemctl {args:?}: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.journal(&[])
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// One property's value (`systemctl show -p NAME --value UNIT`).
    pub fn property(&self, unit: &str, name: &str) -> String {
        self.ok(&["show", "-p", name, "--value", unit])
            .trim()
            .to_string()
    }

    /// `journalctl --no-pager -o cat ARGS`: messages only.
    pub fn journal(&self, args: &[&str]) -> String {
        let mut all = vec!["journalctl", "--no-pager", "-o", "cat"];
        all.extend_from_slice(args);
        let out = self.run(&all);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Writes a file inside the container (its own /etc, /run, ...).
    pub fn write(&self, path: &str, content: &[u8]) {
        let parent = Path::new(path).parent().unwrap().to_str().unwrap();
        fs::create_dir_all(self.host_path(parent))
            .unwrap_or_else(|e| panic!("creating {parent} inside the container: {e}"));
        fs::write(self.host_path(path), content)
            .unwrap_or_else(|e| panic!("writing {path} inside the container: {e}"));
    }

    fn output_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default()
            + &fs::read_to_string(self.log.with_extension("err")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

impl Drop for Container {
    /// SIGTERM makes nspawn shut the container down cleanly; past a bound,
    /// SIGKILL. Only the nspawn process this container started.
    fn drop(&mut self) {
        let pid = Pid::from_raw(self.nspawn.id() as i32);
        if self.nspawn.try_wait().ok().flatten().is_none() {
            let _ = kill(pid, Signal::SIGTERM);
            let stopped = super::wait_until(Duration::from_secs(30), || {
                self.nspawn.try_wait().ok().flatten().is_some()
            });
            if !stopped {
                let _ = self.nspawn.kill();
            }
        }
        let _ = self.nspawn.wait();
    }
}

/// The child of `parent` that runs systemd: the container's init (nspawn
/// has helper children only for a moment while it sets up).
fn child_of(parent: u32) -> Option<u32> {
    let children = fs::read_to_string(format!("/proc/{parent}/task/{parent}/children")).ok()?;
    children
        .split_whitespace()
        .filter_map(|pid| pid.parse().ok())
        .find(|pid: &u32| {
            fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "systemd")
        })
}
