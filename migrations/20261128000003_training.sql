-- Training runs (SFT and DPO), their per-step metrics, and which pairs a run consumed.

CREATE TABLE training_runs (
    id                   BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind                 TEXT        NOT NULL CHECK (kind IN ('sft', 'dpo')),
    base_checkpoint_id   BIGINT      REFERENCES checkpoints (id),
    output_checkpoint_id BIGINT      REFERENCES checkpoints (id),
    -- The trainer's name for itself; pairs it claims carry it in pairs.claimed_by.
    worker               TEXT        NOT NULL,
    config               JSONB       NOT NULL,
    status               TEXT        NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'succeeded', 'failed')),
    error                TEXT,
    -- Examples used, truncated and skipped for length; tokens trained.
    examples             INTEGER,
    truncated            INTEGER,
    skipped              INTEGER,
    tokens               BIGINT,
    started_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at          TIMESTAMPTZ,
    CHECK ((status = 'succeeded') = (output_checkpoint_id IS NOT NULL))
);

CREATE TABLE training_steps (
    run_id     BIGINT      NOT NULL REFERENCES training_runs (id) ON DELETE CASCADE,
    step       INTEGER     NOT NULL,
    -- loss, lr, grad_norm and the loss's own measurements (rewards/chosen, …).
    metrics    JSONB       NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, step)
);

ALTER TABLE pairs ADD COLUMN consumed_by_run BIGINT REFERENCES training_runs (id);
