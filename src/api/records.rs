//! Read endpoints for spot-checking what `/generate` and `/judge` recorded.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ErrorBody;
use super::{ApiError, AppState};
use crate::store::evaluations::Evaluation;
use crate::store::records::{CandidateRow, JudgmentRow, PairRow, PromptRow};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_prompt)).routes(routes!(get_candidate)).routes(routes!(list_pairs)).routes(routes!(list_evaluations))
}

fn db(err: sqlx::Error) -> ApiError {
    ApiError::DatabaseUnavailable(err.to_string())
}

/// A candidate with its judgments.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CandidateDetail {
    #[serde(flatten)]
    pub candidate: CandidateRow,
    pub judgments: Vec<JudgmentRow>,
}

/// A prompt with its candidates, their judgments, and the pairs made from them.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PromptDetail {
    #[serde(flatten)]
    pub prompt: PromptRow,
    pub candidates: Vec<CandidateDetail>,
    pub pairs: Vec<PairRow>,
}

/// A prompt with its candidates and judgments
#[utoipa::path(
    get,
    path = "/prompts/{id}",
    tag = "records",
    params(("id" = i64, Path, description = "Prompt id (as returned by /generate)")),
    responses(
        (status = 200, body = PromptDetail),
        (status = 404, description = "No such prompt", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    )
)]
pub async fn get_prompt(State(state): State<AppState>, Path(id): Path<i64>) -> Result<Json<PromptDetail>, ApiError> {
    let prompt = state.store.prompt(id).await.map_err(db)?.ok_or_else(|| ApiError::NotFound(format!("prompt {id} does not exist")))?;
    let candidates = state.store.candidates_of_prompt(id).await.map_err(db)?;
    let ids: Vec<i64> = candidates.iter().map(|c| c.id).collect();
    let mut judgments = state.store.judgments_of_candidates(&ids).await.map_err(db)?;
    let candidates = candidates
        .into_iter()
        .map(|candidate| {
            let (mine, rest): (Vec<_>, Vec<_>) = judgments.drain(..).partition(|j| j.candidate_id == candidate.id);
            judgments = rest;
            CandidateDetail { candidate, judgments: mine }
        })
        .collect();
    let pairs = state.store.pairs_of_prompt(id).await.map_err(db)?;
    Ok(Json(PromptDetail { prompt, candidates, pairs }))
}

/// One candidate with its judgments
#[utoipa::path(
    get,
    path = "/candidates/{id}",
    tag = "records",
    params(("id" = i64, Path, description = "Candidate id")),
    responses(
        (status = 200, body = CandidateDetail),
        (status = 404, description = "No such candidate", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    )
)]
pub async fn get_candidate(State(state): State<AppState>, Path(id): Path<i64>) -> Result<Json<CandidateDetail>, ApiError> {
    let candidate =
        state.store.candidate(id).await.map_err(db)?.ok_or_else(|| ApiError::NotFound(format!("candidate {id} does not exist")))?;
    let judgments = state.store.judgments_of_candidates(&[id]).await.map_err(db)?;
    Ok(Json(CandidateDetail { candidate, judgments }))
}

const MAX_PAGE: i64 = 500;

/// A checked page: limit 1 to 500 (default 50), offset 0 or more.
fn page(limit: Option<i64>, offset: Option<i64>) -> Result<(i64, i64), ApiError> {
    let limit = limit.unwrap_or(50);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::field("limit", format!("limit must be between 1 and {MAX_PAGE}, got {limit}")));
    }
    let offset = offset.unwrap_or(0);
    if offset < 0 {
        return Err(ApiError::field("offset", format!("offset must be 0 or more, got {offset}")));
    }
    Ok((limit, offset))
}

#[derive(Debug, Clone, Deserialize, IntoParams)]
pub struct PairQuery {
    /// `available`, `claimed` or `consumed`.
    pub status: Option<String>,
    /// Only pairs made by this checkpoint.
    pub checkpoint_id: Option<i64>,
    /// Page size, 1 to 500 (default 50).
    pub limit: Option<i64>,
    /// Rows to skip (default 0).
    pub offset: Option<i64>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PairPage {
    pub data: Vec<PairRow>,
    pub limit: i64,
    pub offset: i64,
}

/// Preference pairs, newest first
#[utoipa::path(
    get,
    path = "/pairs",
    tag = "records",
    params(PairQuery),
    responses(
        (status = 200, body = PairPage),
        (status = 400, description = "Invalid filter or page", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    )
)]
pub async fn list_pairs(
    State(state): State<AppState>,
    query: Result<Query<PairQuery>, QueryRejection>,
) -> Result<Json<PairPage>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::field("query", e.body_text()))?;
    if let Some(status) = q.status.as_deref() {
        if !["available", "claimed", "consumed"].contains(&status) {
            return Err(ApiError::field("status", format!("status must be available, claimed or consumed, got `{status}`")));
        }
    }
    let (limit, offset) = page(q.limit, q.offset)?;
    let data = state.store.pairs(q.status.as_deref(), q.checkpoint_id, limit, offset).await.map_err(db)?;
    Ok(Json(PairPage { data, limit, offset }))
}

#[derive(Debug, Clone, Deserialize, IntoParams)]
pub struct EvaluationQuery {
    /// `rm` or `h2h`.
    pub kind: Option<String>,
    /// Only measurements of this checkpoint (rm: the judge; h2h: model A).
    pub checkpoint_id: Option<i64>,
    /// Page size, 1 to 500 (default 50).
    pub limit: Option<i64>,
    /// Rows to skip (default 0).
    pub offset: Option<i64>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EvaluationPage {
    pub data: Vec<Evaluation>,
    pub limit: i64,
    pub offset: i64,
}

/// What `srlm eval rm` and `srlm eval h2h` measured, oldest first
#[utoipa::path(
    get,
    path = "/evaluations",
    tag = "records",
    params(EvaluationQuery),
    responses(
        (status = 200, body = EvaluationPage),
        (status = 400, description = "Invalid filter or page", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    )
)]
pub async fn list_evaluations(
    State(state): State<AppState>,
    query: Result<Query<EvaluationQuery>, QueryRejection>,
) -> Result<Json<EvaluationPage>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::field("query", e.body_text()))?;
    if let Some(kind) = q.kind.as_deref() {
        if !["rm", "h2h"].contains(&kind) {
            return Err(ApiError::field("kind", format!("kind must be rm or h2h, got `{kind}`")));
        }
    }
    let (limit, offset) = page(q.limit, q.offset)?;
    let data = state.store.evaluations(q.kind.as_deref(), q.checkpoint_id, limit, offset).await.map_err(db)?;
    Ok(Json(EvaluationPage { data, limit, offset }))
}
