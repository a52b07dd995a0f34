-- Checkpoints: model files the server can host, with their lineage (M0 -> M1 -> M2 ...).
CREATE TABLE checkpoints (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         TEXT        NOT NULL,
    parent_id    BIGINT      REFERENCES checkpoints (id),
    iteration    INTEGER     NOT NULL DEFAULT 0,
    path         TEXT        NOT NULL,
    format       TEXT        NOT NULL CHECK (format IN ('gguf', 'safetensors')),
    status       TEXT        NOT NULL DEFAULT 'registered'
                             CHECK (status IN ('registered', 'active', 'inactive', 'failed')),
    error        TEXT,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    activated_at TIMESTAMPTZ
);

CREATE UNIQUE INDEX checkpoints_path_key ON checkpoints (path);
CREATE INDEX checkpoints_status_idx ON checkpoints (status);
