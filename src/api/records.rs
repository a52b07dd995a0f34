//! Read endpoints for spot-checking what `/generate` and `/judge` recorded.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Caller;
use super::error::ErrorBody;
use super::{ApiError, ApiJson, AppState};
use crate::store::evaluations::Evaluation;
use crate::store::records::{CandidateRow, JudgmentRow, PairRow, PromptFilter, PromptRow, PromptSummary};
use crate::store::reviews::{ReviewRow, ReviewVerdict};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_prompts))
        .routes(routes!(get_prompt))
        .routes(routes!(get_candidate))
        .routes(routes!(list_pairs))
        .routes(routes!(get_pair))
        .routes(routes!(review_pair))
        .routes(routes!(list_evaluations))
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
pub async fn get_prompt(State(state): State<AppState>, super::ApiPath(id): super::ApiPath<i64>) -> Result<Json<PromptDetail>, ApiError> {
    let prompt = state.store.prompt(id).await?.ok_or_else(|| ApiError::NotFound(format!("prompt {id} does not exist")))?;
    let candidates = state.store.candidates_of_prompt(id).await?;
    let ids: Vec<i64> = candidates.iter().map(|c| c.id).collect();
    let mut judgments = state.store.judgments_of_candidates(&ids).await?;
    let candidates = candidates
        .into_iter()
        .map(|candidate| {
            let (mine, rest): (Vec<_>, Vec<_>) = judgments.drain(..).partition(|j| j.candidate_id == candidate.id);
            judgments = rest;
            CandidateDetail { candidate, judgments: mine }
        })
        .collect();
    let pairs = state.store.pairs_of_prompt(id).await?;
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
pub async fn get_candidate(
    State(state): State<AppState>,
    super::ApiPath(id): super::ApiPath<i64>,
) -> Result<Json<CandidateDetail>, ApiError> {
    let candidate = state.store.candidate(id).await?.ok_or_else(|| ApiError::NotFound(format!("candidate {id} does not exist")))?;
    let judgments = state.store.judgments_of_candidates(&[id]).await?;
    Ok(Json(CandidateDetail { candidate, judgments }))
}

pub(crate) const MAX_PAGE: i64 = 500;
/// What `GET /pairs?status=` accepts.
pub(crate) const PAIR_STATUSES: [&str; 4] = ["available", "claimed", "consumed", "excluded"];
/// What `GET /evaluations?kind=` accepts.
pub(crate) const EVALUATION_KINDS: [&str; 4] = ["rm", "h2h", "ifeval", "review"];

/// 400 naming `param` unless `value` (when given) is one of `allowed`.
fn one_of(param: &str, value: Option<&str>, allowed: &[&str]) -> Result<(), ApiError> {
    match value {
        Some(v) if !allowed.contains(&v) => {
            Err(ApiError::field(param, format!("{param} must be one of {}, got `{v}`", allowed.join(", "))))
        }
        _ => Ok(()),
    }
}

/// A query string that does not parse, as a 400 naming the parameter where serde says
/// which (`limit: invalid digit found in string`).
fn query_error(rejection: QueryRejection) -> ApiError {
    let text = rejection.body_text();
    let detail = text.strip_prefix("Failed to deserialize query string: ").unwrap_or(&text);
    let param = match detail.split_once(": ") {
        Some((name, _)) if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => name.to_string(),
        _ => "query".to_string(),
    };
    ApiError::field(&param, text)
}

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
#[into_params(parameter_in = Query)]
pub struct PromptQuery {
    /// Only prompts of this loop iteration.
    pub iteration: Option<i32>,
    /// `seed`, `self_instruct` or `user`.
    pub source: Option<String>,
    /// Only prompts with candidates generated by this checkpoint.
    pub checkpoint_id: Option<i64>,
    /// `true`: only prompts that made a pair; `false`: only those that did not.
    pub has_pair: Option<bool>,
    /// `true`: only prompts with a judged candidate; `false`: only unjudged ones.
    pub judged: Option<bool>,
    /// Page size, 1 to 500 (default 50).
    pub limit: Option<i64>,
    /// Rows to skip (default 0).
    pub offset: Option<i64>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PromptPage {
    pub data: Vec<PromptSummary>,
    pub limit: i64,
    pub offset: i64,
}

/// Prompts, newest first
///
/// What the loop (or any client) sent to `/generate`, with how many candidates each has,
/// how many were judged and how many pairs it made; open one with `GET /prompts/{id}`
/// for its candidates, scores, judge texts and pairs.
#[utoipa::path(
    get,
    path = "/prompts",
    tag = "records",
    params(PromptQuery),
    responses(
        (status = 200, body = PromptPage),
        (status = 400, description = "Invalid filter or page", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    )
)]
pub async fn list_prompts(
    State(state): State<AppState>,
    query: Result<Query<PromptQuery>, QueryRejection>,
) -> Result<Json<PromptPage>, ApiError> {
    let Query(q) = query.map_err(query_error)?;
    one_of("source", q.source.as_deref(), &super::generate::SOURCES)?;
    ApiError::check_iteration(q.iteration)?;
    let (limit, offset) = page(q.limit, q.offset)?;
    let filter =
        PromptFilter { iteration: q.iteration, source: q.source, checkpoint_id: q.checkpoint_id, has_pair: q.has_pair, judged: q.judged };
    let data = state.store.prompts(&filter, limit, offset).await?;
    Ok(Json(PromptPage { data, limit, offset }))
}

/// A pair with the reviews people gave it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PairDetail {
    #[serde(flatten)]
    pub pair: PairRow,
    /// Oldest first.
    pub reviews: Vec<ReviewRow>,
}

/// A preference pair and its reviews
#[utoipa::path(
    get,
    path = "/pairs/{id}",
    tag = "records",
    params(("id" = i64, Path, description = "Pair id")),
    responses(
        (status = 200, body = PairDetail),
        (status = 404, description = "No such pair", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    )
)]
pub async fn get_pair(State(state): State<AppState>, super::ApiPath(id): super::ApiPath<i64>) -> Result<Json<PairDetail>, ApiError> {
    let pair = state.store.pair(id).await?.ok_or_else(|| ApiError::NotFound(format!("pair {id} does not exist")))?;
    let reviews = state.store.reviews_of_pair(id).await?;
    Ok(Json(PairDetail { pair, reviews }))
}

/// Longest review note, in characters.
pub const MAX_NOTE_CHARS: usize = 2000;

/// A person's verdict on a pair.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct ReviewRequest {
    /// `agree` (the judge's order is right), `disagree` (take the pair out of training)
    /// or `swap` (the rejected answer is the better one).
    pub verdict: ReviewVerdict,
    /// Why, in at most 2000 characters.
    pub note: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReviewResponse {
    pub review: ReviewRow,
    /// The pair after the review.
    pub pair: PairRow,
}

/// Review a pair
///
/// `disagree` takes an available pair out of training (status `excluded`, which no
/// trainer claims); `swap` exchanges its chosen and rejected answers (the review keeps
/// the order it had). A pair that is claimed or already consumed keeps its history: the
/// review is recorded with `applied: false`. The reviewer is the label of the API key
/// (`label:key` in the keys file), or `anonymous` on a server without keys.
#[utoipa::path(
    post,
    path = "/pairs/{id}/review",
    tag = "records",
    params(("id" = i64, Path, description = "Pair id")),
    request_body = ReviewRequest,
    responses(
        (status = 200, body = ReviewResponse),
        (status = 400, description = "Invalid verdict or note", body = ErrorBody),
        (status = 404, description = "No such pair", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    )
)]
pub async fn review_pair(
    State(state): State<AppState>,
    super::ApiPath(id): super::ApiPath<i64>,
    caller: Option<axum::Extension<Caller>>,
    ApiJson(request): ApiJson<ReviewRequest>,
) -> Result<Json<ReviewResponse>, ApiError> {
    let note = request.note.as_deref().map(str::trim).filter(|n| !n.is_empty());
    if let Some(n) = note {
        let chars = n.chars().count();
        if chars > MAX_NOTE_CHARS {
            return Err(ApiError::field("note", format!("note must be at most {MAX_NOTE_CHARS} characters, got {chars}")));
        }
    }
    let reviewer = caller.map_or_else(|| "anonymous".to_string(), |c| c.0 .0);
    let (review, pair) = state
        .store
        .review_pair(id, request.verdict, note, &reviewer)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("pair {id} does not exist")))?;
    Ok(Json(ReviewResponse { review, pair }))
}

#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PairQuery {
    /// `available`, `claimed`, `consumed` or `excluded` (taken out by a reviewer).
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
    let Query(q) = query.map_err(query_error)?;
    one_of("status", q.status.as_deref(), &PAIR_STATUSES)?;
    let (limit, offset) = page(q.limit, q.offset)?;
    let data = state.store.pairs(q.status.as_deref(), q.checkpoint_id, limit, offset).await?;
    Ok(Json(PairPage { data, limit, offset }))
}

#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EvaluationQuery {
    /// `rm`, `h2h`, `ifeval` or `review`.
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

/// What `srlm eval rm`, `h2h` and `ifeval` (and the loop's swap gate) measured, oldest first
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
    let Query(q) = query.map_err(query_error)?;
    one_of("kind", q.kind.as_deref(), &EVALUATION_KINDS)?;
    let (limit, offset) = page(q.limit, q.offset)?;
    let data = state.store.evaluations(q.kind.as_deref(), q.checkpoint_id, limit, offset).await?;
    Ok(Json(EvaluationPage { data, limit, offset }))
}
