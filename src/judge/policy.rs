//! Which two candidates become a preference pair.
//!
//! chosen = highest mean score, rejected = lowest; no pair when fewer than two
//! candidates have a score, or the scores are equal (or closer than `min_margin`). With
//! length control (Meta-Rewarding, Wu et al. 2024), candidates within `length_band` of
//! the top score count as equally good and the shortest of them is chosen.
//!
//! Where the prompt carries checkable instructions, a verifier can decide instead
//! (`Reward`): `verify` pairs an answer from the group that followed the most
//! instructions with one from the group that followed the fewest, the judge choosing
//! within each group; `judge+verify` does the same and falls back to the judge where the
//! verifier cannot tell the answers apart.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, PartialEq, Default, Deserialize, Serialize, ToSchema)]
pub struct PairPolicy {
    /// Smallest chosen − rejected score difference that makes a pair (default 0: any
    /// difference).
    #[serde(default)]
    pub min_margin: f32,
    /// Length control: scores within this band of the top count as equal and the
    /// shortest such candidate is chosen. Off when absent.
    #[serde(default)]
    pub length_band: Option<f32>,
}

/// What decides a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, ToSchema, clap::ValueEnum)]
pub enum Reward {
    /// The judge's scores (the paper).
    #[default]
    #[serde(rename = "judge")]
    #[value(name = "judge")]
    Judge,
    /// The verifier: answers that followed more of the prompt's checkable instructions
    /// beat those that followed fewer; the judge chooses within each group. No pair where
    /// the verifier cannot tell the answers apart or the prompt carries no instructions.
    #[serde(rename = "verify")]
    #[value(name = "verify")]
    Verify,
    /// The verifier first; where it cannot tell the answers apart, the judge decides.
    #[serde(rename = "judge+verify")]
    #[value(name = "judge+verify")]
    JudgeVerify,
}

impl Reward {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Judge => "judge",
            Self::Verify => "verify",
            Self::JudgeVerify => "judge+verify",
        }
    }
}

/// Which signal made a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DecidedBy {
    Judge,
    Verifier,
}

/// One candidate as the policy sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    /// `None` when no judgment of it parsed.
    pub score: Option<f32>,
    /// Length of the answer (characters).
    pub length: usize,
    /// Share of the prompt's checkable instructions the answer followed; `None` when
    /// the prompt carries none.
    pub verified: Option<f32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NoPairReason {
    /// Fewer than two candidates have a parsed score.
    TooFewScored,
    /// Best and worst scores are equal.
    Tie,
    /// The scores differ by less than the policy's `min_margin`.
    BelowMargin,
    /// `verify`: every answer followed the same share of the instructions, or the
    /// prompt carries none.
    VerifierTie,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PairDecision {
    Pair { chosen: usize, rejected: usize, chosen_score: f32, rejected_score: f32 },
    NoPair(NoPairReason),
}

impl PairDecision {
    /// Counts the decision in the metrics (pairs formed, ties).
    pub fn count(&self) {
        match self {
            Self::Pair { .. } => crate::metrics::pair_formed(),
            Self::NoPair(NoPairReason::Tie) => crate::metrics::pair_tie(),
            Self::NoPair(_) => {}
        }
    }
}

impl PairPolicy {
    /// The pair `reward` makes of the candidates, and which signal made it.
    pub fn decide_with(&self, reward: Reward, candidates: &[Scored]) -> (PairDecision, DecidedBy) {
        if reward == Reward::Judge {
            return (self.decide(candidates), DecidedBy::Judge);
        }
        match verifier_pair(candidates) {
            Some(pair) => (pair, DecidedBy::Verifier),
            None if reward == Reward::JudgeVerify => (self.decide(candidates), DecidedBy::Judge),
            None => (PairDecision::NoPair(NoPairReason::VerifierTie), DecidedBy::Verifier),
        }
    }

    pub fn decide(&self, candidates: &[Scored]) -> PairDecision {
        let scored: Vec<(usize, f32, usize)> =
            candidates.iter().enumerate().filter_map(|(i, c)| c.score.map(|s| (i, s, c.length))).collect();
        if scored.len() < 2 {
            return PairDecision::NoPair(NoPairReason::TooFewScored);
        }
        let top = scored.iter().map(|c| c.1).fold(f32::NEG_INFINITY, f32::max);
        let bottom = scored.iter().map(|c| c.1).fold(f32::INFINITY, f32::min);
        if top == bottom {
            return PairDecision::NoPair(NoPairReason::Tie);
        }
        let (chosen, rejected) = match self.length_band {
            // Shortest within the band of the top; the longest of the lowest.
            Some(band) => (
                scored.iter().filter(|c| c.1 >= top - band.max(0.0)).min_by_key(|c| (c.2, c.0)),
                scored.iter().filter(|c| c.1 == bottom).max_by_key(|c| (c.2, std::cmp::Reverse(c.0))),
            ),
            None => (scored.iter().find(|c| c.1 == top), scored.iter().find(|c| c.1 == bottom)),
        };
        let (chosen, rejected) = (*chosen.expect("a top candidate"), *rejected.expect("a bottom candidate"));
        let margin = chosen.1 - rejected.1;
        if chosen.0 == rejected.0 || margin <= 0.0 {
            return PairDecision::NoPair(NoPairReason::Tie);
        }
        if margin < self.min_margin {
            return PairDecision::NoPair(NoPairReason::BelowMargin);
        }
        PairDecision::Pair { chosen: chosen.0, rejected: rejected.0, chosen_score: chosen.1, rejected_score: rejected.1 }
    }
}

/// chosen from the answers that followed the most instructions (the judge's best of
/// them, else the shortest), rejected from those that followed the fewest (the judge's
/// worst, else the longest); `None` when the verifier cannot tell them apart. The pair's
/// scores are the judge's means where both have one, else the shares × 5.
fn verifier_pair(candidates: &[Scored]) -> Option<PairDecision> {
    let verified: Vec<(usize, f32, &Scored)> = candidates.iter().enumerate().filter_map(|(i, c)| c.verified.map(|v| (i, v, c))).collect();
    let top = verified.iter().map(|c| c.1).fold(f32::NEG_INFINITY, f32::max);
    let bottom = verified.iter().map(|c| c.1).fold(f32::INFINITY, f32::min);
    if verified.len() < 2 || top <= bottom {
        return None;
    }
    // Unjudged answers rank below judged ones in the chosen group and above them in the
    // rejected group, so a judged answer is preferred on both sides.
    let judged = |c: &Scored| c.score.unwrap_or(f32::NEG_INFINITY);
    let chosen = verified
        .iter()
        .filter(|c| c.1 == top)
        .max_by(|a, b| judged(a.2).total_cmp(&judged(b.2)).then(b.2.length.cmp(&a.2.length)).then(b.0.cmp(&a.0)))?;
    let rejected = verified.iter().filter(|c| c.1 == bottom).min_by(|a, b| {
        let low = |c: &Scored| c.score.unwrap_or(f32::INFINITY);
        low(a.2).total_cmp(&low(b.2)).then(b.2.length.cmp(&a.2.length)).then(a.0.cmp(&b.0))
    })?;
    let (chosen_score, rejected_score) = match (chosen.2.score, rejected.2.score) {
        (Some(c), Some(r)) => (c, r),
        _ => (chosen.1 * 5.0, rejected.1 * 5.0),
    };
    Some(PairDecision::Pair { chosen: chosen.0, rejected: rejected.0, chosen_score, rejected_score })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(score: Option<f32>, length: usize) -> Scored {
        Scored { score, length, verified: None }
    }

    fn v(score: Option<f32>, length: usize, verified: f32) -> Scored {
        Scored { score, length, verified: Some(verified) }
    }

    #[test]
    fn verify_pairs_a_passing_answer_with_a_failing_one_whatever_the_judge_says() {
        let p = PairPolicy::default();
        // The judge prefers candidate 2, which broke an instruction.
        let cands = [v(Some(2.0), 10, 1.0), v(Some(3.0), 10, 1.0), v(Some(4.5), 10, 0.5), v(Some(1.0), 10, 0.5)];
        assert_eq!(p.decide_with(Reward::Judge, &cands), (pair(2, 3, 4.5, 1.0), DecidedBy::Judge));
        // Within the passing group the judge's best, within the failing group its worst.
        assert_eq!(p.decide_with(Reward::Verify, &cands), (pair(1, 3, 3.0, 1.0), DecidedBy::Verifier));
        assert_eq!(p.decide_with(Reward::JudgeVerify, &cands), (pair(1, 3, 3.0, 1.0), DecidedBy::Verifier));
    }

    #[test]
    fn when_the_verifier_cannot_tell_only_judge_verify_falls_back_to_the_judge() {
        let p = PairPolicy::default();
        let all_pass = [v(Some(2.0), 10, 1.0), v(Some(4.0), 10, 1.0)];
        assert_eq!(p.decide_with(Reward::Verify, &all_pass), (PairDecision::NoPair(NoPairReason::VerifierTie), DecidedBy::Verifier));
        assert_eq!(p.decide_with(Reward::JudgeVerify, &all_pass), (pair(1, 0, 4.0, 2.0), DecidedBy::Judge));
        // No instructions at all: the same.
        let plain = [c(Some(2.0), 10), c(Some(4.0), 10)];
        assert_eq!(p.decide_with(Reward::Verify, &plain).0, PairDecision::NoPair(NoPairReason::VerifierTie));
        assert_eq!(p.decide_with(Reward::JudgeVerify, &plain).0, pair(1, 0, 4.0, 2.0));
    }

    #[test]
    fn without_judge_scores_the_verifier_prefers_short_winners_and_long_losers() {
        let p = PairPolicy::default();
        let cands = [v(None, 300, 1.0), v(None, 100, 1.0), v(None, 50, 0.0), v(None, 500, 0.0), v(None, 10, 0.5)];
        assert_eq!(p.decide_with(Reward::Verify, &cands).0, pair(1, 3, 5.0, 0.0));
        // A judged answer is preferred to an unjudged one on both sides.
        let cands = [v(None, 10, 1.0), v(Some(1.0), 900, 1.0), v(None, 999, 0.0), v(Some(4.0), 5, 0.0)];
        assert_eq!(p.decide_with(Reward::Verify, &cands).0, pair(1, 3, 1.0, 4.0));
    }

    fn pair(chosen: usize, rejected: usize, cs: f32, rs: f32) -> PairDecision {
        PairDecision::Pair { chosen, rejected, chosen_score: cs, rejected_score: rs }
    }

    #[test]
    fn highest_and_lowest_make_the_pair() {
        let p = PairPolicy::default();
        let cands = [c(Some(3.0), 10), c(Some(4.5), 50), c(Some(1.0), 20), c(None, 5)];
        assert_eq!(p.decide(&cands), pair(1, 2, 4.5, 1.0));
    }

    #[test]
    fn ties_and_too_few_scores_make_no_pair() {
        let p = PairPolicy::default();
        assert_eq!(p.decide(&[c(Some(3.0), 1), c(Some(3.0), 2)]), PairDecision::NoPair(NoPairReason::Tie));
        assert_eq!(p.decide(&[c(Some(3.0), 1), c(None, 2), c(None, 3)]), PairDecision::NoPair(NoPairReason::TooFewScored));
        assert_eq!(p.decide(&[]), PairDecision::NoPair(NoPairReason::TooFewScored));
        // Equal top scores: the earliest is chosen.
        assert_eq!(p.decide(&[c(Some(2.0), 1), c(Some(4.0), 9), c(Some(4.0), 3)]), pair(1, 0, 4.0, 2.0));
    }

    #[test]
    fn margins_below_the_minimum_make_no_pair() {
        let p = PairPolicy { min_margin: 1.0, length_band: None };
        assert_eq!(p.decide(&[c(Some(3.0), 1), c(Some(3.5), 2)]), PairDecision::NoPair(NoPairReason::BelowMargin));
        assert_eq!(p.decide(&[c(Some(3.0), 1), c(Some(4.0), 2)]), pair(1, 0, 4.0, 3.0));
    }

    #[test]
    fn length_control_chooses_the_shortest_near_the_top() {
        let p = PairPolicy { min_margin: 0.0, length_band: Some(0.5) };
        let cands = [c(Some(4.8), 400), c(Some(4.4), 120), c(Some(2.0), 300), c(Some(2.0), 900)];
        assert_eq!(p.decide(&cands), pair(1, 3, 4.4, 2.0));
        // The band can swallow the bottom too: then no pair.
        let p = PairPolicy { min_margin: 0.0, length_band: Some(3.0) };
        let d = p.decide(&[c(Some(4.0), 500), c(Some(3.0), 10)]);
        assert_eq!(d, PairDecision::NoPair(NoPairReason::Tie));
    }
}
