//! A fast writer for bench/watchd.sh: creates N empty files spread over the
//! directories `ROOT/d000 .. ROOT/d<DIRS-1>` (which must exist), each with
//! open(O_WRONLY | O_CREAT) and close, like `touch` without the timestamp
//! update, and prints the seconds it took on stdout.
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
    let started = Instant::now();
    for i in 0..files {
        // Round-robin over the directories, so every watch gets its share.
        let path = dir_paths[i % dirs].join(format!("f{i:07}"));
        if let Err(e) = open.open(&path) {
            eprintln!("burst: cannot create {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    println!("{:.6}", started.elapsed().as_secs_f64());
    ExitCode::SUCCESS
}
