//! Golden wire fixtures: every `tests/fixtures/wire/*.jsonl` line parses and
//! re-serialises to exactly itself; every line of an `invalid-*.jsonl` file is
//! rejected. Files are found, not listed, so a new fixture is a new test case.

use std::fs;
use std::path::PathBuf;

use syncpipe::wire::event::Record;

fn fixtures() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/wire");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "fixtures missing in {}", dir.display());
    files
}

#[test]
fn golden_lines_round_trip_exactly() {
    let mut checked = 0;
    for file in fixtures() {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let text = fs::read(&file).unwrap();
        for (i, line) in text.split(|&b| b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            let parsed = Record::parse(line);
            if name.starts_with("invalid-") {
                assert!(parsed.is_err(), "{name}:{} parsed but must not", i + 1);
            } else {
                let rec = parsed.unwrap_or_else(|e| panic!("{name}:{}: {e}", i + 1));
                assert_eq!(
                    rec.to_line().as_bytes(),
                    line,
                    "{name}:{} does not re-serialise to itself",
                    i + 1
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} fixture lines");
}
