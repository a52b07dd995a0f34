//! `POST /judge` (also `/v1/judge`): the served model judges a response (given inline,
//! or a stored candidate, whose judgments are then recorded).

use axum::extract::State;
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::chat::{validate_messages, RequestMessage};
use super::error::ErrorBody;
use super::ServedChecks;
use super::{ApiError, ApiJson, AppState, Limits};
use crate::engine::ChatMessage;
use crate::generation::new_judgments;
use crate::judge::{self, JudgeSettings, Verdict};
pub use crate::protocol::judge::{JudgeOptions, JudgeRequest, JudgeResponse, JudgmentOut};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(judge))
}

pub(super) fn validate_judge_options(o: JudgeOptions, limits: &Limits, seed: u64) -> Result<JudgeSettings, ApiError> {
    let samples = o.samples.unwrap_or(3.min(limits.max_judge_samples as i64));
    if samples < 1 || samples > limits.max_judge_samples as i64 {
        return Err(ApiError::field(
            "judge.samples",
            format!("judge samples must be between 1 and {}, got {samples}", limits.max_judge_samples),
        ));
    }
    let temperature = o.temperature.unwrap_or(0.7);
    if !super::sampling::TEMPERATURE.contains(&temperature) {
        return Err(ApiError::field("judge.temperature", format!("judge temperature must be between 0 and 2, got {temperature}")));
    }
    let top_p = o.top_p.unwrap_or(0.9);
    if !(top_p > 0.0 && top_p <= super::sampling::TOP_P_MAX) {
        return Err(ApiError::field("judge.top_p", format!("judge top_p must be greater than 0 and at most 1, got {top_p}")));
    }
    let max_tokens = o.max_tokens.unwrap_or(256.min(limits.max_tokens as i64));
    if max_tokens < 1 || max_tokens > limits.max_tokens as i64 {
        return Err(ApiError::field(
            "judge.max_tokens",
            format!("judge max_tokens must be between 1 and {}, got {max_tokens}", limits.max_tokens),
        ));
    }
    Ok(JudgeSettings {
        samples: samples as usize,
        method: o.method.unwrap_or_default(),
        temperature: temperature as f32,
        top_p: top_p as f32,
        max_tokens: max_tokens as usize,
        seed,
    })
}

impl JudgmentOut {
    pub fn list(verdict: &Verdict, ids: Option<&[i64]>) -> Vec<Self> {
        verdict
            .samples
            .iter()
            .enumerate()
            .map(|(k, s)| Self {
                judgment_id: ids.and_then(|ids| ids.get(k).copied()),
                sample_index: k,
                score: s.score,
                text: s.text.clone(),
            })
            .collect()
    }
}

/// Judge a response
///
/// The served model scores a response with the additive 5-point rubric, `samples`
/// times (run concurrently). Give a stored `candidate_id` (its judgments are recorded),
/// or `prompt`/`messages` with a `response` (nothing is recorded).
#[utoipa::path(
    post,
    path = "/judge",
    tag = "self-rewarding",
    request_body = JudgeRequest,
    responses(
        (status = 200, description = "Each sample's text and score, the mean and how many parsed", body = JudgeResponse),
        (status = 400, description = "Invalid field; the message names the field and the limit", body = ErrorBody),
        (status = 404, description = "Unknown model or candidate", body = ErrorBody),
        (status = 429, description = "Too many requests in flight", body = ErrorBody),
        (status = 503, description = "The database is unavailable; nothing was written", body = ErrorBody),
    )
)]
pub async fn judge(State(state): State<AppState>, ApiJson(request): ApiJson<JudgeRequest>) -> Result<Json<JudgeResponse>, ApiError> {
    let _permit = state.admit()?;
    let served = state.current();
    served.check_model(request.model.as_deref().unwrap_or(super::models::CURRENT_ALIAS))?;
    let seed = request.seed.map_or_else(rand::random::<u64>, |s| s as u64);
    let options = JudgeOptions {
        samples: request.samples,
        method: request.method,
        temperature: request.temperature,
        top_p: request.top_p,
        max_tokens: request.max_tokens,
    };
    let settings = validate_judge_options(options, &state.limits, seed)?;
    let (question, response, candidate_id) = match (request.candidate_id, request.response) {
        (Some(_), Some(_)) => return Err(ApiError::field("response", "give either candidate_id or response, not both")),
        (None, None) => return Err(ApiError::field("response", "response (or candidate_id) is required")),
        (Some(_), None) if request.prompt.is_some() || request.messages.is_some() => {
            return Err(ApiError::field(
                "candidate_id",
                "give candidate_id alone (its prompt is stored), or prompt or messages with response",
            ));
        }
        (Some(id), None) => {
            let candidate = state.store.candidate(id).await?.ok_or_else(|| ApiError::NotFound(format!("candidate {id} does not exist")))?;
            let prompt = state
                .store
                .prompt(candidate.prompt_id)
                .await?
                .ok_or_else(|| ApiError::NotFound(format!("prompt {} does not exist", candidate.prompt_id)))?;
            let messages = validate_messages(
                serde_json::from_value::<Vec<RequestMessage>>(prompt.messages).map_err(|e| ApiError::Internal(e.into()))?,
            )?;
            (judge::question_text(&messages), candidate.text, Some(id))
        }
        (None, Some(response)) => {
            let messages = match (request.messages, request.prompt) {
                (Some(m), None) if !m.is_empty() => validate_messages(m)?,
                (None, Some(p)) if !p.trim().is_empty() => vec![ChatMessage { role: "user".into(), content: p }],
                _ => return Err(ApiError::field("prompt", "exactly one of prompt or messages (non-empty) is required with response")),
            };
            (judge::question_text(&messages), response, None)
        }
    };
    let record = candidate_id.is_some() && request.record.unwrap_or(true);
    let checkpoint_id = if record { Some(state.recording_checkpoint(&served).await?) } else { None };

    let verdict = judge::judge(served.engine.as_ref(), &state.judge_template, &question, &response, &settings).await?;
    let ids = match (candidate_id, checkpoint_id) {
        (Some(candidate_id), Some(checkpoint_id)) => {
            Some(state.store.record_judgments(candidate_id, checkpoint_id, &new_judgments(&verdict, settings.method.as_str())).await?)
        }
        _ => None,
    };
    Ok(Json(JudgeResponse {
        object: "srlm.judgment".into(),
        model: served.engine.info().name.clone(),
        checkpoint_id: checkpoint_id.or(served.checkpoint_id()),
        candidate_id,
        method: settings.method,
        samples: JudgmentOut::list(&verdict, ids.as_deref()),
        mean: verdict.mean,
        parsed: verdict.parsed(),
    }))
}
