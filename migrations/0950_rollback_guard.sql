-- The rollback guard's settings per shop, written by the command that configures the guard, in the
-- transaction of its event (like shop_rules): the guard's follower finds the shops to watch without
-- replaying every shop's guard aggregate. The aggregate (domain/rollback_guard.py) is the record.
CREATE TABLE rollback_guards (
    shop_id uuid PRIMARY KEY,
    metric text NOT NULL,
    level int NOT NULL,
    periods int NOT NULL,
    enabled boolean NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
