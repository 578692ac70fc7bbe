//! A real nats-server with JetStream for the relayd tests: 127.0.0.1, a
//! port it picks itself, a temporary file store, stopped by its PID.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;

use super::{tempdir, wait_until, Running, TIMEOUT};

pub struct NatsServer {
    run: Option<Running>,
    dir: tempfile::TempDir,
    port: u16,
    extra: Vec<String>,
}

impl NatsServer {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// With extra server flags (TLS).
    pub fn start_with(extra: &[String]) -> Self {
        let dir = tempdir();
        let mut server = NatsServer {
            run: None,
            dir,
            port: 0,
            extra: extra.to_vec(),
        };
        server.spawn(None);
        server
    }

    fn spawn(&mut self, port: Option<u16>) {
        let ports = self.dir.path().join("ports");
        let _ = fs::remove_dir_all(&ports);
        fs::create_dir_all(&ports).unwrap();
        let port_arg = port.map_or("-1".to_string(), |p| p.to_string());
        let run = Running::spawn(
            Command::new(program())
                .args(["-a", "127.0.0.1", "-p", &port_arg, "--ports_file_dir"])
                .arg(&ports)
                .arg("-js")
                .arg("-sd")
                .arg(self.store())
                .args(&self.extra)
                .stdout(Stdio::null())
                .stderr(fs::File::create(self.dir.path().join("server.log")).unwrap()),
        );
        let mut found = None;
        let ready = wait_until(TIMEOUT, || {
            let Some(entry) = fs::read_dir(&ports).unwrap().flatten().next() else {
                return false;
            };
            let text = fs::read_to_string(entry.path()).unwrap_or_default();
            // {"nats":["nats://127.0.0.1:PORT"],...} (tls:// with TLS)
            found = text
                .split("://127.0.0.1:")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .and_then(|p| p.parse::<u16>().ok());
            found.is_some()
        });
        assert!(ready, "nats-server did not start:\n{}", self.log());
        self.port = found.unwrap();
        self.run = Some(run);
    }

    pub fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    pub fn url(&self, stream: &str) -> String {
        format!("nats://127.0.0.1:{}/{stream}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// kill -9, and leave it down.
    pub fn kill(&mut self) {
        if let Some(mut run) = self.run.take() {
            run.signal(Signal::SIGKILL);
            run.wait_exit();
        }
    }

    /// kill -9, then start again on the same port (clients reconnect there);
    /// with `wipe` the store is emptied first (the stream is recreated).
    pub fn kill_and_restart(&mut self, wipe: bool) {
        self.kill();
        if wipe {
            fs::remove_dir_all(self.store()).unwrap();
        }
        std::thread::sleep(Duration::from_millis(200));
        self.spawn(Some(self.port));
    }
}

/// Debian installs it in /usr/sbin, which a non-root PATH may lack.
fn program() -> &'static str {
    if std::path::Path::new("/usr/sbin/nats-server").exists() {
        "/usr/sbin/nats-server"
    } else {
        "nats-server"
    }
}
