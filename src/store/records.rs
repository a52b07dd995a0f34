//! Prompts, candidates, judgments and pairs: what `/generate` and `/judge` record.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::text::{storable, storable_json};
use super::Store;

/// A candidate to record (its prompt and checkpoint come from the generation).
#[derive(Debug, Clone)]
pub struct NewCandidate {
    pub text: String,
    pub prompt_tokens: i32,
    pub completion_tokens: i32,
    pub finish_reason: String,
    pub temperature: f32,
    pub top_p: f32,
    pub max_tokens: i32,
    pub seed: i64,
}

#[derive(Debug, Clone)]
pub struct NewJudgment {
    pub sample_index: i32,
    pub method: String,
    pub score: Option<f32>,
    pub raw_text: String,
}

/// A pair, naming its candidates by their position in the generation.
#[derive(Debug, Clone, Copy)]
pub struct NewPair {
    pub chosen: usize,
    pub rejected: usize,
    pub chosen_score: f32,
    pub rejected_score: f32,
}

/// Everything one `/generate` call produced, recorded in one transaction.
#[derive(Debug, Clone)]
pub struct NewGeneration {
    pub messages: serde_json::Value,
    /// The prompt's checkable instructions (`verify::Instruction` list), if any.
    pub instructions: Option<serde_json::Value>,
    pub source: String,
    pub iteration: i32,
    pub checkpoint_id: i64,
    pub candidates: Vec<NewCandidate>,
    /// Judgments per candidate (same order as `candidates`), by the same checkpoint.
    pub judgments: Vec<Vec<NewJudgment>>,
    pub pair: Option<NewPair>,
    /// What decided the pair (stored with it).
    pub decided_by: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RecordedIds {
    pub prompt_id: i64,
    pub candidate_ids: Vec<i64>,
    pub judgment_ids: Vec<Vec<i64>>,
    pub pair_id: Option<i64>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PromptRow {
    pub id: i64,
    /// The chat messages the candidates answer.
    pub messages: serde_json::Value,
    /// `seed`, `self_instruct` or `user`.
    pub source: String,
    pub iteration: i32,
    /// The checkable instructions the prompt carries (`null` for free-form prompts).
    #[schema(value_type = Option<Vec<crate::verify::Instruction>>)]
    pub instructions: Option<serde_json::Value>,
    pub created_at: DateTime<Utc>,
}

/// A prompt in a list: what became of it at a glance.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PromptSummary {
    pub id: i64,
    /// The chat messages the candidates answer.
    pub messages: serde_json::Value,
    /// `seed`, `self_instruct` or `user`.
    pub source: String,
    pub iteration: i32,
    /// The checkable instructions the prompt carries (`null` for free-form prompts).
    #[schema(value_type = Option<Vec<crate::verify::Instruction>>)]
    pub instructions: Option<serde_json::Value>,
    /// The checkpoint that generated its candidates (`null` when it has none).
    pub checkpoint_id: Option<i64>,
    /// Candidates generated for it.
    pub candidates: i64,
    /// Candidates with at least one judgment.
    pub judged: i64,
    /// Pairs made from its candidates.
    pub pairs: i64,
    pub created_at: DateTime<Utc>,
}

/// Filters of the prompt list; `None` means any.
#[derive(Debug, Clone, Default)]
pub struct PromptFilter {
    pub iteration: Option<i32>,
    pub source: Option<String>,
    pub checkpoint_id: Option<i64>,
    pub has_pair: Option<bool>,
    pub judged: Option<bool>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CandidateRow {
    pub id: i64,
    pub prompt_id: i64,
    /// The checkpoint that generated it.
    pub checkpoint_id: i64,
    pub choice_index: i32,
    pub text: String,
    pub prompt_tokens: i32,
    pub completion_tokens: i32,
    pub finish_reason: String,
    pub temperature: f32,
    pub top_p: f32,
    pub max_tokens: i32,
    pub seed: i64,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JudgmentRow {
    pub id: i64,
    pub candidate_id: i64,
    /// The checkpoint that judged.
    pub judge_checkpoint_id: i64,
    pub sample_index: i32,
    /// `sample`, `constrained` or `expected`.
    pub method: String,
    /// `null` when the judge's text held no valid score.
    pub score: Option<f32>,
    pub raw_text: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PairRow {
    pub id: i64,
    pub prompt_id: i64,
    pub chosen_id: i64,
    pub rejected_id: i64,
    pub chosen_score: f32,
    pub rejected_score: f32,
    /// The checkpoint whose candidates and judgments made the pair.
    pub checkpoint_id: i64,
    /// `available`, `claimed`, `consumed` or `excluded` (taken out by a reviewer).
    pub status: String,
    /// What decided the pair: `reward` (judge, verify, judge+verify), `by` (judge or
    /// verifier), the judge's `method`, `judge_checkpoint_id` and `template_sha256`, and
    /// the verifier's per-instruction outcome of `chosen` and `rejected`. `null` for
    /// pairs recorded before srlm kept this.
    #[schema(value_type = Option<Object>)]
    pub decided_by: Option<serde_json::Value>,
    pub created_at: DateTime<Utc>,
}

impl Store {
    /// Records a prompt with its candidates, their judgments and the pair, all or nothing.
    pub async fn record_generation(&self, g: &NewGeneration) -> Result<RecordedIds, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let prompt_id = sqlx::query_scalar!(
            "INSERT INTO prompts (messages, source, iteration, instructions) VALUES ($1, $2, $3, $4) RETURNING id",
            storable_json(&g.messages),
            g.source,
            g.iteration,
            g.instructions.as_ref().map(storable_json)
        )
        .fetch_one(&mut *tx)
        .await?;
        let mut candidate_ids = Vec::with_capacity(g.candidates.len());
        for (index, c) in g.candidates.iter().enumerate() {
            let text = storable(&c.text);
            let id = sqlx::query_scalar!(
                r#"INSERT INTO candidates (prompt_id, checkpoint_id, choice_index, text, prompt_tokens,
                       completion_tokens, finish_reason, temperature, top_p, max_tokens, seed)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id"#,
                prompt_id,
                g.checkpoint_id,
                index as i32,
                text.as_ref(),
                c.prompt_tokens,
                c.completion_tokens,
                c.finish_reason,
                c.temperature,
                c.top_p,
                c.max_tokens,
                c.seed
            )
            .fetch_one(&mut *tx)
            .await?;
            candidate_ids.push(id);
        }
        let mut judgment_ids = Vec::with_capacity(g.judgments.len());
        for (candidate, judgments) in g.judgments.iter().enumerate() {
            let candidate_id =
                *candidate_ids.get(candidate).ok_or_else(|| sqlx::Error::Protocol("judgment of an unknown candidate".into()))?;
            judgment_ids.push(insert_judgments(&mut tx, candidate_id, g.checkpoint_id, judgments).await?);
        }
        let pair_id = match g.pair {
            None => None,
            Some(p) => {
                let lookup =
                    |i: usize| candidate_ids.get(i).copied().ok_or_else(|| sqlx::Error::Protocol("pair names an unknown candidate".into()));
                let (chosen, rejected) = (lookup(p.chosen)?, lookup(p.rejected)?);
                Some(
                    sqlx::query_scalar!(
                        r#"INSERT INTO pairs (prompt_id, chosen_id, rejected_id, chosen_score, rejected_score, checkpoint_id, decided_by)
                           VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id"#,
                        prompt_id,
                        chosen,
                        rejected,
                        p.chosen_score,
                        p.rejected_score,
                        g.checkpoint_id,
                        g.decided_by.as_ref().map(storable_json)
                    )
                    .fetch_one(&mut *tx)
                    .await?,
                )
            }
        };
        tx.commit().await?;
        Ok(RecordedIds { prompt_id, candidate_ids, judgment_ids, pair_id })
    }

    /// Records judgments of a stored candidate, all or nothing.
    pub async fn record_judgments(
        &self,
        candidate_id: i64,
        judge_checkpoint_id: i64,
        judgments: &[NewJudgment],
    ) -> Result<Vec<i64>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let ids = insert_judgments(&mut tx, candidate_id, judge_checkpoint_id, judgments).await?;
        tx.commit().await?;
        Ok(ids)
    }

    pub async fn prompt(&self, id: i64) -> Result<Option<PromptRow>, sqlx::Error> {
        sqlx::query_as!(PromptRow, "SELECT id, messages, source, iteration, instructions, created_at FROM prompts WHERE id = $1", id)
            .fetch_optional(&self.pool)
            .await
    }

    pub async fn candidate(&self, id: i64) -> Result<Option<CandidateRow>, sqlx::Error> {
        sqlx::query_as!(
            CandidateRow,
            r#"SELECT id, prompt_id, checkpoint_id, choice_index, text, prompt_tokens, completion_tokens,
                      finish_reason, temperature, top_p, max_tokens, seed, created_at
               FROM candidates WHERE id = $1"#,
            id
        )
        .fetch_optional(&self.pool)
        .await
    }

    pub async fn candidates_of_prompt(&self, prompt_id: i64) -> Result<Vec<CandidateRow>, sqlx::Error> {
        sqlx::query_as!(
            CandidateRow,
            r#"SELECT id, prompt_id, checkpoint_id, choice_index, text, prompt_tokens, completion_tokens,
                      finish_reason, temperature, top_p, max_tokens, seed, created_at
               FROM candidates WHERE prompt_id = $1 ORDER BY choice_index"#,
            prompt_id
        )
        .fetch_all(&self.pool)
        .await
    }

    pub async fn judgments_of_candidates(&self, candidate_ids: &[i64]) -> Result<Vec<JudgmentRow>, sqlx::Error> {
        sqlx::query_as!(
            JudgmentRow,
            r#"SELECT id, candidate_id, judge_checkpoint_id, sample_index, method, score, raw_text, created_at
               FROM judgments WHERE candidate_id = ANY($1) ORDER BY candidate_id, id"#,
            candidate_ids
        )
        .fetch_all(&self.pool)
        .await
    }

    /// Prompts, newest first, with their candidate, judged and pair counts.
    pub async fn prompts(&self, f: &PromptFilter, limit: i64, offset: i64) -> Result<Vec<PromptSummary>, sqlx::Error> {
        sqlx::query_as!(
            PromptSummary,
            r#"SELECT p.id, p.messages, p.source, p.iteration, p.instructions, p.created_at,
                      (SELECT min(c.checkpoint_id) FROM candidates c WHERE c.prompt_id = p.id) AS checkpoint_id,
                      (SELECT count(*) FROM candidates c WHERE c.prompt_id = p.id) AS "candidates!",
                      (SELECT count(DISTINCT j.candidate_id) FROM judgments j JOIN candidates c ON c.id = j.candidate_id
                        WHERE c.prompt_id = p.id) AS "judged!",
                      (SELECT count(*) FROM pairs pr WHERE pr.prompt_id = p.id) AS "pairs!"
               FROM prompts p
               WHERE ($1::int IS NULL OR p.iteration = $1) AND ($2::text IS NULL OR p.source = $2)
                 AND ($3::bigint IS NULL OR EXISTS (SELECT 1 FROM candidates c WHERE c.prompt_id = p.id AND c.checkpoint_id = $3))
                 AND ($4::bool IS NULL OR $4 = EXISTS (SELECT 1 FROM pairs pr WHERE pr.prompt_id = p.id))
                 AND ($5::bool IS NULL OR $5 = EXISTS (SELECT 1 FROM judgments j JOIN candidates c ON c.id = j.candidate_id
                                                        WHERE c.prompt_id = p.id))
               ORDER BY p.id DESC LIMIT $6 OFFSET $7"#,
            f.iteration,
            f.source,
            f.checkpoint_id,
            f.has_pair,
            f.judged,
            limit,
            offset
        )
        .fetch_all(&self.pool)
        .await
    }

    /// Pairs, newest first, optionally of one status and one checkpoint.
    pub async fn pairs(
        &self,
        status: Option<&str>,
        checkpoint_id: Option<i64>,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<PairRow>, sqlx::Error> {
        sqlx::query_as!(
            PairRow,
            r#"SELECT id, prompt_id, chosen_id, rejected_id, chosen_score, rejected_score, checkpoint_id, status, decided_by, created_at
               FROM pairs
               WHERE ($1::text IS NULL OR status = $1) AND ($2::bigint IS NULL OR checkpoint_id = $2)
               ORDER BY id DESC LIMIT $3 OFFSET $4"#,
            status,
            checkpoint_id,
            limit,
            offset
        )
        .fetch_all(&self.pool)
        .await
    }

    /// Stores a prompt on its own (self-instruction) and returns its id.
    pub async fn insert_prompt(&self, messages: &serde_json::Value, source: &str, iteration: i32) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar!(
            "INSERT INTO prompts (messages, source, iteration) VALUES ($1, $2, $3) RETURNING id",
            storable_json(messages),
            source,
            iteration
        )
        .fetch_one(&self.pool)
        .await
    }

    /// The last user message of every stored prompt (of one source, if given).
    pub async fn prompt_texts(&self, source: Option<&str>) -> Result<Vec<String>, sqlx::Error> {
        let all = sqlx::query_scalar!("SELECT messages FROM prompts WHERE ($1::text IS NULL OR source = $1) ORDER BY id", source)
            .fetch_all(&self.pool)
            .await?;
        Ok(all
            .iter()
            .filter_map(|m| {
                m.as_array()?.iter().rev().find(|m| m["role"] == "user").and_then(|m| m["content"].as_str()).map(str::to_string)
            })
            .collect())
    }

    pub async fn pairs_of_prompt(&self, prompt_id: i64) -> Result<Vec<PairRow>, sqlx::Error> {
        sqlx::query_as!(
            PairRow,
            r#"SELECT id, prompt_id, chosen_id, rejected_id, chosen_score, rejected_score, checkpoint_id, status, decided_by, created_at
               FROM pairs WHERE prompt_id = $1 ORDER BY id"#,
            prompt_id
        )
        .fetch_all(&self.pool)
        .await
    }
}

async fn insert_judgments(
    tx: &mut sqlx::PgConnection,
    candidate_id: i64,
    judge_checkpoint_id: i64,
    judgments: &[NewJudgment],
) -> Result<Vec<i64>, sqlx::Error> {
    let mut ids = Vec::with_capacity(judgments.len());
    for j in judgments {
        let raw_text = storable(&j.raw_text);
        ids.push(
            sqlx::query_scalar!(
                r#"INSERT INTO judgments (candidate_id, judge_checkpoint_id, sample_index, method, score, raw_text)
                   VALUES ($1, $2, $3, $4, $5, $6) RETURNING id"#,
                candidate_id,
                judge_checkpoint_id,
                j.sample_index,
                j.method,
                j.score,
                raw_text.as_ref()
            )
            .fetch_one(&mut *tx)
            .await?,
        );
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(text: &str) -> NewCandidate {
        NewCandidate {
            text: text.into(),
            prompt_tokens: 10,
            completion_tokens: 3,
            finish_reason: "stop".into(),
            temperature: 0.7,
            top_p: 0.9,
            max_tokens: 16,
            seed: 1,
        }
    }

    fn judgment(score: Option<f32>) -> NewJudgment {
        NewJudgment { sample_index: 0, method: "sample".into(), score, raw_text: "Score: ?".into() }
    }

    async fn generation(store: &Store) -> NewGeneration {
        let checkpoint = store.activate_served("m", "/m.gguf", "gguf").await.unwrap();
        NewGeneration {
            messages: serde_json::json!([{"role": "user", "content": "hi"}]),
            source: "user".into(),
            iteration: 0,
            checkpoint_id: checkpoint.id,
            candidates: vec![candidate("a"), candidate("b")],
            judgments: vec![vec![judgment(Some(4.0)), judgment(None)], vec![judgment(Some(1.0))]],
            pair: Some(NewPair { chosen: 0, rejected: 1, chosen_score: 4.0, rejected_score: 1.0 }),
            instructions: Some(serde_json::json!([{"kind": "no_commas"}])),
            decided_by: Some(serde_json::json!({"reward": "judge+verify", "by": "verifier"})),
        }
    }

    #[sqlx::test(migrations = "./migrations")]
    async fn a_generation_lands_whole_with_matching_ids(pool: sqlx::PgPool) {
        let store = Store::from_pool(pool);
        let g = generation(&store).await;
        let ids = store.record_generation(&g).await.unwrap();
        assert_eq!(ids.candidate_ids.len(), 2);
        assert_eq!(ids.judgment_ids.iter().map(Vec::len).collect::<Vec<_>>(), vec![2, 1]);
        let rows = store.candidates_of_prompt(ids.prompt_id).await.unwrap();
        assert_eq!(rows.iter().map(|r| r.id).collect::<Vec<_>>(), ids.candidate_ids);
        let judgments = store.judgments_of_candidates(&ids.candidate_ids).await.unwrap();
        assert_eq!(judgments.iter().filter(|j| j.score.is_none()).count(), 1, "unparsed stays NULL");
        let pairs = store.pairs(Some("available"), Some(g.checkpoint_id), 10, 0).await.unwrap();
        assert_eq!(pairs.len(), 1);
        assert_eq!((pairs[0].chosen_id, pairs[0].rejected_id), (ids.candidate_ids[0], ids.candidate_ids[1]));
        assert_eq!(Some(pairs[0].id), ids.pair_id);
        assert_eq!(pairs[0].decided_by, g.decided_by);
        let prompt = store.prompt(ids.prompt_id).await.unwrap().unwrap();
        assert_eq!(prompt.instructions, g.instructions);
    }

    #[sqlx::test(migrations = "./migrations")]
    async fn a_failure_midway_leaves_nothing_behind(pool: sqlx::PgPool) {
        let store = Store::from_pool(pool.clone());
        let mut g = generation(&store).await;
        // The pair is written last; a pair of a candidate with itself violates a CHECK.
        g.pair = Some(NewPair { chosen: 0, rejected: 0, chosen_score: 4.0, rejected_score: 4.0 });
        assert!(store.record_generation(&g).await.is_err());
        let counts: (i64, i64, i64) =
            sqlx::query_as("SELECT (SELECT count(*) FROM prompts), (SELECT count(*) FROM candidates), (SELECT count(*) FROM judgments)")
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(counts, (0, 0, 0));
    }

    #[sqlx::test(migrations = "./migrations")]
    async fn scores_outside_zero_to_five_are_refused(pool: sqlx::PgPool) {
        let store = Store::from_pool(pool);
        let mut g = generation(&store).await;
        g.judgments[0][0].score = Some(7.0);
        assert!(store.record_generation(&g).await.is_err());
    }
}
