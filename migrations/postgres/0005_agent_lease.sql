-- One live connection per agent across ingest nodes. A node that accepts an agent's
-- connection raises its epoch; every segment commit locks the lease rows of the agents in it
-- (FOR SHARE) and indexes only chunks whose connection holds the current epoch, so a node
-- whose connection was superseded cannot commit, and a takeover waits for commits in flight.
CREATE TABLE IF NOT EXISTS agent_lease (
    agent_id        TEXT PRIMARY KEY,
    epoch           BIGINT NOT NULL,
    node            TEXT NOT NULL,
    since_us        BIGINT NOT NULL
);
