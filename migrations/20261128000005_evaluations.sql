-- Measurements of checkpoints: `srlm eval rm` (the judge against human rankings) and
-- `srlm eval h2h` (one model's answers against another's). Kept for the API and charts.

CREATE TABLE evaluations (
    id                     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind                   TEXT        NOT NULL CHECK (kind IN ('rm', 'h2h')),
    -- The checkpoint measured (rm: the judge; h2h: model A), when srlm knows it.
    checkpoint_id          BIGINT      REFERENCES checkpoints (id),
    -- h2h: model B, when srlm knows it.
    opponent_checkpoint_id BIGINT      REFERENCES checkpoints (id),
    -- What was measured, in words: a server URL, a checkpoint, a file.
    subject                TEXT        NOT NULL,
    opponent               TEXT,
    -- rm: the judging method; h2h: the judge.
    method                 TEXT        NOT NULL,
    dataset                TEXT        NOT NULL,
    items                  INTEGER     NOT NULL CHECK (items >= 0),
    metrics                JSONB       NOT NULL,
    config                 JSONB       NOT NULL DEFAULT '{}',
    created_at             TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX evaluations_checkpoint_idx ON evaluations (checkpoint_id, kind);
CREATE INDEX evaluations_kind_idx ON evaluations (kind, created_at);
