//! When a target's next transfer may start after failures: exponential
//! backoff with jitter, as a value type that takes `now` and a seed, so its
//! bounds, growth and reset are tested without a clock or real randomness.

use std::time::{Duration, Instant};

/// When and how often failed transfers are tried again (`--retry-min`,
/// `--retry-max`, `--retry-jitter`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Retry {
    pub min: Duration,
    pub max: Duration,
    /// Fraction (0..=1) of each delay that is random, so that targets that
    /// failed together do not retry in lock step.
    pub jitter: f64,
}

/// One target's retry clock: how many attempts failed in a row, how long
/// the next failure waits, and when the next attempt may start.
#[derive(Clone, Debug)]
pub(crate) struct Backoff {
    retry: Retry,
    /// Attempts since the last success, the one under way included.
    attempt: u32,
    /// What the next failure waits (less its jitter); doubles up to `max`.
    delay: Duration,
    next_try: Instant,
    rng: SplitMix64,
}

impl Backoff {
    /// A clock that allows an attempt at `now`. `seed` picks the jitter
    /// sequence: equal seeds give equal delays.
    pub(crate) fn new(retry: Retry, seed: u64, now: Instant) -> Self {
        Backoff {
            retry,
            attempt: 0,
            delay: retry.min,
            next_try: now,
            rng: SplitMix64(seed),
        }
    }

    /// When the next attempt may start.
    pub(crate) fn next_try(&self) -> Instant {
        self.next_try
    }

    /// An attempt starts; returns its number (1 for the first since the
    /// last success), as the result record and logs say it.
    pub(crate) fn begin(&mut self) -> u32 {
        self.attempt += 1;
        self.attempt
    }

    /// The number of the attempt under way (or the last one).
    pub(crate) fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The attempt succeeded: the next one may start at once, and a later
    /// failure waits `min` again.
    pub(crate) fn succeeded(&mut self, now: Instant) {
        self.attempt = 0;
        self.delay = self.retry.min;
        self.next_try = now;
    }

    /// The attempt failed: the next one waits the current delay less up to
    /// `jitter` of it, and the delay after that is twice as long (at most
    /// `max`).
    pub(crate) fn failed(&mut self, now: Instant) {
        let unit = self.rng.next_unit();
        let jitter = self.retry.jitter.clamp(0.0, 1.0);
        self.next_try = now + self.delay.mul_f64(1.0 - jitter * unit);
        self.delay = (self.delay * 2).min(self.retry.max);
    }

    /// The delay has reached `max`: failures have gone on for a while
    /// (at the end of input, pushd gives up on the target then).
    pub(crate) fn at_max(&self) -> bool {
        self.delay >= self.retry.max
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014): a tiny generator that is fine for
/// spreading retries, good from any seed (0 included), and needs no crate.
#[derive(Clone, Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn next_unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retry(min: u64, max: u64, jitter: f64) -> Retry {
        Retry {
            min: Duration::from_millis(min),
            max: Duration::from_millis(max),
            jitter,
        }
    }

    /// The waits of `n` failures in a row, each measured from its failure.
    fn waits(backoff: &mut Backoff, now: Instant, n: usize) -> Vec<Duration> {
        (0..n)
            .map(|_| {
                backoff.begin();
                backoff.failed(now);
                backoff.next_try() - now
            })
            .collect()
    }

    #[test]
    fn a_new_clock_allows_an_attempt_at_once() {
        let now = Instant::now();
        let backoff = Backoff::new(retry(100, 1000, 0.5), 1, now);
        assert_eq!(backoff.next_try(), now);
        assert_eq!(backoff.attempt(), 0);
        assert!(!backoff.at_max());
    }

    #[test]
    fn without_jitter_the_delay_doubles_up_to_max() {
        let now = Instant::now();
        let mut backoff = Backoff::new(retry(100, 1000, 0.0), 7, now);
        let ms: Vec<u128> = waits(&mut backoff, now, 6)
            .iter()
            .map(|d| d.as_millis())
            .collect();
        assert_eq!(ms, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff.attempt(), 6);
        assert!(backoff.at_max());
    }

    #[test]
    fn jitter_only_shortens_and_stays_within_its_fraction() {
        let now = Instant::now();
        for seed in 0..200u64 {
            let mut backoff = Backoff::new(retry(100, 6400, 0.3), seed, now);
            let mut full = Duration::from_millis(100);
            for wait in waits(&mut backoff, now, 8) {
                assert!(wait <= full, "seed {seed}: {wait:?} > {full:?}");
                assert!(
                    wait >= full.mul_f64(0.7),
                    "seed {seed}: {wait:?} < 70% of {full:?}"
                );
                full = (full * 2).min(Duration::from_millis(6400));
            }
        }
    }

    #[test]
    fn jitter_spreads_targets_that_fail_together() {
        let now = Instant::now();
        let first: Vec<Duration> = (0..50u64)
            .map(|seed| waits(&mut Backoff::new(retry(1000, 8000, 1.0), seed, now), now, 1)[0])
            .collect();
        let mut distinct = first.clone();
        distinct.sort();
        distinct.dedup();
        assert!(
            distinct.len() > 40,
            "only {} distinct waits",
            distinct.len()
        );
        // Full jitter reaches both halves of the range.
        assert!(first.iter().any(|d| *d < Duration::from_millis(500)));
        assert!(first.iter().any(|d| *d > Duration::from_millis(500)));
    }

    #[test]
    fn the_same_seed_gives_the_same_waits() {
        let now = Instant::now();
        let a = waits(&mut Backoff::new(retry(100, 5000, 0.5), 42, now), now, 10);
        let b = waits(&mut Backoff::new(retry(100, 5000, 0.5), 42, now), now, 10);
        let c = waits(&mut Backoff::new(retry(100, 5000, 0.5), 43, now), now, 10);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn success_resets_the_delay_and_the_attempts() {
        let now = Instant::now();
        let mut backoff = Backoff::new(retry(100, 1000, 0.0), 3, now);
        waits(&mut backoff, now, 5);
        assert!(backoff.at_max());
        let later = now + Duration::from_secs(5);
        backoff.succeeded(later);
        assert_eq!(backoff.attempt(), 0);
        assert_eq!(backoff.next_try(), later);
        assert!(!backoff.at_max());
        assert_eq!(waits(&mut backoff, later, 1), [Duration::from_millis(100)]);
        assert_eq!(backoff.attempt(), 1);
    }

    #[test]
    fn out_of_range_jitter_is_clamped() {
        let now = Instant::now();
        for seed in 0..20u64 {
            let over = waits(&mut Backoff::new(retry(100, 100, 7.0), seed, now), now, 3);
            assert!(over.iter().all(|d| *d <= Duration::from_millis(100)));
            let under = waits(&mut Backoff::new(retry(100, 100, -1.0), seed, now), now, 3);
            assert_eq!(under, [Duration::from_millis(100); 3]);
        }
    }
}
