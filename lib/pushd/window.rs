//! The batches a worker has sent and not yet seen acknowledged, in the
//! order they were taken (issue 15: pipelined across the agent
//! connection). Pure: the worker opens a batch when it takes it, seals it
//! when its transfer returns with how many of its requests are still
//! unanswered, feeds in the answers as they come, and asks which batches
//! are settled. `--state` moves only through [`Settled::Applied`] with
//! `advance`: never past a batch with a request unanswered or failed.

use std::collections::VecDeque;

/// Batches sent and not yet acknowledged at most (with the agent): a
/// failed link or step puts back at most this many batches, and `--state`
/// lags at most this far behind what was sent. The agent's own request and
/// byte window (512 requests, 8 MiB) bounds the memory of a large batch.
pub(crate) const BATCHES_IN_FLIGHT: usize = 16;

/// A batch taken and not yet settled.
#[derive(Debug)]
struct Open {
    n: u64,
    /// Its requests still to be answered when its transfer returned;
    /// `None` until then.
    sent: Option<usize>,
    answered: usize,
    failed: Option<String>,
}

/// What became of a batch, in the order batches were taken.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Settled {
    /// Every step acknowledged. `advance`: `--state` may move to its last
    /// seq — false when an earlier batch failed after this one was taken
    /// (the failed changes go back to pending, so only a batch taken after
    /// that carries them).
    Applied { n: u64, advance: bool },
    /// A step failed (or the link was lost): its changes go back to pending.
    Failed { n: u64, why: String },
}

#[derive(Debug, Default)]
pub(crate) struct Window {
    next: u64,
    open: VecDeque<Open>,
    /// Batches numbered below this one were taken before a failure whose
    /// changes went back to pending: they cannot move `--state`.
    blocked_below: u64,
}

impl Window {
    /// A batch is taken: its number (answers name it).
    pub(crate) fn open(&mut self) -> u64 {
        self.next += 1;
        self.open.push_back(Open {
            n: self.next,
            sent: None,
            answered: 0,
            failed: None,
        });
        self.next
    }

    fn get(&mut self, n: u64) -> Option<&mut Open> {
        self.open.iter_mut().find(|o| o.n == n)
    }

    /// Batch `n`'s transfer returned: `sent` of its requests were left to
    /// be answered later, `failed` says why it failed already.
    pub(crate) fn seal(&mut self, n: u64, sent: usize, failed: Option<String>) {
        if let Some(o) = self.get(n) {
            o.sent = Some(sent);
            if o.failed.is_none() {
                o.failed = failed;
            }
        }
    }

    /// One of batch `n`'s requests was answered (`Err`: it failed, or the
    /// link was lost before its answer). Answers of unknown batches (sent
    /// by a transfer that waited for them itself) are ignored.
    pub(crate) fn answered(&mut self, n: u64, result: Result<(), String>) {
        if let Some(o) = self.get(n) {
            o.answered += 1;
            if let Err(why) = result {
                o.failed.get_or_insert(why);
            }
        }
    }

    /// Batches taken so far cannot move `--state` any more (the stream went
    /// backwards: what they carry is older than what comes next).
    pub(crate) fn block(&mut self) {
        self.blocked_below = self.next + 1;
    }

    /// Batches taken and not settled yet.
    pub(crate) fn len(&self) -> usize {
        self.open.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// The batches settled since last asked, oldest first: only from the
    /// front, so a batch never settles before one taken earlier.
    pub(crate) fn settle(&mut self) -> Vec<Settled> {
        let mut done = Vec::new();
        while let Some(o) = self.open.front() {
            match o.sent {
                Some(sent) if o.answered >= sent => {}
                _ => break,
            }
            let o = self.open.pop_front().expect("front");
            match o.failed {
                Some(why) => {
                    self.blocked_below = self.next + 1;
                    done.push(Settled::Failed { n: o.n, why });
                }
                None => done.push(Settled::Applied {
                    n: o.n,
                    advance: o.n >= self.blocked_below,
                }),
            }
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn a_batch_settles_once_every_request_is_answered_and_in_order() {
        let mut w = Window::default();
        let (a, b) = (w.open(), w.open());
        w.seal(a, 2, None);
        w.seal(b, 0, None);
        assert!(w.settle().is_empty(), "a has two answers to come");
        w.answered(a, Ok(()));
        assert!(w.settle().is_empty());
        w.answered(a, Ok(()));
        assert_eq!(
            w.settle(),
            vec![
                Settled::Applied {
                    n: a,
                    advance: true
                },
                Settled::Applied {
                    n: b,
                    advance: true
                }
            ]
        );
        assert!(w.is_empty());
    }

    #[test]
    fn batches_taken_before_the_stream_went_backwards_never_move_state() {
        let mut w = Window::default();
        let a = w.open();
        w.seal(a, 1, None);
        w.block();
        let b = w.open();
        w.seal(b, 0, None);
        w.answered(a, Ok(()));
        assert_eq!(
            w.settle(),
            vec![
                Settled::Applied {
                    n: a,
                    advance: false
                },
                Settled::Applied {
                    n: b,
                    advance: true
                }
            ]
        );
    }

    #[test]
    fn a_failed_batch_holds_back_the_ones_taken_before_its_changes_went_back() {
        let mut w = Window::default();
        let (a, b) = (w.open(), w.open());
        w.seal(a, 1, None);
        w.seal(b, 1, None);
        w.answered(b, Ok(()));
        w.answered(a, Err("link lost".into()));
        assert_eq!(
            w.settle(),
            vec![
                Settled::Failed {
                    n: a,
                    why: "link lost".into()
                },
                Settled::Applied {
                    n: b,
                    advance: false
                }
            ]
        );
        let c = w.open();
        w.seal(c, 0, None);
        assert_eq!(
            w.settle(),
            vec![Settled::Applied {
                n: c,
                advance: true
            }]
        );
    }

    /// One step of a random history.
    #[derive(Clone, Debug)]
    enum Step {
        /// Take a batch; its transfer returns with this many requests
        /// unanswered, or fails at once.
        Take { sent: usize, fails: bool },
        /// Answer the k-th unanswered request (any of any batch), failing
        /// it or not.
        Answer { k: usize, ok: bool },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0usize..4, prop::bool::weighted(0.1))
                .prop_map(|(sent, fails)| Step::Take { sent, fails }),
            (any::<prop::sample::Index>(), prop::bool::weighted(0.85)).prop_map(|(k, ok)| {
                Step::Answer {
                    k: k.index(1 << 16),
                    ok,
                }
            }),
        ]
    }

    proptest! {
        #![proptest_config(crate::testconfig::proptest(512))]
        /// The model: every batch carries its own changes plus those of the
        /// batches that failed before it was taken (put back to pending).
        /// Whenever a batch may move `--state` to its position, every batch
        /// taken up to it has its changes applied by an acknowledged batch.
        #[test]
        fn state_never_passes_an_unacknowledged_batch(steps in prop::collection::vec(step(), 1..80)) {
            let mut w = Window::default();
            // Requests unanswered: (batch, index).
            let mut waiting: Vec<u64> = Vec::new();
            // Changes (batch numbers) each batch carries.
            let mut carries: std::collections::HashMap<u64, BTreeSet<u64>> = Default::default();
            let mut put_back: BTreeSet<u64> = BTreeSet::new();
            let mut applied: BTreeSet<u64> = BTreeSet::new();
            let mut settled_upto = 0;
            let mut check = |w: &mut Window, put_back: &mut BTreeSet<u64>, applied: &mut BTreeSet<u64>,
                             carries: &std::collections::HashMap<u64, BTreeSet<u64>>| {
                for s in w.settle() {
                    match s {
                        Settled::Failed { n, .. } => {
                            prop_assert_eq!(n, settled_upto + 1, "in order");
                            settled_upto = n;
                            put_back.extend(carries[&n].iter().copied());
                        }
                        Settled::Applied { n, advance } => {
                            prop_assert_eq!(n, settled_upto + 1, "in order");
                            settled_upto = n;
                            applied.extend(carries[&n].iter().copied());
                            if advance {
                                for m in 1..=n {
                                    prop_assert!(applied.contains(&m), "state at batch {} but batch {} not applied", n, m);
                                }
                            }
                        }
                    }
                }
                Ok(())
            };
            for s in steps {
                match s {
                    Step::Take { sent, fails } => {
                        let n = w.open();
                        let mut c: BTreeSet<u64> = std::mem::take(&mut put_back);
                        c.insert(n);
                        carries.insert(n, c);
                        waiting.extend(std::iter::repeat_n(n, sent));
                        w.seal(n, sent, fails.then(|| "failed".to_string()));
                    }
                    Step::Answer { k, ok } => {
                        if waiting.is_empty() {
                            continue;
                        }
                        let n = waiting.remove(k % waiting.len());
                        w.answered(n, if ok { Ok(()) } else { Err("no".into()) });
                    }
                }
                check(&mut w, &mut put_back, &mut applied, &carries)?;
            }
            // Everything answered: everything settles.
            for n in std::mem::take(&mut waiting) {
                w.answered(n, Ok(()));
            }
            check(&mut w, &mut put_back, &mut applied, &carries)?;
            prop_assert!(w.is_empty());
        }
    }
}
