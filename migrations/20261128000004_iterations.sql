-- One row per finished self-rewarding iteration: what `srlm loop` measured.

CREATE TABLE iteration_reports (
    id                   BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    iteration            INTEGER     NOT NULL,
    base_checkpoint_id   BIGINT      NOT NULL REFERENCES checkpoints (id),
    output_checkpoint_id BIGINT      REFERENCES checkpoints (id),
    report               JSONB       NOT NULL,
    created_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (base_checkpoint_id)
);
