-- The yardstick (`srlm eval ifeval`) is stored beside the judge and head-to-head results.
ALTER TABLE evaluations DROP CONSTRAINT evaluations_kind_check;
ALTER TABLE evaluations ADD CONSTRAINT evaluations_kind_check CHECK (kind IN ('rm', 'h2h', 'ifeval'));

-- Prompts that carry checkable instructions keep them (`verify::Instruction`, as JSON);
-- NULL for free-form prompts.
ALTER TABLE prompts ADD COLUMN instructions JSONB;

-- What decided each pair: the reward option, the signal that made it (judge or
-- verifier), the judge's method, checkpoint and template hash, and the verifier's
-- outcome for both answers. NULL for pairs recorded before this was kept.
ALTER TABLE pairs ADD COLUMN decided_by JSONB;

-- The swap gate: a checkpoint that measured worse than its parent is kept, not served;
-- `error` says why (the figures of both).
ALTER TABLE checkpoints DROP CONSTRAINT checkpoints_status_check;
ALTER TABLE checkpoints ADD CONSTRAINT checkpoints_status_check
    CHECK (status IN ('registered', 'active', 'inactive', 'failed', 'refused'));
