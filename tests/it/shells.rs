//! The `pushd` name in real shells, from a `make install DESTDIR=…` tree:
//! the pipeline pasted at an interactive bash and zsh prompt (a pty from
//! `script`) reaches the target while `pushd DIR` stays the builtin, and
//! pushd's flags complete in bash (after bash-completion's own `_cd`), zsh
//! and fish from the installed locations.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};

use crate::support::{bin, tempdir, wait_until, TIMEOUT};

/// `make install DESTDIR=TMP PREFIX=/usr/local` of this build, once per run.
fn installed() -> &'static Path {
    static TREE: OnceLock<tempfile::TempDir> = OnceLock::new();
    TREE.get_or_init(|| {
        let tree = tempdir();
        let out = Command::new("make")
            .arg("-s")
            .arg("-C")
            .arg(env!("CARGO_MANIFEST_DIR"))
            .arg("install")
            .arg(format!("DESTDIR={}", tree.path().display()))
            .arg("PREFIX=/usr/local")
            .arg(format!(
                "INSTALL_FROM={}",
                bin("pushd").parent().unwrap().display()
            ))
            .output()
            .expect("running make install");
        assert!(
            out.status.success(),
            "make install: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tree
    })
    .path()
}

fn at(rel: &str) -> PathBuf {
    installed().join(rel.trim_start_matches('/'))
}

/// An interactive shell on a pty (`script`), fed lines as if typed or
/// pasted; everything it prints is collected.
struct Prompt {
    child: Child,
    stdin: ChildStdin,
    output: Arc<Mutex<String>>,
}

impl Prompt {
    fn start(shell_command: &str, env: &[(&str, &Path)]) -> Prompt {
        let mut cmd = Command::new("script");
        cmd.args(["-q", "-e", "-c", shell_command, "/dev/null"])
            .env("TERM", "dumb")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("script from bsdutils");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let output = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&output);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Prompt {
            child,
            stdin,
            output,
        }
    }

    fn type_line(&mut self, line: &str) {
        self.stdin.write_all(line.as_bytes()).unwrap();
        self.stdin.write_all(b"\n").unwrap();
        self.stdin.flush().unwrap();
    }

    /// Waits for `needle` in the output (never in the echo of what was
    /// typed: callers build needles the shell must compute).
    fn wait_for(&self, needle: &str) {
        let found = wait_until(TIMEOUT, || self.output.lock().unwrap().contains(needle));
        assert!(
            found,
            "{needle:?} not seen; the shell printed:\n{}",
            self.output.lock().unwrap()
        );
    }
}

impl Drop for Prompt {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Pastes `watchd SRC | batchd -d 0.2 | pushd DST` at `prompt`, sees the
/// start-up sync and a later change arrive, stops it with Ctrl-C, then
/// checks that `pushd DIR` at the terminal is still the builtin.
fn pipeline_converges(mut prompt: Prompt) {
    let (src, dst, other) = (tempdir(), tempdir(), tempdir());
    fs::write(src.path().join("first"), b"1").unwrap();
    let dst_dir = dst.path().join("copy");
    prompt.type_line("echo READY$((40+2))");
    prompt.wait_for("READY42");
    prompt.type_line(&format!(
        "watchd {} | batchd -d 0.2 | pushd {}",
        src.path().display(),
        dst_dir.display()
    ));
    let landed = |name: &str, content: &[u8]| {
        wait_until(TIMEOUT, || {
            fs::read(dst_dir.join(name)).is_ok_and(|c| c == content)
        })
    };
    assert!(
        landed("first", b"1"),
        "start-up sync never arrived: {}",
        prompt.output.lock().unwrap()
    );
    fs::write(src.path().join("second"), b"2").unwrap();
    assert!(
        landed("second", b"2"),
        "a change never arrived: {}",
        prompt.output.lock().unwrap()
    );
    // Ctrl-C ends the pipeline; the prompt comes back.
    prompt.stdin.write_all(b"\x03").unwrap();
    prompt.stdin.flush().unwrap();
    prompt.type_line("echo BACK$((40+3))");
    prompt.wait_for("BACK43");
    // `pushd DIR` at the terminal is the directory stack, as before.
    prompt.type_line(&format!(
        "pushd {} >/dev/null && echo \"STACK$((40+4)):$PWD\"",
        other.path().display()
    ));
    prompt.wait_for(&format!("STACK44:{}", other.path().display()));
    prompt.type_line("exit");
}

#[test]
fn the_pipeline_pasted_at_a_bash_prompt_converges() {
    let home = tempdir();
    // What Debian's stock ~/.bashrc does (it sources bash-completion, which
    // reads /etc/bash_completion.d), pointed at the installed tree.
    let rc = home.path().join("bashrc");
    fs::write(
        &rc,
        format!(
            "export PATH={bin}:$PATH\n\
             BASH_COMPLETION_COMPAT_DIR={compat}\n\
             . /usr/share/bash-completion/bash_completion\n\
             PS1='$ '\n",
            bin = at("/usr/local/bin").display(),
            compat = at("/etc/bash_completion.d").display(),
        ),
    )
    .unwrap();
    let prompt = Prompt::start(
        &format!("bash --noprofile --rcfile {} -i", rc.display()),
        &[("HOME", home.path())],
    );
    pipeline_converges(prompt);
}

#[test]
fn the_pipeline_pasted_at_a_zsh_prompt_converges() {
    let home = tempdir();
    // The line `make install` adds to /etc/zsh/zshrc, pointed at the tree.
    fs::write(
        home.path().join(".zshrc"),
        format!(
            "export PATH={bin}:$PATH\n\
             [ -r {f} ] && . {f}\n\
             PS1='$ '\n",
            bin = at("/usr/local/bin").display(),
            f = at("/usr/local/share/syncpipe/pushd-function.sh").display(),
        ),
    )
    .unwrap();
    let prompt = Prompt::start("zsh -i", &[("HOME", home.path()), ("ZDOTDIR", home.path())]);
    pipeline_converges(prompt);
}

/// A login bash without bash-completion gets the function from profile.d.
#[test]
fn a_bash_login_shell_gets_the_function_from_profile_d() {
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-i", "-c"])
        .arg(format!(
            ". {}; type -t pushd",
            at("/etc/profile.d/syncpipe-pushd.sh").display()
        ))
        .stderr(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "function");
    // dash reads /etc/profile.d too: nothing is defined there, nothing breaks.
    let out = Command::new("dash")
        .args(["-i", "-c"])
        .arg(format!(
            ". {}; command -v pushd || echo none",
            at("/etc/profile.d/syncpipe-pushd.sh").display()
        ))
        .stderr(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "none");
}

#[test]
fn bash_completes_pushd_flags_despite_bash_completions_cd() {
    let script = format!(
        "BASH_COMPLETION_COMPAT_DIR={compat}\n\
         . /usr/share/bash-completion/bash_completion\n\
         complete -p pushd\n\
         COMP_LINE='pushd --ins'; COMP_POINT=${{#COMP_LINE}}\n\
         COMP_WORDS=(pushd --ins); COMP_CWORD=1\n\
         $(complete -p pushd | sed 's/.*-F \\([^ ]*\\) .*/\\1/') pushd --ins pushd\n\
         printf 'reply:%s\\n' \"${{COMPREPLY[@]}}\"\n",
        compat = at("/etc/bash_completion.d").display()
    );
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-i", "-c", &script])
        .stderr(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("-F _pushd pushd"), "{text}");
    assert!(!text.contains("_cd"), "{text}");
    assert!(text.contains("reply:--insist"), "{text}");
}

#[test]
fn zsh_autoloads_pushds_completion_from_site_functions() {
    let script = format!(
        "fpath=({sf} $fpath); autoload -Uz compinit; compinit -u -D\n\
         print comp:$_comps[pushd]\n\
         autoload +X _pushd && whence -w _pushd\n\
         functions _pushd | grep -q -- '--insist' && print flag:yes\n",
        sf = at("/usr/local/share/zsh/site-functions").display()
    );
    let out = Command::new("zsh")
        .args(["-f", "-c", &script])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("comp:_pushd"), "{text}");
    assert!(text.contains("_pushd: function"), "{text}");
    assert!(text.contains("flag:yes"), "{text}");
}

#[test]
fn fish_completes_pushd_flags_from_etc_fish_completions() {
    let home = tempdir();
    // fish ships a pushd.fish of its own (for its pushd function) in
    // /usr/share/fish/completions; /etc/fish/completions comes before it in
    // fish's default path, as it does here.
    let script = format!(
        "set fish_complete_path {etc} $fish_complete_path; complete -C 'pushd --ins'",
        etc = at("/etc/fish/completions").display()
    );
    let out = Command::new("fish")
        .args(["-c", &script])
        .env("HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path())
        .output()
        .expect("fish (apt-get install fish)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("--insist"), "{text}");
}
