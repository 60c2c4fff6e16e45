"""The tables the optimizer and the registry write; each feature with its own table
creates it (the QA expansion's `expanded_qa`)."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR PRIMARY KEY,
    name VARCHAR NOT NULL,
    mode VARCHAR NOT NULL,
    config JSON NOT NULL,
    status VARCHAR NOT NULL,
    stop_reason VARCHAR,
    started_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    finished_at TIMESTAMP,
    baseline_prompt VARCHAR,
    best_prompt VARCHAR,
    baseline_val DOUBLE,
    baseline_test DOUBLE,
    best_val DOUBLE,
    best_test DOUBLE,
    steps INTEGER,
    proposals INTEGER,
    accepted INTEGER
);
CREATE TABLE IF NOT EXISTS prompts (
    prompt_id VARCHAR PRIMARY KEY,
    system VARCHAR NOT NULL,
    template VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);
-- a store made before prompts had demonstrations gains the column
ALTER TABLE prompts ADD COLUMN IF NOT EXISTS demos JSON DEFAULT '[]';
CREATE TABLE IF NOT EXISTS iterations (
    run_id VARCHAR NOT NULL,
    step INTEGER NOT NULL,
    proposal INTEGER NOT NULL,
    batch_ids VARCHAR[] NOT NULL,
    current_prompt VARCHAR NOT NULL,
    candidate_prompt VARCHAR,
    batch_before DOUBLE,
    batch_after DOUBLE,
    val_before DOUBLE,
    val_after DOUBLE,
    val_examples_scored INTEGER,
    accepted BOOLEAN NOT NULL,
    reason VARCHAR NOT NULL,
    llm_calls INTEGER NOT NULL,
    tokens INTEGER NOT NULL,
    cost_usd DOUBLE NOT NULL,
    seconds DOUBLE NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (run_id, step, proposal)
);
CREATE TABLE IF NOT EXISTS predictions (
    run_id VARCHAR NOT NULL,
    prompt_id VARCHAR NOT NULL,
    split VARCHAR NOT NULL,
    example_id VARCHAR NOT NULL,
    output VARCHAR NOT NULL,
    score DOUBLE NOT NULL,
    error VARCHAR,
    PRIMARY KEY (run_id, prompt_id, split, example_id)
);
-- One row per step that made proposals, stored with its first (proposal = 1), which paid for
-- it; files written before hold a copy per proposal. The key is kept so those still open.
CREATE TABLE IF NOT EXISTS gradients (
    run_id VARCHAR NOT NULL,
    step INTEGER NOT NULL,
    proposal INTEGER NOT NULL,
    prompt_id VARCHAR NOT NULL,
    feedback VARCHAR NOT NULL,
    PRIMARY KEY (run_id, step, proposal)
);
CREATE TABLE IF NOT EXISTS llm_calls (
    call_id VARCHAR PRIMARY KEY,
    call_key VARCHAR NOT NULL,
    run_id VARCHAR NOT NULL,
    role VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    messages JSON NOT NULL,
    params JSON NOT NULL,
    response VARCHAR,
    error VARCHAR,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cost_usd DOUBLE NOT NULL,
    latency_s DOUBLE NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);
CREATE TABLE IF NOT EXISTS evaluations (
    run_id VARCHAR NOT NULL,
    prompt_id VARCHAR NOT NULL,
    split VARCHAR NOT NULL,
    score DOUBLE NOT NULL,
    examples INTEGER NOT NULL,
    label VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (run_id, prompt_id, split, label)
);
CREATE TABLE IF NOT EXISTS registry (
    name VARCHAR NOT NULL,
    version INTEGER NOT NULL,
    prompt_id VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    temperature DOUBLE NOT NULL,
    top_p DOUBLE NOT NULL,
    frequency_penalty DOUBLE NOT NULL,
    max_tokens INTEGER NOT NULL,
    val_score DOUBLE,
    test_score DOUBLE,
    champion BOOLEAN NOT NULL,
    run_id VARCHAR,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS promotions (
    name VARCHAR NOT NULL,
    champion_version INTEGER,
    champion_prompt VARCHAR NOT NULL,
    challenger_prompt VARCHAR NOT NULL,
    champion_score DOUBLE,
    challenger_score DOUBLE,
    margin DOUBLE NOT NULL,
    promoted BOOLEAN NOT NULL,
    promoted_version INTEGER,
    reason VARCHAR NOT NULL,
    run_id VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);
"""
