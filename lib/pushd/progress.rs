//! How far a full sync has got, from rsync's `--info=progress2` lines on
//! its stdout (`  400000   6%   3.24MB/s   0:00:00 (xfr#2, to-chk=28/31)`,
//! separated by carriage returns), for `STATUS=` and the status file.

use crate::health::target::Progress;

/// Reads one progress2 segment; `None` for anything else (file names,
/// `--stats` lines).
pub fn parse(segment: &str) -> Option<Progress> {
    let mut words = segment.split_whitespace();
    let bytes: u64 = words.next()?.replace(',', "").parse().ok()?;
    let percent: u8 = words.next()?.strip_suffix('%')?.parse().ok()?;
    let rate = words.next().and_then(rate);
    let files = segment
        .split("xfr#")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    Some(Progress {
        files,
        bytes,
        percent: Some(percent.min(100)),
        rate,
    })
}

/// `3.24MB/s` → bytes per second (rsync's units are powers of 1024).
fn rate(word: &str) -> Option<f64> {
    let word = word.strip_suffix("/s")?;
    let split = word.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = word.split_at(split);
    let number: f64 = number.replace(',', "").parse().ok()?;
    let scale = match unit {
        "B" => 1.0,
        "kB" | "KB" => 1024.0,
        "MB" => 1024.0 * 1024.0,
        "GB" => 1024.0 * 1024.0 * 1024.0,
        "TB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some(number * scale)
}

/// rsync's stdout without the progress segments: each line keeps only
/// what follows its last carriage return, so `--stats` and `--info=name1`
/// lines read as they would without progress.
pub fn without_progress(out: &[u8]) -> Vec<u8> {
    let mut clean = Vec::with_capacity(out.len());
    for line in out.split_inclusive(|&b| b == b'\n') {
        let start = line.iter().rposition(|&b| b == b'\r').map_or(0, |i| i + 1);
        clean.extend_from_slice(&line[start..]);
    }
    clean
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress2_segments() {
        let p = parse("        400000   6%    3.24MB/s    0:00:00 (xfr#2, to-chk=28/31)").unwrap();
        assert_eq!(p.files, 2);
        assert_eq!(p.bytes, 400_000);
        assert_eq!(p.percent, Some(6));
        assert_eq!(p.rate, Some(3.24 * 1024.0 * 1024.0));
        let p = parse("      32,768   0%    0.00kB/s    0:00:00  ").unwrap();
        assert_eq!((p.files, p.bytes, p.rate), (0, 32_768, Some(0.0)));
        assert!(parse("Number of files: 31 (reg: 30, dir: 1)").is_none());
        assert!(parse("").is_none());
        assert!(parse("created directory x").is_none());
    }

    #[test]
    fn stats_survive_the_progress() {
        let out = b"\r   0   0%  0.00kB/s  0:00:00\r  10 100%  1.00kB/s  0:00:00 (xfr#1, to-chk=0/2)\n\nNumber of files: 2\ncreated directory d\n";
        assert_eq!(
            without_progress(out),
            b"  10 100%  1.00kB/s  0:00:00 (xfr#1, to-chk=0/2)\n\nNumber of files: 2\ncreated directory d\n"
        );
    }
}
