-- A person's verdict on a pair (POST /pairs/{id}/review): `agree`, `disagree` (the pair
-- leaves training: status `excluded`, which no trainer claims) or `swap` (chosen and
-- rejected exchanged). Only an `available` pair changes; a claimed or consumed one keeps
-- its history and the review is recorded only (`applied` false). The judge's order at
-- the time of the review is kept with it.
ALTER TABLE pairs DROP CONSTRAINT pairs_status_check;
ALTER TABLE pairs ADD CONSTRAINT pairs_status_check CHECK (status IN ('available', 'claimed', 'consumed', 'excluded'));

CREATE TABLE pair_reviews (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pair_id     BIGINT      NOT NULL REFERENCES pairs (id) ON DELETE CASCADE,
    verdict     TEXT        NOT NULL CHECK (verdict IN ('agree', 'disagree', 'swap')),
    note        TEXT,
    -- The API key's label, or `anonymous` on a server without keys.
    reviewer    TEXT        NOT NULL,
    applied     BOOLEAN     NOT NULL,
    chosen_id   BIGINT      NOT NULL REFERENCES candidates (id) ON DELETE CASCADE,
    rejected_id BIGINT      NOT NULL REFERENCES candidates (id) ON DELETE CASCADE,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX pair_reviews_pair_idx ON pair_reviews (pair_id, id);

-- Judge–human agreement (`srlm eval reviews`) is stored beside the other measurements.
ALTER TABLE evaluations DROP CONSTRAINT evaluations_kind_check;
ALTER TABLE evaluations ADD CONSTRAINT evaluations_kind_check CHECK (kind IN ('rm', 'h2h', 'ifeval', 'review'));
