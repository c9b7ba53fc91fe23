//! Where sequences end: at the first stop token they generate (a model's
//! EOS ids, kept as the sequence's last token), else after
//! `max_new_tokens`. The GPU runs every sequence of a batch in every step;
//! the host reads the new tokens back every [`STOP_CHECK_STEPS`] steps and
//! ends the run once every sequence has ended, so a finished batch costs at
//! most that many extra steps, and the check one synchronization per that
//! many steps (a few microseconds against milliseconds of steps).

/// Decode steps between two looks at the new tokens.
pub const STOP_CHECK_STEPS: usize = 8;

/// Which sequences of a batch have ended, from the token history.
#[derive(Debug, Clone)]
pub struct StopTracker {
    stop: Vec<u32>,
    /// Per sequence: the step of its stop token, once seen.
    ended: Vec<Option<usize>>,
    /// Steps whose tokens have been looked at.
    seen: usize,
}

impl StopTracker {
    /// A batch of `batch` sequences ending at any of `stop` (none: every
    /// sequence runs to its last step).
    pub fn new(stop: &[u32], batch: usize) -> Self {
        Self {
            stop: stop.to_vec(),
            ended: vec![None; batch],
            seen: 0,
        }
    }

    /// Whether any stop token is set (without one there is nothing to
    /// check).
    pub fn active(&self) -> bool {
        !self.stop.is_empty()
    }

    /// Steps looked at so far.
    pub fn seen(&self) -> usize {
        self.seen
    }

    /// Takes the tokens of steps `self.seen()..` (step-major: `rows[t ·
    /// batch + s]` is sequence `s`'s token of step `seen + t`; whole steps).
    pub fn observe(&mut self, rows: &[u32]) {
        let batch = self.ended.len();
        if batch == 0 {
            return;
        }
        for (t, step) in rows.chunks_exact(batch).enumerate() {
            for (end, &token) in self.ended.iter_mut().zip(step) {
                if end.is_none() && self.stop.contains(&token) {
                    *end = Some(self.seen + t);
                }
            }
        }
        self.seen += rows.len() / batch;
    }

    /// Every sequence has generated a stop token.
    pub fn all_ended(&self) -> bool {
        self.active() && self.ended.iter().all(Option::is_some)
    }

    /// Whether sequence `s` ended at a stop token.
    pub fn ended(&self, s: usize) -> bool {
        self.ended[s].is_some()
    }

    /// Each sequence's tokens from the history of the first `steps` steps
    /// (step-major), up to and including its stop token.
    pub fn tokens(&self, history: &[u32], steps: usize) -> Vec<Vec<u32>> {
        let batch = self.ended.len();
        (0..batch)
            .map(|s| {
                let last = self.ended[s].map_or(steps, |t| (t + 1).min(steps));
                (0..last).map(|t| history[t * batch + s]).collect()
            })
            .collect()
    }
}

/// Whether the run looks at the new tokens after `done` steps (of
/// `max_steps`): every [`STOP_CHECK_STEPS`] steps, never after the last.
pub fn check_after(done: usize, max_steps: usize) -> bool {
    done < max_steps && done.is_multiple_of(STOP_CHECK_STEPS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// History of `batch` sequences, step-major, from per-sequence lists.
    fn history(seqs: &[&[u32]]) -> Vec<u32> {
        let steps = seqs[0].len();
        (0..steps)
            .flat_map(|t| seqs.iter().map(move |s| s[t]))
            .collect()
    }

    #[test]
    fn sequences_end_at_their_first_stop_token_kept() {
        let h = history(&[&[5, 2, 9, 2, 7], &[1, 1, 1, 1, 1], &[9, 3, 3, 3, 3]]);
        let mut t = StopTracker::new(&[9, 8], 3);
        // in two looks, split between steps
        t.observe(&h[..2 * 3]);
        assert_eq!(t.seen(), 2);
        assert!(t.ended(2) && !t.ended(0));
        t.observe(&h[2 * 3..]);
        assert_eq!(t.seen(), 5);
        assert!(t.ended(0) && !t.ended(1) && t.ended(2));
        assert!(!t.all_ended());
        let tokens = t.tokens(&h, 5);
        assert_eq!(tokens, vec![vec![5, 2, 9], vec![1, 1, 1, 1, 1], vec![9]]);
    }

    #[test]
    fn a_batch_ends_when_every_sequence_has() {
        let h = history(&[&[4, 2, 0], &[2, 0, 0]]);
        let mut t = StopTracker::new(&[2], 2);
        t.observe(&h[..2]);
        assert!(!t.all_ended());
        t.observe(&h[2..4]);
        assert!(t.all_ended());
        // tokens read only up to the steps run
        assert_eq!(t.tokens(&h[..4], 2), vec![vec![4, 2], vec![2]]);
    }

    #[test]
    fn no_stop_tokens_means_every_step() {
        let h = history(&[&[2, 2, 2]]);
        let mut t = StopTracker::new(&[], 1);
        assert!(!t.active());
        t.observe(&h);
        assert!(!t.all_ended() && !t.ended(0));
        assert_eq!(t.tokens(&h, 3), vec![vec![2, 2, 2]]);
        // an empty batch is no error
        let mut e = StopTracker::new(&[2], 0);
        e.observe(&[]);
        assert!(e.all_ended() && e.tokens(&[], 0).is_empty());
    }

    #[test]
    fn checks_every_few_steps_and_not_after_the_last() {
        let at: Vec<usize> = (1..=20).filter(|&d| check_after(d, 17)).collect();
        assert_eq!(at, vec![8, 16]);
        assert!(!check_after(16, 16));
    }
}
