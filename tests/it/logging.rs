//! `--log-file` (every program, lsyncd's `logfile`): the lines written to
//! stderr are appended to the file too, each after its time; an empty value
//! is no file (a unit passes the config's LOG_FILE= as it is); a file that
//! cannot be opened stops the program at start, saying so. (Reopening a
//! rotated file: the unit test in lib/cli/log.rs.)

use std::process::{Command, Stdio};

use crate::support::{bin, tempdir};

fn run(program: &str, args: &[&std::ffi::OsStr], stdin: &[u8]) -> (Option<i32>, String) {
    let mut child = Command::new(bin(program))
        .args(args)
        .env_remove("JOURNAL_STREAM")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every line of `stderr` is a line of `file`, after a time stamp.
fn assert_logged(stderr: &str, file: &str) {
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(!lines.is_empty(), "nothing on stderr");
    for line in lines {
        assert!(
            file.lines().any(|l| l
                .split_once(' ')
                .is_some_and(|(ts, rest)| ts.ends_with('Z') && rest == line)),
            "{line:?} is not in the log file:\n{file}"
        );
    }
}

#[test]
fn every_program_appends_its_stderr_lines_to_the_log_file() {
    let dir = tempdir();
    let log = dir.path().join("sync.log");
    let flag = |v: &str| std::ffi::OsString::from(v);
    let log_arg = log.as_os_str();
    // batchd: a malformed line, then an input without a header (exit 14).
    let (code, err) = run(
        "batchd",
        &[&flag("--log-file"), log_arg, &flag("-d"), &flag("0")],
        b"not json\n",
    );
    assert_eq!(code, Some(14), "{err}");
    assert_logged(&err, &std::fs::read_to_string(&log).unwrap());
    // watchd: a missing root (exit 3), appended after batchd's lines.
    let missing = dir.path().join("no such dir");
    let (code, err2) = run(
        "watchd",
        &[&flag("--log-file"), log_arg, missing.as_os_str()],
        b"",
    );
    assert_eq!(code, Some(3), "{err2}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert_logged(&err, &text);
    assert_logged(&err2, &text);
    // pushd, spelt after the other flags (it is global).
    let (code, err3) = run(
        "pushd",
        &[
            dir.path().join("dst").as_os_str(),
            &flag("-q"),
            &flag("--log-file"),
            log_arg,
        ],
        b"",
    );
    assert_eq!(code, Some(14), "{err3}");
    assert_logged(&err3, &std::fs::read_to_string(&log).unwrap());
}

#[test]
fn an_empty_log_file_is_none_and_an_unopenable_one_stops_the_start() {
    let dir = tempdir();
    let missing = dir.path().join("no such dir");
    let (code, err) = run(
        "watchd",
        &["--log-file=".as_ref(), missing.as_os_str()],
        b"",
    );
    assert_eq!(code, Some(3), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    let bad = dir.path().join("no/such/dir/sync.log");
    let (code, err) = run("batchd", &["--log-file".as_ref(), bad.as_os_str()], b"");
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("opening the log file") && err.contains("--log-file"),
        "{err}"
    );
}
