-- Switchback price experiments (domain/experiment.py): lookup rows written by the experiment's own
-- commands in their transaction. `experiments` lists a shop's experiments and, while one runs, when
-- the policy next has work for it (next_at); `experiment_listings` holds each listing of an
-- experiment that has not ended: its primary key is what refuses two experiments on one listing.
CREATE TABLE experiments (
    experiment_id uuid PRIMARY KEY,
    shop_id uuid NOT NULL,
    next_at timestamptz
);
CREATE INDEX experiments_shop ON experiments (shop_id, experiment_id);
CREATE INDEX experiments_due ON experiments (next_at) WHERE next_at IS NOT NULL;

CREATE TABLE experiment_listings (
    listing_id uuid PRIMARY KEY,
    experiment_id uuid NOT NULL,
    shop_id uuid NOT NULL
);
CREATE INDEX experiment_listings_experiment ON experiment_listings (experiment_id);
