//! Which two candidates become a preference pair.
//!
//! chosen = highest mean score, rejected = lowest; no pair when fewer than two
//! candidates have a score, or the scores are equal (or closer than `min_margin`). With
//! length control (Meta-Rewarding, Wu et al. 2024), candidates within `length_band` of
//! the top score count as equally good and the shortest of them is chosen.

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

/// One candidate as the policy sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    /// `None` when no judgment of it parsed.
    pub score: Option<f32>,
    /// Length of the answer (characters).
    pub length: usize,
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
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PairDecision {
    Pair { chosen: usize, rejected: usize, chosen_score: f32, rejected_score: f32 },
    NoPair(NoPairReason),
}

impl PairPolicy {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn c(score: Option<f32>, length: usize) -> Scored {
        Scored { score, length }
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
