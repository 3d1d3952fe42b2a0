-- Sub-transaction barrier table for PostgreSQL (dtx-client, contract §6.1).
-- One row per (gid, branch_id, op, barrier_id); the unique key is what the
-- barrier's INSERT ... ON CONFLICT DO NOTHING counts on.
CREATE SCHEMA IF NOT EXISTS dtm_barrier;
CREATE TABLE IF NOT EXISTS dtm_barrier.barrier (
  id bigserial PRIMARY KEY,
  trans_type varchar(45) NOT NULL DEFAULT '',
  gid varchar(128) NOT NULL DEFAULT '',
  branch_id varchar(128) NOT NULL DEFAULT '',
  op varchar(45) NOT NULL DEFAULT '',
  barrier_id varchar(45) NOT NULL DEFAULT '',
  reason varchar(45) NOT NULL DEFAULT '',
  create_time timestamptz NOT NULL DEFAULT now(),
  update_time timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT uniq_barrier UNIQUE (gid, branch_id, op, barrier_id)
);
