-- The self-rewarding data path: prompts, the candidates a checkpoint generated for them,
-- the judgments of each candidate, and the preference pairs the trainer consumes.

CREATE TABLE prompts (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The chat messages (OpenAI shape) the candidates answer.
    messages   JSONB       NOT NULL,
    source     TEXT        NOT NULL DEFAULT 'user' CHECK (source IN ('seed', 'self_instruct', 'user')),
    iteration  INTEGER     NOT NULL DEFAULT 0,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE candidates (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    prompt_id         BIGINT      NOT NULL REFERENCES prompts (id) ON DELETE CASCADE,
    checkpoint_id     BIGINT      NOT NULL REFERENCES checkpoints (id),
    choice_index      INTEGER     NOT NULL,
    text              TEXT        NOT NULL,
    prompt_tokens     INTEGER     NOT NULL,
    completion_tokens INTEGER     NOT NULL,
    finish_reason     TEXT        NOT NULL,
    temperature       REAL        NOT NULL,
    top_p             REAL        NOT NULL,
    max_tokens        INTEGER     NOT NULL,
    seed              BIGINT      NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (prompt_id, choice_index)
);

CREATE TABLE judgments (
    id                  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    candidate_id        BIGINT      NOT NULL REFERENCES candidates (id) ON DELETE CASCADE,
    judge_checkpoint_id BIGINT      NOT NULL REFERENCES checkpoints (id),
    sample_index        INTEGER     NOT NULL,
    method              TEXT        NOT NULL CHECK (method IN ('sample', 'constrained', 'expected')),
    -- NULL when the judge's text held no valid score: never coerced to a number.
    score               REAL        CHECK (score BETWEEN 0 AND 5),
    raw_text            TEXT        NOT NULL,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX candidates_prompt_idx ON candidates (prompt_id);
CREATE INDEX judgments_candidate_idx ON judgments (candidate_id);

CREATE TABLE pairs (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    prompt_id        BIGINT      NOT NULL REFERENCES prompts (id) ON DELETE CASCADE,
    chosen_id        BIGINT      NOT NULL REFERENCES candidates (id) ON DELETE CASCADE,
    rejected_id      BIGINT      NOT NULL REFERENCES candidates (id) ON DELETE CASCADE,
    chosen_score     REAL        NOT NULL,
    rejected_score   REAL        NOT NULL,
    -- The checkpoint whose candidates and judgments made the pair: M(t) in DPO(M(t)).
    checkpoint_id    BIGINT      NOT NULL REFERENCES checkpoints (id),
    status           TEXT        NOT NULL DEFAULT 'available' CHECK (status IN ('available', 'claimed', 'consumed')),
    claimed_by       TEXT,
    lease_expires_at TIMESTAMPTZ,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (chosen_id <> rejected_id)
);

-- The trainer's query: pairs of checkpoint X that are available (or whose lease ran out).
CREATE INDEX pairs_checkpoint_status_idx ON pairs (checkpoint_id, status, id);
CREATE INDEX pairs_prompt_idx ON pairs (prompt_id);
