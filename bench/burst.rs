//! A fast writer for bench/watchd.sh: creates N empty files spread over the
//! directories `ROOT/d000 .. ROOT/d<DIRS-1>` (which must exist), each with
//! open(O_WRONLY | O_CREAT) and close, like `touch` without the timestamp
//! update, and prints on stdout the seconds it took, on the wall clock and on
//! the CPU. The CPU time (from /proc/self/schedstat) is what the watcher's
//! in-kernel cost adds to every create, without the time spent waiting for a
//! CPU on a busy machine.
//!
//! Usage: burst ROOT FILES DIRS
//! Built by the benchmark with plain `rustc -O` (no dependencies).

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let parsed = match args.as_slice() {
        [_, root, files, dirs] => files
            .parse::<usize>()
            .ok()
            .zip(dirs.parse::<usize>().ok().filter(|&d| d > 0))
            .map(|(f, d)| (PathBuf::from(root), f, d)),
        _ => None,
    };
    let Some((root, files, dirs)) = parsed else {
        eprintln!("usage: burst ROOT FILES DIRS (creates FILES empty files in ROOT/d000..)");
        return ExitCode::from(2);
    };
    let dir_paths: Vec<PathBuf> = (0..dirs).map(|d| root.join(format!("d{d:03}"))).collect();
    let mut open = OpenOptions::new();
    open.write(true).create(true);
    let cpu_before = cpu_ns();
    let started = Instant::now();
    for i in 0..files {
        // Round-robin over the directories, so every watch gets its share.
        let path = dir_paths[i % dirs].join(format!("f{i:07}"));
        if let Err(e) = open.open(&path) {
            eprintln!("burst: cannot create {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_ns()
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    match cpu {
        Some(ns) => println!("{wall:.6} {:.6}", ns as f64 / 1e9),
        None => println!("{wall:.6} nan"),
    }
    ExitCode::SUCCESS
}

/// Nanoseconds this thread has run on a CPU (the first field of schedstat).
fn cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
