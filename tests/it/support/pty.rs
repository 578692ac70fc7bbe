//! A pseudo-terminal for a child's stderr: what a person at a terminal
//! would see, escape sequences and all, read on a thread until the last
//! holder of the terminal's far end closes it.

use std::fs::File;
use std::io::Read;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use nix::pty::{openpty, Winsize};

pub struct Pty {
    seen: Arc<Mutex<Vec<u8>>>,
    reader: Option<JoinHandle<()>>,
}

impl Pty {
    /// A terminal of 120 columns; the `Stdio` is its far end, to hand to
    /// one child (as stderr). Keep no other copy of it: the reading ends
    /// when the child and its children have closed it.
    pub fn open() -> (Pty, Stdio) {
        let size = Winsize {
            ws_row: 40,
            ws_col: 120,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = openpty(Some(&size), None).expect("opening a pseudo-terminal");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let into = seen.clone();
        let mut master = File::from(pty.master);
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            // EIO once no process holds the far end any more.
            while let Ok(n @ 1..) = master.read(&mut buf) {
                into.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        (
            Pty {
                seen,
                reader: Some(reader),
            },
            Stdio::from(pty.slave),
        )
    }

    /// Everything written so far, lossily as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().unwrap()).into_owned()
    }

    /// Everything written, once every holder of the far end closed it.
    pub fn finish(mut self) -> String {
        let reader = self.reader.take().expect("finished once");
        assert!(
            super::wait_until(super::TIMEOUT, || reader.is_finished()),
            "the terminal is still open; it shows: {}",
            self.text()
        );
        reader.join().unwrap();
        self.text()
    }
}
