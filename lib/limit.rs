//! `--max-delete`, one type for pushd and bisync: how many entries one sync
//! may delete, as a count (`500`) or a percentage (`50%`) of the entries
//! there are. Each program keeps its documented rule through the `floor` it
//! passes: pushd applies a percentage only past a few deletes, bisync from
//! the first.

/// `--max-delete`: how many deletions one batch or sync may make.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MaxDelete {
    Count(u64),
    Percent(f64),
}

impl MaxDelete {
    pub fn parse(text: &str) -> Result<MaxDelete, String> {
        let text = text.trim();
        if let Some(p) = text.strip_suffix('%') {
            match p.trim().parse::<f64>() {
                Ok(v) if (0.0..=100.0).contains(&v) => Ok(MaxDelete::Percent(v)),
                _ => Err(format!("{text:?} is not a percentage from 0% to 100%")),
            }
        } else {
            text.parse::<u64>()
                .map(MaxDelete::Count)
                .map_err(|_| format!("{text:?} is neither a count (500) nor a percentage (50%)"))
        }
    }

    /// True when deleting `deletes` of `total` entries is too many. A
    /// percentage needs a known, non-empty total and applies only once more
    /// than `floor` entries would go (pushd's floor is
    /// [`PERCENT_FLOOR`](crate::pushd::apply::PERCENT_FLOOR); bisync has
    /// none and passes 0).
    pub fn exceeded(self, deletes: u64, total: Option<u64>, floor: u64) -> bool {
        match self {
            MaxDelete::Count(n) => deletes > n,
            MaxDelete::Percent(p) => {
                let Some(total) = total.filter(|&t| t > 0) else {
                    return false;
                };
                deletes > floor && (deletes as f64) > (total as f64) * p / 100.0
            }
        }
    }
}

impl Default for MaxDelete {
    fn default() -> Self {
        MaxDelete::Percent(50.0)
    }
}

impl std::fmt::Display for MaxDelete {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MaxDelete::Count(n) => write!(f, "{n}"),
            MaxDelete::Percent(p) => write!(f, "{p}%"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_delete_parsing_and_limits() {
        assert_eq!(MaxDelete::parse("50%").unwrap(), MaxDelete::Percent(50.0));
        assert_eq!(MaxDelete::parse("500").unwrap(), MaxDelete::Count(500));
        assert!(MaxDelete::parse("150%").is_err());
        assert!(MaxDelete::parse("lots").is_err());
        let half = MaxDelete::Percent(50.0);
        assert!(!half.exceeded(1, Some(1), 10), "below the floor");
        assert!(half.exceeded(60, Some(100), 10));
        assert!(!half.exceeded(40, Some(100), 10));
        assert!(!half.exceeded(60, None, 10));
        assert!(MaxDelete::Count(3).exceeded(4, None, 10));
        assert!(!MaxDelete::Count(3).exceeded(3, None, 10));
    }

    #[test]
    fn without_a_floor_a_percentage_counts_from_the_first_delete() {
        // bisync's use: 1 of 1 is over 50%, 5 of 10 is not.
        let half = MaxDelete::Percent(50.0);
        assert!(half.exceeded(1, Some(1), 0));
        assert!(!half.exceeded(5, Some(10), 0));
        assert!(half.exceeded(6, Some(10), 0));
    }
}
